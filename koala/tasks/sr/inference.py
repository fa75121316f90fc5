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

Tiles (:mod:`koala.core.tiling`, the tiler the codec uses too). Big images are cut into output
tiles of ``tile`` x ``tile`` high-res pixels; each tile's model input is the tile plus
``overlap`` px of context per side (clipped at the image edges). SRCNN and the auto-encoder
tile 1:1 on the high-res grid, each window made from a low-res window that is wider still by
:data:`BICUBIC_MARGIN` low-res px (the bicubic upscale is outside the model, so the layer graph
does not see it); FSRCNN tiles the low-res grid with an output scale of s. So the bicubic
upscale, the colour conversion and the model all run on bounded windows and no full-size
intermediate exists (only the output array). The context covers the model's receptive radius,
read off its layer graph (:func:`koala.core.tiling.receptive_radius`; it agrees with the hand
formula from the config, tests/test_tiling.py), so the stitched result equals the whole image
run at once up to float rounding (tests: within 1e-4). Tile edges that are image edges see
exactly what the whole image sees there (the same zero padding in "same" convolutions, the
same reflection, the same bicubic edge handling).

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
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from koala.core import saving as models
from koala.core import tiling
from koala.core.errors import KoalaError
from koala.data import pipelines
from koala.ops import color, images
from koala.tasks.sr import models as sr
from koala.tasks.sr import subpixel

__all__ = [
    "BICUBIC_MARGIN",
    "DEFAULT_TILE",
    "Upscaler",
    "default_tile",
    "check_scale",
    "default_overlap",
    "receptive_radius",
]

DEFAULT_TILE = 512
"""Tile side on the grid a model's activations live on: high-res px for SRCNN and the
auto-encoder (a 9-1-5 SRCNN tile's 64-channel activations are ~80 MB), low-res px for FSRCNN
(an output tile of 512·s px; its 56-channel activations are ~64 MB). See :func:`default_tile`."""

BICUBIC_MARGIN = 3
"""Low-res px added around every window before the bicubic upscale. Keys' cubic kernel reaches
2 low-res px; one more so no tap of a kept pixel ever falls outside the window."""

_Y_UNITS = 255.0  # koala.ops.color's YCbCr is in 0..255 units; models see Y / 255 (pipelines.to_y)

_MODELS = {sr.SRCNNConfig: sr.SRCNN, sr.FSRCNNConfig: sr.FSRCNN,
           sr.AutoencoderConfig: sr.SRAutoencoder}


# --- Geometry ------------------------------------------------------------------------------


def _sr_config(model_or_config):
    config = getattr(model_or_config, "config", model_or_config)
    if not isinstance(config, sr.SRConfig):
        raise KoalaError(f"{type(model_or_config).__name__} is not a koala SR model "
                         "(SRCNN, FSRCNN or SRAutoencoder)")
    return config


def receptive_radius(model_or_config) -> int:
    """High-res px of context a tile needs on each side for its output to be exact, read off
    the model's layer graph (:func:`koala.core.tiling.receptive_radius`; a config is built
    into its model first).

    SRCNN: sum of (k - 1) / 2 over its layers (6 for 9-1-5), "valid" or "same". Auto-encoder:
    (2 * depth + 1) 3x3 layers, 1 px each. FSRCNN (on the low-res grid, then times the
    scale): 2 (conv5) + m (conv3s) + the deconvolution's ceil(((9 - 1) / 2) / s) + 1.
    """
    config = _sr_config(model_or_config)
    model = model_or_config
    if model is config:
        model = _MODELS[type(config)](**dataclasses.asdict(config))
    return tiling.receptive_radius(model)


def default_overlap(model_or_config) -> int:
    """:func:`receptive_radius` rounded up to a multiple of 8 (SRCNN 9-1-5: 8; FSRCNN x3: 32)."""
    return tiling.round_overlap(receptive_radius(model_or_config))


def default_tile(model_or_config) -> int:
    """The default output tile side: :data:`DEFAULT_TILE` px of the model's working grid, so
    :data:`DEFAULT_TILE` for SRCNN and the auto-encoder, ``DEFAULT_TILE * scale`` for FSRCNN
    (fewer, larger tiles: less margin recomputed, fewer calls)."""
    config = _sr_config(model_or_config)
    return DEFAULT_TILE if config.upsampled_input else DEFAULT_TILE * config.scale


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


def _to_uint8(tile01) -> np.ndarray:
    """A float tile in [0, 1] (array or tensor) -> uint8, rounded half to even, in TensorFlow
    (multi-threaded; numpy's round and cast of a megapixel tile cost several ms)."""
    return tf.cast(tf.round(tf.convert_to_tensor(tile01) * 255.0), tf.uint8).numpy()


# --- The upscaler ----------------------------------------------------------------------------


class Upscaler:
    """An SR model plus the pipeline around it: colour handling, bicubic input, tiling.

    Args:
      model: a :mod:`koala.tasks.sr.models` model (SRCNN, FSRCNN or SRAutoencoder; anything whose
        ``.config`` is one of their configs and that maps (B, H, W, C) as they do).
      tile: side of the output tiles in high-res px (FSRCNN: rounded down to a multiple of
        the scale, at least the scale); "auto": :func:`default_tile`; None runs the whole
        image at once (memory grows with the image: a 6000 x 4500 SRCNN output needs ~7 GB of
        activations per layer).
      overlap: high-res px of context around each tile, at least :func:`receptive_radius`;
        default :func:`default_overlap`.
      fast: run FSRCNN's deconvolution in its exact sub-pixel form
        (:func:`koala.tasks.sr.subpixel.fast_fsrcnn`; outputs equal within float rounding);
        False runs the model as trained. Other models ignore it.

    Raises:
      KoalaError: ``model`` is not a koala SR model.
      ValueError: ``tile`` < 1, or ``overlap`` smaller than the receptive radius (the tiles
        would not join up exactly).
    """

    def __init__(self, model, *, tile: int | None | str = "auto", overlap: int | None = None,
                 fast: bool = True):
        config = _sr_config(model)
        radius = receptive_radius(model)
        self.model = model
        self.config = config
        # FSRCNN tiles on the low-res grid: whole low-res pixels.
        tile = default_tile(config) if tile == "auto" else tile
        self.tile = tiling.check_tile(tile, 1 if config.upsampled_input else config.scale)
        self.overlap = tiling.check_overlap(
            tiling.round_overlap(radius) if overlap is None else overlap, radius)
        self.border = sr.border(config)
        self.y_only = config.channels == 1
        # Context per side in the model's input grid: high-res px, or low-res px for FSRCNN
        # (which also needs BICUBIC_MARGIN for a Y model's Cb/Cr).
        if config.upsampled_input:
            self.input_margin = self.overlap
        else:
            self.input_margin = max(math.ceil(self.overlap / config.scale),
                                    BICUBIC_MARGIN if self.y_only else 0)
        self.fast = fast and isinstance(model, sr.FSRCNN)
        self._forward = tiling.compile_forward(model, config.channels)
        if self.fast:
            self._window = self._compile_window(subpixel.fast_fsrcnn(model))

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
        # Rounded per tile: no full-size float array.
        return self._run(rgb.astype(np.float32) / 255.0, out,
                         _to_uint8)

    def upscale_float(self, rgb01) -> np.ndarray:
        """float (h, w, 3) in [0, 1] -> float32 (s*h, s*w, 3) in [0, 1], not rounded."""
        rgb01 = np.asarray(rgb01, dtype=np.float32)
        if rgb01.ndim != 3 or rgb01.shape[2] != 3:
            raise ValueError(f"expected an (h, w, 3) image, got shape {rgb01.shape}")
        out = np.empty((rgb01.shape[0] * self.scale, rgb01.shape[1] * self.scale, 3),
                       np.float32)
        return self._run(rgb01, out)

    # -- tiling

    def _run(self, rgb01: np.ndarray, out: np.ndarray, convert: Callable | None = None):
        height, width = rgb01.shape[:2]
        if height < 1 or width < 1:
            raise ValueError(f"empty image of shape {rgb01.shape}")
        s = self.scale
        if self.config.upsampled_input:  # the model runs 1:1 on the high-res grid
            return tiling.stitch(
                s * height, s * width, lambda r, c: self._upsampled_window(rgb01, r, c), out,
                tile=self.tile, context=self.overlap, border=self.border, convert=convert)
        # The fast path's tiles stay tensors until they are rounded (_to_uint8) or copied out.
        window = self._window if self.fast else self._low_res_window
        return tiling.stitch(  # FSRCNN: low-res windows, s x their size out
            height, width, lambda r, c: window(tiling.take(rgb01, r, c)), out,
            tile=self.tile, context=self.input_margin, scale=s, convert=convert)

    def _colour_in(self, window: np.ndarray) -> tf.Tensor:
        """RGB (h', w', 3) in [0, 1] -> what the model's channels are made of: RGB, or Y, Cb,
        Cr in [0, 1] for a Y model."""
        x = tf.constant(window)
        return color.rgb_to_ycbcr(x) / _Y_UNITS if self.y_only else x

    def _colour_out(self, pred: np.ndarray, cbcr: np.ndarray | None) -> np.ndarray:
        """The model's output (and the bicubic Cb, Cr of the same pixels) -> RGB in [0, 1]."""
        if not self.y_only:
            return np.clip(pred, 0.0, 1.0)
        ycbcr = np.concatenate([pred, cbcr], axis=-1) * _Y_UNITS
        return np.clip(color.ycbcr_to_rgb(ycbcr).numpy(), 0.0, 1.0)

    def _compile_window(self, model) -> Callable:
        """The fast path of :meth:`_low_res_window` as one graph: colour in, ``model``, the
        bicubic chroma, colour out, for a low-res RGB window (h', w', 3) in [0, 1]."""
        s, y_only = self.scale, self.y_only

        def window(rgb01):
            x = color.rgb_to_ycbcr(rgb01) / _Y_UNITS if y_only else rgb01
            pred = model(x[None, ..., :1] if y_only else x[None], training=False)[0]
            if not y_only:
                return tf.clip_by_value(pred, 0.0, 1.0)
            cbcr = pipelines.bicubic_upscale(x[..., 1:], s)
            rgb = color.ycbcr_to_rgb(tf.concat([pred, cbcr], axis=-1) * _Y_UNITS)
            return tf.clip_by_value(rgb, 0.0, 1.0)

        return tf.function(window, autograph=False,
                           input_signature=[tf.TensorSpec([None, None, 3], tf.float32)])

    def _low_res_window(self, window: np.ndarray) -> np.ndarray:
        """FSRCNN: low-res window (h', w', 3) in [0, 1] -> RGB (s*h', s*w', 3)."""
        x = self._colour_in(window)
        pred = self._forward((x[..., :1] if self.y_only else x)[None])[0].numpy()
        cbcr = pipelines.bicubic_upscale(x[..., 1:], self.scale).numpy() if self.y_only else None
        return self._colour_out(pred, cbcr)

    def _upsampled_window(self, rgb01: np.ndarray, rows: tiling.Window,
                          cols: tiling.Window) -> np.ndarray:
        """SRCNN, auto-encoder: the model's output for the high-res windows ``rows`` x ``cols``
        (from ``(rows.origin, cols.origin)``), made from the low-res pixels under them."""
        s = self.scale
        (r0, r1), (c0, c1) = (
            tiling.source(w.lo, w.hi, size, BICUBIC_MARGIN, scale=s)
            for w, size in ((rows, rgb01.shape[0]), (cols, rgb01.shape[1])))
        up = pipelines.bicubic_upscale(self._colour_in(rgb01[r0:r1, c0:c1]), s).numpy()
        # up holds high-res [s*r0, s*r1) x [s*c0, s*c1); the model input is the windows,
        # reflect-padded by the border where they touch the image edges.
        model_in = tiling.take(up[..., :1] if self.y_only else up, rows, cols,
                               offset=(s * r0, s * c0))
        pred = self._forward(model_in[None])[0].numpy()
        top, left = rows.origin - s * r0, cols.origin - s * c0
        cbcr = up[top:top + pred.shape[0], left:left + pred.shape[1], 1:]
        return self._colour_out(pred, cbcr if self.y_only else None)


def check_scale(upscaler: Upscaler, scale: int | None) -> None:
    """KoalaError when ``scale`` is given and is not the model's (a model knows one factor)."""
    if scale is not None and scale != upscaler.scale:
        raise KoalaError(f"the model upscales x{upscaler.scale}, not x{scale} "
                         "(an SR model is trained for one scale)")
