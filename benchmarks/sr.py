r"""Super-resolution speed on this CPU: output megapixels/s of each model through
``koala.tasks.sr.inference.Upscaler``, against the model's FLOP floor at the machine's measured
peak.

  python benchmarks/sr.py [--width=600 --height=400] [--scale=3]

  peak        float32 GFLOP/s of a large matmul (2 * n^3 FLOPs), the best this machine does
  floor       for a model with M multiply-adds per output pixel, peak / (2 M) output pixels/s:
              no implementation can beat it
  fraction    measured speed / floor
  bicubic     the baseline every SR method is compared with (tf.image.resize, bicubic)

FSRCNN runs twice: "as trained" (its strided 9x9 transposed convolution, eager colour
handling, 512 px tiles: koala's path before the sub-pixel form) and "fast" (the exact
sub-pixel form, one graph per window, 512 low-res px tiles: what koala.upscale runs). Then
frames per second for a video frame, 320x240 -> 960x720 at x3, next to the FSRCNN paper's
real-time 24 fps.

Weights are random (speed does not depend on them); inputs are a smooth random image.
"""


from common import DEFAULT_PHOTOS, best_time  # noqa: F401  first: quiets TF, puts the checkout on sys.path

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


def peak_gflops(n=2048, repeats=5):
    a = tf.random.normal([n, n])
    b = tf.random.normal([n, n])
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    return 2 * n**3 / best_time(lambda: float(matmul()), repeats) / 1e9


def smooth_image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    return (tf.image.resize(rng.random((h // 8 + 1, w // 8 + 1, 3)), [h, w], "bicubic").numpy()
            .clip(0, 1) * 255).round().astype(np.uint8)


def main(argv):
    del argv
    s, h, w = FLAGS.scale, FLAGS.height, FLAGS.width
    lr = smooth_image(h, w)
    out_mp = h * s * w * s / 1e6
    peak = peak_gflops()
    print(f"input {w}x{h} -> x{s} = {out_mp:.2f} MP output; measured peak {peak:.1f} GFLOP/s "
          f"(float32 matmul), {tf.config.threading.get_intra_op_parallelism_threads() or 'all'}"
          f" intra-op threads")
    lr01 = tf.constant(lr / 255.0, tf.float32)
    t = best_time(lambda: pipelines.bicubic_upscale(lr01, s).numpy(), FLAGS.repeats)
    print(f"{'bicubic (baseline)':<26} {out_mp / t:8.2f} MP/s")
    fsrcnn = sr.fsrcnn(scale=s)
    runs = [("srcnn 9-1-5", sr.srcnn(scale=s), {}),
            ("srcnn 9-5-5", sr.srcnn_955(scale=s), {}),
            ("fsrcnn, as trained", fsrcnn, {"fast": False, "tile": 512}),
            ("fsrcnn, fast", fsrcnn, {}),
            ("sr_autoencoder", sr.sr_autoencoder(scale=s), {})]
    rates = {}
    for name, model, kwargs in runs:
        upscaler = Upscaler(model, **kwargs)
        macs = sr.multiply_adds_per_output_pixel(model)
        t = best_time(lambda u=upscaler: u.upscale(lr), FLAGS.repeats)
        rates[name] = out_mp / t
        floor = peak * 1e9 / (2 * macs) / 1e6
        print(f"{name:<26} {rates[name]:8.2f} MP/s  {macs:9.1f} mult-adds/pixel  floor "
              f"{floor:8.2f} MP/s  fraction {rates[name] / floor:6.1%}")
    macs = {name: sr.multiply_adds_per_output_pixel(model) for name, model, _ in runs}
    for other in ("srcnn 9-1-5", "srcnn 9-5-5"):
        print(f"FSRCNN speed-up over {other}: as trained "
              f"{rates['fsrcnn, as trained'] / rates[other]:.1f}x, fast "
              f"{rates['fsrcnn, fast'] / rates[other]:.1f}x (mult-adds ratio "
              f"{macs[other] / macs['fsrcnn, fast']:.1f}x)")
    frame = smooth_image(240, 320, seed=1)
    for name, kwargs in (("as trained", {"fast": False, "tile": 512}), ("fast", {})):
        upscaler = Upscaler(sr.fsrcnn(scale=3), **kwargs)
        t = best_time(lambda u=upscaler: u.upscale(frame), max(FLAGS.repeats, 5))
        print(f"video frame 320x240 -> 960x720 (x3), FSRCNN {name}: {1 / t:6.1f} frames/s "
              f"(the FSRCNN paper: 24 fps, real time)")


if __name__ == "__main__":
    app.run(main)
