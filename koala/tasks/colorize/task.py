"""Training the colorizers (fusion, Lal et al., ColorGAN, Liang et al.'s VCNN, PixColor)
through the generic trainer.

One :class:`ColorizeTask` serves them: the records give L, ab and the embedding; the
fusion regression head compiles with MSE, the classification head and the two-player models
(Lal et al., ColorGAN) compute their losses in their own ``train_step``. The VCNN trains on
64 px patches of the records' RGB, in YUV (Y in, the centre's U and V out), with its own
``train_step`` (the MSE / log-loss schedule). PixColor trains on the fusion records too: its
PixelCNN on the 1/8-resolution chroma bins computed from L and ab in its ``train_step``.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from koala.core.errors import KoalaError
from koala.core.task import Datasets, ModelEntry, TaskBase
from koala.core.trainer import CriticLearningRate
from koala.data import bin_prior, pipelines
from koala.ops import color, colorbins, grid
from koala.tasks.colorize.config import ColorizeTrainConfig
from koala.tasks.colorize.models import pixcolor, vcnn
from koala.tasks.colorize.models.colorgan import ColorGAN
from koala.tasks.colorize.models.lal import LalColorizer


def ab_prior_path(run, cfg: ColorizeTrainConfig) -> str:
    """--ab_prior, or ``ab_prior.npz`` beside the training records (in the directory, or
    beside the shard file or pattern)."""
    if cfg.ab_prior:
        return cfg.ab_prior
    source = run.train_records
    folder = source if tf.io.gfile.isdir(source) else os.path.dirname(source)
    return os.path.join(folder, bin_prior.PRIOR_FILE)


def class_weights(run, cfg: ColorizeTrainConfig) -> dict:
    """The classification head's bins and rebalancing weights, from the records' ab prior:
    ``w ∝ ((1 − λ)·p̃ + λ/Q)⁻¹`` recomputed from p̃ with --rebalance_lambda."""
    path = ab_prior_path(run, cfg)
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


def fusion_kwargs(run, cfg: ColorizeTrainConfig, recs, *, head: str) -> dict:
    """Fusion hyper-parameters from the config, and the embedder from the records' manifest."""
    manifest = recs.manifest or {}
    emb = manifest.get("embedder") or {}
    size = run.crop_size or manifest.get("image_size")
    if not size or not emb.get("dim"):
        raise KoalaError(f"{run.train_records}: the colorization records need a manifest.json "
                         f"(image size, embedder) — rebuild them with build_records")
    kwargs = {"image_size": size, "embedding_dim": emb["dim"], "batch_norm": cfg.batch_norm,
              "embedder": emb.get("name", "inception_resnet_v2"),
              "embedder_weights": emb.get("weights", "imagenet"),
              "embedder_fit": emb.get("fit", manifest.get("fit", "pad")),
              "temperature": cfg.temperature}
    if cfg.filters_scale is not None:
        kwargs["filters_scale"] = cfg.filters_scale
    if head == "classification":
        kwargs.update(class_weights(run, cfg))
    return kwargs


def semantic_kwargs(run, cfg: ColorizeTrainConfig, recs) -> dict:
    """Lal et al.'s semantic term: λ2, the targets and, for labels, the records' classes."""
    if not cfg.semantic_weight:
        return {}
    kwargs = {"semantic_weight": cfg.semantic_weight, "class_targets": cfg.class_targets}
    if cfg.class_targets == "labels":
        classes = (recs.manifest or {}).get("classes")
        if not classes:
            raise KoalaError(f"{run.train_records}: --class_targets=labels needs records "
                             f"with class labels: rebuild them with build_records "
                             f"--labels_from=dirname (or use --class_targets=embedding)")
        kwargs["num_classes"] = len(classes)
    return kwargs


def lab_batch_to_rgb(l_norm, ab_norm) -> np.ndarray:
    """Normalised L (B, H, W, 1) and ab (B, H, W, 2) -> uint8 sRGB (B, H, W, 3)."""
    lab = tf.concat([color.denormalize_l(l_norm), color.denormalize_ab(ab_norm)], axis=-1)
    return np.round(color.lab_to_srgb(lab).numpy() * 255).astype(np.uint8)


def _is_gan(model) -> bool:
    return isinstance(model, ColorGAN)


def _is_lal(model) -> bool:
    return isinstance(model, LalColorizer)


def _is_vcnn(model) -> bool:
    return isinstance(model, vcnn.VCNN)


def _is_pixcolor(model) -> bool:
    return isinstance(model, pixcolor.PixColor)


def pixcolor_kwargs(run, cfg: ColorizeTrainConfig, recs) -> dict:
    """PixColor's settings: the records' image size and embedder, and the family's flags."""
    kw = fusion_kwargs(run, cfg, recs, head="regression")
    kw = {k: kw[k] for k in ("image_size", "embedding_dim", "batch_norm", "embedder",
                             "embedder_weights", "embedder_fit", "filters_scale") if k in kw}
    return {**kw, "pixel_layers": cfg.pixel_layers, "pixel_filters": cfg.pixel_filters,
            "chroma_levels": cfg.chroma_levels, "temperature": cfg.sampling_temperature,
            "refine_weight": cfg.refine_weight, "train_parts": cfg.pixcolor_train}


def yuv_patches(rgb):
    """(B, 64, 64, 3) sRGB patches in [0, 1] -> (Y (B, 64, 64, 1), centre UV (B, 56, 56, 2))."""
    yuv = color.rgb_to_yuv(rgb)
    b = vcnn.BORDER
    return yuv[..., :1], yuv[:, b:-b, b:-b, 1:]


class ColorizeTask(TaskBase):
    """The colorize family's :class:`~koala.core.task.Task`."""

    name = "colorize"
    config_class = ColorizeTrainConfig

    def build_model(self, entry: ModelEntry, run, cfg: ColorizeTrainConfig, records):
        if cfg.semantic_weight and entry.variant != "lal":
            raise KoalaError(f"--semantic_weight is Lal et al.'s term: it applies to "
                             f"--model=lal, not to {entry.variant}")
        if entry.variant == "colorgan":
            # The square the colorize tool will fit images into: the records' size.
            size = run.crop_size or (records.manifest or {}).get("image_size") or 256
            return entry.build(perceptual_net=cfg.perceptual_net,
                               perceptual_weights=cfg.perceptual_weights,
                               perceptual_size=cfg.perceptual_size, image_size=size)
        if entry.variant == "vcnn":
            return entry.build(mse_steps=cfg.vcnn_mse_steps, uv_bins=cfg.uv_bins,
                               alternate_every=cfg.vcnn_alternate_every,
                               **({"filters_scale": cfg.filters_scale}
                                  if cfg.filters_scale is not None else {}))
        if entry.variant == "pixcolor":
            return entry.build(**pixcolor_kwargs(run, cfg, records))
        if entry.variant == "lal":  # always the classification head
            return entry.build(**fusion_kwargs(run, cfg, records, head="classification"),
                               **semantic_kwargs(run, cfg, records))
        return entry.build(head=cfg.head, **fusion_kwargs(run, cfg, records, head=cfg.head))

    def compile(self, model, run, cfg, optimizer) -> None:
        if _is_gan(model):
            # SPEC §4: Adam (0.5, 0.999) for both, --learning_rate (1e-4) for the generator
            # and twice that (2e-4) for the critic; --optimizer does not apply.
            if model.config.needs_perceptual:
                model.set_perceptual(model.make_perceptual())
            model.compile(g_optimizer=keras.optimizers.Adam(run.learning_rate, beta_1=0.5),
                          d_optimizer=keras.optimizers.Adam(2 * run.learning_rate, beta_1=0.5),
                          jit_compile=run.jit_compile)
        elif _is_lal(model):
            # Lal et al.: WGAN-GP's Adam (0.5, 0.9) for both at --learning_rate.
            model.compile(
                g_optimizer=keras.optimizers.Adam(run.learning_rate, beta_1=0.5, beta_2=0.9),
                d_optimizer=keras.optimizers.Adam(run.learning_rate, beta_1=0.5, beta_2=0.9),
                jit_compile=run.jit_compile)
        elif _is_vcnn(model) or _is_pixcolor(model):  # their own train_step and losses
            model.compile(optimizer=optimizer, jit_compile=run.jit_compile)
        else:
            # The classification head's train_step computes its own loss.
            loss = None if model.config.head == "classification" else "mse"
            model.compile(optimizer=optimizer, loss=loss, jit_compile=run.jit_compile)

    def datasets(self, model, run, cfg, train_source, val_source, val_split, val_batch):
        if _is_vcnn(model):
            return self._vcnn_datasets(run, cfg, train_source, val_source, val_split,
                                       val_batch)
        kw = dict(crop_size=run.crop_size, verify=run.verify_records,
                  crops_from=cfg.crops_from, min_crop_fraction=cfg.min_crop_fraction,
                  whole_image_fraction=cfg.whole_image_fraction,
                  labels=bool(_is_lal(model) and cfg.semantic_weight
                              and cfg.class_targets == "labels"))
        split_batches = run.distribute != "none"
        train = pipelines.colorization_dataset(
            train_source, split="train", training=True, shuffle_buffer=run.shuffle_buffer,
            seed=run.seed, repeat=run.steps_per_epoch is not None,
            drop_remainder=split_batches, batch_size=run.batch_size, **kw)
        val = None
        if val_batch is not None:
            val = pipelines.colorization_dataset(val_source, split=val_split, training=False,
                                                 batch_size=val_batch,
                                                 drop_remainder=split_batches, **kw)
        return Datasets(train, val)

    def _vcnn_datasets(self, run, cfg, train_source, val_source, val_split, val_batch):
        """64 px RGB patches -> (Y, centre UV); validation: each image's centre patch."""
        kw = dict(patch_size=vcnn.PATCH, verify=run.verify_records,
                  drop_remainder=run.distribute != "none")
        train = pipelines.rgb_dataset(
            train_source, split="train", training=True, batch_size=run.batch_size,
            patches_per_image=cfg.patches_per_image, shuffle_buffer=run.shuffle_buffer,
            seed=run.seed, repeat=run.steps_per_epoch is not None, **kw)
        train = train.map(yuv_patches, num_parallel_calls=tf.data.AUTOTUNE)
        val = None
        if val_batch is not None:
            val = pipelines.rgb_dataset(val_source, split=val_split, training=False,
                                        batch_size=val_batch, **kw).map(yuv_patches)
        return Datasets(train, val)

    def callbacks(self, model, run, cfg) -> list:
        if _is_gan(model):
            return [CriticLearningRate(2.0)]
        if _is_lal(model):
            return [CriticLearningRate(1.0)]
        return []

    def preview(self, model, examples):
        """[gray | predicted | truth]; a ColorGAN's seed-0 sample, so epochs compare."""
        x, ab = examples
        if _is_vcnn(model):  # Y (B, 64, 64, 1), centre UV: [gray | predicted | truth]
            b = vcnn.BORDER
            y = x[:, b:-b, b:-b]
            rows = [np.round(np.clip(color.yuv_to_rgb(tf.concat([y, uv], -1)).numpy(), 0, 1)
                             * 255).astype(np.uint8)
                    for uv in (tf.zeros_like(ab), model(x, training=False), ab)]
            image = grid.make_grid(list(zip(*rows, strict=True)), height=128)
            return "gray | predicted | truth", image
        if _is_gan(model):
            pred = model.sample(x["l"], seed=0)[0]
        elif _is_pixcolor(model):  # one sample each, seed 0
            pred = model.sample({"l": x["l"], "embedding": x["embedding"]}, seed=0)[0]
        else:
            pred = model(x, training=False)
        zeros = tf.zeros_like(ab)
        gray, out, truth = (lab_batch_to_rgb(x["l"], a) for a in (zeros, pred, ab))
        image = grid.make_grid(list(zip(gray, out, truth, strict=True)), height=128)
        return "gray | predicted | truth", image

    def monitor(self, model) -> str:
        # The adversarial val_loss swings: ColorGAN follows L1, Lal et al. the cross-entropy.
        if _is_gan(model):
            return "l1"
        if _is_lal(model):
            return "class_ce"
        return "loss"

    def run_info(self, entry: ModelEntry, run, cfg) -> dict:
        if cfg.head == "classification" or entry.variant == "lal":
            return {"ab_prior": ab_prior_path(run, cfg)}
        return {}


TASK = ColorizeTask()
