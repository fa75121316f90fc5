r"""Colorize latency on this CPU: one 1024 x 768 photo through
``koala.tasks.colorize.inference.Colorizer.colorize`` (embedder + fusion network + the
full-resolution output), next to the gray baseline measured in the same run and the seed's
claim of under 50 ms per image on a GPU.

  python benchmarks/colorize.py [--model=fusion_mobilenet|random] [--image_size=224] \
      [--embedder=mobilenet] [--repeats=5]

  model        --model: a colorize preset or .keras file (default: the recommended preset,
               with the embedder it ships), or "random": the paper-size fusion colorizer
               (koala.tasks.colorize.models.fusion.fusion) at --image_size with the
               --embedder, random weights (speed does not depend on them)
  embed        the embedder alone on the fitted square (part of "colorize")
  colorize     the whole call, best of --repeats after one warm-up
  gray         the gray baseline (L* with ab = 0) of the same photo: the floor any colorizer
               pays for the colour conversions at full resolution
"""

import time

from common import REPO  # first: quiets TF, puts the checkout on sys.path

# isort: split

import numpy as np
from absl import app, flags
from PIL import Image

from koala import presets
from koala.ops.embedder import Embedder
from koala.tasks.colorize.inference import Colorizer, gray_baseline
from koala.tasks.colorize.models.fusion import fusion

flags.DEFINE_string("photo",
                    str(REPO / "data" / "samples" / "aitzgorri_by_Aitzol_Berasategi.jpg"),
                    "The photo, resized to 1024 x 768.")
flags.DEFINE_string("model", None, "A colorize preset or .keras file, or random (default: "
                    "the recommended colorize preset).")
flags.DEFINE_string("embedder", "mobilenet", "random: embedder (mobilenet or "
                    "inception_resnet_v2).")
flags.DEFINE_integer("image_size", 224, "random: the network's square side.")
flags.DEFINE_integer("repeats", 5, "Timed repetitions (best is kept).")
FLAGS = flags.FLAGS
SEED_CLAIM_MS = 50  # the seed: "under 50 ms per image on a GPU"


def best_ms(fn, repeats: int) -> float:
    fn()  # warm-up: traces and allocations
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main(_):
    rgb = np.asarray(Image.open(FLAGS.photo).convert("RGB").resize((1024, 768), Image.BICUBIC))
    if FLAGS.model == "random":
        embedder = Embedder(FLAGS.embedder, "none")
        model = fusion(image_size=FLAGS.image_size, embedder=FLAGS.embedder,
                       embedder_weights="none", embedding_dim=embedder.dim)
        colorizer = Colorizer(model, embedder)
        name = f"fusion {FLAGS.image_size} px, random weights"
    else:
        name = FLAGS.model or presets.default("colorize")
        colorizer = Colorizer.load(name)
        embedder, model = colorizer.embedder, colorizer.model
        name = f"{name} ({model.config.image_size} px)"
    square = embedder.fit(rgb)[None]
    gray_ms = best_ms(lambda: gray_baseline(rgb), FLAGS.repeats)
    embed_ms = best_ms(lambda: embedder.embed(square), FLAGS.repeats)
    colorize_ms = best_ms(lambda: colorizer.colorize(rgb), FLAGS.repeats)
    print(f"1024x768 photo, {name}, {model.count_params():,} parameters, "
          f"{embedder.name} embedder, best of {FLAGS.repeats}")
    print(f"{'gray baseline':>16} {gray_ms:8.1f} ms")
    print(f"{'embedder':>16} {embed_ms:8.1f} ms")
    print(f"{'colorize':>16} {colorize_ms:8.1f} ms   (seed's claim on a GPU: < {SEED_CLAIM_MS} ms)")


if __name__ == "__main__":
    app.run(main)
