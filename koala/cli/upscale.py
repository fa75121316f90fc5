r"""Super-resolves photos with a trained SR model (SRCNN, FSRCNN or the auto-encoder).

  python -m koala.upscale INPUT... -o OUTDIR [--model=PRESET|MODEL.keras] \
      [--scale=N] [--tile=512] [--overlap=PX] [--suffix=_x{scale}] [--nosubpixel]

INPUTs are image files or folders (walked recursively, sub-folders kept under OUTDIR). Each
h x w image becomes ``OUTDIR/<subfolders>/<stem><suffix>.png`` of exactly (s*h) x (s*w),
s = the model's scale (``{scale}`` in ``--suffix`` is replaced by it). With no ``--model``,
the shipped FSRCNN preset of ``--scale`` (default 3) is used: ``fsrcnn_x2``, ``fsrcnn_x3`` or
``fsrcnn_x4`` (``python -m koala.presets`` lists them). With ``--model``, ``--scale`` is only a
check: a model is trained for one factor, and a different one is an error. Big images run in
tiles with enough context that the result equals the whole image run at once. Bad files are
reported on stderr and skipped; the exit status is 1 if any image failed, 2 when nothing could
be done (no model, wrong scale, no images). The library is :mod:`koala.tasks.sr.inference`.
"""

from __future__ import annotations

import functools
import os

from absl import flags

from koala.cli import common
from koala.core import batch
from koala.ops.images import DEFAULT_MAX_PIXELS

DEFAULT_SCALE = 3  # the papers' headline factor; its preset is fsrcnn_x3


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("output_dir", None, "Folder for the upscaled PNGs (created).",
                        short_name="o", flag_values=fv)
    flags.DEFINE_string("model", None, "A preset name (python -m koala.presets) or an SR model "
                        "(SRCNN, FSRCNN, SRAutoencoder) saved as .keras by koala.train. "
                        "Default: the FSRCNN preset of --scale.", flag_values=fv)
    flags.DEFINE_integer("scale", None, "The factor: picks the preset when --model is omitted "
                         "(default 3); with --model, fail unless the model upscales by it.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("tile", None, "Output tile side in px (bounds memory; default 512 px "
                         "of the model's working grid: 512 for SRCNN and the auto-encoder, "
                         "512 x scale for FSRCNN); 0 runs each image whole.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("overlap", None, "Context px around each tile (default: the model's "
                         "receptive radius rounded up to 8).", lower_bound=0, flag_values=fv)
    flags.DEFINE_string("suffix", "_x{scale}", "Appended to each output's stem: "
                        "<stem><suffix>.png; {scale} becomes the model's scale.",
                        flag_values=fv)
    flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS,
                         "Decompression-bomb limit on the inputs: larger images fail.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_bool("subpixel", True, "FSRCNN: run the deconvolution in its exact sub-pixel "
                      "form (a convolution plus depth-to-space; same output within float "
                      "rounding; 4x faster on a 2-core CPU); --nosubpixel runs it as trained.",
                      flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    flags.register_validator("suffix", lambda s: "/" not in s and os.sep not in s,
                             "--suffix must not contain a path separator", flag_values=fv)


def output_paths(inputs, output_dir, suffix: str, missing=None):
    """``(input file, output PNG)`` pairs (:func:`koala.core.batch.output_paths`)."""
    return batch.output_paths(inputs, output_dir, suffix, verb="upscale", missing=missing)


def main(argv) -> int:
    fv, inputs = common.parse(argv, define_flags, doc=__doc__,
                              required=("output_dir",))
    from koala.core.errors import KoalaError
    from koala.ops import grid
    from koala.tasks.sr.inference import Upscaler, check_scale

    if not inputs:
        return common.error("give at least one input image or folder")
    if status := common.default_model(fv, "sr", scale=fv.scale or DEFAULT_SCALE):
        return status
    tile = "auto" if fv.tile is None else (fv.tile or None)
    missing = []
    try:
        upscaler = Upscaler.load(fv.model, tile=tile, overlap=fv.overlap, fast=fv.subpixel)
        check_scale(upscaler, fv.scale)
        suffix = fv.suffix.replace("{scale}", str(upscaler.scale))
        pairs = output_paths(inputs, fv.output_dir, suffix, missing=missing)
    except (KoalaError, ValueError) as e:
        return common.error(str(e))
    if not pairs:
        return common.error(batch.no_images_message(inputs))

    def handle(loaded, out):
        grid.save_png(out, upscaler.upscale(loaded.rgb))

    done, failed = batch.process(pairs, handle, desc="upscale", max_pixels=fv.max_pixels,
                                 progress=fv.progress, missing=missing)
    print(f"upscaled {done} x{upscaler.scale}, failed {failed} -> {fv.output_dir}")
    return 1 if failed else 0


run = functools.partial(common.run, main)  # the console script


if __name__ == "__main__":
    run()
