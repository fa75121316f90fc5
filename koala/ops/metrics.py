"""Evaluation metrics: PSNR, SSIM (also on the Y channel), colourfulness, CIEDE2000.

Plain functions, NumPy (or anything ``np.asarray`` accepts) in, Python floats or NumPy
arrays out. All arithmetic is float64. SSIM, CIEDE2000 and the colour conversions they need
are scikit-image's (:func:`skimage.metrics.structural_similarity`,
:func:`skimage.color.deltaE_ciede2000`, :func:`skimage.color.rgb2lab`,
:func:`skimage.color.rgb2ycbcr`); this module only pins their conventions and names them in
the signatures. The graph-side colour maths in :mod:`koala.ops.color` uses the same
constants (its tests compare it with scikit-image), so both give the same numbers.

Conventions for the super-resolution metrics (``psnr_y``, ``ssim_y``): images are RGB in
0..255 units (uint8 or float, not rounded), shape ``(H, W, 3)`` or batched
``(..., H, W, 3)``; they are converted to BT.601 studio-swing Y (16..235) without
rounding, ``crop`` pixels are removed from every border of H and W, and the metric is
computed with peak / data range 255. This matches the usual MATLAB evaluation of SRCNN,
VDSR, EDSR and friends (and BasicSR's ``calculate_psnr(img, img2, crop_border,
test_y_channel=True)``) up to their rounding of Y to integers.
"""

from __future__ import annotations

import math

import numpy as np
from skimage import color as skcolor
from skimage import metrics as skmetrics

__all__ = [
    "ciede2000",
    "colorfulness",
    "mean_ciede2000",
    "psnr",
    "psnr_y",
    "ssim",
    "ssim_y",
]

# SSIM, Wang, Bovik, Sheikh & Simoncelli (2004): a Gaussian window of sigma 1.5, which
# scikit-image truncates at radius int(3.5 * 1.5 + 0.5) = 5, i.e. 11x11.
_SSIM_SIGMA = 1.5
_SSIM_WIN_SIZE = 11

# Colourfulness, Hasler & Süsstrunk (2003).
_COLORFULNESS_MEAN_WEIGHT = 0.3

_Y_PEAK = 255.0


def _pair(a: object, b: object) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 arrays; ValueError if their shapes differ."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images must have the same shape, got {a.shape} and {b.shape}")
    return a, b


def psnr(a: object, b: object, *, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(peak^2 / MSE)`` in dB.

    Args:
      a, b: images of the same (any) shape, in units where ``peak`` is the maximum value
        (255 for 8-bit data, 1.0 for ``[0, 1]`` floats).
      peak: the peak value (``data_range`` in scikit-image's terms).

    Returns:
      PSNR in dB, ``math.inf`` when the images are identical.

    Raises:
      ValueError: if the shapes differ.
    """
    a, b = _pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak**2 / mse)


def _studio_y(rgb: np.ndarray, crop: int) -> np.ndarray:
    """RGB ``(..., H, W, 3)`` in 0..255 -> studio Y ``(..., H - 2 crop, W - 2 crop)``, float64."""
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected RGB images of shape (..., H, W, 3), got {rgb.shape}")
    if crop < 0:
        raise ValueError(f"crop must be >= 0, got {crop}")
    height, width = rgb.shape[-3:-1]
    if 2 * crop >= min(height, width):
        raise ValueError(f"crop {crop} leaves nothing of a {height}x{width} image")
    y = skcolor.rgb2ycbcr(rgb / 255.0)[..., 0]
    if crop:
        y = y[..., crop:-crop, crop:-crop]
    return y


def psnr_y(a_rgb: object, b_rgb: object, *, crop: int = 0, peak: float = _Y_PEAK) -> float:
    """PSNR on the BT.601 studio Y channel, the super-resolution convention.

    Args:
      a_rgb, b_rgb: RGB images ``(..., H, W, 3)`` in 0..255 units, any dtype.
      crop: pixels removed from each of the four borders before comparing (commonly the
        scale factor; BasicSR's ``crop_border``).
      peak: peak value of Y; 255 by convention.

    Returns:
      PSNR in dB, ``math.inf`` when the cropped Y channels are identical.
    """
    a, b = _pair(a_rgb, b_rgb)
    return psnr(_studio_y(a, crop), _studio_y(b, crop), peak=peak)


def ssim(
    a: object, b: object, *, data_range: float = 255.0, channel_axis: int | None = None
) -> float:
    """Mean structural similarity (Wang et al. 2004), the paper's variant.

    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``: a Gaussian window of sigma 1.5 truncated at radius 5
    (11x11), ``K1 = 0.01``, ``K2 = 0.03``, ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2`` with
    ``R = data_range``, population (weighted) variances and covariance; the SSIM map is
    averaged after dropping 5 pixels (the window radius) from every border.

    Args:
      a, b: images of the same shape. With ``channel_axis=None`` every axis is spatial
        (e.g. ``(H, W)``); otherwise that axis holds channels and the result is the mean of
        the per-channel SSIMs (e.g. ``(H, W, 3)`` with ``channel_axis=-1``). Every spatial
        dimension must be at least 11.
      data_range: max minus min possible value (255 for 8-bit, 1.0 for ``[0, 1]``).
      channel_axis: the channel axis, or None for a single-channel image.

    Returns:
      Mean SSIM, at most 1.0 (1.0 for identical images).

    Raises:
      ValueError: if the shapes differ or a spatial dimension is under 11.
    """
    a, b = _pair(a, b)
    spatial = a.shape if channel_axis is None else np.delete(a.shape, channel_axis)
    if min(spatial, default=0) < _SSIM_WIN_SIZE:
        raise ValueError(
            f"SSIM needs every image dimension >= {_SSIM_WIN_SIZE} "
            f"(pass channel_axis for colour images), got {a.shape}"
        )
    value = skmetrics.structural_similarity(
        a,
        b,
        data_range=data_range,
        channel_axis=channel_axis,
        gaussian_weights=True,
        sigma=_SSIM_SIGMA,
        use_sample_covariance=False,
    )
    return float(value)


def ssim_y(
    a_rgb: object, b_rgb: object, *, crop: int = 0, data_range: float = _Y_PEAK
) -> float:
    """SSIM (as :func:`ssim`) on the BT.601 studio Y channel with a border crop.

    Args:
      a_rgb, b_rgb: RGB images ``(H, W, 3)`` in 0..255 units, any dtype.
      crop: pixels removed from each of the four borders before comparing (BasicSR's
        ``crop_border``). The cropped image must still be at least 11x11.
      data_range: data range of Y; 255 by convention.

    Returns:
      Mean SSIM of Y.
    """
    a, b = _pair(a_rgb, b_rgb)
    return ssim(_studio_y(a, crop), _studio_y(b, crop), data_range=data_range)


def colorfulness(rgb: object) -> float:
    """Colourfulness metric M of Hasler & Süsstrunk (2003).

    With ``rg = R - G`` and ``yb = (R + G) / 2 - B`` over all pixels,
    ``M = sqrt(std_rg^2 + std_yb^2) + 0.3 sqrt(mean_rg^2 + mean_yb^2)`` using population
    standard deviations.

    Args:
      rgb: RGB image(s) ``(..., 3)`` in 0..255 units, any dtype.

    Returns:
      M (0 for any grey image; roughly 0..~110 for natural images).
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"expected RGB of shape (..., 3), got {rgb.shape}")
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    spread = math.hypot(float(np.std(rg)), float(np.std(yb)))
    offset = math.hypot(float(np.mean(rg)), float(np.mean(yb)))
    return spread + _COLORFULNESS_MEAN_WEIGHT * offset


def ciede2000(lab1: object, lab2: object) -> np.ndarray:
    """Per-pixel CIEDE2000 colour difference, ``skimage.color.deltaE_ciede2000`` with
    ``kL = kC = kH = 1``.

    scikit-image follows Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula:
    implementation notes, supplementary test data, and mathematical observations", and
    reproduces their test data (the hue of a zero-chroma colour is 0; when either chroma is
    0 the hue difference is 0 and the mean hue is the sum of the hues).

    Args:
      lab1, lab2: CIE Lab ``(..., 3)`` (L in [0, 100]); shapes must broadcast.

    Returns:
      ΔE00 of the broadcast shape ``(...)`` (float64, >= 0).
    """
    lab1 = np.asarray(lab1, dtype=np.float64)
    lab2 = np.asarray(lab2, dtype=np.float64)
    if lab1.shape[-1:] != (3,) or lab2.shape[-1:] != (3,):
        raise ValueError(f"expected Lab of shape (..., 3), got {lab1.shape} and {lab2.shape}")
    lab1, lab2 = np.broadcast_arrays(lab1, lab2)
    return np.asarray(skcolor.deltaE_ciede2000(lab1, lab2, kL=1, kC=1, kH=1, channel_axis=-1))


def mean_ciede2000(rgb1: object, rgb2: object) -> float:
    """Mean CIEDE2000 between two sRGB images.

    Args:
      rgb1, rgb2: sRGB ``(..., 3)`` in 0..255 units, any dtype, same shape. Converted with
        ``skimage.color.rgb2lab(rgb / 255, illuminant="D65", observer="2")`` in float64
        (the conversion :func:`koala.ops.color.srgb_to_lab` reproduces in TensorFlow).

    Returns:
      The mean over pixels of :func:`ciede2000`.
    """
    a, b = _pair(rgb1, rgb2)
    if a.shape[-1:] != (3,):
        raise ValueError(f"expected RGB of shape (..., 3), got {a.shape}")
    lab1 = skcolor.rgb2lab(a / 255.0, illuminant="D65", observer="2")
    lab2 = skcolor.rgb2lab(b / 255.0, illuminant="D65", observer="2")
    return float(np.mean(ciede2000(lab1, lab2)))
