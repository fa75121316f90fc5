"""The super-resolution family's training config (no TensorFlow import: flags read it)."""

from __future__ import annotations

import dataclasses

SR_CHANNELS = ("y", "rgb")  # koala.data.pipelines.SR_CHANNELS (tests/test_run_config.py)
SCALES = (2, 3, 4)


@dataclasses.dataclass(frozen=True)
class SRTrainConfig:
    """What training an SR model (SRCNN, FSRCNN, the auto-encoder) needs beyond the run config.

    scale:             the upscaling factor the model is trained for (2, 3 or 4).
    patch_size:        high-res patch side (SRCNN: 33).
    stride:            extract every patch on this grid (SRCNN: 14); None: patches_per_image
                       random crops per image and epoch.
    patches_per_image: random patches per image and epoch.
    sr_channels:       "y" (the papers: the Y channel) or "rgb".
    """

    scale: int = 3
    patch_size: int = 33
    stride: int | None = None
    patches_per_image: int = 16
    sr_channels: str = "y"

    def __post_init__(self):
        checks = [
            (self.scale in SCALES, f"scale must be one of {SCALES}"),
            (self.patch_size >= self.scale, "patch_size must be at least the scale"),
            (self.stride is None or self.stride >= 1, "stride must be >= 1"),
            (self.patches_per_image >= 1, "patches_per_image must be >= 1"),
            (self.sr_channels in SR_CHANNELS, f"sr_channels must be one of {SR_CHANNELS}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
