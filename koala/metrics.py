"""Evaluation metrics: PSNR, SSIM (also on the Y channel), colourfulness, CIEDE2000.

Plain functions, NumPy (or anything ``np.asarray`` accepts) in, Python floats or NumPy
arrays out. All arithmetic is float64. Colour conversions go through :mod:`koala.color`
(evaluated eagerly on float64 arrays), so the colour constants live in one place only.

Conventions for the super-resolution metrics (``psnr_y``, ``ssim_y``): images are RGB in
0..255 units (uint8 or float, not rounded), shape ``(H, W, 3)`` or batched
``(..., H, W, 3)``; they are converted to BT.601 studio-swing Y (16..235) without
rounding, ``crop`` pixels are removed from every border of H and W, and the metric is
computed with peak / data range 255. This matches the usual MATLAB evaluation of SRCNN,
VDSR, EDSR and friends up to their rounding of Y to integers.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from koala import color

__all__ = [
    "ciede2000",
    "colorfulness",
    "mean_ciede2000",
    "psnr",
    "psnr_y",
    "ssim",
    "ssim_y",
]

# SSIM, Wang, Bovik, Sheikh & Simoncelli (2004).
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # gaussian_filter radius = int(3.5 * 1.5 + 0.5) = 5 -> 11x11 window
_SSIM_RADIUS = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)
_SSIM_WIN_SIZE = 2 * _SSIM_RADIUS + 1

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
    y = color.rgb_to_ycbcr(rgb / 255.0).numpy()[..., 0]
    if crop:
        y = y[..., crop:-crop, crop:-crop]
    return y


def psnr_y(a_rgb: object, b_rgb: object, *, crop: int = 0, peak: float = _Y_PEAK) -> float:
    """PSNR on the BT.601 studio Y channel, the super-resolution convention.

    Args:
      a_rgb, b_rgb: RGB images ``(..., H, W, 3)`` in 0..255 units, any dtype.
      crop: pixels removed from each of the four borders before comparing (commonly the
        scale factor).
      peak: peak value of Y; 255 by convention.

    Returns:
      PSNR in dB, ``math.inf`` when the cropped Y channels are identical.
    """
    a, b = _pair(a_rgb, b_rgb)
    return psnr(_studio_y(a, crop), _studio_y(b, crop), peak=peak)


def _ssim_single(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    """Mean SSIM of one channel (any number of dimensions, all filtered)."""
    if min(a.shape) < _SSIM_WIN_SIZE:
        raise ValueError(
            f"SSIM needs every image dimension >= {_SSIM_WIN_SIZE} "
            f"(pass channel_axis for colour images), got {a.shape}"
        )

    def blur(x: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(
            x, sigma=_SSIM_SIGMA, truncate=_SSIM_TRUNCATE, mode="reflect"
        )

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a  # population (weighted) moments, as Wang et al.
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    ssim_map = ((2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)) / (
        (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    )
    interior = tuple(slice(_SSIM_RADIUS, -_SSIM_RADIUS) for _ in range(ssim_map.ndim))
    return float(ssim_map[interior].mean())


def ssim(
    a: object, b: object, *, data_range: float = 255.0, channel_axis: int | None = None
) -> float:
    """Mean structural similarity (Wang et al. 2004), the paper's variant.

    Gaussian window with sigma 1.5 truncated at radius 5 (11x11; ``scipy.ndimage.
    gaussian_filter(truncate=3.5, mode="reflect")``), ``K1 = 0.01``, ``K2 = 0.03``,
    ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2`` with ``R = data_range``, population (weighted)
    variances and covariance. The SSIM map is averaged after dropping 5 pixels (the window
    radius) from every border, as ``skimage.metrics.structural_similarity(
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` does, so the two agree
    to float rounding.

    Args:
      a, b: images of the same shape. With ``channel_axis=None`` every axis is spatial
        (e.g. ``(H, W)``); otherwise that axis holds channels and the result is the mean of
        the per-channel SSIMs (e.g. ``(H, W, 3)`` with ``channel_axis=-1``). Every spatial
        dimension must be at least 11.
      data_range: max minus min possible value (255 for 8-bit, 1.0 for ``[0, 1]``).
      channel_axis: the channel axis, or None for a single-channel image.

    Returns:
      Mean SSIM, at most 1.0 (1.0 for identical images).
    """
    a, b = _pair(a, b)
    if channel_axis is None:
        return _ssim_single(a, b, data_range)
    a = np.moveaxis(a, channel_axis, -1)
    b = np.moveaxis(b, channel_axis, -1)
    per_channel = [_ssim_single(a[..., c], b[..., c], data_range) for c in range(a.shape[-1])]
    return float(np.mean(per_channel))


def ssim_y(a_rgb: object, b_rgb: object, *, crop: int = 0) -> float:
    """SSIM (as :func:`ssim`) on the BT.601 studio Y channel with a border crop.

    Args:
      a_rgb, b_rgb: RGB images ``(H, W, 3)`` in 0..255 units, any dtype.
      crop: pixels removed from each of the four borders before comparing. The cropped
        image must still be at least 11x11.

    Returns:
      Mean SSIM of Y with ``data_range=255``.
    """
    a, b = _pair(a_rgb, b_rgb)
    return ssim(_studio_y(a, crop), _studio_y(b, crop), data_range=_Y_PEAK)


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
    """Per-pixel CIEDE2000 colour difference (kL = kC = kH = 1).

    Follows Sharma, Wu & Dalal (2005), "The CIEDE2000 color-difference formula:
    implementation notes, supplementary test data, and mathematical observations": the hue
    of a zero-chroma colour is 0, and when either chroma is 0 the hue difference is 0 and
    the mean hue is the sum of the hues.

    Args:
      lab1, lab2: CIE Lab ``(..., 3)`` (L in [0, 100]); shapes must broadcast.

    Returns:
      ΔE00 of shape ``(...)`` (float64, >= 0).
    """
    lab1 = np.asarray(lab1, dtype=np.float64)
    lab2 = np.asarray(lab2, dtype=np.float64)
    if lab1.shape[-1:] != (3,) or lab2.shape[-1:] != (3,):
        raise ValueError(f"expected Lab of shape (..., 3), got {lab1.shape} and {lab2.shape}")
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    pow25_7 = 25.0**7

    # a' (a stretched by 1 + G, which depends on the mean chroma), C', h'.
    c_mean = 0.5 * (np.hypot(a1, b1) + np.hypot(a2, b2))
    g = 0.5 * (1.0 - np.sqrt(c_mean**7 / (c_mean**7 + pow25_7)))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.where(c1p == 0.0, 0.0, np.mod(np.arctan2(b1, a1p), 2.0 * np.pi))
    h2p = np.where(c2p == 0.0, 0.0, np.mod(np.arctan2(b2, a2p), 2.0 * np.pi))

    # Differences.
    dl = l2 - l1
    dc = c2p - c1p
    c_prod = c1p * c2p
    dh = h2p - h1p
    dh = np.where(dh > np.pi, dh - 2.0 * np.pi, dh)
    dh = np.where(dh < -np.pi, dh + 2.0 * np.pi, dh)
    dh = np.where(c_prod == 0.0, 0.0, dh)
    d_hue = 2.0 * np.sqrt(c_prod) * np.sin(0.5 * dh)

    # Means.
    l_mean = 0.5 * (l1 + l2)
    cp_mean = 0.5 * (c1p + c2p)
    h_sum = h1p + h2p
    h_mean = np.where(
        np.abs(h1p - h2p) <= np.pi,
        0.5 * h_sum,
        np.where(h_sum < 2.0 * np.pi, 0.5 * (h_sum + 2.0 * np.pi), 0.5 * (h_sum - 2.0 * np.pi)),
    )
    h_mean = np.where(c_prod == 0.0, h_sum, h_mean)

    # Weighting functions and the rotation term.
    t = (
        1.0
        - 0.17 * np.cos(h_mean - np.deg2rad(30.0))
        + 0.24 * np.cos(2.0 * h_mean)
        + 0.32 * np.cos(3.0 * h_mean + np.deg2rad(6.0))
        - 0.20 * np.cos(4.0 * h_mean - np.deg2rad(63.0))
    )
    l_dev2 = (l_mean - 50.0) ** 2
    s_l = 1.0 + 0.015 * l_dev2 / np.sqrt(20.0 + l_dev2)
    s_c = 1.0 + 0.045 * cp_mean
    s_h = 1.0 + 0.015 * cp_mean * t
    d_theta = np.deg2rad(30.0) * np.exp(-(((np.rad2deg(h_mean) - 275.0) / 25.0) ** 2))
    r_c = 2.0 * np.sqrt(cp_mean**7 / (cp_mean**7 + pow25_7))
    r_t = -np.sin(2.0 * d_theta) * r_c

    l_term = dl / s_l
    c_term = dc / s_c
    h_term = d_hue / s_h
    de2 = l_term**2 + c_term**2 + h_term**2 + r_t * c_term * h_term
    return np.sqrt(np.maximum(de2, 0.0))


def mean_ciede2000(rgb1: object, rgb2: object) -> float:
    """Mean CIEDE2000 between two sRGB images.

    Args:
      rgb1, rgb2: sRGB ``(..., 3)`` in 0..255 units, any dtype, same shape. Converted with
        :func:`koala.color.srgb_to_lab` on ``rgb / 255`` in float64 (D65, 2° observer).

    Returns:
      The mean over pixels of :func:`ciede2000`.
    """
    a, b = _pair(rgb1, rgb2)
    lab1 = color.srgb_to_lab(a / 255.0).numpy()
    lab2 = color.srgb_to_lab(b / 255.0).numpy()
    return float(np.mean(ciede2000(lab1, lab2)))
