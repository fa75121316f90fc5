r"""What an exported preset costs and keeps: the size of each ``koala.export`` artifact and its
PSNR against the koala tool (the Keras model) on real photos, with its speed next to the tool's.

  python benchmarks/export.py [--images=../shared/corpus/val] [--max_side=256] [--limit=0]

For the SR preset ``fsrcnn_x3`` (each photo fitted into --max_side px, then x3) and the codec
preset's decoder (on the encoder's 8-bit grayscale of each photo, fitted the same way): LiteRT
float32, LiteRT int8 (dynamic range) and ONNX (onnxruntime), each against the tool's uint8
output (``Upscaler`` / ``koala.codec``): PSNR in dB over the RGB pixels of all photos (inf
when equal), the largest difference in levels, file size and seconds per photo; the tool's
own seconds per photo are the baseline. The artifacts are written to a temporary folder.
"""

import tempfile
import time
from pathlib import Path

from common import REPO  # first: quiets TF, puts the checkout on sys.path

# isort: split

import numpy as np
import onnxruntime
import tensorflow as tf
from absl import app, flags
from PIL import Image

from koala.cli import common as cli
from koala.cli import export as export_cli
from koala.ops import images as loader
from koala.ops import metrics
from koala.tasks.codec import inference as codec
from koala.tasks.sr.inference import Upscaler

flags.DEFINE_string("images", str(REPO.parent / "shared" / "corpus" / "val"),
                    "Folder of photos (default: ../shared/corpus/val).")
flags.DEFINE_integer("max_side", 256, "Each photo is fitted into this many px first.")
flags.DEFINE_integer("limit", 0, "Use the first N photos only (0: all).")
FLAGS = flags.FLAGS


def photos():
    found = loader.find_images(FLAGS.images)
    found = found[:FLAGS.limit] if FLAGS.limit else found
    out = []
    for path in found:
        im = Image.fromarray(loader.load_image(path).rgb)
        im.thumbnail((FLAGS.max_side, FLAGS.max_side), Image.Resampling.BICUBIC)
        out.append(np.asarray(im))
    return out


def export(*args) -> Path:
    status = cli.call(export_cli.main, ["koala.export", *map(str, args)])
    if status:
        raise SystemExit(f"koala.export {' '.join(map(str, args))} failed ({status})")
    return Path(args[-1].split("=", 1)[1])


def litert_runner(path):
    runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner()
    return lambda x: next(iter(runner(**{runner.get_input_details().popitem()[0]: x})
                               .values()))


def onnx_runner(path):
    session = onnxruntime.InferenceSession(str(path))
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def compare(label, run, inputs, wants, size, baseline_s):
    start = time.perf_counter()
    gots = [run(x[None])[0] for x in inputs]
    seconds = (time.perf_counter() - start) / len(inputs)
    got = np.concatenate([g.reshape(-1) for g in gots]).astype(np.float64)
    want = np.concatenate([w.reshape(-1) for w in wants]).astype(np.float64)
    mse = np.mean((got - want) ** 2)
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    print(f"| {label} | {size / 2**20:.2f} MiB | {psnr:.2f} | {int(np.abs(got - want).max())} | "
          f"{seconds:.3f} s | {baseline_s:.3f} s |")


def main(argv):
    del argv
    pictures = photos()
    print(f"{len(pictures)} photos of {FLAGS.images}, fitted into {FLAGS.max_side} px; "
          f"CPU threads {tf.config.threading.get_intra_op_parallelism_threads() or 'all'}\n")
    print("| artifact | size | PSNR vs tool (dB) | max diff | s/photo | tool s/photo |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        upscaler = Upscaler.load("fsrcnn_x3")
        upscaler.upscale(pictures[0])  # warm-up
        start = time.perf_counter()
        wants = [upscaler.upscale(p) for p in pictures]
        tool_s = (time.perf_counter() - start) / len(pictures)
        for label, args in (("fsrcnn_x3 LiteRT float32", ["--format=litert"]),
                            ("fsrcnn_x3 LiteRT int8", ["--format=litert", "--int8"]),
                            ("fsrcnn_x3 ONNX", ["--format=onnx"])):
            suffix = ".onnx" if "onnx" in args[0] else ".tflite"
            path = export("--model=fsrcnn_x3", *args, f"--output={tmp / label.replace(' ', '_')}"
                          f"{suffix}")
            run = onnx_runner(path) if suffix == ".onnx" else litert_runner(path)
            compare(label, run, pictures, wants, path.stat().st_size, tool_s)

        encoder, decoder = codec.load_codec("codec")
        grays = [codec.encode(encoder, p) for p in pictures]
        codec.decode(decoder, grays[0])
        start = time.perf_counter()
        wants = [codec.decode(decoder, g) for g in grays]
        tool_s = (time.perf_counter() - start) / len(pictures)
        inputs = [g[..., None] for g in grays]
        for label, args in (("codec decode LiteRT float32", ["--format=litert"]),
                            ("codec decode LiteRT int8", ["--format=litert", "--int8"]),
                            ("codec decode ONNX", ["--format=onnx"])):
            suffix = ".onnx" if "onnx" in args[0] else ".tflite"
            path = export("--model=codec", "--signature=decode", *args,
                          f"--output={tmp / label.replace(' ', '_')}{suffix}")
            run = onnx_runner(path) if suffix == ".onnx" else litert_runner(path)
            compare(label, run, inputs, wants, path.stat().st_size, tool_s)
    restored = np.mean([metrics.psnr(w, p) for w, p in zip(wants, pictures, strict=True)])
    print(f"\nPSNR of the codec's restored colour against the photos, for scale: "
          f"{restored:.2f} dB (tool)")


if __name__ == "__main__":
    app.run(main)
