r"""Colorizes grayscale (or desaturated colour) photos with a trained koala colorizer, colour
scribbles, or a reference photo.

  python -m koala.colorize INPUT... -o OUTDIR --model MODEL.keras \
      [--saturation=1.2] [--refine=none|guided --radius=40 --eps=1e-4] [--suffix=_color] \
      [--grid] [--embedder_weights=PATH] [--samples=1 --seed=0]
  python -m koala.colorize GRAY -o OUTDIR --hints HINTS.png            # scribbles, no model
  python -m koala.colorize GRAY -o OUTDIR --model M --hints HINTS.png  # hints correct M
  python -m koala.colorize GRAY -o OUTDIR --reference REF.jpg          # Welsh et al.

``--hints`` and ``--reference`` name a file, or a folder holding, for each input, a file with
the input's stem (any image extension; ``<folder>/<sub-folders>/<stem>.*`` first, then
``<folder>/<stem>.*``). A hints image is the gray image with colour drawn on it (RGB, the gray
image's size): every pixel whose chroma differs from the gray input's by more than
``--hint_threshold`` is a hint (:mod:`koala.tasks.colorize.user`). With hints and no
``--model``, Levin et al.'s optimisation colours the image from the hints alone; with a model,
the hints correct its colours within ``--hint_reach`` pixels, and the rest keeps the model's.

INPUTs are image files or folders (walked recursively, sub-folders kept under OUTDIR). Each
image becomes ``OUTDIR/<subfolders>/<stem><suffix>.png`` with exactly the input's size; with
``--grid`` also ``<stem><suffix>_grid.png`` (input | output, plus the original when the input
was colour). Colour inputs are desaturated first: only their lightness L* is used. Bad files
are reported on stderr and skipped; the exit status is 1 if any image failed, 2 when nothing
could be done (no model, no images).

``--refine=guided`` smooths the predicted a*b* with a guided filter whose guide is L*
(SPEC §5: radius 40, ε 1e-4). A ColorGAN or PixColor draws ``--samples=N`` colourings per image,
``<stem><suffix>_1.png ... _N.png``, from the noise seed ``(--seed, k - 1)``; a fusion model is
deterministic and refuses ``--samples`` > 1. The library is
:mod:`koala.tasks.colorize.inference`.
"""

from __future__ import annotations

import functools
import glob
import math
import os
import pathlib

from absl import flags

from koala.cli import common
from koala.core import batch
from koala.ops.images import DEFAULT_MAX_PIXELS
from koala.tasks.colorize.config import (
    DEFAULT_EPS,
    DEFAULT_HINT_REACH,
    DEFAULT_HINT_THRESHOLD,
    DEFAULT_RADIUS,
    DEFAULT_REFERENCE_SAMPLES,
    DEFAULT_SATURATION,
    REFINES,
)


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("output_dir", None, "Folder for the colorized PNGs (created).",
                        short_name="o", flag_values=fv)
    flags.DEFINE_string("model", None, "A preset name (python -m koala.presets) or a koala "
                        "colorizer (fusion, Lal et al. or ColorGAN) saved as .keras by "
                        "koala.train. Default: the recommended colorize preset.",
                        flag_values=fv)
    flags.DEFINE_float("saturation", None,
                       f"Factor on the predicted a*b* (0 gives the gray input). Default: the "
                       f"preset's recorded decoding (python -m koala.presets), else SPEC §1's "
                       f"{DEFAULT_SATURATION}.", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("temperature", None,
                       "Classification-head colorizers: the annealed-mean temperature (Zhang et "
                       "al.: 0.38; lower is more colourful, 1 is the mean). Default: the "
                       "preset's recorded decoding, else the model's own. PixColor: the "
                       "sampling temperature (logits / T).", flag_values=fv)
    flags.register_validator("temperature", lambda v: v is None or v > 0,
                             "--temperature must be > 0", flag_values=fv)
    flags.DEFINE_enum("refine", None, list(REFINES),
                      "Chroma refinement: none, or guided (a guided filter on the full-resolution "
                      "a*b* with L* as guide; SPEC §5). Default: none, but guided for a VCNN "
                      "(Liang et al.'s pipeline).", flag_values=fv)
    flags.DEFINE_integer("radius", DEFAULT_RADIUS, "Guided-filter radius in full-resolution "
                         "pixels (SPEC §5: 40).", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("eps", DEFAULT_EPS, "Guided-filter ε, guide L*/100 in [0, 1] "
                       "(SPEC §5: 1e-4).", flag_values=fv)
    flags.register_validator("eps", lambda e: math.isfinite(e) and e > 0, "--eps must be > 0",
                             flag_values=fv)
    flags.DEFINE_string("suffix", "_color", "Appended to each output's stem: <stem><suffix>.png.",
                        flag_values=fv)
    flags.DEFINE_integer("samples", 1, "ColorGAN, PixColor: colourings per image (their "
                         "noise gives diversity); N > 1 writes <stem><suffix>_1.png ... _N.png.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "ColorGAN, PixColor: noise seed; sample k uses (seed, "
                         "k), so equal "
                         "seeds give equal outputs.", flag_values=fv)
    flags.DEFINE_bool("grid", False, "Also write <stem><suffix>_grid.png: input | output "
                      "(| original, for colour inputs).", flag_values=fv)
    flags.DEFINE_string("embedder_weights", None,
                        "Override the embedder weights recorded in the model: imagenet, none "
                        "or a local weights file.", flag_values=fv)
    flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS,
                         "Decompression-bomb limit: larger images fail.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    flags.DEFINE_string("hints", None, "Colour hints: an image (the gray image with colour "
                        "drawn on it) or a folder of them named like the inputs. Without "
                        "--model: Levin et al.'s scribble colorization; with one: corrections.",
                        flag_values=fv)
    flags.DEFINE_float("hint_threshold", DEFAULT_HINT_THRESHOLD, "A hints pixel is a hint when its "
                       "chroma (UV of YUV) differs from the gray input's by more than this.",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_integer("hint_reach", DEFAULT_HINT_REACH, "With --model and --hints: pixels "
                         "farther than this from every hint keep the model's colour; 0 = no "
                         "limit.", lower_bound=0, flag_values=fv)
    flags.DEFINE_string("reference", None, "A colour photo (or a folder of them named like the "
                        "inputs) whose colours are transferred (Welsh et al. 2002); no model.",
                        flag_values=fv)
    flags.DEFINE_integer("reference_samples", DEFAULT_REFERENCE_SAMPLES, "--reference: jittered "
                         "reference samples (the paper: about 200).", lower_bound=1,
                         flag_values=fv)
    flags.register_validator("suffix", lambda s: "/" not in s and os.sep not in s,
                             "--suffix must not contain a path separator", flag_values=fv)


def output_paths(inputs, output_dir, suffix: str = "_color", samples: int = 1, missing=None):
    """``(input file, output PNG)`` pairs (:func:`koala.core.batch.output_paths`); the optional
    ``<stem><suffix>_grid.png`` beside each output, and with ``samples`` > 1 the
    ``<stem><suffix>_k.png`` files, are checked for clashes too."""
    extra = tuple(f"_{k}" for k in range(1, samples + 1)) if samples > 1 else ()
    return batch.output_paths(inputs, output_dir, suffix, companions=("_grid", *extra),
                              missing=missing, verb="colorize")


def companion(option: str, arg, source, rel) -> pathlib.Path:
    """The ``--hints``/``--reference`` file for the input ``source``: ``arg`` itself when it is
    a file; in a folder, the image named like the input (``arg/rel/<stem>.*``, then
    ``arg/<stem>.*``; ``rel`` is the input's sub-folder under its root).

    Raises:
      ImageError: (for that input only) no such file, or several with the input's stem.
    """
    from koala.core.errors import ImageError
    from koala.ops.images import is_image_file

    arg = pathlib.Path(arg)
    if not arg.is_dir():
        return arg
    stem = pathlib.Path(source).stem
    for folder in dict.fromkeys((arg / rel, arg)):
        found = sorted(p for p in folder.glob(glob.escape(stem) + ".*")
                       if p.stem == stem and is_image_file(p) and p.is_file())
        if len(found) > 1:
            raise ImageError(source, f"--{option} folder {folder} has several images named "
                                     f"{stem}: {', '.join(p.name for p in found)}")
        if found:
            return found[0]
    raise ImageError(source, f"no --{option} image named {stem}.* in {arg}")


def main(argv) -> int:
    fv, inputs = common.parse(argv, define_flags, doc=__doc__,
                              required=("output_dir",))
    from koala.core.errors import KoalaError
    from koala.ops import grid, images
    from koala.tasks.colorize import user
    from koala.tasks.colorize.inference import Colorizer, gray_baseline

    if not inputs:
        return common.error("give at least one input image or folder")
    if fv.hints and fv.reference:
        return common.error("--hints and --reference are two ways to colour an image: give one")
    if fv.reference and fv.model:
        return common.error("--reference transfers colour from a photo and uses no model: "
                            "drop --model (or use --hints to correct a model's colours)")
    guide_option = "hints" if fv.hints else "reference" if fv.reference else None
    guide_arg = fv.hints or fv.reference
    if guide_arg and not os.path.exists(guide_arg):
        return common.error(f"--{guide_option} {guide_arg}: no such file or folder")
    if guide_option and fv.samples > 1:
        return common.error(f"--samples={fv.samples} draws several colourings; "
                            f"--{guide_option} gives one")
    if not guide_option and (status := common.default_model(fv, "colorize")):
        return status
    missing = []
    try:
        pairs = output_paths(inputs, fv.output_dir, fv.suffix, fv.samples, missing=missing)
    except KoalaError as e:
        return common.error(str(e))
    if not pairs:
        return common.error(batch.no_images_message(inputs))
    colorizer = None
    try:
        if fv.model:
            colorizer = Colorizer.load(fv.model, embedder_weights=fv.embedder_weights,
                                       temperature=fv.temperature)
        if fv.samples > 1 and not colorizer.is_stochastic:
            raise KoalaError(f"--samples={fv.samples}: {fv.model} is a deterministic "
                             f"colorizer; only ColorGAN and PixColor draw several colourings")
    except KoalaError as e:
        return common.error(str(e))
    options = dict(saturation=fv.saturation, refine=fv.refine, radius=fv.radius, eps=fv.eps)
    sources = {out: path for path, out in pairs}

    def guide_image(out):
        rel = out.parent.relative_to(fv.output_dir)
        path = companion(guide_option, guide_arg, sources[out], rel)
        return images.load_image(path, max_pixels=fv.max_pixels), path

    def handle(loaded, out):
        guide = None
        if fv.reference:
            guide, _ = guide_image(out)
            results = [user.colorize_from_reference(loaded, guide, samples=fv.reference_samples,
                                                    seed=fv.seed)]
        elif fv.hints:
            guide, path = guide_image(out)
            extra = options if colorizer is not None else {}
            results = [user.colorize_with_hints(loaded, guide, colorizer,
                                                threshold=fv.hint_threshold,
                                                reach=fv.hint_reach, name=str(path), **extra)]
        elif colorizer.is_stochastic:  # reproducible: the noise comes from --seed
            results = colorizer.colorize_samples(loaded, fv.samples, fv.seed, **options)
        else:
            results = [colorizer.colorize(loaded, **options)]
        if len(results) == 1:
            grid.save_png(out, results[0])
        else:
            for k, result in enumerate(results, start=1):
                grid.save_png(out.with_name(f"{out.stem}_{k}.png"), result)
        if fv.grid:
            # input (| hints or reference) | output(s) (| the original, for colour inputs)
            shown = [guide.rgb] if guide is not None else []
            row = ([loaded.rgb, *shown, *results] if loaded.was_grayscale
                   else [gray_baseline(loaded.rgb), *shown, *results, loaded.rgb])
            height = min(loaded.height, 512)  # never upscale; cap huge inputs
            grid.save_png(out.with_name(out.stem + "_grid.png"),
                          grid.make_grid([row], height=height))

    return batch.process_and_report(pairs, handle, desc="colorize", done_verb="colorized",
                                    output_dir=fv.output_dir, max_pixels=fv.max_pixels,
                                    progress=fv.progress, missing=missing)


run = functools.partial(common.run, main)  # the console script


if __name__ == "__main__":
    run()
