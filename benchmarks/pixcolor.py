r"""PixColor's sampling speed on this CPU: seconds per 28x28 chroma sample with koala's cached
sampler (the vertical stack once per row, the horizontal stack on one row per pixel) against
the plain loop that reruns the whole PixelCNN for every pixel (the baseline), then the whole
colorization (embedder, conditioning, sampling, refinement, full-resolution output).

  python benchmarks/pixcolor.py [--model=pixcolor] [--samples=1,4] [--photo=PATH]

Both samplers draw the same samples from the same seed (tests/test_pixcolor.py); the figures
are the best of --repeats runs after a warm-up.
"""

import os

from common import DEFAULT_PHOTOS, best_time  # noqa: F401  first: quiets TF, puts the checkout on sys.path

# isort: split

import numpy as np
import tensorflow as tf
from absl import app, flags

from koala.ops import images
from koala.tasks.colorize.inference import Colorizer

flags.DEFINE_string("model", "pixcolor", "A PixColor .keras file or preset name.")
flags.DEFINE_list("samples", ["1", "4"], "Samples per call.")
flags.DEFINE_integer("repeats", 2, "Timed repetitions (best is kept).")
flags.DEFINE_string("photo", "data/samples/Wine_by_Jakkub_Mede.jpg", "Photo for the "
                    "whole-colorization figure.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    colorizer = Colorizer.load(FLAGS.model)
    if not colorizer.is_pixcolor:
        raise SystemExit(f"{FLAGS.model} is not a PixColor model")
    model, cfg = colorizer.model, colorizer.model.config
    print(f"PixColor: {cfg.pixel_layers} gated layers of {cfg.pixel_filters}, "
          f"{cfg.grid}x{cfg.grid} chroma, {cfg.chroma_levels} bins; "
          f"{os.environ.get('TF_NUM_INTRAOP_THREADS') or 'all'} intra-op threads")
    size = cfg.image_size
    rng = np.random.default_rng(0)
    inputs = {"l": tf.constant(rng.uniform(-1, 1, (1, size, size, 1)), tf.float32),
              "embedding": tf.constant(rng.uniform(0, 1, (1, cfg.embedding_dim)), tf.float32)}
    for n in (int(s) for s in FLAGS.samples):
        cached = best_time(lambda n=n: model.sample_bins(inputs, 0, n).numpy(), FLAGS.repeats)
        naive = best_time(lambda n=n: model.sample_bins(inputs, 0, n, naive=True).numpy(),
                          FLAGS.repeats)
        print(f"{n} sample(s) per call: cached {cached / n:7.3f} s/sample   plain loop "
              f"(baseline) {naive / n:7.3f} s/sample   speed-up {naive / cached:5.1f}x")
    photo = images.load_image(FLAGS.photo)
    h, w = photo.rgb.shape[:2]
    for n in (int(s) for s in FLAGS.samples):
        t = best_time(lambda n=n: colorizer.colorize_samples(photo, n, 0), FLAGS.repeats)
        print(f"colorize {w}x{h}, {n} sample(s): {t / n:7.3f} s/sample (embedder, sampling, "
              f"refinement, full-resolution output)")


if __name__ == "__main__":
    app.run(main)
