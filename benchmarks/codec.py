r"""Codec speed and memory on this CPU: ``koala.codec encode`` and ``decode`` of one photo of
2000 x 1500, each a fresh process as a user runs it, next to the luma baseline in this one.

  python benchmarks/codec.py [--model=codec] [--width=2000 --height=1500] [--tile=...]

  encode, decode  wall seconds of the whole command (Python and TensorFlow start-up, model
                  load, tiles, PNG write) and its peak resident memory (the child's
                  ru_maxrss from wait4)
  model only      the part of that which is the network: the same command on a 64 x 48 image,
                  subtracted (start-up and load cost the same)
  luma            the baseline a codec replaces: BT.601 luma of the photo and its 8-bit PNG
                  written, in this process

The photo is a sample photo resized (bicubic) to the size asked.
"""

import io
import os
import subprocess
import sys
import tempfile
import time

from common import REPO  # first: quiets TF, puts the checkout on sys.path

# isort: split

import numpy as np
from absl import app, flags
from PIL import Image

flags.DEFINE_string("model", "codec", "A codec preset name or .keras path.")
flags.DEFINE_string("photo",
                    str(REPO / "data" / "samples" / "aitzgorri_by_Aitzol_Berasategi.jpg"),
                    "The colour photo, resized to --width x --height.")
flags.DEFINE_integer("width", 2000, "Photo width.")
flags.DEFINE_integer("height", 1500, "Photo height.")
flags.DEFINE_integer("tile", None, "koala.codec --tile (default: the tool's).")
FLAGS = flags.FLAGS


def command(*args) -> tuple[float, float]:
    """Runs ``python -m koala.codec ARGS``; (wall seconds, peak RSS in MB)."""
    extra = [f"--tile={FLAGS.tile}"] if FLAGS.tile else []
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "koala.codec", *args, "--model", FLAGS.model,
                             "--noprogress", *extra], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"koala.codec {' '.join(args)} failed:\n{err}")
    return wall, usage.ru_maxrss / 1024


def main(_):
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name, size in (("photo", (FLAGS.width, FLAGS.height)), ("tiny", (64, 48))):
            rgb = Image.open(FLAGS.photo).convert("RGB").resize(size, Image.BICUBIC)
            folder = os.path.join(tmp, name)
            os.makedirs(folder)
            path = os.path.join(folder, f"{name}.png")
            rgb.save(path)
            enc = command("encode", path, "-o", os.path.join(tmp, name + "_gray"))
            gray = os.path.join(tmp, name + "_gray", f"{name}_gray.png")
            dec = command("decode", gray, "-o", os.path.join(tmp, name + "_restored"))
            rows.append((name, size, enc, dec))
        start = time.perf_counter()
        rgb = np.asarray(Image.open(os.path.join(tmp, "photo", "photo.png")), np.float32)
        luma = np.round(rgb @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.uint8)
        Image.fromarray(luma).save(io.BytesIO(), format="PNG")
        t_luma = time.perf_counter() - start
    print(f"model {FLAGS.model}, tile {FLAGS.tile or 'default'}")
    print(f"{'image':>12} {'encode s':>9} {'peak MB':>8} {'decode s':>9} {'peak MB':>8}")
    for _, size, enc, dec in rows:
        print(f"{size[0]:>5}x{size[1]:<6} {enc[0]:9.2f} {enc[1]:8.0f} {dec[0]:9.2f} "
              f"{dec[1]:8.0f}")
    (_, _, enc, dec), (_, _, enc0, dec0) = rows
    print(f"model only ({FLAGS.width}x{FLAGS.height} minus 64x48): encode "
          f"{enc[0] - enc0[0]:.2f} s, decode {dec[0] - dec0[0]:.2f} s")
    print(f"luma baseline (BT.601 + 8-bit PNG, in process): {t_luma:.2f} s")


if __name__ == "__main__":
    app.run(main)
