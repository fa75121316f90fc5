"""The invertible-grayscale codec's training config (no TensorFlow import: flags read it)."""

from __future__ import annotations

import dataclasses

LOSS_PRESETS = ("paper", "authors")  # koala.tasks.codec.model.PRESETS (tests/test_run_config.py)
QUANT_UNITS = ("levels", "signed")  # koala.tasks.codec.model.QUANT_UNITS
PERCEPTUAL_NETS = ("vgg19", "mobilenet")
DEFAULT_CROP = 256  # SPEC §2: 256 x 256 training crops


@dataclasses.dataclass(frozen=True)
class CodecTrainConfig:
    """What training the codec needs beyond the run config (SPEC §2).

    stage2_epoch:       first epoch of stage 2 (quantization loss on, fresh optimizer state);
                        the paper: 90 of 120.
    loss_preset:        the paper's loss weights or the authors' code's.
    perceptual_net, perceptual_weights, perceptual_size:
                        the contrast term's network, its weights (imagenet, none or a file)
                        and the square images are resized to (the authors' code: 224).
    contrast_weight:    None: the preset's 1e-7; 0 drops the term and the network.
    patches_per_image:  random crops of the run's crop_size (256) per image and epoch.
    quant_unit, quant_ste:
                        stage 2's quantization weight unit and straight-through rounding
                        (:class:`koala.tasks.codec.model.CodecConfig`, departure 9).
    theta_levels:       the lightness slack in grey levels of [-1, 1] (SPEC §2: 70).
    codec_residual:     residual ends on the encoder and decoder (departure 10).
    structure_weight:   beta, the local-structure weight (None: the preset's; the paper 0.5);
                        departure 11.
    """

    stage2_epoch: int = 90
    loss_preset: str = "paper"
    perceptual_net: str = "vgg19"
    perceptual_weights: str = "imagenet"
    perceptual_size: int = 224
    contrast_weight: float | None = None
    patches_per_image: int = 16
    quant_unit: str | None = None
    quant_ste: bool = False
    theta_levels: float = 70.0
    codec_residual: bool = False
    structure_weight: float | None = None

    def __post_init__(self):
        checks = [
            (self.stage2_epoch >= 0, "stage2_epoch must be >= 0"),
            (self.loss_preset in LOSS_PRESETS, f"loss_preset must be one of {LOSS_PRESETS}"),
            (self.perceptual_net in PERCEPTUAL_NETS,
             f"perceptual_net must be one of {PERCEPTUAL_NETS}"),
            (self.perceptual_size >= 0, "perceptual_size must be >= 0"),
            (self.contrast_weight is None or self.contrast_weight >= 0,
             "contrast_weight must be >= 0"),
            (self.patches_per_image >= 1, "patches_per_image must be >= 1"),
            (self.quant_unit in (None, *QUANT_UNITS),
             f"quant_unit must be one of {QUANT_UNITS}"),
            (self.theta_levels >= 0, "theta_levels must be >= 0"),
            (self.structure_weight is None or self.structure_weight >= 0,
             "structure_weight must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
