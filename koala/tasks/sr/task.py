"""Training the SR models (SRCNN, FSRCNN, the auto-encoder) through the generic trainer:
(low-res input, high-res target) pairs made on the fly from the records' RGB, MSE."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from koala.core.task import Datasets, ModelEntry, TaskBase
from koala.data import pipelines
from koala.ops import grid
from koala.tasks.sr import models
from koala.tasks.sr.config import SRTrainConfig


def _to_uint8(t, size) -> np.ndarray:
    t = tf.image.resize(t, size, "nearest") if t.shape[1:3] != size else t
    return np.round(np.clip(t.numpy(), 0, 1) * 255).astype(np.uint8)


class SRTask(TaskBase):
    """The super-resolution family's :class:`~koala.core.task.Task`."""

    name = "sr"
    config_class = SRTrainConfig

    def build_model(self, entry: ModelEntry, run, cfg: SRTrainConfig, records):
        return entry.build(channels=1 if cfg.sr_channels == "y" else 3, scale=cfg.scale)

    def compile(self, model, run, cfg, optimizer) -> None:
        model.compile(optimizer=optimizer, loss="mse", jit_compile=run.jit_compile)

    def datasets(self, model, run, cfg: SRTrainConfig, train_source, val_source, val_split,
                 val_batch):
        """Targets are cropped by the model's border (SRCNN with valid padding: 6 px for
        9-1-5)."""
        b = models.border(model)
        kw = dict(scale=cfg.scale, patch_size=cfg.patch_size, channels=cfg.sr_channels,
                  upsample=model.config.upsampled_input, verify=run.verify_records)

        def crop(lr, hr):
            return (lr, hr[:, b:-b, b:-b, :]) if b else (lr, hr)

        split_batches = run.distribute != "none"
        train = pipelines.sr_dataset(
            train_source, split="train", training=True, batch_size=run.batch_size,
            patches_per_image=cfg.patches_per_image, stride=cfg.stride,
            shuffle_buffer=run.shuffle_buffer, seed=run.seed, drop_remainder=split_batches,
            repeat=run.steps_per_epoch is not None, **kw).map(crop)
        val = None
        if val_batch is not None:  # one centre patch per image (no --stride), or a grid
            val = pipelines.sr_dataset(
                val_source, split=val_split, training=False,
                batch_size=val_batch if cfg.stride is None else run.batch_size,
                drop_remainder=split_batches, **kw).map(crop)
        return Datasets(train, val)

    def preview(self, model, examples):
        """[input | output | target] of fixed validation patches."""
        x, y = examples
        pred = model(x, training=False)
        size = y.shape[1:3]
        rows = zip(_to_uint8(x, size), _to_uint8(pred, size), _to_uint8(y, size), strict=True)
        return "input | output | target", grid.make_grid(list(rows), height=96)


TASK = SRTask()
