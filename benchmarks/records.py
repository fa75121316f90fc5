r"""build_records throughput against its floor: the embedder's own batched throughput.

  python benchmarks/records.py [--input_dir=DIR] [--embedder=inception_resnet_v2]

Both figures use the same images and the same already-built embedder (so model construction
is excluded from both):

  embedder  ``Embedder.embed`` on pre-fitted squares, in its batch size: the embedding cost
            alone, which no build can beat.
  build     ``koala.data.build.build`` on the image files: decode, fit, Lab, PNG, embed,
            serialise, write, checksum.

The ratio build/embedder says how much the non-embedding stages cost; it should be >= 0.8.
Each image is linked into the benchmark folder ``--copies`` times (default 3), so both figures
are steady-state rates rather than start-up dominated (36 photos fill barely 2 batches).
The per-image time of each non-embedding stage is printed too (thread-seconds: decoding runs
in worker threads, overlapped with the embedder).
"""

import os
import pathlib
import shutil
import tempfile
import time

from common import DEFAULT_PHOTOS  # first: quiets TF, puts the checkout on sys.path

# isort: split

import numpy as np
from absl import app, flags

from koala.data import build
from koala.ops.embedder import EMBEDDERS, Embedder
from koala.ops.images import find_images, load_image

flags.DEFINE_string("input_dir", DEFAULT_PHOTOS,
                    "Images to build.")
flags.DEFINE_enum("embedder", "inception_resnet_v2", sorted(EMBEDDERS), "Embedder.")
flags.DEFINE_string("embedder_weights", "none", "Weights (speed does not depend on them).")
flags.DEFINE_integer("batch_size", 16, "Embedder batch size.")
flags.DEFINE_integer("repeats", 2, "Timed repetitions of each measurement (best is kept).")
flags.DEFINE_integer("copies", 3, "Times each image appears in the benchmark folder.")
FLAGS = flags.FLAGS


def time_embedder(embedder, squares, repeats):
    embedder.embed(squares[: embedder.batch_size])  # trace and warm up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        embedder.embed(squares)
        best = min(best, time.perf_counter() - t)
    return len(squares) / best


def time_build(embedder, input_dir, repeats):
    best, result = float("inf"), None
    for _ in range(repeats):
        out = tempfile.mkdtemp(prefix="koala-bench-records-")
        cfg = build.BuildConfig(input_dir=input_dir, output_dir=out,
                                embedder=embedder.name, embedder_weights=embedder.weights,
                                batch_size=embedder.batch_size, progress=False)
        t = time.perf_counter()
        result = build.build(cfg, embedder=embedder)
        elapsed = time.perf_counter() - t
        shutil.rmtree(out)
        if elapsed < best:
            best, best_result = elapsed, result
    n = sum(best_result.manifest["counts"].values())
    return n / best, best_result, n


def linked_copies(input_dir, copies):
    """A temp folder holding each image ``copies`` times (symlinks: no extra disk)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="koala-bench-input-"))
    for path in find_images(input_dir):
        for c in range(copies):
            (root / f"{c}_{path.name}").symlink_to(path.resolve())
    return str(root)


def main(argv):
    del argv
    input_dir = linked_copies(FLAGS.input_dir, FLAGS.copies)
    paths = find_images(input_dir)
    print(f"images: {len(paths)} ({FLAGS.copies} x each of {FLAGS.input_dir})")
    print(f"embedder: {FLAGS.embedder} (weights {FLAGS.embedder_weights}), "
          f"batch {FLAGS.batch_size}, {os.cpu_count()} CPU cores")
    embedder = Embedder(FLAGS.embedder, FLAGS.embedder_weights, batch_size=FLAGS.batch_size)
    squares = np.stack([embedder.fit(load_image(p).rgb) for p in paths])
    embed_rate = time_embedder(embedder, squares, FLAGS.repeats)
    # Warm the builder's own traced functions on a tiny build first.
    time_build(embedder, input_dir, 1)
    build_rate, result, n = time_build(embedder, input_dir, FLAGS.repeats)
    shutil.rmtree(input_dir)
    print(f"embedder alone (batched):  {embed_rate:7.2f} images/s")
    print(f"build_records (end to end): {build_rate:7.2f} images/s")
    print(f"ratio build/embedder:       {build_rate / embed_rate:7.3f}  (target >= 0.8)")
    print("per-image time of each stage (thread-seconds, ms):")
    for stage, seconds in sorted(result.stage_seconds.items()):
        note = "  <- embedding" if stage == "embed" else ""
        print(f"  {stage:<11} {1000 * seconds / n:8.2f}{note}")


if __name__ == "__main__":
    app.run(main)
