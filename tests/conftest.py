"""Shared test fixtures: tiny images and record sets built in tmp_path, nothing downloaded.

The model checks (config and .keras round trips, gradients, bfloat16) are in model_checks.py.
"""

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


def smooth_image(height, width, seed=0):
    """A colourful, smooth uint8 (H, W, 3) image: gradients plus low-frequency blobs."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    chans = []
    for _ in range(3):
        fy, fx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
        chans.append(0.5 + 0.45 * np.sin(fy * y / height * 3.1 + fx * x / width * 3.1 + phase))
    return (np.stack(chans, -1) * 255).round().astype(np.uint8)


def write_image(path, array, **save_kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save_kwargs)
    return path


def make_photo_folder(root, n_good=6, with_bad=True):
    """n_good small colour images in nested folders with mixed extensions, plus bad files.

    Returns (good relative names, bad relative names).
    """
    exts = [".jpg", ".PNG", ".webp", ".tif", ".bmp", ".JPEG"]
    good = []
    for i in range(n_good):
        h, w = [(48, 64), (64, 40), (40, 40), (33, 57), (64, 64), (50, 30)][i % 6]
        rel = f"{'sub/' if i % 2 else ''}img{i:02d}{exts[i % len(exts)]}"
        kwargs = {"quality": 95} if rel.lower().endswith((".jpg", ".jpeg")) else {}
        write_image(root / rel, smooth_image(h, w, seed=i), **kwargs)
        good.append(rel)
    bad = []
    if with_bad:
        (root / "empty.jpg").write_bytes(b"")
        (root / "text.png").write_text("not an image at all")
        data = (root / good[0]).read_bytes()
        (root / "sub" / "truncated.jpg").write_bytes(data[: len(data) // 2])
        (root / "notes.txt").write_text("ignored: not an image extension")
        bad = ["empty.jpg", "sub/truncated.jpg", "text.png"]
    return sorted(good), sorted(bad)


@pytest.fixture(scope="session")
def mobilenet_none():
    """One random-weight MobileNet embedder, shared by the whole session (built once)."""
    from koala.ops.embedder import Embedder

    return Embedder("mobilenet", "none", batch_size=4)



def cli_main(tool: str, *args) -> int:
    """``koala.cli.<tool>.main`` in-process on ``python -m koala.<tool> ARGS`` (a fresh
    FlagValues each call): the exit status the command would end with."""
    import importlib

    from koala.cli import common

    module = importlib.import_module(f"koala.cli.{tool}")
    return common.call(module.main, [f"koala.{tool}", *map(str, args)])


@contextlib.contextmanager
def lock_holder(folder):
    """Another process holding ``folder``'s lock (:func:`koala.core.io.exclusive`), as a
    running build or training run does; yields its ``Popen``. ``holder.kill()`` releases it
    the way a crash does."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom koala.core.io import exclusive\n"
         "with exclusive(sys.argv[1], 'x'):\n    print('held', flush=True)\n"
         "    time.sleep(120)\n", str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()
