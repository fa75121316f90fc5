"""The colorize family's settings: inference constants and the training config.

Kept free of TensorFlow and Keras imports, so a command line can build its flags from them
(``python -m koala.colorize --help`` imports nothing heavy).
"""

from __future__ import annotations

import dataclasses

# Zhang et al.'s annealed-mean temperature and class-rebalancing λ (SPEC §5), from the bins'
# TensorFlow-free parameters (koala.ops.colorbins re-exports the same).
from koala.ops.colorbins_params import ANNEAL_TEMPERATURE, REBALANCE_LAMBDA

DEFAULT_SATURATION = 1.2
"""SPEC §1: the report multiplies the predicted a*b* by 1.2 (raw outputs looked dull)."""

REFINES = ("none", "guided")
# User-guided colorization (koala.tasks.colorize.user): a hints pixel is a hint when its chroma
# (UV of YUV) differs from the gray input's by more than this; a model's colour is kept beyond
# this many pixels from every hint; Welsh et al.'s jittered reference samples (about 200;
# koala.ops.welsh.DEFAULT_SAMPLES).
DEFAULT_HINT_THRESHOLD = 0.02
DEFAULT_HINT_REACH = 20
DEFAULT_REFERENCE_SAMPLES = 200
"""Chroma refinements: none, or a guided filter with the lightness as guide (SPEC §5)."""
DEFAULT_RADIUS = 40
"""Guided-filter radius in full-resolution pixels (Liang et al. 2016: 40)."""
DEFAULT_EPS = 1e-4
"""Guided-filter ε for a guide in [0, 1] (Liang et al. 2016: 1e-4)."""

INFERENCE_FIT = "pad"
"""How the network's square is made at inference: always pad, so no part of the image is cut."""

HEADS = ("regression", "classification")
"""Fusion heads: tanh ab with MSE (SPEC §1), or Zhang et al.'s ab-bin distribution (SPEC §5)."""

PERCEPTUAL_NETS = ("vgg19", "mobilenet")
CROPS_FROM = ("records", "rgb")
CLASS_TARGETS = ("embedding", "labels")
"""Lal et al.'s semantic term: the records' embedder softmax or integer labels (models/lal)."""
"""Where fusion training crops come from (koala.data.pipelines.colorization_dataset)."""


@dataclasses.dataclass(frozen=True)
class ColorizeTrainConfig:
    """What training a colorizer (fusion, Lal et al., ColorGAN, VCNN, PixColor) needs beyond
    the run config.

    batch_norm:       fusion: the report's BatchNorm layers (False = the paper's code).
    filters_scale:    fusion, vcnn, pixcolor: multiply every filter count (None: the
                      model's own, 1 = paper).
    head:             fusion: regression or classification (Lal et al. always classifies).
    temperature:      classification: annealed-mean temperature.
    ab_prior:         classification: the records' ab bin prior (.npz); None: ab_prior.npz
                      beside the training records.
    rebalance_lambda: classification: λ of the rebalancing weights ((1 - λ)·prior + λ/Q)^-1.
    perceptual_net, perceptual_weights, perceptual_size:
                      ColorGAN's perceptual terms: the network, its weights (imagenet, none or
                      a file) and the square images are resized to (0: no resize).
    crops_from:       fusion and Lal et al.: "records" (the stored L/ab squares, the paper)
                      or "rgb" (random squares of random size from the stored photo, plus
                      the whole padded image for ``whole_image_fraction`` of the examples).
    patches_per_image, vcnn_mse_steps, vcnn_alternate_every, uv_bins:
                      Liang et al. (vcnn): random 64 px patches per image visit; steps of MSE
                      alone, then steps per loss in the MSE / log-loss alternation; bins per
                      chroma channel of the log loss (models/vcnn.py).
    pixel_layers, pixel_filters, chroma_levels, sampling_temperature, refine_weight:
                      PixColor (models/pixcolor.py): the gated PixelCNN's depth and width,
                      bins per chroma channel, the default sampling temperature, and the
                      refinement MSE's weight in the loss.
    pixcolor_train:   PixColor: "all" networks, or the "refine"ment alone (the others frozen).
    semantic_weight:  Lal et al.: λ2 of the semantic classification term (0: none).
    class_targets:    Lal et al., λ2 > 0: "embedding" (the records' embedder softmax as soft
                      targets, distillation) or "labels" (the records' class labels).
    min_crop_fraction, whole_image_fraction:
                      crops_from="rgb": the smallest square side as a share of the photo's
                      short side; the share of examples that are the whole image.
    """

    batch_norm: bool = True
    filters_scale: float | None = None
    head: str = "regression"
    temperature: float = ANNEAL_TEMPERATURE
    ab_prior: str | None = None
    rebalance_lambda: float = REBALANCE_LAMBDA
    perceptual_net: str = "vgg19"
    perceptual_weights: str = "imagenet"
    perceptual_size: int = 224
    crops_from: str = "records"
    min_crop_fraction: float = 0.4
    whole_image_fraction: float = 0.25
    semantic_weight: float = 0.0
    class_targets: str = "embedding"
    patches_per_image: int = 16
    vcnn_mse_steps: int = 100
    vcnn_alternate_every: int = 1
    uv_bins: int = 32
    pixel_layers: int = 20
    pixel_filters: int = 128
    chroma_levels: int = 32
    sampling_temperature: float = 1.0
    refine_weight: float = 1.0
    pixcolor_train: str = "all"

    def __post_init__(self):
        checks = [
            (self.filters_scale is None or self.filters_scale > 0, "filters_scale must be > 0"),
            (self.head in HEADS, f"head must be one of {HEADS}"),
            (self.temperature > 0, "temperature must be > 0"),
            (0 <= self.rebalance_lambda <= 1, "rebalance_lambda must be in [0, 1]"),
            (self.perceptual_net in PERCEPTUAL_NETS,
             f"perceptual_net must be one of {PERCEPTUAL_NETS}"),
            (self.perceptual_size >= 0, "perceptual_size must be >= 0"),
            (self.crops_from in CROPS_FROM, f"crops_from must be one of {CROPS_FROM}"),
            (0 < self.min_crop_fraction <= 1, "min_crop_fraction must be in (0, 1]"),
            (0 <= self.whole_image_fraction <= 1, "whole_image_fraction must be in [0, 1]"),
            (self.semantic_weight >= 0, "semantic_weight must be >= 0"),
            (self.patches_per_image >= 1, "patches_per_image must be >= 1"),
            (self.vcnn_mse_steps >= 0, "vcnn_mse_steps must be >= 0"),
            (self.vcnn_alternate_every >= 1, "vcnn_alternate_every must be >= 1"),
            (self.uv_bins >= 2, "uv_bins must be >= 2"),
            (self.pixel_layers >= 1, "pixel_layers must be >= 1"),
            (self.pixel_filters >= 1, "pixel_filters must be >= 1"),
            (self.chroma_levels >= 2, "chroma_levels must be >= 2"),
            (self.sampling_temperature > 0, "sampling_temperature must be > 0"),
            (self.refine_weight >= 0, "refine_weight must be >= 0"),
            (self.pixcolor_train in ("all", "refine"), "pixcolor_train must be all or refine"),
            (self.class_targets in CLASS_TARGETS,
             f"class_targets must be one of {CLASS_TARGETS}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
