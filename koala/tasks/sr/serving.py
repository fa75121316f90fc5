"""An SR model as a uint8 image server: the exported signature of ``koala.export``.

``SRServer(model).serve(images)``: uint8 (B, h, w, 3) low-res RGB -> uint8 (B, s·h, s·w, 3),
the whole pipeline of :class:`koala.tasks.sr.inference.Upscaler` in one graph (no tiling:
a server bounds the image size itself): BT.601 studio YCbCr for a Y model, the model on Y
(FSRCNN on the low-res Y; SRCNN and the auto-encoder on the bicubic-upscaled one,
reflect-padded by the border a "valid" SRCNN loses), Cb and Cr bicubic-upscaled, back to RGB,
clipped and rounded. A TF Serving user needs no koala. The bicubic upscale is
:func:`bicubic_upscale`, TensorFlow's made of LiteRT builtin ops (LiteRT has no bicubic
resize).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from koala.ops import color
from koala.tasks.sr import models as sr
from koala.tasks.sr.inference import _Y_UNITS, _sr_config

__all__ = ["SRServer", "bicubic_upscale"]

KEYS_A = -0.5  # the cubic convolution kernel of tf.image.resize "bicubic" (Keys 1981)
_TABLE = 1024  # resize_bicubic_op.cc's kTableSize


def _keys(x: float) -> float:
    x = abs(x)
    if x <= 1:
        return (KEYS_A + 2) * x**3 - (KEYS_A + 3) * x**2 + 1
    if x < 2:
        return KEYS_A * x**3 - 5 * KEYS_A * x**2 + 8 * KEYS_A * x - 4 * KEYS_A
    return 0.0


def _phase_taps(scale: int) -> np.ndarray:
    """(scale, 5): output phase p of low-res pixel k reads pixels k-2 .. k+2 with these
    weights (half-pixel centres: source coordinate k + (p + 0.5)/s - 0.5)."""
    taps = np.zeros((scale, 5))
    for p in range(scale):
        delta = (p + 0.5) / scale - 0.5
        i0 = -1 if delta < 0 else 0
        # TensorFlow reads the kernel from a 1024-entry table: t is rounded to 1/1024.
        t = np.rint((delta - i0) * _TABLE) / _TABLE
        for offset, w in zip(range(i0 - 1, i0 + 3), (_keys(t + 1), _keys(t), _keys(1 - t),
                                                      _keys(2 - t)), strict=True):
            taps[p, offset + 2] += w
    return taps


def bicubic_upscale(x, scale: int) -> tf.Tensor:
    """``tf.image.resize(x, s·size, "bicubic")`` (no antialias), clipped to [0, 1] like
    :func:`koala.data.pipelines.bicubic_upscale`, made of LiteRT builtins: a 5×5 convolution
    with s²·C outputs (each output phase's separable Keys kernel) over the zero-padded
    image, divided by the same convolution of ones (TensorFlow drops the taps outside the
    image and renormalises the rest), then depth-to-space. x (B, h, w, C) float32 ->
    (B, s·h, s·w, C)."""
    channels = x.shape[-1]
    taps = _phase_taps(scale)
    kernel = np.zeros((5, 5, channels, scale * scale * channels), np.float32)
    for di in range(scale):
        for dj in range(scale):
            for c in range(channels):
                kernel[:, :, c, (di * scale + dj) * channels + c] = np.outer(taps[di], taps[dj])
    pad = [[0, 0], [2, 2], [2, 2], [0, 0]]
    kernel = tf.constant(kernel)
    weighted = tf.nn.conv2d(tf.pad(x, pad), kernel, 1, "VALID")
    norm = tf.nn.conv2d(tf.pad(tf.ones_like(x), pad), kernel, 1, "VALID")
    return tf.clip_by_value(tf.nn.depth_to_space(weighted / norm, scale), 0.0, 1.0)


class SRServer(tf.Module):
    """``serve``: uint8 (B, h, w, 3) -> uint8 (B, s·h, s·w, 3); ``scale`` is s."""

    def __init__(self, model):
        super().__init__(name="koala_sr")
        self.config = config = _sr_config(model)
        self.model = model
        self.scale = config.scale
        y_only = config.channels == 1
        border = sr.border(config)

        def run(images):
            x = tf.cast(images, tf.float32) / 255.0
            if y_only:
                x = color.rgb_to_ycbcr(x) / _Y_UNITS
            s = config.scale
            if config.upsampled_input:
                up = bicubic_upscale(x, s)
                net_in = up[..., :1] if y_only else up
                if border:
                    net_in = tf.pad(net_in, [[0, 0], [border] * 2, [border] * 2, [0, 0]],
                                    mode="REFLECT")
                pred = model(net_in, training=False)
                cbcr = up[..., 1:]
            else:
                pred = model(x[..., :1] if y_only else x, training=False)
                cbcr = bicubic_upscale(x[..., 1:], s) if y_only else None
            pred = tf.cast(pred, tf.float32)
            if y_only:
                pred = color.ycbcr_to_rgb(tf.concat([pred, cbcr], axis=-1) * _Y_UNITS)
            return tf.cast(tf.round(tf.clip_by_value(pred, 0.0, 1.0) * 255.0), tf.uint8)

        self.serve = tf.function(
            run, autograph=False,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
