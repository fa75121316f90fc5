r"""koala's one evaluation tool: models against their baseline on a folder of images.

  python -m koala.evaluate --task=colorize --model=A.keras [--model=B.keras ...] \
      --images=DIR [--output_dir=runs/eval/colorize] [--max_images=N] [--saturation=1.2] \
      [--embedder_weights=W] [--grid_height=160] [--refine=none --refine=guided]
  python -m koala.evaluate --task=sr --model=A.keras [--model=B.keras ...] --images=DIR \
      --scale=N [--output_dir=runs/eval/sr] [--max_images=N] [--crop_size=96]
  python -m koala.evaluate --task=codec --model=CODEC.keras --images=DIR \
      [--output_dir=runs/eval/codec] [--max_images=N] [--jpeg_quality=95 ...] [--tile=512]

Each task is one evaluator module with a frozen config and ``run(config) -> report``:

  colorize  colorizers against the gray baseline (Lab(L, 0, 0)): PSNR, SSIM, colourfulness,
            CIEDE2000; writes metrics.json, metrics.md, grid.png
            (:mod:`koala.tasks.colorize.evaluator`).
  sr        SR models against bicubic on the training degradation: PSNR-Y and SSIM-Y (BT.601
            studio Y, border crop = scale), PSNR-RGB; writes metrics.json, metrics.md,
            crops.png (:mod:`koala.tasks.sr.evaluator`).
  codec     one Invertible Grayscale model against the luma baseline, after a real 8-bit PNG
            round trip, and its JPEG robustness; writes metrics.json, metrics.md, grid.png,
            jpeg_psnr.png (:mod:`koala.tasks.codec.evaluator`).

metrics.json writes an infinite PSNR (identical images) as the string "inf" and an undefined
SSIM (image too small) as null. Every run also writes its effective flags to
``OUTPUT_DIR/flags.txt`` (``--flagfile=OUTPUT_DIR/flags.txt`` re-runs it). A flag of another
task is an error. Unreadable images are skipped and listed in the report; they never stop the
run. Exit status: 0 on success, 2 for unusable inputs (a missing model file or images folder,
a model that doesn't load, a flag of another task, for sr: a missing --scale or a model of
another scale, for codec: more than one --model or a model that isn't a whole codec), 1 when
no image could be evaluated.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from koala.cli import common
from koala.core.errors import KoalaError
from koala.tasks.colorize.config import DEFAULT_EPS, DEFAULT_RADIUS, DEFAULT_SATURATION, REFINES

# The flags each task takes, in flags.txt order; any other flag given is an error.
TASK_FLAGS = {
    "colorize": ("task", "model", "images", "output_dir", "max_images", "saturation",
                 "embedder_weights", "grid_height", "refine", "radius", "eps", "progress",
                 "semantic_weights", "temperature", "samples", "seed"),
    "sr": ("task", "model", "images", "scale", "output_dir", "max_images", "crop_size",
           "progress"),
    "codec": ("task", "model", "images", "output_dir", "max_images", "jpeg_quality",
              "grid_height", "tile", "progress"),
}


def define_flags(fv: flags.FlagValues) -> None:
    """The flags, on ``fv``. Defaults live in the task configs: a flag not given is None."""
    flags.DEFINE_enum("task", None, sorted(TASK_FLAGS), "What to evaluate.", flag_values=fv)
    flags.DEFINE_multi_string("model", None, "A saved model (.keras) or a preset name "
                              "(python -m koala.presets); repeat for several models, which "
                              "then share one table.", flag_values=fv)
    flags.DEFINE_string("images", None, "Folder of evaluation images (walked recursively), or "
                        "one image file.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Where the report goes. Default: runs/eval/TASK.",
                        flag_values=fv)
    flags.DEFINE_integer("max_images", None, "Evaluate at most this many images (default: "
                         "all).", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("saturation", None, f"colorize: factor on the predicted a*b*. Default: "
                       f"each model's own (a preset's recorded decoding, else SPEC §1's "
                       f"{DEFAULT_SATURATION}).", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("temperature", None, "colorize: annealed-mean temperature of the "
                       "classification-head models (Zhang et al.: 0.38), PixColor's sampling "
                       "temperature; the others ignore it. "
                       "Default: each model's own.", flag_values=fv)
    flags.register_validator("temperature", lambda v: v is None or v > 0,
                             "--temperature must be > 0", flag_values=fv)
    flags.DEFINE_integer("samples", None, "colorize: colourings per image from the "
                         "stochastic models (ColorGAN, PixColor): their rows become means over "
                         "the samples, plus best-of-N PSNR, diversity and seconds per sample "
                         "(default 1).", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seed", None, "colorize, --samples: sample k draws from (seed, k) "
                         "(default 0).", flag_values=fv)
    flags.DEFINE_string("semantic_weights", None, "colorize: the semantic check (Zhang et al. "
                        "2016): top-1/top-5 agreement of a MobileNet ImageNet classifier "
                        "between each output and the colour photo; its weights file (e.g. "
                        "../shared/weights/mobilenet_1_0_224_imagenet.weights.h5) or "
                        "imagenet.", flag_values=fv)
    flags.DEFINE_string("embedder_weights", None,
                        "colorize: override the embedder weights recorded in the models "
                        "(imagenet, none or a local weights file).", flag_values=fv)
    flags.DEFINE_multi_enum("refine", None, list(REFINES),
                            "colorize: report every model with this chroma refinement "
                            "(default: each model's own: a preset's recorded one, guided for "
                            "a VCNN, else none); repeat (--refine=none --refine=guided) for rows "
                            "with and without the guided filter (SPEC §5).", flag_values=fv)
    flags.DEFINE_integer("radius", None, f"colorize: guided-filter radius (SPEC §5: "
                         f"{DEFAULT_RADIUS}).", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("eps", None, f"colorize: guided-filter ε (SPEC §5: {DEFAULT_EPS:g}).",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_integer("grid_height", None, "colorize, codec: height in pixels of each "
                         "grid.png cell (default 160).", lower_bound=8, flag_values=fv)
    flags.DEFINE_integer("scale", None, "sr (required): the upscaling factor; every model "
                         "must be of this scale.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("crop_size", None, "sr: side in high-res pixels of the centred crop "
                         "in crops.png (default 96).", lower_bound=1, flag_values=fv)
    flags.DEFINE_multi_integer("jpeg_quality", None, "codec: a JPEG quality to store the "
                               "grayscale at for the robustness table; repeat for several "
                               "(default 95, 90, 75, 50).", lower_bound=1, upper_bound=100,
                               flag_values=fv)
    flags.DEFINE_integer("tile", None, "codec: tile side in px for the encoder and decoder "
                         "(bounds memory; default 512); 0 runs images whole.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_bool("progress", None, "Show a progress bar (default: yes).", flag_values=fv)


def _given(fv: flags.FlagValues, *names: str) -> dict:
    """The named flags that were given, as config keyword arguments (lists become tuples)."""
    return {name: tuple(fv[name].value) if isinstance(fv[name].value, list) else fv[name].value
            for name in names if fv[name].value is not None}


def _evaluator(task: str):
    """The task's evaluator module, through the registry (imported only when a run starts)."""
    from koala import registry

    return registry.TASKS[task].evaluator


def _colorize(fv: flags.FlagValues):
    evaluator = _evaluator("colorize")

    return evaluator, evaluator.ColorizeEvalConfig(
        models=tuple(fv.model), images=fv.images,
        **_given(fv, "output_dir", "max_images", "saturation", "embedder_weights",
                 "grid_height", "progress", "refine", "radius", "eps", "semantic_weights",
                 "temperature", "samples", "seed"))


def _sr(fv: flags.FlagValues):
    evaluator = _evaluator("sr")

    if fv.scale is None:
        raise KoalaError("--scale is required for --task=sr")
    return evaluator, evaluator.SREvalConfig(
        models=tuple(fv.model), images=fv.images, scale=fv.scale,
        **_given(fv, "output_dir", "max_images", "crop_size", "progress"))


def _codec(fv: flags.FlagValues):
    evaluator = _evaluator("codec")

    if len(fv.model) != 1:
        raise KoalaError(f"--task=codec evaluates one model (a whole InvertibleGrayscale "
                         f".keras), got {len(fv.model)} --model flags")
    given = _given(fv, "output_dir", "max_images", "grid_height", "progress", "tile")
    if fv.jpeg_quality is not None:
        given["jpeg_qualities"] = tuple(fv.jpeg_quality)
    if given.get("tile") == 0:
        given["tile"] = None  # --tile=0: whole images
    return evaluator, evaluator.CodecEvalConfig(model=fv.model[0], images=fv.images, **given)


TASKS = {"colorize": _colorize, "sr": _sr, "codec": _codec}
"""Task name -> flags -> (its evaluator module, with ``run`` and ``summary``; its config)."""


def check_task_flags(fv: flags.FlagValues) -> None:
    """KoalaError naming the task a given flag belongs to, when it isn't ``--task``'s."""
    own = TASK_FLAGS[fv.task]
    for name in dict.fromkeys(n for names in TASK_FLAGS.values() for n in names):
        if name not in own and fv[name].value is not None:
            owners = ", ".join(t for t, names in TASK_FLAGS.items() if name in names)
            raise KoalaError(f"--{name} is a flag of --task={owners}, not of --task={fv.task}")


def flags_text(task: str, config) -> str:
    """The effective flags of a run, read off its config: one ``--flag=value`` per line."""
    fields = {"model": "models", "jpeg_quality": "jpeg_qualities"}  # where the names differ
    lines = [f"--task={task}"]
    for name in TASK_FLAGS[task][1:]:
        value = getattr(config, name if hasattr(config, name) else fields[name])
        if name == "tile" and value is None:
            value = 0  # whole images
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                lines.append(f"--{name}={item}")
    return "\n".join(lines) + "\n"


def main(argv) -> int:
    fv, rest = common.parse(argv, define_flags, doc=__doc__,
                            required=("task", "model", "images"))
    if rest:
        return common.error(f"unexpected arguments: {rest}")
    from koala.core.evaluation import NoUsableImagesError
    from koala.core.io import atomic_write
    from koala.core.report import METRICS_MD, markdown_mean_table

    try:
        check_task_flags(fv)
        evaluator, config = TASKS[fv.task](fv)
    except (KoalaError, ValueError) as e:  # ValueError: a config's own check
        return common.error(str(e))
    try:
        report = evaluator.run(config)
    except NoUsableImagesError as e:
        return common.error(str(e), status=1)
    except KoalaError as e:
        return common.error(str(e))
    atomic_write(os.path.join(config.output_dir, "flags.txt"), flags_text(fv.task, config))
    for item in report["skipped"]:
        print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    print(f"{fv.task}: {report['images']} images, {len(report['skipped'])} skipped; "
          f"mean over images:")
    print(markdown_mean_table(report), end="")
    for line in evaluator.summary(report, config.output_dir):
        print(line)
    print(f"report: {os.path.join(config.output_dir, METRICS_MD)}")
    return 0


def run():
    common.run(main)


if __name__ == "__main__":
    run()
