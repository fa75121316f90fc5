r"""Colorizes grayscale (or desaturated colour) photos with a trained koala colorizer.

  python -m koala.colorize INPUT... -o OUTDIR --model MODEL.keras \
      [--saturation=1.2] [--refine=none|guided --radius=40 --eps=1e-4] [--suffix=_color] \
      [--grid] [--embedder_weights=PATH] [--samples=1 --seed=0]

INPUTs are image files or folders (walked recursively, sub-folders kept under OUTDIR). Each
image becomes ``OUTDIR/<subfolders>/<stem><suffix>.png`` with exactly the input's size; with
``--grid`` also ``<stem><suffix>_grid.png`` (input | output, plus the original when the input
was colour). Colour inputs are desaturated first: only their lightness L* is used. Bad files
are reported on stderr and skipped; the exit status is 1 if any image failed, 2 when nothing
could be done (no model, no images).

``--refine=guided`` smooths the predicted a*b* with a guided filter whose guide is L*
(SPEC §5: radius 40, ε 1e-4). A ColorGAN draws ``--samples=N`` colourings per image,
``<stem><suffix>_1.png ... _N.png``, from the noise seed ``(--seed, k - 1)``; a fusion model is
deterministic and refuses ``--samples`` > 1. The library is
:mod:`koala.tasks.colorize.inference`.
"""

from __future__ import annotations

import functools
import math
import os

from absl import flags

from koala.cli import common
from koala.core import batch
from koala.ops.images import DEFAULT_MAX_PIXELS
from koala.tasks.colorize.config import DEFAULT_EPS, DEFAULT_RADIUS, DEFAULT_SATURATION, REFINES


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("output_dir", None, "Folder for the colorized PNGs (created).",
                        short_name="o", flag_values=fv)
    flags.DEFINE_string("model", None, "A preset name (python -m koala.presets) or a koala "
                        "colorizer (fusion, Lal et al. or ColorGAN) saved as .keras by "
                        "koala.train. Default: the recommended colorize preset.",
                        flag_values=fv)
    flags.DEFINE_float("saturation", DEFAULT_SATURATION,
                       "Factor on the predicted a*b* (SPEC §1: 1.2; 0 gives the gray input).",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_enum("refine", "none", list(REFINES),
                      "Chroma refinement: none, or guided (a guided filter on the full-resolution "
                      "a*b* with L* as guide; SPEC §5).", flag_values=fv)
    flags.DEFINE_integer("radius", DEFAULT_RADIUS, "Guided-filter radius in full-resolution "
                         "pixels (SPEC §5: 40).", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("eps", DEFAULT_EPS, "Guided-filter ε, guide L*/100 in [0, 1] "
                       "(SPEC §5: 1e-4).", flag_values=fv)
    flags.register_validator("eps", lambda e: math.isfinite(e) and e > 0, "--eps must be > 0",
                             flag_values=fv)
    flags.DEFINE_string("suffix", "_color", "Appended to each output's stem: <stem><suffix>.png.",
                        flag_values=fv)
    flags.DEFINE_integer("samples", 1, "ColorGAN: colourings per image (SPEC §4: its noise gives "
                         "diversity); N > 1 writes <stem><suffix>_1.png ... _N.png.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "ColorGAN: noise seed; sample k uses (seed, k), so equal "
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
    flags.register_validator("suffix", lambda s: "/" not in s and os.sep not in s,
                             "--suffix must not contain a path separator", flag_values=fv)


def output_paths(inputs, output_dir, suffix: str = "_color", samples: int = 1, missing=None):
    """``(input file, output PNG)`` pairs (:func:`koala.core.batch.output_paths`); the optional
    ``<stem><suffix>_grid.png`` beside each output, and with ``samples`` > 1 the
    ``<stem><suffix>_k.png`` files, are checked for clashes too."""
    extra = tuple(f"_{k}" for k in range(1, samples + 1)) if samples > 1 else ()
    return batch.output_paths(inputs, output_dir, suffix, companions=("_grid", *extra),
                              missing=missing, verb="colorize")


def main(argv) -> int:
    fv, inputs = common.parse(argv, define_flags, doc=__doc__,
                              required=("output_dir",))
    from koala.core.errors import KoalaError
    from koala.ops import grid
    from koala.tasks.colorize.inference import Colorizer, gray_baseline

    if not inputs:
        return common.error("give at least one input image or folder")
    if status := common.default_model(fv, "colorize"):
        return status
    missing = []
    try:
        pairs = output_paths(inputs, fv.output_dir, fv.suffix, fv.samples, missing=missing)
    except KoalaError as e:
        return common.error(str(e))
    if not pairs:
        return common.error(batch.no_images_message(inputs))
    try:
        colorizer = Colorizer.load(fv.model, embedder_weights=fv.embedder_weights)
        if fv.samples > 1 and not colorizer.is_gan:
            raise KoalaError(f"--samples={fv.samples}: {fv.model} is a deterministic "
                             f"fusion colorizer; only a ColorGAN draws several colourings")
    except KoalaError as e:
        return common.error(str(e))
    options = dict(saturation=fv.saturation, refine=fv.refine, radius=fv.radius, eps=fv.eps)

    def handle(loaded, out):
        if colorizer.is_gan:  # reproducible: the noise comes from --seed
            results = colorizer.colorize_samples(loaded, fv.samples, fv.seed, **options)
        else:
            results = [colorizer.colorize(loaded, **options)]
        if len(results) == 1:
            grid.save_png(out, results[0])
        else:
            for k, result in enumerate(results, start=1):
                grid.save_png(out.with_name(f"{out.stem}_{k}.png"), result)
        if fv.grid:
            # input | output(s), or for colour inputs: desaturated input | output(s) | original
            row = ([loaded.rgb, *results] if loaded.was_grayscale
                   else [gray_baseline(loaded.rgb), *results, loaded.rgb])
            height = min(loaded.height, 512)  # never upscale; cap huge inputs
            grid.save_png(out.with_name(out.stem + "_grid.png"),
                          grid.make_grid([row], height=height))

    return batch.process_and_report(pairs, handle, desc="colorize", done_verb="colorized",
                                    output_dir=fv.output_dir, max_pixels=fv.max_pixels,
                                    progress=fv.progress, missing=missing)


run = functools.partial(common.run, main)  # the console script


if __name__ == "__main__":
    run()
