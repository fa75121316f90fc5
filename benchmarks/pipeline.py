r"""Does the colorization pipeline keep the fusion model fed? Pipeline examples/s against the
fusion model's (SPEC §1) training examples/s on this machine.

  python benchmarks/pipeline.py [--records=DIR] [--batch_size=8]

  pipeline  ``koala.data.pipelines.colorization_dataset`` (training mode: shuffle, decode,
            flip, batch, prefetch) iterated alone, no model.
  model     ``model.train_on_batch`` of the paper-size fusion model (224 px, 1000-d
            embedding, Adam, MSE) on one in-memory batch: the training speed with no input
            cost at all.

The pipeline must deliver at least 10x what the model consumes, so input never limits
training. Records are built first (MobileNet embedder, random weights: speed does not
depend on the weights) unless --records points at existing ones.
"""

import os
import tempfile
import time

from common import DEFAULT_PHOTOS  # first: quiets TF, puts the checkout on sys.path

# isort: split

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from koala.data import build, pipelines
from koala.tasks.colorize.models import fusion

flags.DEFINE_string("records", None, "Existing colorization records (default: build them).")
flags.DEFINE_string("input_dir", DEFAULT_PHOTOS,
                    "Images to build records from when --records is not given.")
flags.DEFINE_integer("batch_size", 8, "Batch size for both measurements.")
flags.DEFINE_integer("pipeline_batches", 60, "Batches timed for the pipeline.")
flags.DEFINE_integer("model_steps", 6, "Training steps timed for the model.")
FLAGS = flags.FLAGS


def pipeline_rate(records, batch_size, batches):
    ds = pipelines.colorization_dataset(records, batch_size=batch_size, training=True,
                                        repeat=True, seed=0)
    it = iter(ds)
    for _ in range(5):  # warm up: threads, autotuning, shuffle buffer
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        x, ab = next(it)
    _ = float(tf.reduce_sum(ab))  # make sure the last batch is materialised
    return batches * batch_size / (time.perf_counter() - t)


def model_rate(batch_size, steps):
    model = fusion.fusion()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    rng = np.random.default_rng(0)
    x = {"l": rng.uniform(-1, 1, (batch_size, 224, 224, 1)).astype(np.float32),
         "embedding": rng.dirichlet(np.ones(1000), batch_size).astype(np.float32)}
    y = rng.uniform(-0.3, 0.3, (batch_size, 224, 224, 2)).astype(np.float32)
    model.train_on_batch(x, y)  # trace and compile
    t = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - t)


def main(argv):
    del argv
    records = FLAGS.records
    if records is None:
        records = tempfile.mkdtemp(prefix="koala-bench-pipeline-")
        cfg = build.BuildConfig(input_dir=FLAGS.input_dir, output_dir=records,
                                groups=("color",), embedder="mobilenet",
                                embedder_weights="none", val_fraction=0.0, progress=False)
        result = build.build(cfg)
        print(f"built {sum(result.manifest['counts'].values())} examples from "
              f"{FLAGS.input_dir} into {records}")
    print(f"batch size {FLAGS.batch_size}, {os.cpu_count()} CPU cores, TF {tf.__version__}")
    data = pipeline_rate(records, FLAGS.batch_size, FLAGS.pipeline_batches)
    print(f"colorization pipeline:         {data:9.1f} examples/s")
    train = model_rate(FLAGS.batch_size, FLAGS.model_steps)
    print(f"fusion model training (fit):   {train:9.1f} examples/s")
    print(f"ratio pipeline/model:          {data / train:9.1f}x  (target >= 10x)")


if __name__ == "__main__":
    app.run(main)
