r"""Super-resolution speed on this CPU: output megapixels/s of each model through
``koala.tasks.sr.inference.Upscaler``, against the model's FLOP floor at the machine's measured
peak.

  python benchmarks/sr.py [--width=600 --height=400] [--scale=3]

  peak        float32 GFLOP/s of a large matmul (2 * n^3 FLOPs), the best this machine does
  floor       for a model with M multiply-adds per output pixel, peak / (2 M) output pixels/s:
              no implementation can beat it
  fraction    measured speed / floor
  bicubic     the baseline every SR method is compared with (tf.image.resize, bicubic)

Weights are random (speed does not depend on them); inputs are a smooth random image.
"""

import time

from common import DEFAULT_PHOTOS  # noqa: F401  first: quiets TF, puts the checkout on sys.path

# isort: split

import numpy as np
import tensorflow as tf
from absl import app, flags

from koala.data import pipelines
from koala.tasks.sr import models as sr
from koala.tasks.sr.inference import Upscaler

flags.DEFINE_integer("width", 600, "Low-res input width.")
flags.DEFINE_integer("height", 400, "Low-res input height.")
flags.DEFINE_integer("scale", 3, "Upscaling factor.")
flags.DEFINE_integer("repeats", 3, "Timed repetitions (best is kept).")
FLAGS = flags.FLAGS


def best_time(fn, repeats):
    fn()  # warm up: tracing, thread pools
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def peak_gflops(n=2048, repeats=5):
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    return 2 * n**3 / best_time(lambda: float(matmul()), repeats) / 1e9


def main(argv):
    del argv
    s, h, w = FLAGS.scale, FLAGS.height, FLAGS.width
    rng = np.random.default_rng(0)
    lr = (tf.image.resize(rng.random((h // 8, w // 8, 3)), [h, w], "bicubic").numpy()
          .clip(0, 1) * 255).round().astype(np.uint8)
    out_mp = h * s * w * s / 1e6
    peak = peak_gflops()
    print(f"input {w}x{h} -> x{s} = {out_mp:.2f} MP output; measured peak {peak:.1f} GFLOP/s "
          f"(float32 matmul), {tf.config.threading.get_intra_op_parallelism_threads() or 'all'}"
          f" intra-op threads")
    lr01 = tf.constant(lr / 255.0, tf.float32)
    t = best_time(lambda: pipelines.bicubic_upscale(lr01, s).numpy(), FLAGS.repeats)
    print(f"{'bicubic (baseline)':<24} {out_mp / t:8.2f} MP/s")
    rates = {}
    for name, build in [("srcnn 9-1-5", sr.srcnn), ("srcnn 9-5-5", sr.srcnn_955),
                        ("fsrcnn (56,12,4)", sr.fsrcnn), ("sr_autoencoder", sr.sr_autoencoder)]:
        model = build(scale=s)
        upscaler = Upscaler(model)
        macs = sr.multiply_adds_per_output_pixel(model)
        t = best_time(lambda u=upscaler: u.upscale(lr), FLAGS.repeats)
        rates[name] = out_mp / t
        floor = peak * 1e9 / (2 * macs) / 1e6
        print(f"{name:<24} {rates[name]:8.2f} MP/s  {macs:9.1f} mult-adds/pixel  floor "
              f"{floor:8.2f} MP/s  fraction {rates[name] / floor:6.1%}")
    fast, slow, slowest = (rates["fsrcnn (56,12,4)"], rates["srcnn 9-1-5"],
                           rates["srcnn 9-5-5"])
    fsrcnn_macs = sr.multiply_adds_per_output_pixel(sr.fsrcnn(scale=s))
    ratio_915 = sr.multiply_adds_per_output_pixel(sr.srcnn()) / fsrcnn_macs
    ratio_955 = sr.multiply_adds_per_output_pixel(sr.srcnn_955()) / fsrcnn_macs
    print(f"FSRCNN speed-up over SRCNN 9-1-5: {fast / slow:.1f}x (mult-adds ratio "
          f"{ratio_915:.1f}x); over SRCNN 9-5-5: {fast / slowest:.1f}x (mult-adds ratio "
          f"{ratio_955:.1f}x)")


if __name__ == "__main__":
    app.run(main)
