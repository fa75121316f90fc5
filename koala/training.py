"""The training loop behind ``python -m koala.train`` (flags live in koala/train.py).

One entry point trains every koala model. A model is looked up by name in ``MODELS`` (one
explicit dict); each entry says how to build the model from the config and the records, and
which task it serves (how to make its datasets, its loss, its image summaries).

A run writes to its workdir:

  flags.txt           the effective flags; ``--flagfile=WORKDIR/flags.txt`` re-runs it
  run.json            the resolved config, the records it read, koala and TF versions
  best.keras          the best model so far (lowest val_loss, or loss without validation)
  last.keras          the model after the last finished epoch
  log.csv             one row per epoch (loss, val_loss, learning rate)
  tensorboard/        scalars, and an image grid [gray | predicted | truth] of fixed
                      validation images every epoch
  backup/             BackupAndRestore's state (weights, optimizer, epoch)

Checkpoints are written under a temporary name and renamed, so a kill never leaves a
half-written ``.keras``. Re-running the same command after a kill resumes from the last
finished epoch with the optimizer state (``keras.callbacks.BackupAndRestore``); rows of the
CSV log for epochs that will be redone are dropped, so the log never restarts from epoch 0 and
never repeats an epoch. Re-running a finished run does nothing; raising ``--epochs`` continues
it. A NaN or Inf loss stops the run with an error and keeps the backup
(``TerminateOnNaN(raise_error=True)``: the plain one lets BackupAndRestore delete it).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import platform
import sys
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

import koala
from koala import bin_prior, color, colorbins, distributed, grid, models
from koala import optimizers as optimizers_lib
from koala.data import pipelines, records
from koala.errors import KoalaError
from koala.models import codec, colorgan, fusion, lal, sr

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
LR_SCHEDULES = ("step", "polynomial")
DISTRIBUTE = ("none", "mirrored", "multi_worker")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``koala/train.py`` maps its flags onto this."""

    workdir: str
    train_records: str
    model: str = "fusion"
    val_records: str | None = None
    epochs: int = 400
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    batch_size: int = 100
    learning_rate: float = 1e-3
    lr_boundaries: tuple = (100, 150, 200, 300)
    lr_decay: float = 0.1
    lr_schedule: str = "step"
    lr_end: float = 2e-6
    lr_power: float = 0.9
    mixed_precision: str = "auto"
    jit_compile: bool = False
    seed: int = 0
    distribute: str = "none"
    collective_timeout: float = 120.0
    shuffle_buffer: int = 1024
    crop_size: int | None = None
    batch_norm: bool = True
    filters_scale: float | None = None
    image_grid_count: int = 4
    verify_records: bool = True
    optimizer: str = "adam"
    momentum: float = 0.9
    last_layer_lr_scale: float = 1.0
    scale: int = 3
    patch_size: int = 33
    stride: int | None = None
    patches_per_image: int = 16
    sr_channels: str = "y"
    stage2_epoch: int = 90
    loss_preset: str = "paper"
    perceptual_net: str = "vgg19"
    perceptual_weights: str = "imagenet"
    perceptual_size: int = 224
    contrast_weight: float | None = None
    head: str = "regression"
    temperature: float = colorbins.ANNEAL_TEMPERATURE
    ab_prior: str | None = None
    rebalance_lambda: float = colorbins.REBALANCE_LAMBDA

    def __post_init__(self):
        object.__setattr__(self, "lr_boundaries", tuple(int(b) for b in self.lr_boundaries))
        checks = [
            (self.model in MODELS, f"unknown model {self.model!r}; choose from {sorted(MODELS)}"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             "steps_per_epoch must be >= 1"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (list(self.lr_boundaries) == sorted(set(self.lr_boundaries))
             and all(b > 0 for b in self.lr_boundaries),
             "lr_boundaries must be increasing positive epochs"),
            (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (0 <= self.lr_end <= self.learning_rate, "lr_end must be in [0, learning_rate]"),
            (self.lr_power > 0, "lr_power must be > 0"),
            (self.stage2_epoch >= 0, "stage2_epoch must be >= 0"),
            (self.loss_preset in codec.PRESETS,
             f"loss_preset must be one of {sorted(codec.PRESETS)}"),
            (self.perceptual_net in codec.PERCEPTUAL_NETS,
             f"perceptual_net must be one of {codec.PERCEPTUAL_NETS}"),
            (self.perceptual_size >= 0, "perceptual_size must be >= 0"),
            (self.contrast_weight is None or self.contrast_weight >= 0,
             "contrast_weight must be >= 0"),
            (self.mixed_precision in PRECISIONS, f"mixed_precision must be one of {PRECISIONS}"),
            (self.distribute in DISTRIBUTE, f"distribute must be one of {DISTRIBUTE}"),
            (self.distribute != "multi_worker" or self.steps_per_epoch is not None,
             "distribute=multi_worker needs steps_per_epoch (every worker must run the same "
             "number of steps)"),
            (self.collective_timeout > 0, "collective_timeout must be > 0"),
            (self.crop_size is None or self.crop_size % 8 == 0,
             "crop_size must be a multiple of 8"),
            (self.optimizer in optimizers_lib.OPTIMIZERS,
             f"optimizer must be one of {sorted(optimizers_lib.OPTIMIZERS)}"),
            (self.last_layer_lr_scale > 0, "last_layer_lr_scale must be > 0"),
            (self.scale in (2, 3, 4), "scale must be 2, 3 or 4"),
            (self.patch_size >= self.scale, "patch_size must be at least the scale"),
            (self.stride is None or self.stride >= 1, "stride must be >= 1"),
            (self.sr_channels in pipelines.SR_CHANNELS,
             f"sr_channels must be one of {pipelines.SR_CHANNELS}"),
            (self.head in fusion.HEADS, f"head must be one of {fusion.HEADS}"),
            (self.head == "regression"
             or getattr(MODELS.get(self.model), "task", None) in ("colorize", "lal"),
             "head=classification needs a fusion model"),
            (self.temperature > 0, "temperature must be > 0"),
            (0 <= self.rebalance_lambda <= 1, "rebalance_lambda must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# --- models -----------------------------------------------------------------------------------


def _fusion_kwargs(cfg: TrainConfig, recs: records.RecordSet) -> dict:
    """Fusion hyper-parameters from the flags, and the embedder from the records' manifest."""
    manifest = recs.manifest or {}
    emb = manifest.get("embedder") or {}
    size = cfg.crop_size or manifest.get("image_size")
    if not size or not emb.get("dim"):
        raise KoalaError(f"{cfg.train_records}: the colorization records need a manifest.json "
                         f"(image size, embedder) — rebuild them with build_records")
    kwargs = {"image_size": size, "embedding_dim": emb["dim"], "batch_norm": cfg.batch_norm,
              "embedder": emb.get("name", "inception_resnet_v2"),
              "embedder_weights": emb.get("weights", "imagenet"),
              "embedder_fit": emb.get("fit", manifest.get("fit", "pad"))}
    if cfg.filters_scale is not None:
        kwargs["filters_scale"] = cfg.filters_scale
    kwargs.update(head=cfg.head, temperature=cfg.temperature)
    if cfg.head == "classification":
        kwargs.update(_class_weights(cfg))
    return kwargs


def _lal_kwargs(cfg: TrainConfig, recs: records.RecordSet) -> dict:
    """Lal et al.'s colorizer: the fusion settings, always with the classification head (its
    bins and weights from the records' ab prior, whatever --head says)."""
    kwargs = _fusion_kwargs(dataclasses.replace(cfg, head="regression"), recs)
    kwargs.pop("head")
    kwargs.update(_class_weights(cfg))
    return kwargs


def ab_prior_path(cfg: TrainConfig) -> str:
    """--ab_prior, or ``ab_prior.npz`` beside the training records (in the directory, or
    beside the shard file or pattern)."""
    if cfg.ab_prior:
        return cfg.ab_prior
    source = cfg.train_records
    folder = source if tf.io.gfile.isdir(source) else os.path.dirname(source)
    return os.path.join(folder, bin_prior.PRIOR_FILE)


def _class_weights(cfg: TrainConfig) -> dict:
    """The classification head's bins and rebalancing weights, from the records' ab prior:
    ``w ∝ ((1 − λ)·p̃ + λ/Q)⁻¹`` recomputed from p̃ with --rebalance_lambda."""
    path = ab_prior_path(cfg)
    if not tf.io.gfile.exists(path):
        records_dir = os.path.dirname(path) or "."
        raise KoalaError(f"no ab prior at {path}: head=classification needs the records' bin "
                         f"prior; run `python data_prep/bin_prior.py --records={records_dir}` "
                         f"(or give --ab_prior)")
    prior = bin_prior.load_prior(path)
    if prior.grid != colorbins.GRID:
        raise KoalaError(f"{path}: bins on a grid of {prior.grid:g}, the model's are on "
                         f"{colorbins.GRID:g}; recompute the prior")
    weights = colorbins.rebalancing_weights(prior.prior, cfg.rebalance_lambda)
    return {"bin_rule": prior.rule, "class_weights": tuple(float(w) for w in weights)}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    build: Callable  # (TrainConfig, RecordSet) -> keras.Model
    task: str


def _sr(constructor):
    """An SR model from the flags: Y (1 channel) or RGB, and the scale it is trained for."""

    def build_model(cfg: TrainConfig, recs):
        del recs
        return constructor(channels=1 if cfg.sr_channels == "y" else 3, scale=cfg.scale)

    return ModelSpec(build_model, "sr")


def _codec(constructor):
    """A codec with the loss settings from the flags."""

    def build_model(cfg: TrainConfig, recs):
        del recs
        return constructor(loss_preset=cfg.loss_preset, perceptual_net=cfg.perceptual_net,
                           perceptual_weights=cfg.perceptual_weights,
                           perceptual_size=cfg.perceptual_size,
                           contrast_weight=cfg.contrast_weight)

    return ModelSpec(build_model, "codec")


def _colorgan(constructor):
    """A ColorGAN with the perceptual settings from the flags, for the records' image size
    (or --crop_size): the square the colorize tool will fit images into."""

    def build_model(cfg: TrainConfig, recs):
        size = cfg.crop_size or (recs.manifest or {}).get("image_size") or 256
        return constructor(perceptual_net=cfg.perceptual_net,
                           perceptual_weights=cfg.perceptual_weights,
                           perceptual_size=cfg.perceptual_size, image_size=size)

    return ModelSpec(build_model, "colorgan")


MODELS = {
    "fusion": ModelSpec(lambda c, r: fusion.fusion(**_fusion_kwargs(c, r)), "colorize"),
    "fusion_small": ModelSpec(lambda c, r: fusion.fusion_small(**_fusion_kwargs(c, r)),
                              "colorize"),
    "srcnn": _sr(sr.srcnn),
    "srcnn_955": _sr(sr.srcnn_955),
    "srcnn_small": _sr(sr.srcnn_small),
    "fsrcnn": _sr(sr.fsrcnn),
    "fsrcnn_small": _sr(sr.fsrcnn_small),
    "sr_autoencoder": _sr(sr.sr_autoencoder),
    "sr_autoencoder_small": _sr(sr.sr_autoencoder_small),
    "codec": _codec(codec.codec),
    "codec_small": _codec(codec.codec_small),
    "colorgan": _colorgan(colorgan.colorgan),
    "colorgan_small": _colorgan(colorgan.colorgan_small),
    "lal": ModelSpec(lambda c, r: lal.lal(**_lal_kwargs(c, r)), "lal"),
    "lal_small": ModelSpec(lambda c, r: lal.lal_small(**_lal_kwargs(c, r)), "lal"),
}


# --- tasks: datasets, loss, image summaries --------------------------------------------------


def distributed_val_batch(batch_size: int, examples: int | None, replicas: int) -> int:
    """Validation batch size under a distribution strategy.

    Every batch must split evenly over the replicas (Keras 3.15 fails on a partial batch under
    MirroredStrategy), so validation drops its remainder; when the split is smaller than one
    batch, the batch shrinks to the largest multiple of the replica count that fits.
    """
    if examples is None or examples >= batch_size:
        return batch_size
    return max(replicas, examples // replicas * replicas)


def _val_batch(cfg: TrainConfig, val_source, val_split, replicas: int) -> int | None:
    """The validation batch size, or None to skip validation (no source, or too few examples
    to give every replica one under a distribution strategy)."""
    if val_source is None:
        return None
    if cfg.distribute == "none":
        return cfg.batch_size
    examples = records.resolve(val_source, val_split).num_records
    if examples is not None and examples < replicas:
        log.warning("validation skipped: %d example(s) cannot fill one batch over %d "
                    "replicas", examples, replicas)
        return None
    batch = distributed_val_batch(cfg.batch_size, examples, replicas)
    if examples is not None and examples % batch:
        log.warning("validation under %s: %d of %d examples dropped so that every "
                    "batch splits over %d replicas", cfg.distribute, examples % batch,
                    examples, replicas)
    return batch


def _colorize_datasets(cfg: TrainConfig, model, train_source, val_source, val_split,
                       replicas=1):
    del model
    kw = dict(crop_size=cfg.crop_size, verify=cfg.verify_records)
    repeat = cfg.steps_per_epoch is not None
    split_batches = cfg.distribute != "none"
    train = pipelines.colorization_dataset(
        train_source, split="train", training=True, shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed, repeat=repeat, drop_remainder=split_batches, batch_size=cfg.batch_size,
        **kw)
    val = None
    batch = _val_batch(cfg, val_source, val_split, replicas)
    if batch is not None:
        val = pipelines.colorization_dataset(val_source, split=val_split, training=False,
                                             batch_size=batch, drop_remainder=split_batches, **kw)
    return train, val


def lab_batch_to_rgb(l_norm, ab_norm) -> np.ndarray:
    """Normalised L (B, H, W, 1) and ab (B, H, W, 2) -> uint8 sRGB (B, H, W, 3)."""
    lab = tf.concat([color.denormalize_l(l_norm), color.denormalize_ab(ab_norm)], axis=-1)
    return np.round(color.lab_to_srgb(lab).numpy() * 255).astype(np.uint8)


class ColorizeImages(keras.callbacks.Callback):
    """Writes [gray | predicted | truth] of fixed validation images to TensorBoard each epoch."""

    def __init__(self, log_dir: str, examples):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.x, self.ab = examples

    def predict(self):
        return self.model(self.x, training=False)

    def on_epoch_end(self, epoch, logs=None):
        pred = self.predict()
        zeros = tf.zeros_like(self.ab)
        gray, out, truth = (lab_batch_to_rgb(self.x["l"], a) for a in (zeros, pred, self.ab))
        image = grid.make_grid(list(zip(gray, out, truth, strict=True)), height=128)
        with self.writer.as_default():
            tf.summary.image("gray | predicted | truth", image[None], step=epoch)
        self.writer.flush()


def _fixed_examples(dataset, count):
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


def _sr_datasets(cfg: TrainConfig, model, train_source, val_source, val_split, replicas=1):
    """(low-res input, high-res target) pairs made on the fly from the stored RGB; targets
    are cropped by the model's border (SRCNN with valid padding: 6 px for 9-1-5)."""
    b = sr.border(model)
    kw = dict(scale=cfg.scale, patch_size=cfg.patch_size, channels=cfg.sr_channels,
              upsample=model.config.upsampled_input, verify=cfg.verify_records)

    def crop(lr, hr):
        return (lr, hr[:, b:-b, b:-b, :]) if b else (lr, hr)

    split_batches = cfg.distribute != "none"
    train = pipelines.sr_dataset(
        train_source, split="train", training=True, batch_size=cfg.batch_size,
        patches_per_image=cfg.patches_per_image, stride=cfg.stride,
        shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed, drop_remainder=split_batches,
        repeat=cfg.steps_per_epoch is not None, **kw).map(crop)
    val = None
    batch = _val_batch(cfg, val_source, val_split, replicas)
    if batch is not None:  # one centre patch per image (no --stride), or a grid of them
        val = pipelines.sr_dataset(val_source, split=val_split, training=False,
                                   batch_size=batch if cfg.stride is None else cfg.batch_size,
                                   drop_remainder=split_batches, **kw).map(crop)
    return train, val


class SRImages(keras.callbacks.Callback):
    """Writes [input | output | target] of fixed validation patches to TensorBoard."""

    def __init__(self, log_dir: str, examples):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.x, self.y = examples

    def on_epoch_end(self, epoch, logs=None):
        pred = self.model(self.x, training=False)
        size = self.y.shape[1:3]

        def to_uint8(t):
            t = tf.image.resize(t, size, "nearest") if t.shape[1:3] != size else t
            return np.round(np.clip(t.numpy(), 0, 1) * 255).astype(np.uint8)

        rows = zip(to_uint8(self.x), to_uint8(pred), to_uint8(self.y), strict=True)
        image = grid.make_grid(list(rows), height=96)
        with self.writer.as_default():
            tf.summary.image("input | output | target", image[None], step=epoch)
        self.writer.flush()


def _codec_datasets(cfg: TrainConfig, model, train_source, val_source, val_split, replicas=1):
    """RGB crops in [0, 1] (SPEC §2: 256 x 256): ``--patches_per_image`` random crops of
    ``--crop_size`` per image and epoch for training, one centre crop per image for
    validation."""
    del model
    size = cfg.crop_size or 256
    split_batches = cfg.distribute != "none"
    train = pipelines.rgb_dataset(
        train_source, split="train", patch_size=size, batch_size=cfg.batch_size, training=True,
        patches_per_image=cfg.patches_per_image, shuffle_buffer=cfg.shuffle_buffer,
        seed=cfg.seed, verify=cfg.verify_records, drop_remainder=split_batches,
        repeat=cfg.steps_per_epoch is not None)
    val = None
    batch = _val_batch(cfg, val_source, val_split, replicas)
    if batch is not None:
        val = pipelines.rgb_dataset(val_source, split=val_split, patch_size=size,
                                    batch_size=batch, training=False,
                                    verify=cfg.verify_records, drop_remainder=split_batches)
    return train, val


class CodecImages(keras.callbacks.Callback):
    """Writes [input | grayscale | restored] of fixed validation crops to TensorBoard; the
    grayscale is rounded to 8 bits before decoding, as a saved PNG would be."""

    def __init__(self, log_dir: str, examples):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(log_dir, "images"))
        self.x = examples

    def on_epoch_end(self, epoch, logs=None):
        gray = tf.round(self.model.encoder(self.x, training=False) * 255.0) / 255.0
        restored = self.model.decoder(gray, training=False)

        def to_uint8(t):
            t = tf.image.grayscale_to_rgb(t) if t.shape[-1] == 1 else t
            return np.round(np.clip(t.numpy(), 0, 1) * 255).astype(np.uint8)

        rows = zip(to_uint8(self.x), to_uint8(gray), to_uint8(restored), strict=True)
        image = grid.make_grid(list(rows), height=128)
        with self.writer.as_default():
            tf.summary.image("input | grayscale | restored", image[None], step=epoch)
        self.writer.flush()


def _attach_perceptual(cfg: TrainConfig, model) -> None:
    """Attaches the perceptual network the model's losses need (the codec's contrast term,
    ColorGAN's perceptual and noise-feature terms), inside the strategy scope."""
    del cfg
    if model.config.needs_perceptual:
        model.set_perceptual(model.make_perceptual())


class ColorGANImages(ColorizeImages):
    """[gray | predicted | truth] grids from ColorGAN's seed-0 sample, so epochs compare."""

    def predict(self):
        return self.model.sample(self.x["l"], seed=0)[0]


def _colorgan_compile(cfg: TrainConfig, model, optimizer) -> None:
    """SPEC §4: Adam (0.5, 0.999) for both, --learning_rate (1e-4) for the generator and
    twice that (2e-4) for the critic; --optimizer does not apply."""
    del optimizer
    model.compile(g_optimizer=keras.optimizers.Adam(cfg.learning_rate, beta_1=0.5),
                  d_optimizer=keras.optimizers.Adam(2 * cfg.learning_rate, beta_1=0.5),
                  jit_compile=cfg.jit_compile)


def _lal_compile(cfg: TrainConfig, model, optimizer) -> None:
    """WGAN-GP's Adam (0.5, 0.9) for the generator and the critic at --learning_rate;
    --optimizer does not apply (koala/models/lal.py)."""
    del optimizer
    model.compile(
        g_optimizer=keras.optimizers.Adam(cfg.learning_rate, beta_1=0.5, beta_2=0.9),
        d_optimizer=keras.optimizers.Adam(cfg.learning_rate, beta_1=0.5, beta_2=0.9),
        jit_compile=cfg.jit_compile)


class CriticLearningRate(keras.callbacks.Callback):
    """Keeps the critic's learning rate at ``ratio`` times the generator's, whose rate the
    LearningRateScheduler sets each epoch (it only knows ``model.optimizer``)."""

    def __init__(self, ratio: float = 2.0):
        super().__init__()
        self.ratio = ratio

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.model.d_optimizer.learning_rate = self.ratio * lr


TASKS = {
    # "mse" for the regression head; with --head=classification the fusion model's own
    # train_step computes the class-rebalanced cross-entropy and the loss is not compiled.
    "colorize": {"datasets": _colorize_datasets, "loss": "mse", "images": ColorizeImages},
    "sr": {"datasets": _sr_datasets, "loss": "mse", "images": SRImages},
    # The codec's train_step computes its own loss terms (koala/models/codec.py).
    "codec": {"datasets": _codec_datasets, "loss": None, "images": CodecImages,
              "prepare": _attach_perceptual,
              "callbacks": lambda cfg: [codec.CodecStages(cfg.stage2_epoch)]},
    # ColorGAN trains its generator and critic in its own train_step (two optimizers); the
    # adversarial val_loss swings, so checkpoints follow the validation L1 instead.
    "colorgan": {"datasets": _colorize_datasets, "loss": None, "images": ColorGANImages,
                 "prepare": _attach_perceptual, "compile": _colorgan_compile,
                 "callbacks": lambda cfg: [CriticLearningRate(2.0)], "monitor": "l1"},
    # Lal et al.: the classification colorizer plus a WGAN critic (koala/models/lal.py);
    # checkpoints follow the validation cross-entropy (the adversarial term swings).
    "lal": {"datasets": _colorize_datasets, "loss": None, "images": ColorizeImages,
            "compile": _lal_compile, "callbacks": lambda cfg: [CriticLearningRate(1.0)],
            "monitor": "class_ce"},
}


# --- callbacks ---------------------------------------------------------------------------------


def polynomial_schedule(base_lr: float, end_lr: float, epochs: int,
                        power: float) -> Callable[[int], float]:
    """lr(epoch) = (base_lr - end_lr) * (1 - epoch / epochs) ** power + end_lr (SPEC §2: 2e-4
    to 2e-6 over the 120 epochs, power 0.9; the authors' code decays per step, this per
    epoch)."""

    def lr(epoch, current_lr=None):
        return float((base_lr - end_lr) * (1 - min(epoch, epochs) / epochs) ** power + end_lr)

    return lr


def learning_rate_schedule(cfg: TrainConfig) -> Callable[[int], float]:
    if cfg.lr_schedule == "polynomial":
        return polynomial_schedule(cfg.learning_rate, cfg.lr_end, cfg.epochs, cfg.lr_power)
    return step_schedule(cfg.learning_rate, cfg.lr_boundaries, cfg.lr_decay)


def step_schedule(base_lr: float, boundaries, decay: float) -> Callable[[int], float]:
    """lr(epoch) = base_lr * decay ** (number of boundaries <= epoch) (SPEC §1: ÷10 at
    epochs 100, 150, 200, 300)."""
    boundaries = tuple(boundaries)

    def lr(epoch, current_lr=None):
        return float(base_lr * decay ** sum(epoch >= b for b in boundaries))

    return lr


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
        models.save(self.model, os.path.join(self.workdir, "last.keras"))
        self.state["last_epoch"] = epoch
        if value is not None and np.isfinite(value) and (
                self.state["best"] is None or value < self.state["best"]):
            models.save(self.model, os.path.join(self.workdir, "best.keras"))
            self.state.update(best=float(value), best_epoch=epoch)
        _write_json(self.state_path, self.state)


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
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


def _write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


# --- the run ---------------------------------------------------------------------------------


def resolve_precision(name: str) -> str:
    """'auto' -> mixed_float16 on a GPU, float32 on a CPU."""
    if name != "auto":
        return name
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"


def _strategy(cfg: TrainConfig):
    if cfg.distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if cfg.distribute == "multi_worker":
        return distributed.strategy(cfg.collective_timeout)
    return tf.distribute.get_strategy()


def _check_workdir(cfg: TrainConfig) -> None:
    """Refuses to resume a workdir that holds a run with other settings (epochs may grow)."""
    path = os.path.join(cfg.workdir, "run.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = json.load(f).get("config", {})
    current = _jsonable(cfg)
    # A setting missing from an older run.json did not exist then: that run had its default.
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    previous = {**_jsonable(defaults), **previous}
    free = ("epochs", "verify_records", "collective_timeout")  # don't change the result
    changed = sorted(k for k in current if k not in free
                     and previous.get(k) != current[k])
    if changed:
        detail = ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in changed)
        raise KoalaError(f"{cfg.workdir} holds a run with other settings ({detail}); "
                         f"use a new --workdir to start another run")


def _jsonable(cfg: TrainConfig | dict) -> dict:
    items = cfg if isinstance(cfg, dict) else dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in items.items()}


def train(cfg: TrainConfig, *, flags_text: str | None = None, extra_callbacks=()):
    """Trains ``cfg.model`` on ``cfg.train_records``; returns the Keras History.

    ``flags_text`` (the effective flags, one per line) is written to WORKDIR/flags.txt.
    ``extra_callbacks`` are appended (tests use them to simulate a kill).
    With ``distribute="multi_worker"`` this is one worker of the cluster in TF_CONFIG (see
    koala/distributed.py): only the chief writes into the workdir.
    """
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = _strategy(cfg) if cfg.distribute == "multi_worker" else None
    chief = strategy is None or distributed.is_chief(strategy)
    os.makedirs(cfg.workdir, exist_ok=True)
    _check_workdir(cfg)
    workdir = distributed.worker_dir(cfg.workdir, chief) if strategy else cfg.workdir
    try:
        return _train(cfg, strategy, workdir, flags_text, extra_callbacks)
    finally:
        distributed.remove_worker_dir(workdir, cfg.workdir)


def _train(cfg: TrainConfig, strategy, workdir: str, flags_text, extra_callbacks):
    spec = MODELS[cfg.model]
    task = TASKS[spec.task]
    keras.utils.set_random_seed(cfg.seed)

    train_recs = records.resolve(cfg.train_records, "train")
    if cfg.distribute == "multi_worker":
        if cfg.val_records:
            log.warning("--val_records ignored: multi_worker runs train without validation")
        val_source, val_split = None, None
    elif cfg.val_records:
        val_source, val_split = cfg.val_records, "val"
        if not tf.io.gfile.isdir(cfg.val_records):
            val_split = None
    elif tf.io.gfile.isdir(cfg.train_records) and tf.io.gfile.glob(
            os.path.join(cfg.train_records, "val-*.tfrecord*")):
        val_source, val_split = cfg.train_records, "val"
    else:
        val_source, val_split = None, None

    precision = resolve_precision(cfg.mixed_precision)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)
    try:
        strategy = strategy or _strategy(cfg)
        with strategy.scope():
            model = spec.build(cfg, train_recs)
            multipliers = ({"output": cfg.last_layer_lr_scale}
                           if cfg.last_layer_lr_scale != 1.0 else None)
            optimizer = optimizers_lib.build(cfg.optimizer, cfg.learning_rate,
                                             momentum=cfg.momentum, lr_multipliers=multipliers)
            if "prepare" in task:
                task["prepare"](cfg, model)
            if "compile" in task:
                task["compile"](cfg, model, optimizer)
            else:
                # The classification head's train_step computes its own loss
                # (koala/models/fusion.py).
                loss = None if cfg.head == "classification" else task["loss"]
                model.compile(optimizer=optimizer, loss=loss, jit_compile=cfg.jit_compile)
        if cfg.distribute == "multi_worker":
            train_ds = _worker_dataset(cfg, task, model, train_recs, strategy)
            val_ds = None
        else:
            train_ds, val_ds = task["datasets"](cfg, model, cfg.train_records, val_source,
                                                val_split, strategy.num_replicas_in_sync)
        if flags_text is not None:
            with open(os.path.join(workdir, "flags.txt.tmp"), "w") as f:
                f.write(flags_text)
            os.replace(os.path.join(workdir, "flags.txt.tmp"),
                       os.path.join(workdir, "flags.txt"))
        _write_json(os.path.join(workdir, "run.json"), {
            "config": _jsonable(cfg), "precision": precision,
            "train_records": list(train_recs.files),
            "val_records": val_source, "parameters": model.count_params(),
            "koala_version": koala.__version__, "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version(),
            "devices": [d.name for d in tf.config.list_logical_devices()],
            "replicas": strategy.num_replicas_in_sync,
            **({"ab_prior": ab_prior_path(cfg)}
               if cfg.head == "classification" or spec.task == "lal" else {}),
        })
        monitor = task.get("monitor", "loss")
        monitor = f"val_{monitor}" if val_ds is not None else monitor
        tb_dir = os.path.join(workdir, "tensorboard")
        callbacks = [
            keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup"),
                                             delete_checkpoint=False),
            keras.callbacks.TerminateOnNaN(raise_error=True),
            keras.callbacks.LearningRateScheduler(learning_rate_schedule(cfg)),
            CSVLog(os.path.join(workdir, "log.csv")),
            Checkpoints(workdir, monitor),
            keras.callbacks.TensorBoard(tb_dir, update_freq="epoch", write_graph=False,
                                        profile_batch=0),
        ]
        if "callbacks" in task:
            callbacks.extend(task["callbacks"](cfg))
        if val_ds is not None and cfg.image_grid_count > 0:
            examples = _fixed_examples(val_ds, cfg.image_grid_count)
            if examples is not None:
                callbacks.append(task["images"](tb_dir, examples))
        callbacks.extend(extra_callbacks)
        verbose = 1 if sys.stdout.isatty() else 2  # bar on a terminal only
        if cfg.distribute == "multi_worker":  # keras#20585: model.fit fails under MWMS
            return distributed.fit(model, train_ds, strategy=strategy, epochs=cfg.epochs,
                                   steps_per_epoch=cfg.steps_per_epoch, callbacks=callbacks,
                                   verbose=verbose)
        return model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs,
                         steps_per_epoch=cfg.steps_per_epoch,
                         validation_steps=cfg.validation_steps, callbacks=callbacks,
                         verbose=verbose, shuffle=False)  # the pipeline shuffles
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _worker_dataset(cfg: TrainConfig, task: dict, model, train_recs, strategy):
    """This worker's share of the training data: its record files (split by file), batched
    per replica, as a distributed dataset."""
    index, count = distributed.worker_index(strategy)
    files = distributed.shard_files(train_recs.files, index, count)
    replicas = strategy.num_replicas_in_sync
    if cfg.batch_size % replicas:
        raise KoalaError(f"--batch_size={cfg.batch_size} must split evenly over the "
                         f"{replicas} replicas of the cluster")
    log.info("worker %d of %d reads %d of %d shard(s)", index, count, len(files),
             len(train_recs.files))

    def dataset_fn(context: tf.distribute.InputContext):
        local = dataclasses.replace(
            cfg, batch_size=context.get_per_replica_batch_size(cfg.batch_size))
        train_ds, _ = task["datasets"](local, model, files, None, None, 1)
        return train_ds

    return strategy.distribute_datasets_from_function(dataset_fn)
