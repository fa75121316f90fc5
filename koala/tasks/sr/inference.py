r"""Super-resolves photos with a trained SR model (SRCNN, FSRCNN or the auto-encoder, SPEC §3).

The command line is :mod:`koala.cli.upscale`.

Inference, as the papers evaluate (SPEC §3):

* Y models (``config.channels == 1``): the low-res image is converted to BT.601 studio YCbCr
  (:func:`koala.ops.color.rgb_to_ycbcr`, divided by 255, the normalisation of
  :func:`koala.data.pipelines.to_y`); the model super-resolves Y; Cb and Cr are only
  bicubic-upscaled; the merged YCbCr goes back to RGB, clipped to [0, 1]. RGB models
  (``channels == 3``) see the RGB image directly.
* SRCNN and the auto-encoder (``config.upsampled_input``) take the bicubic-upscaled image
  (:func:`koala.data.pipelines.bicubic_upscale`); SRCNN with "valid" padding gets it
  reflect-padded by ``border`` px per side, so its output covers the whole image. FSRCNN takes
  the low-res image and returns s times its size.

Tiles. Big images are cut into output tiles of ``tile`` x ``tile`` high-res pixels; each tile's
model input is the tile plus ``overlap`` px of context per side (clipped at the image edges),
made from a low-res window that is wider still by :data:`BICUBIC_MARGIN` low-res px, so the
bicubic upscale, the colour conversion and the model all run on bounded windows and no
full-size intermediate exists (only the output array). The context covers the model's
receptive field (:func:`receptive_radius`), so the stitched result equals the whole image run
at once up to float rounding (tests: within 1e-4). Tile edges that are image edges see exactly
what the whole image sees there (the same zero padding in "same" convolutions, the same
reflection, the same bicubic edge handling).

Measured once by hand (2 CPU cores shared with a training run, TF 2.21 CPU, random weights,
``upscale`` of a 2000 x 1500 RGB image to 6000 x 4500, default tile 512, peak RSS of the whole
process from ``/usr/bin/time -v``): SRCNN 9-1-5 (Y) 7.7 s, 0.88 GB; FSRCNN(56, 12, 4) x3 (Y)
7.7 s, 0.74 GB. The same FSRCNN run untiled (``tile=None``) peaked at 4.4 GB and took 18 s;
an untiled SRCNN would hold 6000 x 4500 x 64 floats (6.9 GB) per activation.

Departure: the SR trainer (:func:`koala.data.pipelines.sr_dataset`) makes a Y model's input as
``to_y(bicubic_upscale(rgb))``, i.e. bicubic in RGB clipped to [0, 1] before Y; here Y is
upscaled directly (the SRCNN paper's and MATLAB's recipe, and what keeps Cb/Cr the plain
bicubic ones). The two differ only where bicubic overshoots [0, 1] in RGB (hard edges in
saturated colours), by the clipped overshoot.

Library use::

    upscaler = Upscaler.load("srcnn.keras")                  # tile=512 by default
    big = upscaler.upscale(images.load_image("small.jpg").rgb)   # uint8 (s*h, s*w, 3)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from koala.core import saving as models
from koala.core.errors import KoalaError
from koala.data import pipelines
from koala.ops import color, images
from koala.tasks.sr import models as sr

__all__ = [
    "BICUBIC_MARGIN",
    "DEFAULT_TILE",
    "Upscaler",
    "check_scale",
    "default_overlap",
    "receptive_radius",
]

DEFAULT_TILE = 512
"""Output-space tile side: a 9-1-5 SRCNN tile's 64-channel activations are ~80 MB."""

BICUBIC_MARGIN = 3
"""Low-res px added around every window before the bicubic upscale. Keys' cubic kernel reaches
2 low-res px; one more so no tap of a kept pixel ever falls outside the window."""

OVERLAP_MULTIPLE = 8
"""The default overlap is the receptive radius rounded up to a multiple of this (slack)."""

_Y_UNITS = 255.0  # koala.ops.color's YCbCr is in 0..255 units; models see Y / 255 (pipelines.to_y)


# --- Geometry ------------------------------------------------------------------------------


def _sr_config(model_or_config):
    config = getattr(model_or_config, "config", model_or_config)
    if not isinstance(config, sr.SRConfig):
        raise KoalaError(f"{type(model_or_config).__name__} is not a koala SR model "
                         "(SRCNN, FSRCNN or SRAutoencoder)")
    return config


def receptive_radius(model_or_config) -> int:
    """High-res px of context a tile needs on each side for its output to be exact.

    SRCNN: sum of (k - 1) / 2 over its layers (6 for 9-1-5) -- with "valid" padding the
    convolutions only see real (or reflected) pixels, with "same" the zero padding at a window
    edge reaches that far in. Auto-encoder: (2 * depth + 1) 3x3 layers, 1 px each.
    FSRCNN (on the low-res grid, then times the scale): 2 (conv5) + m (conv3s) + the
    deconvolution's reach ceil(((9 - 1) / 2) / s) + 1 low-res px.
    """
    config = _sr_config(model_or_config)
    if isinstance(config, sr.SRCNNConfig):
        return sum((k - 1) // 2 for k in config.kernels)
    if isinstance(config, sr.AutoencoderConfig):
        return (2 * config.depth + 1) * (sr.AE_KERNEL - 1) // 2
    k = sr.FSRCNN_KERNELS
    low_res = ((k["feature"] - 1) // 2 + config.m * (k["map"] - 1) // 2
               + math.ceil((k["deconv"] - 1) / 2 / config.scale) + 1)
    return low_res * config.scale


def default_overlap(model_or_config) -> int:
    """:func:`receptive_radius` rounded up to a multiple of 8 (SRCNN 9-1-5: 8; FSRCNN x3: 32)."""
    radius = receptive_radius(model_or_config)
    return max(OVERLAP_MULTIPLE, -(-radius // OVERLAP_MULTIPLE) * OVERLAP_MULTIPLE)


@dataclasses.dataclass(frozen=True)
class _Span:
    """One axis of one tile: output [o0, o1) in high-res px; the low-res window [l0, l1);
    for upsampled models the model-input window [u0, u1) (high-res, before padding) and the
    reflect padding (lo, hi) in px."""

    o0: int
    o1: int
    l0: int
    l1: int
    u0: int = 0
    u1: int = 0
    pad: tuple[int, int] = (0, 0)


def _tile_starts(size: int, tile: int | None) -> list[tuple[int, int]]:
    if tile is None or tile >= size:
        return [(0, size)]
    return [(start, min(start + tile, size)) for start in range(0, size, tile)]


def _as_rgb_uint8(image) -> np.ndarray:
    """A LoadedImage or a uint8 (H, W), (H, W, 1), (H, W, 3) array -> uint8 (H, W, 3)."""
    if isinstance(image, images.LoadedImage):
        return image.rgb
    rgb = np.asarray(image)
    if rgb.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {rgb.dtype} "
                        "(use upscale_float for [0, 1] floats)")
    if rgb.ndim == 2:
        rgb = rgb[:, :, None]
    if rgb.ndim != 3 or rgb.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got {rgb.shape}")
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return rgb


# --- The upscaler ----------------------------------------------------------------------------


class Upscaler:
    """An SR model plus the pipeline around it: colour handling, bicubic input, tiling.

    Args:
      model: a :mod:`koala.tasks.sr.models` model (SRCNN, FSRCNN or SRAutoencoder; anything whose
        ``.config`` is one of their configs and that maps (B, H, W, C) as they do).
      tile: side of the output tiles in high-res px (FSRCNN: rounded down to a multiple of
        the scale, at least the scale); None runs the whole image at once (memory grows with
        the image: a 6000 x 4500 SRCNN output needs ~7 GB of activations per layer).
      overlap: high-res px of context around each tile, at least :func:`receptive_radius`;
        default :func:`default_overlap`.

    Raises:
      KoalaError: ``model`` is not a koala SR model.
      ValueError: ``tile`` < 1, or ``overlap`` smaller than the receptive radius (the tiles
        would not join up exactly).
    """

    def __init__(self, model, *, tile: int | None = DEFAULT_TILE, overlap: int | None = None):
        config = _sr_config(model)
        scale = config.scale
        if tile is not None:
            if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
                raise ValueError(f"tile must be a positive integer or None, got {tile!r}")
            if not config.upsampled_input:
                tile = max(scale, tile // scale * scale)  # FSRCNN tiles on the low-res grid
        radius = receptive_radius(config)
        if overlap is None:
            overlap = default_overlap(config)
        elif overlap < radius:
            raise ValueError(f"overlap must be >= the model's receptive radius {radius} px, "
                             f"got {overlap}")
        self.model = model
        self.config = config
        self.tile = tile
        self.overlap = int(overlap)
        self.border = sr.border(config)
        self.y_only = config.channels == 1
        # Context per side in the model's input grid: high-res px, or low-res px for FSRCNN
        # (which also needs BICUBIC_MARGIN for a Y model's Cb/Cr).
        if config.upsampled_input:
            self.input_margin = self.overlap
        else:
            self.input_margin = max(math.ceil(self.overlap / scale),
                                    BICUBIC_MARGIN if self.y_only else 0)
        # Dynamic shapes: one trace serves every tile size.
        self._forward = tf.function(
            self._call_model,
            input_signature=[tf.TensorSpec([None, None, None, config.channels], tf.float32)],
        )

    def _call_model(self, x):
        return self.model(x, training=False)

    @classmethod
    def load(cls, path, **kwargs) -> Upscaler:
        """An upscaler from a saved ``.keras`` SR model; ``kwargs`` go to the constructor.

        Raises:
          KoalaError: the file is missing, is not a loadable Keras model, or is not a koala SR
            model.
        """
        model = models.load(path, (sr.SRCNN, sr.FSRCNN, sr.SRAutoencoder),
                            "a koala SR model (SRCNN, FSRCNN or SRAutoencoder)")
        return cls(model, **kwargs)

    @property
    def scale(self) -> int:
        """The factor the model upscales by (the one it was trained for)."""
        return self.config.scale

    # -- public API

    def upscale(self, rgb) -> np.ndarray:
        """uint8 (h, w, 3) low-res (or (h, w), or a LoadedImage) -> uint8 (s*h, s*w, 3)."""
        rgb = _as_rgb_uint8(rgb)
        out = np.empty((rgb.shape[0] * self.scale, rgb.shape[1] * self.scale, 3), np.uint8)

        def write(rows, cols, tile01):  # rounded per tile: no full-size float array
            out[rows, cols] = np.round(tile01 * 255.0).astype(np.uint8)

        self._run(rgb.astype(np.float32) / 255.0, write)
        return out

    def upscale_float(self, rgb01) -> np.ndarray:
        """float (h, w, 3) in [0, 1] -> float32 (s*h, s*w, 3) in [0, 1], not rounded."""
        rgb01 = np.asarray(rgb01, dtype=np.float32)
        if rgb01.ndim != 3 or rgb01.shape[2] != 3:
            raise ValueError(f"expected an (h, w, 3) image, got shape {rgb01.shape}")
        out = np.empty((rgb01.shape[0] * self.scale, rgb01.shape[1] * self.scale, 3),
                       np.float32)

        def write(rows, cols, tile01):
            out[rows, cols] = tile01

        self._run(rgb01, write)
        return out

    # -- tiling

    def _spans(self, size: int) -> Iterator[_Span]:
        """The tiles of one axis of a low-res side ``size``."""
        s, high = self.scale, size * self.scale
        for o0, o1 in _tile_starts(high, self.tile):
            if not self.config.upsampled_input:
                # FSRCNN: o0, o1 are multiples of s; the model's window is low-res.
                m = self.input_margin
                yield _Span(o0, o1, max(0, o0 // s - m), min(size, o1 // s + m))
                continue
            u0, u1 = max(0, o0 - self.overlap), min(high, o1 + self.overlap)
            b = self.border  # reflect-pad only where the window is at the image edge
            pad = (b if u0 == 0 else 0, b if u1 == high else 0)
            l0 = max(0, u0 // s - BICUBIC_MARGIN)
            l1 = min(size, -(-u1 // s) + BICUBIC_MARGIN)
            yield _Span(o0, o1, l0, l1, u0, u1, pad)

    def _run(self, rgb01: np.ndarray, write: Callable) -> None:
        height, width = rgb01.shape[:2]
        if height < 1 or width < 1:
            raise ValueError(f"empty image of shape {rgb01.shape}")
        cols = list(self._spans(width))
        for rs in self._spans(height):
            for cs in cols:
                window = rgb01[rs.l0:rs.l1, cs.l0:cs.l1]
                write(slice(rs.o0, rs.o1), slice(cs.o0, cs.o1), self._tile(window, rs, cs))

    def _tile(self, window: np.ndarray, rs: _Span, cs: _Span) -> np.ndarray:
        """Low-res window (h', w', 3) in [0, 1] -> the output tile (o1-o0 rows, cols, 3)."""
        s = self.scale
        x = tf.constant(window)
        if self.y_only:
            x = color.rgb_to_ycbcr(x) / _Y_UNITS  # (h', w', 3): Y, Cb, Cr in [0, 1]
        if self.config.upsampled_input:
            up = pipelines.bicubic_upscale(x, s).numpy()  # high-res [s*l0, s*l1)
            up = up[rs.u0 - s * rs.l0:rs.u1 - s * rs.l0, cs.u0 - s * cs.l0:cs.u1 - s * cs.l0]
            model_in = up[..., :1] if self.y_only else up
            if rs.pad != (0, 0) or cs.pad != (0, 0):
                # numpy's reflect repeats the reflection for pads longer than the side (tiny
                # images); a window at an edge is then the whole side, as untiled.
                model_in = np.pad(model_in, (rs.pad, cs.pad, (0, 0)), mode="reflect")
            pred = self._forward(model_in[None])[0].numpy()
            # Output row 0 sits at model-input row border: high-res row u0 - pad + border.
            r0 = rs.o0 - (rs.u0 - rs.pad[0] + self.border)
            c0 = cs.o0 - (cs.u0 - cs.pad[0] + self.border)
            pred = pred[r0:r0 + rs.o1 - rs.o0, c0:c0 + cs.o1 - cs.o0]
            if not self.y_only:
                return np.clip(pred, 0.0, 1.0)
            cbcr = up[rs.o0 - rs.u0:rs.o1 - rs.u0, cs.o0 - cs.u0:cs.o1 - cs.u0, 1:]
        else:
            model_in = x[..., :1] if self.y_only else x
            pred = self._forward(model_in[None])[0].numpy()  # high-res [s*l0, s*l1)
            rows = slice(rs.o0 - s * rs.l0, rs.o1 - s * rs.l0)
            cols = slice(cs.o0 - s * cs.l0, cs.o1 - s * cs.l0)
            pred = pred[rows, cols]
            if not self.y_only:
                return np.clip(pred, 0.0, 1.0)
            cbcr = pipelines.bicubic_upscale(x[..., 1:], s).numpy()[rows, cols]
        ycbcr = np.concatenate([pred, cbcr], axis=-1) * _Y_UNITS
        return np.clip(color.ycbcr_to_rgb(ycbcr).numpy(), 0.0, 1.0)


def check_scale(upscaler: Upscaler, scale: int | None) -> None:
    """KoalaError when ``scale`` is given and is not the model's (a model knows one factor)."""
    if scale is not None and scale != upscaler.scale:
        raise KoalaError(f"the model upscales x{upscaler.scale}, not x{scale} "
                         "(an SR model is trained for one scale)")
