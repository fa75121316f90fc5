"""Colour maths for koala, as TensorFlow ops: sRGB <-> CIE Lab, Lab scaling, luma, YCbCr.

This module is the only place in koala where colour constants live (the sRGB matrix and
transfer-function thresholds, the reference white, the Lab scaling, the BT.601 weights and
the YCbCr matrix). Everything else, including :mod:`koala.ops.metrics`, calls these functions.

Conventions
-----------
* Channels are last: an RGB or Lab value has shape ``(..., 3)``, a lightness or luma
  channel ``(..., 1)``. Any leading shape works (a pixel, an image, a batch).
* sRGB is in ``[0, 1]``. CIE Lab uses illuminant D65 and the 2° standard observer, with
  the reference white ``(X, Y, Z) = (0.95047, 1.0, 1.08883)``; L is in ``[0, 100]``, a and b
  are roughly in ``[-128, 127]``. The constants are those of ``skimage.color`` (sRGB matrix
  ``xyz_from_rgb``, gamma thresholds 0.04045 / 0.0031308, Lab ``f()`` threshold 0.008856
  with slope 7.787 and offset 16/116, inverse threshold 0.2068966), so the results agree
  with ``skimage.color.rgb2lab`` / ``lab2rgb`` to about 1e-12 in float64. (Those constants
  are slightly inconsistent with each other: white maps to a, b = (-0.0024, 0.0047), not
  exactly 0, and ``f`` and its inverse disagree by ~4e-7 at the threshold, L = 8. koala
  keeps them anyway so that its numbers are scikit-image's.)
* Network scaling (Zhang et al. 2016, "Colorful Image Colorization"; Iizuka et al. 2016):
  ``L / 50 - 1`` maps L from ``[0, 100]`` to ``[-1, 1]`` and ``ab / 128`` maps a and b
  into ``[-1, 1]`` for every in-gamut colour (the papers' code used 127 in places; koala
  uses 128 everywhere).
* YCbCr is ITU-R BT.601 "studio swing" as in MATLAB's ``rgb2ycbcr`` (and
  ``skimage.color.rgb2ycbcr``): RGB in ``[0, 1]`` maps to Y in ``[16, 235]`` and Cb, Cr in
  ``[16, 240]`` (values in 0..255 units).

Dtypes
------
Every function accepts a tf.Tensor, a NumPy array or nested Python numbers and returns a
``tf.Tensor``. Floating inputs keep their dtype: float32 and float64 are computed in that
precision, float16 and bfloat16 are computed in float32 and cast back. Integer (and bool)
inputs are cast to float32 first, *without rescaling* (so a uint8 image must be divided by
255 by the caller before :func:`srgb_to_lab`). All functions are plain TensorFlow ops
(no Python loops over pixels, no NumPy on tensors), so they run eagerly, inside
``tf.function``, inside ``tf.data.Dataset.map`` and inside Keras layers, and they have
finite gradients everywhere (the branches of piecewise functions are guarded before
``pow``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

__all__ = [
    "AB_SCALE",
    "L_SCALE",
    "denormalize_ab",
    "denormalize_l",
    "gray_from_l",
    "lab_to_srgb",
    "lalphabeta_to_rgb",
    "rgb_to_lalphabeta",
    "normalize_ab",
    "normalize_l",
    "rgb_to_luma",
    "rgb_to_ycbcr",
    "rgb_to_yuv",
    "srgb_to_lab",
    "ycbcr_to_rgb",
    "yuv_to_rgb",
]

# --- Lab scaling used by the networks --------------------------------------------------
L_SCALE = 50.0
"""L in [0, 100] -> ``L / L_SCALE - 1`` in [-1, 1]."""
AB_SCALE = 128.0
"""ab -> ``ab / AB_SCALE`` (the paper's 128; the original code used 127)."""

# --- sRGB (IEC 61966-2-1) ---------------------------------------------------------------
# Linear sRGB -> CIE XYZ, the matrix skimage uses (``skimage.color.colorconv.xyz_from_rgb``).
_XYZ_FROM_RGB = np.array(
    [
        [0.412453, 0.357580, 0.180423],
        [0.212671, 0.715160, 0.072169],
        [0.019334, 0.119193, 0.950227],
    ]
)
_RGB_FROM_XYZ = np.linalg.inv(_XYZ_FROM_RGB)
_SRGB_DECODE_THRESHOLD = 0.04045  # on the encoded value
_SRGB_ENCODE_THRESHOLD = 0.0031308  # on the linear value
_SRGB_LINEAR_SLOPE = 12.92
_SRGB_GAMMA = 2.4
_SRGB_OFFSET = 0.055

# --- CIE Lab, D65 illuminant, 2° observer ------------------------------------------------
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_LAB_EPSILON = 0.008856  # f(t) = cbrt(t) above, linear below
_LAB_KAPPA_SLOPE = 7.787  # slope of the linear part of f
_LAB_OFFSET = 16.0 / 116.0
_LAB_INV_THRESHOLD = 0.2068966  # f(_LAB_EPSILON), the threshold of f^-1 (skimage's value)

# --- ITU-R BT.601 -------------------------------------------------------------------------
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
# Studio-swing YCbCr from RGB in [0, 1], output in 0..255 units (MATLAB rgb2ycbcr).
_YCBCR_FROM_RGB = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
_RGB_FROM_YCBCR = np.linalg.inv(_YCBCR_FROM_RGB)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
# Analog BT.601 YUV: Y = luma, U = 0.492 (B - Y), V = 0.877 (R - Y) (Levin et al. 2004,
# Liang et al. 2016; skimage.color.rgb2yuv uses the same matrix).
_YUV_FROM_RGB = np.array(
    [[0.299, 0.587, 0.114],
     [-0.14714119, -0.28886916, 0.43601035],
     [0.61497538, -0.51496512, -0.10001026]])
_RGB_FROM_YUV = np.linalg.inv(_YUV_FROM_RGB)
# Ruderman's lαβ (Reinhard et al. 2001, used by Welsh et al. 2002): linear RGB -> LMS, log10,
# then a decorrelating rotation.
_LMS_FROM_RGB = np.array(
    [[0.3811, 0.5783, 0.0402],
     [0.1967, 0.7244, 0.0782],
     [0.0241, 0.1288, 0.8444]])
_RGB_FROM_LMS = np.linalg.inv(_LMS_FROM_RGB)
_LAB_FROM_LOGLMS = (np.diag([1 / np.sqrt(3), 1 / np.sqrt(6), 1 / np.sqrt(2)])
                    @ np.array([[1.0, 1.0, 1.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]]))
_LOGLMS_FROM_LAB = np.linalg.inv(_LAB_FROM_LOGLMS)
_LMS_FLOOR = 1e-4  # log10 of 0 is -inf: LMS is floored here (black = -4)

_HALF_DTYPES = (tf.float16, tf.bfloat16)


def _to_float(x: Any) -> tuple[tf.Tensor, tf.DType]:
    """Return ``(x as a float tensor to compute with, dtype to return)``.

    float32/float64 are kept, float16/bfloat16 are computed in float32 and returned in
    their own dtype, everything else (ints, bools) becomes float32 without rescaling.
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    out_dtype = x.dtype
    if out_dtype in _HALF_DTYPES:
        x = tf.cast(x, tf.float32)
    return x, out_dtype


def _const(value: Any, dtype: tf.DType) -> tf.Tensor:
    return tf.constant(value, dtype=dtype)


def _apply_matrix(x: tf.Tensor, matrix: np.ndarray) -> tf.Tensor:
    """``x @ matrix.T`` over the last axis: (..., 3) -> (..., 3)."""
    return tf.einsum("...c,dc->...d", x, _const(matrix, x.dtype))


def _srgb_decode(v: tf.Tensor) -> tf.Tensor:
    """Encoded sRGB -> linear light (same shape)."""
    threshold = _const(_SRGB_DECODE_THRESHOLD, v.dtype)
    safe = tf.maximum(v, threshold)  # keeps pow's argument positive on the unused branch
    curve = tf.pow((safe + _SRGB_OFFSET) / (1.0 + _SRGB_OFFSET), _const(_SRGB_GAMMA, v.dtype))
    return tf.where(v > threshold, curve, v / _SRGB_LINEAR_SLOPE)


def _srgb_encode(v: tf.Tensor) -> tf.Tensor:
    """Linear light -> encoded sRGB (same shape, not clipped)."""
    threshold = _const(_SRGB_ENCODE_THRESHOLD, v.dtype)
    safe = tf.maximum(v, threshold)
    curve = (1.0 + _SRGB_OFFSET) * tf.pow(safe, _const(1.0 / _SRGB_GAMMA, v.dtype)) - _SRGB_OFFSET
    return tf.where(v > threshold, curve, v * _SRGB_LINEAR_SLOPE)


def _lab_f(t: tf.Tensor) -> tf.Tensor:
    """The CIE Lab companding function f(t) (cube root above the threshold, linear below)."""
    threshold = _const(_LAB_EPSILON, t.dtype)
    cube_root = tf.pow(tf.maximum(t, threshold), _const(1.0 / 3.0, t.dtype))
    return tf.where(t > threshold, cube_root, _LAB_KAPPA_SLOPE * t + _LAB_OFFSET)


def _lab_f_inv(f: tf.Tensor) -> tf.Tensor:
    """Inverse of :func:`_lab_f`."""
    linear = (f - _LAB_OFFSET) / _LAB_KAPPA_SLOPE
    return tf.where(f > _const(_LAB_INV_THRESHOLD, f.dtype), f * f * f, linear)


def srgb_to_lab(rgb: Any) -> tf.Tensor:
    """sRGB -> CIE Lab (D65, 2° observer), matching ``skimage.color.rgb2lab``.

    Args:
      rgb: ``(..., 3)`` sRGB in ``[0, 1]`` (values outside are converted as they are).

    Returns:
      ``(..., 3)`` Lab with L in ``[0, 100]`` and a, b roughly in ``[-128, 127]``, in the
      input's float dtype (ints -> float32).
    """
    rgb, out_dtype = _to_float(rgb)
    xyz = _apply_matrix(_srgb_decode(rgb), _XYZ_FROM_RGB)
    f = _lab_f(xyz / _const(_D65_WHITE, xyz.dtype))
    fx, fy, fz = tf.unstack(f, num=3, axis=-1)
    lab = tf.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)
    return tf.cast(lab, out_dtype)


def lab_to_srgb(lab: Any) -> tf.Tensor:
    """CIE Lab (D65, 2° observer) -> sRGB clipped to ``[0, 1]``, matching ``skimage.color.lab2rgb``.

    As in scikit-image, a negative ``fz = (L + 16) / 116 - b / 200`` (a very large b) is
    clipped to 0 before the inverse companding, and out-of-gamut results are clipped to
    ``[0, 1]`` after gamma encoding. Unlike scikit-image, no warning is emitted.

    Args:
      lab: ``(..., 3)`` Lab, L in ``[0, 100]``.

    Returns:
      ``(..., 3)`` sRGB in ``[0, 1]`` in the input's float dtype (ints -> float32).
    """
    lab, out_dtype = _to_float(lab)
    lightness, a, b = tf.unstack(lab, num=3, axis=-1)
    fy = (lightness + 16.0) / 116.0
    fx = a / 500.0 + fy
    fz = tf.maximum(fy - b / 200.0, tf.zeros_like(fy))
    xyz = _lab_f_inv(tf.stack([fx, fy, fz], axis=-1)) * _const(_D65_WHITE, lab.dtype)
    rgb = _srgb_encode(_apply_matrix(xyz, _RGB_FROM_XYZ))
    return tf.cast(tf.clip_by_value(rgb, 0.0, 1.0), out_dtype)


def normalize_l(lightness: Any) -> tf.Tensor:
    """L in ``[0, 100]`` -> ``L / L_SCALE - 1`` in ``[-1, 1]`` (any shape, dtype kept)."""
    lightness, out_dtype = _to_float(lightness)
    return tf.cast(lightness / L_SCALE - 1.0, out_dtype)


def denormalize_l(x: Any) -> tf.Tensor:
    """Inverse of :func:`normalize_l`: ``[-1, 1]`` -> L in ``[0, 100]`` (any shape)."""
    x, out_dtype = _to_float(x)
    return tf.cast((x + 1.0) * L_SCALE, out_dtype)


def normalize_ab(ab: Any) -> tf.Tensor:
    """ab -> ``ab / AB_SCALE`` (any shape); within ``[-1, 1]`` for every sRGB colour."""
    ab, out_dtype = _to_float(ab)
    return tf.cast(ab / AB_SCALE, out_dtype)


def denormalize_ab(x: Any) -> tf.Tensor:
    """Inverse of :func:`normalize_ab`: ``x * AB_SCALE`` (any shape)."""
    x, out_dtype = _to_float(x)
    return tf.cast(x * AB_SCALE, out_dtype)


def gray_from_l(lightness: Any) -> tf.Tensor:
    """L ``(..., 1)`` in ``[0, 100]`` -> the neutral sRGB grey ``(..., 3)`` of that lightness.

    This is the image a pretrained RGB embedder sees when fed the grayscale input. All
    three channels are exactly equal (R = G = B = sRGB-encoded relative luminance Y(L)),
    and ``srgb_to_lab`` of the result gives back L (up to float rounding) with a, b within
    0.005 of 0. It differs from ``lab_to_srgb([L, 0, 0])`` by less than 4e-5: the sRGB
    matrix's row sums are not exactly the D65 white point, so scikit-image's ``(L, 0, 0)``
    has slightly unequal channels.

    Returns:
      ``(..., 3)`` in ``[0, 1]``, in the input's float dtype (ints -> float32).
    """
    lightness, out_dtype = _to_float(lightness)
    luminance = _lab_f_inv((lightness + 16.0) / 116.0)  # relative luminance Y, white = 1
    gray = tf.clip_by_value(_srgb_encode(luminance), 0.0, 1.0)
    return tf.cast(tf.concat([gray, gray, gray], axis=-1), out_dtype)


def rgb_to_luma(rgb: Any) -> tf.Tensor:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B``: ``(..., 3)`` -> ``(..., 1)``, same range."""
    rgb, out_dtype = _to_float(rgb)
    luma = tf.einsum("...c,c->...", rgb, _const(_LUMA_WEIGHTS, rgb.dtype))
    return tf.cast(luma[..., tf.newaxis], out_dtype)


def rgb_to_ycbcr(rgb: Any) -> tf.Tensor:
    """RGB ``(..., 3)`` in ``[0, 1]`` -> BT.601 studio-swing YCbCr ``(..., 3)`` in 0..255 units.

    ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``,
    ``Cb = 128 - 37.797 R - 74.203 G + 112.0 B``,
    ``Cr = 128 + 112.0 R - 93.786 G - 18.214 B``
    (MATLAB ``rgb2ycbcr`` for double input, ``skimage.color.rgb2ycbcr``). Y is in
    ``[16, 235]``, Cb and Cr in ``[16, 240]``; not rounded or clipped.
    """
    rgb, out_dtype = _to_float(rgb)
    ycbcr = _apply_matrix(rgb, _YCBCR_FROM_RGB) + _const(_YCBCR_OFFSET, rgb.dtype)
    return tf.cast(ycbcr, out_dtype)


def ycbcr_to_rgb(ycbcr: Any) -> tf.Tensor:
    """Exact (matrix) inverse of :func:`rgb_to_ycbcr`: 0..255-unit YCbCr -> RGB in ``[0, 1]`` units.

    The result is not clipped, so out-of-gamut YCbCr gives RGB outside ``[0, 1]``.
    """
    ycbcr, out_dtype = _to_float(ycbcr)
    rgb = _apply_matrix(ycbcr - _const(_YCBCR_OFFSET, ycbcr.dtype), _RGB_FROM_YCBCR)
    return tf.cast(rgb, out_dtype)


def rgb_to_yuv(rgb: Any) -> tf.Tensor:
    """RGB ``(..., 3)`` in ``[0, 1]`` -> analog BT.601 YUV ``(..., 3)``.

    ``Y = 0.299 R + 0.587 G + 0.114 B`` in [0, 1], ``U = 0.492 (B - Y)`` in about
    [-0.436, 0.436], ``V = 0.877 (R - Y)`` in about [-0.615, 0.615] (the YUV of Levin et al.
    2004; ``skimage.color.rgb2yuv``). Gray pixels have U = V = 0.
    """
    rgb, out_dtype = _to_float(rgb)
    return tf.cast(_apply_matrix(rgb, _YUV_FROM_RGB), out_dtype)


def yuv_to_rgb(yuv: Any) -> tf.Tensor:
    """Exact (matrix) inverse of :func:`rgb_to_yuv`; not clipped (out-of-gamut YUV gives RGB
    outside ``[0, 1]``)."""
    yuv, out_dtype = _to_float(yuv)
    return tf.cast(_apply_matrix(yuv, _RGB_FROM_YUV), out_dtype)


def rgb_to_lalphabeta(rgb: Any) -> tf.Tensor:
    """sRGB ``(..., 3)`` in ``[0, 1]`` -> Ruderman's lαβ (Reinhard et al. 2001), the space of
    Welsh et al. 2002: linear RGB -> LMS, ``log10`` (LMS floored at 1e-4), then
    ``l = (L + M + S)/√3``, ``α = (L + M - 2S)/√6``, ``β = (L - M)/√2``. Gray has α ≈ β ≈ 0.
    """
    rgb, out_dtype = _to_float(rgb)
    lms = _apply_matrix(_srgb_decode(tf.clip_by_value(rgb, 0.0, 1.0)), _LMS_FROM_RGB)
    log_lms = tf.math.log(tf.maximum(lms, _const(_LMS_FLOOR, lms.dtype))) / np.log(10.0)
    return tf.cast(_apply_matrix(log_lms, _LAB_FROM_LOGLMS), out_dtype)


def lalphabeta_to_rgb(lab: Any) -> tf.Tensor:
    """Inverse of :func:`rgb_to_lalphabeta` -> sRGB clipped to ``[0, 1]``."""
    lab, out_dtype = _to_float(lab)
    lms = tf.pow(_const(10.0, lab.dtype), _apply_matrix(lab, _LOGLMS_FROM_LAB))
    linear = _apply_matrix(lms, _RGB_FROM_LMS)
    return tf.cast(tf.clip_by_value(_srgb_encode(tf.clip_by_value(linear, 0.0, 1.0)), 0.0, 1.0),
                   out_dtype)
