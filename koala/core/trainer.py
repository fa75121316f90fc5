"""The generic training loop behind ``python -m koala.train`` (flags: :mod:`koala.cli.train`).

It knows no model family by name: the model's :class:`~koala.core.task.Task` (looked up in
:mod:`koala.registry`) builds the model, its datasets, its compile step, its callbacks and its
preview images; this module owns the run around them.

A run writes to its workdir:

  flags.txt           the effective flags; ``--flagfile=WORKDIR/flags.txt`` re-runs it
  run.json            the resolved config, the records it read, koala and TF versions
  best.keras          the best model so far (lowest val_loss, or loss without validation)
  last.keras          the model after the last finished epoch
  log.csv             one row per epoch (loss, val_loss, learning rate)
  tensorboard/        scalars, and an image grid of fixed validation examples every epoch
  backup/             the last two backups (weights, optimizer, epoch), ``latest/`` and
                      ``previous/``, each written whole then renamed (:class:`AtomicBackup`)

Checkpoints are written under a temporary name and renamed (:mod:`koala.core.io`), so a kill
never leaves a half-written ``.keras``. Re-running the same command after a kill resumes from
the last finished epoch with the optimizer state (``keras.callbacks.BackupAndRestore``); rows
of the CSV log for epochs that will be redone are dropped, so the log never restarts from
epoch 0 and never repeats an epoch. Re-running a finished run does nothing; raising
``--epochs`` continues it. A NaN or Inf loss stops the run with an error and keeps the backup
(``TerminateOnNaN(raise_error=True)``: the plain one lets BackupAndRestore delete it).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import os
import platform
import shutil
import sys
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

import koala
from koala import presets
from koala.core import distributed, run_config, saving
from koala.core import optimizers as optimizers_lib
from koala.core.errors import KoalaError
from koala.core.io import atomic_write, atomic_write_json, exclusive, fsync_file
from koala.core.run_config import RunConfig
from koala.core.task import ModelEntry, Task
from koala.data import records

log = logging.getLogger(__name__)


# --- learning-rate schedules -----------------------------------------------------------------


def polynomial_schedule(base_lr: float, end_lr: float, epochs: int,
                        power: float) -> Callable[[int], float]:
    """lr(epoch) = (base_lr - end_lr) * (1 - epoch / epochs) ** power + end_lr (SPEC §2: 2e-4
    to 2e-6 over the 120 epochs, power 0.9; the authors' code decays per step, this per
    epoch)."""

    def lr(epoch, current_lr=None):
        return float((base_lr - end_lr) * (1 - min(epoch, epochs) / epochs) ** power + end_lr)

    return lr


def step_schedule(base_lr: float, boundaries, decay: float) -> Callable[[int], float]:
    """lr(epoch) = base_lr * decay ** (number of boundaries <= epoch) (SPEC §1: ÷10 at
    epochs 100, 150, 200, 300)."""
    boundaries = tuple(boundaries)

    def lr(epoch, current_lr=None):
        return float(base_lr * decay ** sum(epoch >= b for b in boundaries))

    return lr


def learning_rate_schedule(run: RunConfig) -> Callable[[int], float]:
    if run.lr_schedule == "polynomial":
        return polynomial_schedule(run.learning_rate, run.lr_end, run.epochs, run.lr_power)
    return step_schedule(run.learning_rate, run.lr_boundaries, run.lr_decay)


# --- callbacks ---------------------------------------------------------------------------------


class AtomicBackup(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` whose backup a kill can never tear.

    Each backup is a folder, ``backup/latest/`` (keras' ``latest.weights.h5``, with the
    optimizer state, and ``training_metadata.json``, the epoch), written as
    ``backup/.tmp-PID/`` and renamed; the one before it is kept as ``backup/previous/`` until
    the new one is complete. A resumed run loads ``latest``, else ``previous`` (a kill between
    the two renames), else an older koala's flat ``backup/latest.weights.h5``. A backup that
    does not load falls back to the one before it with a warning; with none left the run stops
    with one line naming each file and what to do (:class:`KoalaError`), never a traceback.
    """

    LATEST, PREVIOUS = "latest", "previous"
    _FILES = ("latest.weights.h5", "training_metadata.json")

    def __init__(self, backup_dir: str):
        super().__init__(backup_dir, delete_checkpoint=False)

    def _use(self, folder: str) -> None:
        self._weights_path, self._training_metadata_path = (
            os.path.join(folder, name) for name in self._FILES)

    def on_train_begin(self, logs=None):
        if not os.path.isdir(self.backup_dir):
            return
        for name in os.listdir(self.backup_dir):  # a save that a kill interrupted
            if name.startswith(".tmp-"):
                shutil.rmtree(os.path.join(self.backup_dir, name), ignore_errors=True)
        folders = [os.path.join(self.backup_dir, n) for n in (self.LATEST, self.PREVIOUS)]
        folders = [f for f in folders if os.path.isdir(f)] or (
            [self.backup_dir] if os.path.exists(os.path.join(self.backup_dir, self._FILES[0]))
            else [])
        problems = []
        for folder in folders:
            self._use(folder)
            missing = [n for n in self._FILES if not os.path.isfile(os.path.join(folder, n))]
            try:
                if missing:
                    raise FileNotFoundError(f"no {' or '.join(missing)}")
                self._load_model()
            except Exception as e:  # h5py's OSError, keras' ValueError, bad JSON, ...
                detail = " ".join(str(e).split())[:200]
                problems.append(f"{self._weights_path}: {type(e).__name__}: {detail}")
                continue
            if problems:
                log.warning("backup damaged (%s); resumed from %s instead", problems[0], folder)
            return
        if problems:
            raise KoalaError(f"the training backup does not load ({'; '.join(problems)}); "
                             f"delete {self.backup_dir} to start this run over from epoch 0, "
                             f"or train into a new --workdir")

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        tmp = os.path.join(self.backup_dir, f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        self._use(tmp)
        super()._save_model()  # keras writes the weights and the epoch into tmp
        for name in self._FILES:
            fsync_file(os.path.join(tmp, name))
        latest, previous = (os.path.join(self.backup_dir, n) for n in (self.LATEST,
                                                                        self.PREVIOUS))
        if os.path.isdir(latest):
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(latest, previous)
        os.replace(tmp, latest)
        self._use(latest)


class Checkpoints(keras.callbacks.Callback):
    """Saves last.keras every epoch and best.keras on improvement, atomically.

    The best value so far lives in ``checkpoints.json`` so a resumed run keeps comparing
    against it instead of overwriting best.keras with a worse model.
    """

    def __init__(self, workdir: str, monitor: str):
        super().__init__()
        self.workdir = workdir
        self.monitor = monitor
        self.state_path = os.path.join(workdir, "checkpoints.json")

    def on_train_begin(self, logs=None):
        self.state = {"best": None, "best_epoch": None, "last_epoch": None}
        if os.path.exists(self.state_path):
            with open(self.state_path) as f:
                self.state = json.load(f)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        saving.save(self.model, os.path.join(self.workdir, "last.keras"))
        self.state["last_epoch"] = epoch
        if value is not None and np.isfinite(value) and (
                self.state["best"] is None or value < self.state["best"]):
            saving.save(self.model, os.path.join(self.workdir, "best.keras"))
            self.state.update(best=float(value), best_epoch=epoch)
        atomic_write_json(self.state_path, self.state)


class CSVLog(keras.callbacks.Callback):
    """One CSV row per epoch; on resume, rows of epochs that will be redone are dropped.

    Must come after BackupAndRestore in the callback list: it reads the restored epoch.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None):
        start = getattr(self.model, "_initial_epoch", None) or 0
        self.rows, self.keys = [], None
        if os.path.exists(self.path):
            with open(self.path, newline="") as f:
                reader = csv.DictReader(f)
                self.keys = reader.fieldnames
                self.rows = [r for r in reader if int(r["epoch"]) < start]

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        row["learning_rate"] = float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate))
        self.keys = self.keys or list(row)
        self.rows.append({k: row.get(k, "") for k in self.keys})
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self.keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write(self.path, text.getvalue())


class PreviewImages(keras.callbacks.Callback):
    """Writes the task's preview grid of fixed validation examples to TensorBoard each epoch
    (``render(model, examples) -> (title, uint8 (H, W, 3))``, :meth:`Task.preview`)."""

    def __init__(self, log_dir: str, examples, render):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.examples = examples
        self.render = render

    def on_epoch_end(self, epoch, logs=None):
        title, image = self.render(self.model, self.examples)
        with self.writer.as_default():
            tf.summary.image(title, image[None], step=epoch)
        self.writer.flush()


class CriticLearningRate(keras.callbacks.Callback):
    """Keeps a two-player model's critic learning rate at ``ratio`` times the generator's,
    whose rate the LearningRateScheduler sets each epoch (it only knows ``model.optimizer``)."""

    def __init__(self, ratio: float = 2.0):
        super().__init__()
        self.ratio = ratio

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.model.d_optimizer.learning_rate = self.ratio * lr


def fixed_examples(dataset, count):
    """The first ``count`` examples of an unshuffled dataset, as one batch (or just the
    inputs, for a dataset of inputs only)."""
    if not isinstance(dataset.element_spec, tuple):
        xs = list(dataset.unbatch().take(count))
        return tf.stack(xs) if xs else None
    xs, ys = [], []
    for x, y in dataset.unbatch().take(count):
        xs.append(x)
        ys.append(y)
    if not xs:
        return None
    if isinstance(xs[0], dict):
        return {k: tf.stack([x[k] for x in xs]) for k in xs[0]}, tf.stack(ys)
    return tf.stack(xs), tf.stack(ys)


# --- the run ---------------------------------------------------------------------------------


def resolve_precision(name: str) -> str:
    """'auto' -> mixed_float16 on a GPU, float32 on a CPU."""
    if name != "auto":
        return name
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"


def _strategy(run: RunConfig):
    if run.distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if run.distribute == "multi_worker":
        return distributed.strategy(run.collective_timeout)
    return tf.distribute.get_strategy()


def distributed_val_batch(batch_size: int, examples: int | None, replicas: int) -> int:
    """Validation batch size under a distribution strategy.

    Every batch must split evenly over the replicas (Keras 3.15 fails on a partial batch under
    MirroredStrategy), so validation drops its remainder; when the split is smaller than one
    batch, the batch shrinks to the largest multiple of the replica count that fits.
    """
    if examples is None or examples >= batch_size:
        return batch_size
    return max(replicas, examples // replicas * replicas)


def val_batch(run: RunConfig, val_source, val_split, replicas: int) -> int | None:
    """The validation batch size, or None to skip validation (no source, or too few examples
    to give every replica one under a distribution strategy)."""
    if val_source is None:
        return None
    if run.distribute == "none":
        return run.batch_size
    examples = records.resolve(val_source, val_split).num_records
    if examples is not None and examples < replicas:
        log.warning("validation skipped: %d example(s) cannot fill one batch over %d "
                    "replicas", examples, replicas)
        return None
    batch = distributed_val_batch(run.batch_size, examples, replicas)
    if examples is not None and examples % batch:
        log.warning("validation under %s: %d of %d examples dropped so that every "
                    "batch splits over %d replicas", run.distribute, examples % batch,
                    examples, replicas)
    return batch


def warm_start(model: keras.Model, source: str, skip=()) -> dict:
    """Copies the weights of the model saved at ``source`` (a ``.keras`` path or a preset
    name) into ``model``, layer by layer by name: FSRCNN's transfer from x3 to x2 and x4,
    whose layers have the same shapes at every scale. The layers named in ``skip`` keep their
    fresh weights. Returns ``{"path", "sha256"}`` of the source (and ``skipped``) for run.json.

    Raises:
      KoalaError: the source does not load, or a layer of ``model`` that has weights is
        missing from it or has other weight shapes (each one is named).
    """
    path = presets.resolve(source)
    other = {layer.name: layer for layer in
             saving.load(path, (keras.Model,), "a Keras model").layers}
    pairs, problems = [], []
    unknown = sorted(set(skip) - {layer.name for layer in model.layers})
    if unknown:
        raise KoalaError(f"--init_skip: {model.name} has no layer {', '.join(unknown)}")
    for layer in model.layers:
        if not layer.weights or layer.name in skip:
            continue
        src = other.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        src_shapes = [tuple(w.shape) for w in src.weights] if src is not None else None
        if src_shapes is None:
            problems.append(f"{layer.name} is missing")
        elif shapes != src_shapes:
            problems.append(f"{layer.name} has shapes {src_shapes}, not {shapes}")
        else:
            pairs.append((layer, src))
    if problems:
        raise KoalaError(f"--init_from={source}: its weights don't fit {model.name}: "
                         + "; ".join(problems))
    for layer, src in pairs:
        layer.set_weights(src.get_weights())
    log.info("weights of %d layers from %s", len(pairs), path)
    return {"path": path, "sha256": presets.sha256(path),
            **({"skipped": sorted(skip)} if skip else {})}


def _check_workdir(run: RunConfig, cfg) -> None:
    """Refuses to resume a workdir that holds a run with other settings (epochs may grow)."""
    path = os.path.join(run.workdir, "run.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = json.load(f).get("config", {})
    current = run_config.as_dict(run, cfg)
    # A setting missing from an older run.json did not exist then: that run had its default.
    previous = {**run_config.defaults(type(run), type(cfg)), **previous}
    changed = sorted(k for k in current if k not in run_config.RESUMABLE
                     and previous.get(k) != current[k])
    if changed:
        detail = ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in changed)
        raise KoalaError(f"{run.workdir} holds a run with other settings ({detail}); "
                         f"use a new --workdir to start another run")


def _validation_source(run: RunConfig):
    """(source, split) of the validation records, or (None, None)."""
    if run.distribute == "multi_worker":
        if run.val_records:
            log.warning("--val_records ignored: multi_worker runs train without validation")
        return None, None
    if run.val_records:
        return run.val_records, ("val" if tf.io.gfile.isdir(run.val_records) else None)
    if tf.io.gfile.isdir(run.train_records) and tf.io.gfile.glob(
            os.path.join(run.train_records, "val-*.tfrecord*")):
        return run.train_records, "val"
    return None, None


def train(run: RunConfig, cfg, entry: ModelEntry, task: Task, *, flags_text: str | None = None,
          extra_callbacks=()):
    """Trains ``run.model`` (built by ``task`` from ``entry``) on ``run.train_records``;
    returns the Keras History. :func:`koala.registry.train` looks the entry and task up.

    ``cfg`` is the model family's config (an instance of ``task.config_class``).
    ``flags_text`` (the effective flags, one per line) is written to WORKDIR/flags.txt.
    ``extra_callbacks`` are appended (tests use them to simulate a kill). With
    ``distribute="multi_worker"`` this is one worker of the cluster in TF_CONFIG (see
    koala/core/distributed.py): only the chief writes into the workdir.
    """
    if not isinstance(cfg, task.config_class):
        raise KoalaError(f"model {run.model!r} is trained with a {task.config_class.__name__}, "
                         f"not a {type(cfg).__name__}")
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = _strategy(run) if run.distribute == "multi_worker" else None
    chief = strategy is None or distributed.is_chief(strategy)
    os.makedirs(run.workdir, exist_ok=True)
    # One writer per workdir: the chief (workers write into scratch folders of their own).
    with exclusive(run.workdir, "another koala.train run") if chief else contextlib.nullcontext():
        _check_workdir(run, cfg)
        workdir = distributed.worker_dir(run.workdir, chief) if strategy else run.workdir
        try:
            return _train(run, cfg, entry, task, strategy, workdir, flags_text,
                          extra_callbacks)
        finally:
            distributed.remove_worker_dir(workdir, run.workdir)


def _train(run, cfg, entry, task, strategy, workdir: str, flags_text, extra_callbacks):
    keras.utils.set_random_seed(run.seed)
    train_recs = records.resolve(run.train_records, "train")
    val_source, val_split = _validation_source(run)

    precision = resolve_precision(run.mixed_precision)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        strategy = strategy or _strategy(run)
        with strategy.scope():
            model = task.build_model(entry, run, cfg, train_recs)
            init = (warm_start(model, run.init_from, run.init_skip) if run.init_from
                    else None)
            multipliers = ({"output": run.last_layer_lr_scale}
                           if run.last_layer_lr_scale != 1.0 else None)
            optimizer = optimizers_lib.build(run.optimizer, run.learning_rate,
                                             momentum=run.momentum, lr_multipliers=multipliers)
            task.compile(model, run, cfg, optimizer)
        if run.distribute == "multi_worker":
            data = _worker_datasets(run, cfg, task, model, train_recs, strategy)
        else:
            data = task.datasets(model, run, cfg, run.train_records, val_source, val_split,
                                 val_batch(run, val_source, val_split,
                                           strategy.num_replicas_in_sync))
        if flags_text is not None:
            atomic_write(os.path.join(workdir, "flags.txt"), flags_text)
        atomic_write_json(os.path.join(workdir, "run.json"), {
            "config": run_config.as_dict(run, cfg), "task": entry.task,
            "precision": precision, "train_records": list(train_recs.files),
            "val_records": val_source, "parameters": model.count_params(),
            "koala_version": koala.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version(),
            "devices": [d.name for d in tf.config.list_logical_devices()],
            "replicas": strategy.num_replicas_in_sync, "init_from": init,
            **task.run_info(entry, run, cfg),
        })
        monitor = task.monitor(model)
        monitor = f"val_{monitor}" if data.val is not None else monitor
        tb_dir = os.path.join(workdir, "tensorboard")
        callbacks = [
            AtomicBackup(os.path.join(workdir, "backup")),
            keras.callbacks.TerminateOnNaN(raise_error=True),
            keras.callbacks.LearningRateScheduler(learning_rate_schedule(run)),
            CSVLog(os.path.join(workdir, "log.csv")),
            Checkpoints(workdir, monitor),
            keras.callbacks.TensorBoard(tb_dir, update_freq="epoch", write_graph=False,
                                        profile_batch=0),
            *task.callbacks(model, run, cfg),
        ]
        if data.val is not None and run.image_grid_count > 0:
            examples = fixed_examples(data.val, run.image_grid_count)
            if examples is not None:
                callbacks.append(PreviewImages(tb_dir, examples, task.preview))
        callbacks.extend(extra_callbacks)
        verbose = 1 if sys.stdout.isatty() else 2  # bar on a terminal only
        if run.distribute == "multi_worker":  # keras#20585: model.fit fails under MWMS
            return distributed.fit(model, data.train, strategy=strategy, epochs=run.epochs,
                                   steps_per_epoch=run.steps_per_epoch, callbacks=callbacks,
                                   verbose=verbose)
        return model.fit(data.train, validation_data=data.val, epochs=run.epochs,
                         steps_per_epoch=run.steps_per_epoch,
                         validation_steps=run.validation_steps, callbacks=callbacks,
                         verbose=verbose, shuffle=False)  # the pipeline shuffles
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _worker_datasets(run, cfg, task, model, train_recs, strategy):
    """This worker's share of the training data: its record files (split by file), batched
    per replica, as a distributed dataset; no validation."""
    from koala.core.task import Datasets

    index, count = distributed.worker_index(strategy)
    files = distributed.shard_files(train_recs.files, index, count)
    replicas = strategy.num_replicas_in_sync
    if run.batch_size % replicas:
        raise KoalaError(f"--batch_size={run.batch_size} must split evenly over the "
                         f"{replicas} replicas of the cluster")
    log.info("worker %d of %d reads %d of %d shard(s)", index, count, len(files),
             len(train_recs.files))

    def dataset_fn(context: tf.distribute.InputContext):
        local = dataclasses.replace(
            run, batch_size=context.get_per_replica_batch_size(run.batch_size))
        return task.datasets(model, local, cfg, files, None, None, None).train

    return Datasets(strategy.distribute_datasets_from_function(dataset_fn))
