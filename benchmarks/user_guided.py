r"""User-guided colorization speed on this CPU: Levin et al.'s propagation at 1 MP, against the
exact sparse-LU solve measured in the same run, and Welsh et al.'s reference transfer.

  python benchmarks/user_guided.py [--photo=data/samples/Bridge_by_Sander_Klootwijk.jpg]

  scribbles   30 strokes of 3 x 40 px, each one colour read from the colour photo; Y from its
              gray version
  exact       koala.ops.levin.propagate with direct_max above the pixel count: one sparse LU
              factorisation (SuperLU) for U and V, exact to rounding. It is the baseline, run
              at the largest size it handles in seconds (0.25 MP; its time and memory grow
              much faster than the pixel count)
  cascade     the default: exact at <= 65 536 px, then coarse-to-fine with BiCGSTAB
              (relative residual 1e-3, at most 30 iterations a level); its U, V error against
              the exact solution, in grey levels (0..255 units of U, V)
  hints       koala.tasks.colorize.user.colorize_with_hints end to end (hint detection,
              YUV, propagation, uint8 output); the issue's target: under 10 s at 1 MP
  reference   koala.tasks.colorize.user.colorize_from_reference (Welsh, 200 samples)
  peak RSS    the process's peak resident memory after each step
"""

import resource
import time

from common import REPO  # first: quiets TF, puts the checkout on sys.path

# isort: split

import numpy as np
from absl import app, flags
from PIL import Image

from koala.ops import color, levin
from koala.tasks.colorize import user
from koala.tasks.colorize.inference import gray_baseline

flags.DEFINE_string("photo", str(REPO / "data" / "samples" / "Bridge_by_Sander_Klootwijk.jpg"),
                    "The colour photo (resized to each size).")
FLAGS = flags.FLAGS


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scene(width: int, height: int, seed: int = 0):
    """(colour photo, its gray, the gray with 30 colour strokes) as uint8 arrays."""
    rgb = np.asarray(Image.open(FLAGS.photo).convert("RGB").resize((width, height),
                                                                    Image.BICUBIC))
    gray = gray_baseline(rgb)
    hints = gray.copy()
    rng = np.random.default_rng(seed)
    for _ in range(30):
        r, c = rng.integers(0, height - 3), rng.integers(0, width - 40)
        hints[r:r + 3, c:c + 40] = rgb[r + 1, c + 20]
    return rgb, gray, hints


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def problem(gray, hints):
    mask = user.hint_mask(gray, hints)
    y = gray[..., 0] / 255.0
    uv = color.rgb_to_yuv(hints / 255.0).numpy()[..., 1:]
    return y, mask, uv


def main(_):
    print(f"photo {FLAGS.photo}")
    print(f"{'size':>11} {'pixels':>9} {'method':>9} {'seconds':>8} {'U,V err mean/max':>17} "
          f"{'peak RSS MB':>11}")
    _, gray, hints = scene(576, 432)
    y, mask, uv = problem(gray, hints)
    exact, t = timed(lambda: levin.propagate(y, mask, uv, direct_max=y.size + 1))
    print(f"{'576x432':>11} {y.size:>9} {'exact':>9} {t:8.2f} {'-':>17} {peak_mb():11.0f}")
    fast, t = timed(lambda: levin.propagate(y, mask, uv))
    err = np.abs(fast - exact) * 255
    print(f"{'576x432':>11} {y.size:>9} {'cascade':>9} {t:8.2f} "
          f"{err.mean():8.2f}/{err.max():<8.2f} {peak_mb():11.0f}")
    rgb, gray, hints = scene(1155, 866)
    y, mask, uv = problem(gray, hints)
    _, t = timed(lambda: levin.propagate(y, mask, uv))
    print(f"{'1155x866':>11} {y.size:>9} {'cascade':>9} {t:8.2f} {'-':>17} {peak_mb():11.0f}")
    _, t_hints = timed(lambda: user.colorize_with_hints(gray, hints))
    print(f"{'1155x866':>11} {y.size:>9} {'hints':>9} {t_hints:8.2f} {'-':>17} "
          f"{peak_mb():11.0f}")
    _, t = timed(lambda: user.colorize_from_reference(gray, rgb))
    print(f"{'1155x866':>11} {y.size:>9} {'reference':>9} {t:8.2f} {'-':>17} {peak_mb():11.0f}")
    verdict = "under" if t_hints < 10 else "OVER"
    print(f"scribble colorization of a 1 MP image: {t_hints:.2f} s, {verdict} the 10 s target")


if __name__ == "__main__":
    app.run(main)
