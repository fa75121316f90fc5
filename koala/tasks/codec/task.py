"""Training the invertible-grayscale codec through the generic trainer: RGB crops in [0, 1],
two stages (:class:`koala.tasks.codec.stages.CodecStages`), the loss terms in the model's own
``train_step``."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from koala.core.task import Datasets, ModelEntry, TaskBase
from koala.data import pipelines
from koala.ops import grid
from koala.tasks.codec import stages
from koala.tasks.codec.config import DEFAULT_CROP, CodecTrainConfig


def _to_uint8(t) -> np.ndarray:
    t = tf.image.grayscale_to_rgb(t) if t.shape[-1] == 1 else t
    return np.round(np.clip(t.numpy(), 0, 1) * 255).astype(np.uint8)


class CodecTask(TaskBase):
    """The codec family's :class:`~koala.core.task.Task`."""

    name = "codec"
    config_class = CodecTrainConfig

    def build_model(self, entry: ModelEntry, run, cfg: CodecTrainConfig, records):
        return entry.build(loss_preset=cfg.loss_preset, perceptual_net=cfg.perceptual_net,
                           perceptual_weights=cfg.perceptual_weights,
                           perceptual_size=cfg.perceptual_size,
                           contrast_weight=cfg.contrast_weight, quant_unit=cfg.quant_unit,
                           quant_ste=cfg.quant_ste, theta=cfg.theta_levels / 127,
                           residual=cfg.codec_residual,
                           structure_weight=cfg.structure_weight)

    def compile(self, model, run, cfg, optimizer) -> None:
        if model.config.needs_perceptual:  # the contrast term's network
            model.set_perceptual(model.make_perceptual())
        model.compile(optimizer=optimizer, loss=None, jit_compile=run.jit_compile)

    def datasets(self, model, run, cfg: CodecTrainConfig, train_source, val_source, val_split,
                 val_batch):
        """``patches_per_image`` random crops of ``crop_size`` (SPEC §2: 256) per image and
        epoch for training, one centre crop per image for validation."""
        size = run.crop_size or DEFAULT_CROP
        split_batches = run.distribute != "none"
        train = pipelines.rgb_dataset(
            train_source, split="train", patch_size=size, batch_size=run.batch_size,
            training=True, patches_per_image=cfg.patches_per_image,
            shuffle_buffer=run.shuffle_buffer, seed=run.seed, verify=run.verify_records,
            drop_remainder=split_batches, repeat=run.steps_per_epoch is not None)
        val = None
        if val_batch is not None:
            val = pipelines.rgb_dataset(val_source, split=val_split, patch_size=size,
                                        batch_size=val_batch, training=False,
                                        verify=run.verify_records,
                                        drop_remainder=split_batches)
        return Datasets(train, val)

    def monitor(self, model) -> str:
        """best.keras follows the restoration error through the 8-bit grayscale (the
        validation step rounds G), not the loss, whose quantization term starts at stage 2."""
        return "invertibility"

    def callbacks(self, model, run, cfg: CodecTrainConfig) -> list:
        return [stages.CodecStages(cfg.stage2_epoch)]

    def preview(self, model, examples):
        """[input | grayscale | restored]; the grayscale rounded to 8 bits before decoding,
        as a saved PNG would be."""
        gray = tf.round(model.encoder(examples, training=False) * 255.0) / 255.0
        restored = model.decoder(gray, training=False)
        rows = zip(_to_uint8(examples), _to_uint8(gray), _to_uint8(restored), strict=True)
        return "input | grayscale | restored", grid.make_grid(list(rows), height=128)


TASK = CodecTask()
