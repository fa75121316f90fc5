r"""Hides a colour photo in an ordinary-looking 8-bit grayscale PNG and restores the colour
from it, with a trained Invertible Grayscale model (Xia, Liu, Wong 2018; SPEC §2).

  python -m koala.codec encode INPUT... -o OUTDIR --model MODEL.keras \
      [--tile=512] [--overlap=PX] [--suffix=_gray]
  python -m koala.codec decode INPUT... -o OUTDIR --model MODEL.keras \
      [--tile=512] [--overlap=PX] [--suffix=_color]
  python -m koala.codec export --model MODEL.keras -o DIR

INPUTs are image files or folders (walked recursively, sub-folders kept under OUTDIR); each
becomes ``OUTDIR/<subfolders>/<stem><suffix>.png`` of exactly the input's size. ``encode``
writes single-channel 8-bit PNGs (mode "L"), which any viewer shows as a grayscale photo;
grayscale inputs are encoded as the colour image with three equal channels. ``decode`` writes
RGB PNGs; it takes any grayscale image (a photo the encoder never saw still gives an image, just
without meaningful colour), and a colour input is first reduced to its BT.601 luma (:func:`luma`)
with a note on stderr. Bad files are reported on stderr and skipped; the exit status is 1 if any
image failed, 2 when nothing could be done (no model, the wrong part of one, no images).
``export`` writes ``DIR/encoder.keras`` and ``DIR/decoder.keras``, the two halves of a whole
model as stand-alone functional models that reload with plain ``keras.saving.load_model``.

``--model`` is a whole InvertibleGrayscale ``.keras`` file or the one half the command needs.
The library is :mod:`koala.tasks.codec.inference`.
"""

from __future__ import annotations

import functools
import os
import sys

from absl import flags

from koala.cli import common
from koala.core import batch
from koala.ops.images import DEFAULT_MAX_PIXELS

COMMANDS = {"encode": "encoder", "decode": "decoder", "export": None}
"""Commands and the half each one needs (export needs the whole model)."""
DEFAULT_SUFFIXES = {"encode": "_gray", "decode": "_color"}


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("output_dir", None, "Folder for the PNGs (encode, decode) or the two "
                        ".keras halves (export); created.", short_name="o", flag_values=fv)
    flags.DEFINE_string("model", None, "A preset name (python -m koala.presets), a whole "
                        "InvertibleGrayscale model saved as .keras, or the one half the "
                        "command needs. Default: the codec preset.", flag_values=fv)
    flags.DEFINE_integer("tile", None, "Output tile side in px, a multiple of 4 (bounds "
                         "memory; default 512); 0 runs each image whole.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_integer("overlap", None, "Context px around each tile (default: the model's "
                         "receptive radius rounded up to 8).", lower_bound=0, flag_values=fv)
    flags.DEFINE_string("suffix", None, "Appended to each output's stem: <stem><suffix>.png "
                        "(default: _gray for encode, _color for decode).", flag_values=fv)
    flags.DEFINE_integer("max_pixels", DEFAULT_MAX_PIXELS,
                         "Decompression-bomb limit on the inputs: larger images fail.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    flags.register_validator("suffix", lambda s: s is None or ("/" not in s and os.sep not in s),
                             "--suffix must not contain a path separator", flag_values=fv)


def main(argv) -> int:
    fv, args = common.parse(argv, define_flags, doc=__doc__,
                            required=("output_dir",))
    from koala.core.errors import KoalaError
    from koala.ops import grid
    from koala.tasks.codec import inference as codec

    if not args or args[0] not in COMMANDS:
        got = f" (got {args[0]!r})" if args else ""
        return common.error(f"the first argument is the command: {', '.join(COMMANDS)}{got}")
    command, inputs = args[0], args[1:]
    if status := common.default_model(fv, "codec"):
        return status
    if command == "export":
        if inputs:
            return common.error(f"export takes no input images, got {' '.join(inputs)}")
        try:
            written = codec.export(fv.model, fv.output_dir)
        except KoalaError as e:
            return common.error(str(e))
        print(f"exported {written['encoder']} and {written['decoder']}")
        return 0
    if not inputs:
        return common.error(f"give at least one input image or folder to {command}")
    suffix = DEFAULT_SUFFIXES[command] if fv.suffix is None else fv.suffix
    tile = codec.DEFAULT_TILE if fv.tile is None else (fv.tile or None)
    missing = []
    try:
        part = codec.TiledPart(codec.load_part(fv.model, COMMANDS[command]), tile=tile,
                               overlap=fv.overlap)
        pairs = batch.output_paths(inputs, fv.output_dir, suffix, verb=command,
                                   missing=missing)
    except (KoalaError, ValueError) as e:
        return common.error(str(e))
    if not pairs:
        return common.error(batch.no_images_message(inputs))
    sources = {out: path for path, out in pairs}

    def handle(loaded, out):
        if command == "encode":
            grid.save_png(out, codec.encode(part, loaded))  # (H, W) uint8: a mode "L" PNG
            return
        if loaded.was_grayscale:
            gray = loaded.rgb[..., 0]
        else:
            print(f"{sources[out]}: note: a colour image; decoding its BT.601 luma",
                  file=sys.stderr)
            gray = codec.luma(loaded.rgb)
        grid.save_png(out, codec.decode(part, gray))

    return batch.process_and_report(pairs, handle, desc=command, done_verb=f"{command}d",
                                    output_dir=fv.output_dir, max_pixels=fv.max_pixels,
                                    progress=fv.progress, missing=missing)


run = functools.partial(common.run, main)  # the console script


if __name__ == "__main__":
    run()
