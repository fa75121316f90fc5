r"""Fusion training speed on this machine: float32 vs mixed_bfloat16, and koala.cli.train's step
rate from records vs a bare ``model.fit`` on in-memory tensors of the same model.

  python benchmarks/train.py [--image_size=224] [--batch_size=8] [--steps=24]

  bare fit     ``model.fit`` on in-memory numpy arrays: no input pipeline, no callbacks.
  koala.cli.train  ``koala.core.trainer.train`` from TFRecords (decode, shuffle, flip, prefetch)
  with
               all its callbacks (backup, CSV, checkpoints, TensorBoard).

Step rates are timed inside an epoch (from the end of its first step to the end of its last),
so both exclude tracing and the once-per-epoch work (checkpoint saves, validation); that
per-epoch cost is printed separately. The ratio koala.cli.train / bare should be >= 0.95.
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

from koala import registry
from koala.data import build
from koala.tasks.colorize.models import fusion

flags.DEFINE_string("input_dir", DEFAULT_PHOTOS,
                    "Images for the records.")
flags.DEFINE_integer("image_size", 224, "Model and record size (SPEC §1: 224).")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_integer("steps", 24, "Timed steps per measurement.")
FLAGS = flags.FLAGS


class StepTimer(keras.callbacks.Callback):
    """Times the steps of the last epoch, from the end of its first step to its last."""

    def on_epoch_begin(self, epoch, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end = time.perf_counter()

    def steps_per_second(self):
        return (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])


def bare_fit(precision, batch_size, steps, size):
    keras.mixed_precision.set_global_policy(precision)
    try:
        model = fusion.fusion(image_size=size)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        rng = np.random.default_rng(0)
        n = batch_size * steps
        x = {"l": rng.uniform(-1, 1, (n, size, size, 1)).astype(np.float32),
             "embedding": rng.dirichlet(np.ones(1000), n).astype(np.float32)}
        y = rng.uniform(-0.3, 0.3, (n, size, size, 2)).astype(np.float32)
        timer = StepTimer()
        model.fit(x, y, batch_size=batch_size, epochs=2, callbacks=[timer], verbose=0)
        return timer.steps_per_second()
    finally:
        keras.mixed_precision.set_global_policy("float32")


def koala_train(records, batch_size, steps):
    workdir = tempfile.mkdtemp(prefix="koala-bench-train-")
    cfg = registry.configs(workdir=workdir, train_records=records, model="fusion",
                               epochs=2, steps_per_epoch=steps, batch_size=batch_size,
                               mixed_precision="float32", image_grid_count=2)
    timer = StepTimer()
    start = time.perf_counter()
    history = registry.train(*cfg, extra_callbacks=[timer])
    total = time.perf_counter() - start
    del history
    return timer.steps_per_second(), total


def main(argv):
    del argv
    size, batch, steps = FLAGS.image_size, FLAGS.batch_size, FLAGS.steps
    print(f"fusion model (SPEC §1) at {size} px, batch {batch}, {steps} timed steps, "
          f"{os.cpu_count()} CPU cores, TF {tf.__version__}, Keras {keras.__version__}")
    records = tempfile.mkdtemp(prefix="koala-bench-train-records-")
    cfg = build.BuildConfig(input_dir=FLAGS.input_dir, output_dir=records, groups=("color",),
                            image_size=size, embedder="mobilenet", embedder_weights="none",
                            val_fraction=0.1, progress=False)
    build.build(cfg)
    f32 = bare_fit("float32", batch, steps, size)
    bf16 = bare_fit("mixed_bfloat16", batch, steps, size)
    print(f"bare model.fit, float32:         {f32 * batch:7.2f} images/s ({f32:.3f} steps/s)")
    print(f"bare model.fit, mixed_bfloat16:  {bf16 * batch:7.2f} images/s ({bf16:.3f} steps/s)"
          f"  = {bf16 / f32:.2f}x float32")
    rate, total = koala_train(records, batch, steps)
    print(f"koala.train from records, float32: {rate * batch:5.2f} images/s ({rate:.3f} steps/s)")
    print(f"ratio koala.cli.train / bare fit:     {rate / f32:7.3f}  (target >= 0.95)")
    print(f"(koala.cli.train wall time for 2 epochs x {steps} steps incl. tracing, validation and "
          f"checkpoints: {total:.1f} s)")


if __name__ == "__main__":
    app.run(main)
