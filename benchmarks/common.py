"""What every benchmark script shares: run from a checkout, quiet TF, the default photos."""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # import koala from the checkout without installing it

_SHARED_TRAIN = REPO.parent / "shared" / "photos" / "train"
# The project's 36 training photos when the shared folder sits beside the checkout, else the
# built-in samples.
DEFAULT_PHOTOS = str(_SHARED_TRAIN if _SHARED_TRAIN.is_dir() else REPO / "data" / "samples")


def best_time(fn, repeats):
    """The best wall time of ``repeats`` calls of ``fn``, after one warm-up call (tracing,
    thread pools)."""
    import time

    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
