r"""Multi-worker step rates on this machine: 1 worker vs 2 local workers (127.0.0.1), both
through ``koala.cli.train --distribute=multi_worker`` with the same global batch.

  python benchmarks/multiworker.py [--model=fusion_small] [--batch_size=8] [--steps=20]

The 2 workers share this machine's cores, so expect no speed-up: the point is that the
multi-worker path works and what its synchronisation costs. The baseline in the same run is
``--distribute=none`` (plain ``model.fit``) on the same records. Step rates are timed from
the end of the first step of the last epoch to its last step (no tracing, no saves).
"""

import os
import subprocess
import sys
import tempfile

from common import REPO  # first: quiets TF, puts the checkout on sys.path

# isort: split

from absl import app, flags

from koala.core import distributed

flags.DEFINE_string("model", "fusion_small", "koala.cli.train model.")
flags.DEFINE_integer("batch_size", 8, "Global batch size.")
flags.DEFINE_integer("steps", 20, "Steps per epoch (2 epochs; the second is timed).")
flags.DEFINE_integer("image_size", 64, "Record image size.")
FLAGS = flags.FLAGS

WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[5])
import keras
from koala import registry
from koala.core import trainer as training

class StepTimer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.ends = []
    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

timer = StepTimer()
cfg = registry.configs(workdir=sys.argv[1], train_records=sys.argv[2], model=sys.argv[3],
    epochs=2, steps_per_epoch=int(sys.argv[4]), batch_size=int(sys.argv[6]),
    mixed_precision="float32", lr_boundaries=(100,), image_grid_count=0,
    distribute=sys.argv[7], val_records=None)
registry.train(*cfg, extra_callbacks=[timer])
print("RATE", (len(timer.ends) - 1) / (timer.ends[-1] - timer.ends[0]))
"""


def run(workers: int, records: str, root: str) -> float:
    """Steps/s of the chief (every worker runs the same steps in lockstep)."""
    mode = "none" if workers == 0 else "multi_worker"
    configs = distributed.local_tf_configs(workers) if workers else [None]
    workdir = os.path.join(root, f"run-{workers}")
    procs = []
    for tf_config in configs:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        if tf_config:
            env["TF_CONFIG"] = tf_config
        procs.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, workdir, records, FLAGS.model, str(FLAGS.steps),
             str(REPO), str(FLAGS.batch_size), mode],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outputs, strict=True):
        if p.returncode:
            raise SystemExit(f"worker failed (exit {p.returncode}): {out[-2000:]}")
    return float(outputs[0].split("RATE", 1)[1])


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as root:
        records = os.path.join(root, "records")
        subprocess.run(
            [sys.executable, str(REPO / "data_prep" / "build_records.py"),
             f"--input_dir={REPO / 'data' / 'samples'}", f"--output_dir={records}",
             "--embedder=mobilenet", "--embedder_weights=none", "--val_fraction=0",
             f"--image_size={FLAGS.image_size}", "--examples_per_shard=4", "--noprogress"],
            check=True, capture_output=True)
        print(f"{FLAGS.model}, global batch {FLAGS.batch_size}, {FLAGS.image_size} px, "
              f"{os.cpu_count()} CPU cores, float32")
        base = run(0, records, root)
        print(f"  --distribute=none (model.fit)          {base:7.2f} steps/s  (baseline)")
        for workers in (1, 2):
            rate = run(workers, records, root)
            print(f"  --distribute=multi_worker, {workers} worker(s) {rate:7.2f} steps/s  "
                  f"({rate / base:.2f}x the baseline)")


if __name__ == "__main__":
    app.run(main)
