"""Scale-out: MirroredStrategy parity on 2 logical CPUs, and 2 worker processes on 127.0.0.1
under MultiWorkerMirroredStrategy (the custom loop in koala/distributed.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from koala.core import distributed
from koala.core.errors import KoalaError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _build(out, *extra):
    cmd = [sys.executable, "data_prep/build_records.py", "--input_dir=data/samples",
           f"--output_dir={out}", "--embedder=mobilenet", "--embedder_weights=none",
           "--val_fraction=0.2", "--image_size=64", "--progress=false", *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(out)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """15 sample photos at 64 px in 4 train shards (3 examples each): 2 workers split them by
    file."""
    return _build(tmp_path_factory.mktemp("records") / "sharded", "--examples_per_shard=3")


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory):
    """The same photos in one train shard: with --shuffle_buffer=1 the order is fixed."""
    return _build(tmp_path_factory.mktemp("records") / "one")


# --- pure helpers ------------------------------------------------------------------------------


def test_shard_files_is_a_disjoint_cover():
    files = [f"train-{i:05d}-of-00005.tfrecord" for i in (3, 0, 4, 1, 2)]
    parts = [distributed.shard_files(files, i, 2) for i in range(2)]
    assert parts[0] == ["train-00000-of-00005.tfrecord", "train-00002-of-00005.tfrecord",
                        "train-00004-of-00005.tfrecord"]
    assert sorted(parts[0] + parts[1]) == sorted(files)
    with pytest.raises(KoalaError, match="examples_per_shard"):
        distributed.shard_files(files[:1], 0, 2)


def test_tf_config_is_checked(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(KoalaError, match="TF_CONFIG"):
        distributed.cluster_spec()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(KoalaError, match="not valid"):
        distributed.cluster_spec()
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}))
    with pytest.raises(KoalaError, match="outside the 2 workers"):
        distributed.cluster_spec()


def test_multi_worker_needs_steps_per_epoch(tmp_path):
    from koala import registry

    with pytest.raises(ValueError, match="steps_per_epoch"):
        registry.configs(workdir=str(tmp_path), train_records="x",
                             distribute="multi_worker")


# --- MirroredStrategy parity ------------------------------------------------------------------

PARITY = """
import json, sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
tf.config.experimental.enable_op_determinism()  # identical batches in every run
import keras
from koala import registry
from koala.core import distributed, trainer as training
from koala.data import records

ROOT, RECORDS, MODEL = sys.argv[1:4]
out = {}
def config(name, **kw):
    return registry.configs(
        workdir=f"{ROOT}/{name}", train_records=RECORDS, val_records=None, epochs=1,
        steps_per_epoch=3, batch_size=4, mixed_precision="float32", lr_boundaries=(10,),
        image_grid_count=0, shuffle_buffer=1, **kw)

models = [("srcnn_small", dict(optimizer="sgd", learning_rate=1e-2, patch_size=24,
                               patches_per_image=2)),
          ("fusion_small", dict(batch_norm=False, crop_size=32))]
# One model per process: a third MirroredStrategy in one process trips over collective
# instance keys the first two used (a TF limitation, not koala's).
for model, kw in [m for m in models if m[0] == MODEL]:
    for mode in ("none", "mirrored"):
        history = registry.train(*config(f"{model}-{mode}", model=model, distribute=mode, **kw))
        out[f"{model}/{mode}"] = history.history["loss"][-1]
    # The multi-worker loop (distributed.fit), driven by a MirroredStrategy on the same data.
    run, cfg = config(f"{model}-loop", model=model, distribute="mirrored", **kw)
    keras.utils.set_random_seed(run.seed)
    entry, task = registry.lookup(model)
    strategy = tf.distribute.MirroredStrategy()
    recs = records.resolve(RECORDS, "train")
    with strategy.scope():
        net = task.build_model(entry, run, cfg, recs)
        net.compile(optimizer=training.optimizers_lib.build(run.optimizer, run.learning_rate),
                    loss="mse")
    def dataset_fn(context):
        import dataclasses
        local = dataclasses.replace(run, batch_size=context.get_per_replica_batch_size(4))
        return task.datasets(net, local, cfg, RECORDS, None, None, None).train
    ds = strategy.distribute_datasets_from_function(dataset_fn)
    history = distributed.fit(net, ds, strategy=strategy, epochs=1, steps_per_epoch=3,
                              verbose=0)
    out[f"{model}/loop"] = history.history["loss"][-1]
print("RESULT", json.dumps(out))
"""


@pytest.mark.parametrize("model", ["srcnn_small", "fusion_small"])
def test_mirrored_and_the_multi_worker_loop_match_single_device(one_shard, tmp_path, model):
    # Identical batches in every run need a fixed order: Keras' fit under a strategy opens one
    # extra iterator over the dataset first, and a seeded shuffle reshuffles per iterator. So:
    # one shard (no file shuffle), --shuffle_buffer=1, seeded augmentation, op determinism.
    proc = subprocess.run([sys.executable, "-c", PARITY, str(tmp_path), one_shard, model],
                          capture_output=True, text=True, cwd=REPO, timeout=400,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = json.loads(proc.stdout.split("RESULT", 1)[1])
    single = losses[f"{model}/none"]
    assert np.isfinite(single) and single > 0
    # Same data, same global batch of 4 split 2 + 2: the mean loss after 3 steps agrees.
    assert losses[f"{model}/mirrored"] == pytest.approx(single, abs=1e-4), losses
    assert losses[f"{model}/loop"] == pytest.approx(single, abs=1e-4), losses


# --- two worker processes ----------------------------------------------------------------------

WORKER = """
import json, sys
import numpy as np
from koala import registry
from koala.core import trainer as training
cfg = registry.configs(
    workdir=sys.argv[1], train_records=sys.argv[2], model="fusion_small", epochs=int(sys.argv[3]),
    steps_per_epoch=3, batch_size=4, mixed_precision="float32", lr_boundaries=(1000,),
    distribute="multi_worker", collective_timeout=30)
history = registry.train(*cfg)
np.savez(sys.argv[4], *[w for w in history.model.get_weights()])
with open(sys.argv[4] + ".json", "w") as f:
    json.dump({"epochs": history.epoch, "loss": history.history["loss"]}, f)
"""


def _launch(tmp_path, workdir, records, epochs, tag):
    procs = []
    for i, tf_config in enumerate(distributed.local_tf_configs(2)):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=tf_config)
        out = tmp_path / f"{tag}-w{i}"
        with open(f"{out}.log", "w") as log:  # files, not pipes: a full pipe would block
            proc = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(workdir), records, str(epochs), str(out)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc.log = f"{out}.log"
        procs.append(proc)
    return procs


def _finish(procs, timeout):
    results = []
    try:
        for p in procs:
            p.wait(timeout=timeout)
            with open(p.log) as f:
                results.append((p.returncode, f.read()))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return results


def _weights(path):
    with np.load(f"{path}.npz") as data:
        return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]


def test_two_workers_train_identically_fail_together_and_resume(records, tmp_path):
    # 1. Two workers, 3 epochs: the loss goes down and both end with identical weights.
    run = tmp_path / "run"
    results = _finish(_launch(tmp_path, run, records, 3, "a"), timeout=240)
    for code, err in results:
        assert code == 0, err[-3000:]
    logs = [json.loads((tmp_path / f"a-w{i}.json").read_text()) for i in range(2)]
    assert logs[0]["loss"][-1] < logs[0]["loss"][0], logs
    assert logs[0]["loss"] == pytest.approx(logs[1]["loss"], abs=1e-6)
    w0, w1 = _weights(tmp_path / "a-w0"), _weights(tmp_path / "a-w1")
    assert len(w0) == len(w1) > 10
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)
    # Only the chief wrote into the workdir; the log has each epoch once.
    assert (run / "last.keras").exists() and (run / "backup").is_dir()
    rows = (run / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2"]

    # 2. Kill worker 1 mid-run: worker 0 fails with a clear error within a bounded time.
    run2 = tmp_path / "run2"
    procs = _launch(tmp_path, run2, records, 10_000, "b")
    try:
        meta = run2 / "backup" / "latest" / "training_metadata.json"
        deadline = time.time() + 180
        while not meta.exists() and time.time() < deadline and procs[0].poll() is None:
            time.sleep(0.5)
        assert meta.exists(), open(procs[0].log).read()[-3000:]
        os.killpg(procs[1].pid, signal.SIGKILL)
        killed = time.time()
        (code, err), = _finish(procs[:1], timeout=120)
        waited = time.time() - killed
    finally:
        _finish(procs, timeout=1)
    assert code != 0
    assert "lost contact with another worker" in err and "re-launch" in err, err[-2000:]
    assert waited < 120
    # 3. Re-launching both resumes from the chief's last backup.
    done = json.loads(meta.read_text())["epoch"]
    assert done >= 1
    results = _finish(_launch(tmp_path, run2, records, done + 2, "c"), timeout=240)
    for code, err in results:
        assert code == 0, err[-3000:]
    logs = [json.loads((tmp_path / f"c-w{i}.json").read_text()) for i in range(2)]
    assert logs[0]["epochs"] == logs[1]["epochs"] == [done, done + 1]
    for a, b in zip(_weights(tmp_path / "c-w0"), _weights(tmp_path / "c-w1"), strict=True):
        np.testing.assert_array_equal(a, b)
    epochs = [int(r.split(",")[0]) for r in (run2 / "log.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(done + 2))
