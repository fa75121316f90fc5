r"""Builds sharded TFRecords from a folder of images.

  python data_prep/build_records.py --input_dir=PHOTOS --output_dir=RECORDS \
      [--embedder=inception_resnet_v2 --embedder_weights=imagenet|none|PATH] [--resume]

Distributed over N machines sharing --output_dir (a shared folder or a gs:// bucket), then
merged into one manifest.json (see :mod:`koala.data.build`):

  python data_prep/build_records.py --input_dir=PHOTOS --output_dir=RECORDS \
      --num_workers=N --worker_index=i ...          # on machine i = 0 .. N-1
  python data_prep/build_records.py --merge --output_dir=RECORDS [--num_workers=N]

Also runnable as ``python -m koala.build_records``. With neither --input_dir nor
--output_dir it builds the built-in sample photos (data/samples/) into
data/records/samples/. Each image becomes one example with the field groups chosen by
--groups (color: L, ab and the grayscale embedding at --image_size; rgb: the image itself,
long side capped at --max_side). The split is a hash of the relative path. Bad images are
skipped and listed in manifest.json; the exit status is non-zero only when no image was
usable or more than --max_skipped_fraction were skipped. See :mod:`koala.data.build`.
"""

import functools
import os
import pathlib

from absl import flags, logging

from koala.cli import common
from koala.core.errors import KoalaError
from koala.ops import geometry, images

# The built-in samples live in the checkout (data/samples), beside the koala package.
REPO = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"
SAMPLE_RECORDS = REPO / "data" / "records" / "samples"

def define_flags(fv: flags.FlagValues) -> None:
    # TensorFlow comes with these: imported here, inside the command's native-log filter
    # (koala.cli.quiet), not when this module is.
    from koala.data import build as build_lib
    from koala.ops import embedder as embedder_lib

    flags.DEFINE_string("input_dir", None, "Folder of images, walked recursively. "
                        "Default: the built-in samples (data/samples).", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Where shards and manifest.json go. "
                        "Default (with no --input_dir): data/records/samples.", flag_values=fv)
    flags.DEFINE_integer("image_size", 224, "Side of the L/ab square (SPEC §1: 224).",
                         lower_bound=8,
                         flag_values=fv)
    flags.DEFINE_enum("fit", "pad", geometry.FITS,
                      "pad: keep aspect, pad to a square with white (paper); crop: centre crop.",
                      flag_values=fv)
    flags.DEFINE_integer("max_side", 1024, "Cap on the long side of the stored RGB.", lower_bound=8,
                         flag_values=fv)
    flags.DEFINE_multi_enum("groups", ["color", "rgb"], ["color", "rgb"],
                            "Field groups to write: color (L, ab, embedding) and/or rgb.",
                            flag_values=fv)
    flags.DEFINE_enum("labels_from", None, list(build_lib.LABELS_FROM),
                      "Write integer class labels (the 'label' field; the manifest lists the "
                      "classes): dirname = each image's top-level folder, ImageNet-style; "
                      "images outside a class folder are skipped. Default: no labels.",
                      flag_values=fv)
    flags.DEFINE_enum("embedder", "inception_resnet_v2", sorted(embedder_lib.EMBEDDERS),
                      "Global-feature network (SPEC §1: inception_resnet_v2 at 299 px).",
                      flag_values=fv)
    flags.DEFINE_string("embedder_weights", "imagenet",
                        "imagenet (keras.applications; needs the download or $KERAS_HOME cache), "
                        "none (random: recorded and warned about) or a local weights file.",
                        flag_values=fv)
    flags.DEFINE_float("val_fraction", 0.1, "Share of images in the val split (by path hash).",
                       lower_bound=0.0, upper_bound=0.99, flag_values=fv)
    flags.DEFINE_integer("examples_per_shard", 256, "Examples per shard file.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_enum("compression", "none", sorted(build_lib.COMPRESSIONS), "Shard compression.",
                      flag_values=fv)
    flags.DEFINE_enum("rgb_codec", "png", build_lib.RGB_CODECS,
                      "Codec for RGB images that must be re-encoded (resized, rotated, converted).",
                      flag_values=fv)
    flags.DEFINE_integer("jpeg_quality", 95, "Quality with --rgb_codec=jpeg.", lower_bound=1,
                         upper_bound=100, flag_values=fv)
    flags.DEFINE_integer("max_pixels", images.DEFAULT_MAX_PIXELS,
                         "Decompression-bomb limit: larger images are skipped.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("batch_size", 16, "Embedder batch size.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("num_threads", min(4, os.cpu_count() or 1),
                         "Threads decoding images.", lower_bound=1, flag_values=fv)
    flags.DEFINE_bool("resume", False, "Continue a killed build: finished shards are kept.",
                      flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing build in --output_dir.",
                      flag_values=fv)
    flags.DEFINE_float("max_skipped_fraction", 0.5,
                       "Exit non-zero if more than this share of the images is skipped.",
                       lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    flags.DEFINE_integer("num_workers", 1, "Machines sharing the build: each builds the images "
                         "whose path hash falls in its part, then --merge joins the parts. "
                         "1: a single build.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("worker_index", 0, "This machine's part, 0 .. --num_workers - 1.",
                         lower_bound=0, flag_values=fv)
    flags.DEFINE_enum("runner", "local", ["local", "beam"], "local: koala's own driver (threads "
                      "and one embedder; fastest on one machine). beam: the same stages as an "
                      "Apache Beam pipeline (pip install 'koala[beam]'), on the runner that "
                      "--beam_options names (DirectRunner by default; docs/scaling.md).",
                      flag_values=fv)
    flags.DEFINE_multi_string("beam_options", [], "--runner=beam: a Beam pipeline option, e.g. "
                              "--beam_options=--runner=FlinkRunner (repeat the flag for more).",
                              flag_values=fv)
    flags.DEFINE_bool("merge", False, "Write --output_dir/manifest.json over the finished parts "
                      "of a distributed build (reads only --output_dir, --num_workers and "
                      "--max_skipped_fraction).", flag_values=fv)
    flags.register_multi_flags_validator(
        ["resume", "overwrite"], lambda f: not (f["resume"] and f["overwrite"]),
        "--resume and --overwrite exclude each other", flag_values=fv)
    flags.register_multi_flags_validator(
        ["input_dir", "output_dir"],
        lambda f: f["input_dir"] is None or f["output_dir"] is not None,
        "--output_dir is required with --input_dir", flag_values=fv)
    flags.register_multi_flags_validator(
        ["num_workers", "worker_index"], lambda f: f["worker_index"] < f["num_workers"],
        "--worker_index must be in [0, --num_workers)", flag_values=fv)
    flags.register_multi_flags_validator(
        ["merge", "output_dir"], lambda f: not f["merge"] or f["output_dir"] is not None,
        "--output_dir is required with --merge", flag_values=fv)


_CONFIG_FLAGS = ("image_size", "fit", "max_side", "embedder", "embedder_weights",
                 "val_fraction", "examples_per_shard", "compression", "rgb_codec",
                 "jpeg_quality", "max_pixels", "batch_size", "num_threads", "resume",
                 "overwrite", "max_skipped_fraction", "progress", "num_workers", "worker_index",
                 "labels_from")
_MERGE_FLAGS = ("output_dir", "num_workers", "max_skipped_fraction", "progress", "merge")


def main(argv) -> int:
    fv, rest = common.parse(argv, define_flags, doc=__doc__)
    from koala.data import build as build_lib

    if rest:
        return common.error(f"unexpected arguments: {rest}")
    if fv.merge:
        return merge(fv)
    input_dir = fv.input_dir or str(SAMPLES)
    output_dir = fv.output_dir or str(SAMPLE_RECORDS)
    config = build_lib.BuildConfig(
        input_dir=input_dir, output_dir=output_dir, groups=tuple(fv.groups),
        **{name: fv[name].value for name in _CONFIG_FLAGS})
    if "color" in config.groups:
        print(f"embedder: {config.embedder}, weights: {config.embedder_weights}"
              + (" (RANDOM: no ImageNet semantics)" if config.embedder_weights == "none" else ""))
    recorded = {name: fv[name].value for name in ("input_dir", "output_dir", "groups",
                                                     *_CONFIG_FLAGS)}
    if fv.beam_options and fv.runner != "beam":
        return common.error("--beam_options apply to --runner=beam")
    try:
        if fv.runner == "beam":
            from koala.data.build import beam

            result = beam.build(config, flags={**recorded, "runner": "beam",
                                               "beam_options": fv.beam_options},
                                beam_options=fv.beam_options)
        else:
            result = build_lib.build(config, flags=recorded)
    except KoalaError as e:
        return common.error(str(e))
    m = result.manifest
    per = m["bytes_per_example"]
    part = f" part {config.part}" if config.part else ""
    print(f"records: {output_dir}{part}  train={m['counts']['train']} val={m['counts']['val']} "
          f"skipped={len(m['skipped'])} in {m['elapsed_s']:.1f}s "
          f"({sum(m['counts'].values()) / max(m['elapsed_s'], 1e-9):.2f} img/s)")
    _print_skipped(m)
    if "color_fields" in per:
        print(f"bytes/example: colour fields {per['color_fields'] / 1000:.1f} KB "
              f"(L {per.get('l_png', 0) / 1000:.1f} KB, ab {per.get('ab_png', 0) / 1000:.1f} KB, "
              f"embedding {per.get('embedding', 0) / 1000:.1f} KB)")
    if "rgb" in per:
        print(f"bytes/example: rgb {per['rgb'] / 1000:.1f} KB")
    if config.part:
        print(f"part manifest: {os.path.join(output_dir, f'manifest-{config.part}.json')}")
        print(f"once all {config.num_workers} parts are finished: --merge "
              f"--output_dir={output_dir} --num_workers={config.num_workers}")
    else:
        print(f"manifest: {os.path.join(output_dir, build_lib.MANIFEST)}")
    return _status(result)


def _print_skipped(manifest: dict) -> None:
    for item in manifest["skipped"]:
        print(f"  skipped {item['path']}: {item['reason']}")


def _status(result) -> int:
    """1 (with the reason on stderr) when the build or merge is not usable, else 0."""
    if not result.ok:
        return common.error(result.message, 1)
    logging.info(result.message)
    return 0


def merge(fv: flags.FlagValues) -> int:
    """--merge: one manifest.json over the parts of a distributed build."""
    from koala.data import build as build_lib

    extra = [f"--{name}" for name in ("input_dir", "groups", *_CONFIG_FLAGS)
             if fv[name].present and name not in _MERGE_FLAGS]
    if extra:
        return common.error(f"--merge reads the parts' settings from their manifests: drop "
                            f"{', '.join(extra)}")
    num_workers = fv.num_workers if fv["num_workers"].present else None
    recorded = {name: fv[name].value for name in _MERGE_FLAGS}
    try:
        result = build_lib.merge(fv.output_dir, num_workers=num_workers,
                                 max_skipped_fraction=fv.max_skipped_fraction,
                                 flags=recorded)
    except KoalaError as e:
        return common.error(str(e))
    m = result.manifest
    if "parts" not in m:
        print(result.message)
        return 0
    print(f"records: {fv.output_dir}  train={m['counts']['train']} "
          f"val={m['counts']['val']} skipped={len(m['skipped'])} "
          f"from {m['num_workers']} parts")
    _print_skipped(m)
    print(f"manifest: {os.path.join(fv.output_dir, build_lib.MANIFEST)}")
    return _status(result)


run = functools.partial(common.run, main)  # the console script


if __name__ == "__main__":
    run()
