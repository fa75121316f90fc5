r"""Exports a koala model for serving: a SavedModel, a LiteRT (TFLite) file or an ONNX file
whose signature takes what a user has, uint8 RGB image batches, and returns uint8 images.

  python -m koala.export --model=PRESET|MODEL.keras --format=savedmodel|litert|onnx -o OUT \
      [--int8] [--overwrite]

The colour maths (YCbCr, Lab), the bicubic chroma and the rounding are inside the graph, so
a TF Serving, LiteRT or onnxruntime user needs no koala. Signatures (all uint8, batch first,
any height and width):

  sr        serving_default: images (B, h, w, 3) -> (B, s·h, s·w, 3)
  colorize  serving_default: images (B, H, W, 3) -> (B, H, W, 3); fusion colorizers and
            Lal et al.'s, with their embedder and their (preset's) saturation inside
            (SavedModel only: LiteRT and ONNX lack the anti-aliased resize)
  codec     encode (serving_default): images (B, H, W, 3) -> gray (B, H, W, 1);
            decode: gray (B, H, W, 1) -> images (B, H, W, 3). LiteRT and ONNX take one
            signature: --signature=encode|decode.

``--format=savedmodel`` writes the folder OUT; ``litert`` writes OUT (a ``.tflite`` file;
``--int8`` for dynamic-range quantisation: int8 weights); ``onnx`` writes OUT (a ``.onnx``
file) through tf2onnx (``pip install 'koala[onnx]'``), or fails with one line saying why.
LiteRT and ONNX go through a SavedModel in a temporary folder. An existing OUT is kept
unless ``--overwrite``. The library is :mod:`koala.core.export`.
"""

from __future__ import annotations

import functools
import os
import tempfile

from absl import flags

from koala.cli import common

FORMATS = ("savedmodel", "litert", "onnx")


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("model", None, "A preset name (python -m koala.presets) or a koala "
                        ".keras file.", flag_values=fv)
    flags.DEFINE_enum("format", "savedmodel", list(FORMATS), "What to write.", flag_values=fv)
    flags.DEFINE_string("output", None, "The SavedModel folder, or the .tflite / .onnx file.",
                        short_name="o", flag_values=fv)
    flags.DEFINE_string("signature", None, "litert, onnx: the signature to convert (default: "
                        "the first, serving_default).", flag_values=fv)
    flags.DEFINE_bool("int8", False, "litert: dynamic-range int8 quantisation of the weights.",
                      flag_values=fv)
    flags.DEFINE_bool("overwrite", False, "Replace an existing output.", flag_values=fv)


def server(name_or_path, *, float32: bool = False):
    """The serving module of a koala model (a preset name or a .keras file) and its
    signatures: ``(module, {name: fn})``. ``float32``: networks trained under a
    mixed-precision policy are rebuilt in float32 (for LiteRT and ONNX)."""
    from koala import presets
    from koala.core.errors import KoalaError
    from koala.core.export import float32_copy
    from koala.tasks.codec.inference import _is_whole, load_codec
    from koala.tasks.codec.serving import CodecServer
    from koala.tasks.colorize.inference import Colorizer
    from koala.tasks.colorize.serving import ColorizeServer
    from koala.tasks.sr import models as sr
    from koala.tasks.sr.serving import SRServer

    model = presets.load(name_or_path)
    if _is_whole(model):
        halves = load_codec(presets.resolve(name_or_path))
        module = CodecServer(*(float32_copy(h) if float32 else h for h in halves))
        return module, {"encode": module.encode, "decode": module.decode}
    if isinstance(model, (sr.SRCNN, sr.FSRCNN, sr.SRAutoencoder)):
        module = SRServer(float32_copy(model) if float32 else model)
    elif hasattr(getattr(model, "config", None), "embedding_dim"):  # fusion, Lal et al.
        # Loaded again as a Colorizer: a preset brings its embedder and decoding.
        if float32:
            raise KoalaError("a colorizer exports as a SavedModel only for now: its graph "
                             "resizes with anti-aliasing (ScaleAndTranslate), which LiteRT "
                             "and tf2onnx do not have")
        module = ColorizeServer(Colorizer.load(name_or_path))
    else:
        raise KoalaError(f"{type(model).__name__}: koala.export serves SR models, the codec "
                         f"and the fusion colorizers for now")
    return module, {"serving_default": module.serve}


def main(argv) -> int:
    fv, rest = common.parse(argv, define_flags, doc=__doc__, required=("model", "output"))
    if rest:
        return common.error(f"unexpected arguments: {rest}")
    from koala.core import export
    from koala.core.errors import KoalaError

    if fv.int8 and fv.format != "litert":
        return common.error("--int8 applies to --format=litert")
    try:
        module, signatures = server(fv.model, float32=fv.format != "savedmodel")
        key = fv.signature or next(iter(signatures))
        if key not in signatures:
            raise KoalaError(f"--signature={key}: {fv.model} has {', '.join(signatures)}")
        if fv.format == "savedmodel":
            out = export.save_savedmodel(module, fv.output, signatures,
                                         overwrite=fv.overwrite)
        elif fv.format == "onnx":
            out = export.to_onnx(signatures[key], fv.output, overwrite=fv.overwrite)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                saved = export.save_savedmodel(module, os.path.join(tmp, "saved"), signatures)
                out = export.to_litert(saved, fv.output, signature=key, int8=fv.int8,
                                       overwrite=fv.overwrite)
    except (KoalaError, OSError) as e:
        return common.error(str(e))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) if out.is_dir() \
        else out.stat().st_size
    print(f"{fv.format}: {out} ({size / 2**20:.2f} MiB); signatures: "
          f"{', '.join(signatures)}")
    return 0


run = functools.partial(common.run, main)  # the console script


if __name__ == "__main__":
    run()
