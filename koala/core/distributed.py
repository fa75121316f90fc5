"""Multi-worker training: ``--distribute=multi_worker`` (tf.distribute.MultiWorkerMirroredStrategy).

Keras 3.15's ``model.fit`` fails under MultiWorkerMirroredStrategy (keras#20585: "Attempt to
convert a value (PerReplica...) ... to a Tensor"), so this mode runs :func:`fit`, a small loop
that drives the model's own ``train_step`` through ``strategy.run`` and the ordinary Keras
callbacks. Everything else (model, optimizer, loss, callbacks, checkpoints) is what
``model.fit`` would use; when a later Keras fixes the bug, ``koala.core.trainer.train`` can call
``model.fit`` again by changing the one line that picks :func:`fit`.

The cluster comes from ``TF_CONFIG`` (see the README's "Scaling out"). Each worker:

- reads its own records *by file*: shard files ``i, i + N, i + 2N, ...`` of the sorted list
  (:func:`shard_files`), so there must be at least as many train shards as workers;
- batches ``global_batch / replicas`` examples per replica (``--batch_size`` is global);
- keeps its state in the run's workdir, which must be shared by all workers (a network
  filesystem or a bucket): the chief writes checkpoints, backup and logs there; the other
  workers take part in every save (saving reads variables that may need a collective) but
  write into a temporary folder that is deleted at the end;
- on start, restores the last epoch from the chief's backup, so re-launching every worker
  with the same command resumes the run.

A worker that loses a peer fails within about a minute (the strategy's health check, plus a
timeout on every collective) with :class:`WorkerLostError` instead of hanging.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile

import keras
import tensorflow as tf

from koala.core.errors import KoalaError

log = logging.getLogger(__name__)


class WorkerLostError(KoalaError):
    """A peer of this worker stopped answering (killed, crashed or unreachable)."""


def cluster_spec() -> dict:
    """TF_CONFIG, parsed and checked; raises KoalaError with the expected form otherwise."""
    example = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}\'')
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise KoalaError(f"--distribute=multi_worker needs the TF_CONFIG environment variable, "
                         f"e.g. {example}")
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise KoalaError(f"TF_CONFIG is not valid ({type(e).__name__}: {e}); expected e.g. "
                         f"{example}") from None
    if task.get("type") not in ("worker", "chief"):
        raise KoalaError(f"TF_CONFIG task type {task.get('type')!r}: koala runs 'worker' "
                         f"tasks (worker 0 is the chief)")
    if task.get("type") == "worker" and not 0 <= index < len(workers):
        raise KoalaError(f"TF_CONFIG task index {index} is outside the {len(workers)} workers")
    return config


def local_tf_configs(workers: int) -> list[str]:
    """TF_CONFIG values for ``workers`` worker processes on this machine (127.0.0.1, free
    ports picked by the OS), for tests and benchmarks; index i is worker i."""
    sockets = [socket.socket() for _ in range(workers)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        cluster = {"worker": [f"127.0.0.1:{sock.getsockname()[1]}" for sock in sockets]}
    finally:
        for sock in sockets:
            sock.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
            for i in range(workers)]


def strategy(timeout_s: float = 120.0) -> tf.distribute.MultiWorkerMirroredStrategy:
    """The strategy for this worker. Must run before any other TensorFlow op in the process.

    ``timeout_s`` bounds every collective (all-reduce, broadcast): a step that waits longer
    for a peer fails instead of hanging.
    """
    cluster_spec()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def is_chief(strat) -> bool:
    """Worker 0 (or the 'chief' task) writes the run's files."""
    resolver = strat.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_index(strat) -> tuple[int, int]:
    """(this worker's index, number of workers); the chief task, if any, counts as 0."""
    resolver = strat.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    chiefs = len(spec.get("chief", []))
    count = chiefs + len(spec.get("worker", []))
    if resolver.task_type == "chief":
        return 0, count
    return resolver.task_id + chiefs, count


def shard_files(files, index: int, count: int) -> list:
    """The record files worker ``index`` of ``count`` reads: every count-th, from ``index``."""
    files = sorted(files)
    if len(files) < count:
        raise KoalaError(f"{len(files)} train shard(s) cannot be split by file over {count} "
                         f"workers: rebuild the records with a smaller --examples_per_shard "
                         f"so there are at least {count} shards")
    return files[index::count]


def worker_dir(workdir: str, chief: bool) -> str:
    """Where this worker writes: the workdir for the chief, a fresh temporary folder otherwise,
    seeded with the chief's backup so every worker resumes from the same epoch."""
    if chief:
        return workdir
    scratch = tempfile.mkdtemp(prefix="koala-worker-")
    backup = os.path.join(workdir, "backup")
    if tf.io.gfile.isdir(backup):
        shutil.copytree(backup, os.path.join(scratch, "backup"))
    return scratch


def remove_worker_dir(path: str, workdir: str) -> None:
    if os.path.abspath(path) != os.path.abspath(workdir):
        shutil.rmtree(path, ignore_errors=True)


def _step_function(model: keras.Model, strat):
    """One distributed step: ``model.train_step`` on every replica, logs averaged over them
    (every replica holds an equal share of the global batch)."""

    @tf.function
    def step(iterator):
        logs = strat.run(model.train_step, args=(next(iterator),))
        return {k: strat.reduce(tf.distribute.ReduceOp.MEAN, v, axis=None)
                for k, v in logs.items()}

    return step


def _replica_spec(spec):
    """One replica's TensorSpec (a PerReplicaSpec when a worker has several devices)."""
    components = getattr(spec, "_component_specs", None)
    return components[0] if components and not isinstance(spec, tf.TensorSpec) else spec


def fit(model: keras.Model, dataset, *, strategy, epochs: int, steps_per_epoch: int,
        callbacks=(), verbose: int = 2) -> keras.callbacks.History:
    """``model.fit`` for MultiWorkerMirroredStrategy (keras#20585): the same callbacks, the
    same ``train_step``; ``dataset`` is a distributed dataset (``strategy.
    distribute_datasets_from_function``) that repeats, so every worker runs
    ``steps_per_epoch`` steps. Returns the History. No validation (see the README)."""
    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps_per_epoch)
    with strategy.scope():  # create every variable (optimizer, loss trackers) before tracing
        model._symbolic_build(data_batch=tf.nest.map_structure(
            _replica_spec, dataset.element_spec))
    step = _step_function(model, strategy)
    iterator = iter(dataset)
    model.stop_training = False
    callback_list.on_train_begin()
    start = getattr(model, "_initial_epoch", None) or 0  # set by BackupAndRestore
    logs = {}
    try:
        for epoch in range(start, epochs):
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for batch in range(steps_per_epoch):
                callback_list.on_train_batch_begin(batch)
                logs = {k: float(v) for k, v in step(iterator).items()}
                callback_list.on_train_batch_end(batch, logs)
                if model.stop_training:
                    break
            callback_list.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.AbortedError) as e:
        message = " ".join(str(e.message).split())[:300]
        raise WorkerLostError(
            f"lost contact with another worker ({type(e).__name__}: {message}); the run "
            f"stopped — re-launch every worker with the same command to resume from the "
            f"last finished epoch") from None
    callback_list.on_train_end(logs)
    return model.history
