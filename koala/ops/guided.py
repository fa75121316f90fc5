"""The guided filter (He, Sun & Tang, ECCV 2010 / TPAMI 2013): edge-aware smoothing.

Deep patch-wise colorization (Liang et al. 2016, SPEC §5) refines its predicted chroma with
a guided filter whose guide is the grayscale image (radius 40, ε = 1e-4): blotches inside a
region are averaged away while the chroma's edges follow the luminance edges.
:mod:`koala.tasks.colorize.inference` applies it to the predicted a*b* with ``--refine=guided``.

The algorithm (gray guide I, any number of source channels p), with ``mean`` the normalised
box filter of radius r:

    mean_I, mean_p = mean(I), mean(p);  var_I = mean(I·I) − mean_I²
    cov_Ip = mean(I·p) − mean_I·mean_p
    a = cov_Ip / (var_I + ε);  b = mean_p − a·mean_I        (per window: p ≈ a·I + b)
    q = mean(a)·I + mean(b)

Box means use integral images (cumulative sums), so the cost per pixel does not depend on r.
Windows are clamped at the borders and divided by their true pixel count, so any radius works,
including one larger than the image (every window is then the whole image and q is the global
least-squares fit of p on I, regularised by ε). Computed in float64 with NumPy.

As ε grows, a -> 0 and q -> mean(mean(p)): the box filter applied twice (not once, because q
averages the per-window b again).
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_filter", "guided_filter", "guided_filter_tf"]


def _box_sum_axis(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Sum over the window [i − r, i + r] ∩ [0, n − 1] along ``axis`` (integral image)."""
    n = x.shape[axis]
    zero = np.zeros_like(np.take(x, [0], axis=axis))
    cumsum = np.concatenate([zero, np.cumsum(x, axis=axis)], axis=axis)  # cumsum[k] = Σ x[:k]
    i = np.arange(n)
    hi = np.minimum(i + radius + 1, n)
    lo = np.maximum(i - radius, 0)
    return np.take(cumsum, hi, axis=axis) - np.take(cumsum, lo, axis=axis)


def _window_counts(height: int, width: int, radius: int) -> np.ndarray:
    """(H, W) number of pixels in each clamped window."""
    def along(n):
        i = np.arange(n)
        return (np.minimum(i + radius, n - 1) - np.maximum(i - radius, 0) + 1).astype(np.float64)

    return along(height)[:, None] * along(width)[None, :]


def box_filter(x, radius: int) -> np.ndarray:
    """Normalised box filter: the mean over the (2r+1)² window, clamped at the borders.

    Args:
      x: ``(H, W)`` or ``(H, W, C)``.
      radius: r >= 0 (0 returns ``x``); any size, also beyond the image.

    Returns:
      float64, the shape of ``x``.
    """
    x = np.asarray(x, np.float64)
    radius = _check_radius(radius)
    if x.ndim not in (2, 3) or 0 in x.shape[:2]:
        raise ValueError(f"expected a non-empty (H, W) or (H, W, C) array, got shape {x.shape}")
    total = _box_sum_axis(_box_sum_axis(x, radius, 0), radius, 1)
    counts = _window_counts(x.shape[0], x.shape[1], radius)
    return total / (counts if x.ndim == 2 else counts[:, :, None])


def _check_eps(eps) -> None:
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be finite and > 0, got {eps}")


def _check_radius(radius) -> int:
    if isinstance(radius, bool) or int(radius) != radius or radius < 0:
        raise ValueError(f"radius must be an integer >= 0, got {radius!r}")
    return int(radius)


def guided_filter(guide, src, radius: int, eps: float) -> np.ndarray:
    """Filters ``src`` with the gray ``guide`` (He et al.'s guided filter).

    Args:
      guide: ``(H, W)`` or ``(H, W, 1)`` gray image, in [0, 1] for ``eps`` to mean what the
        papers' values mean (ε is in the guide's squared units).
      src: ``(H, W)`` or ``(H, W, C)``: the image to filter (e.g. a*b*, C = 2); any units.
      radius: window radius r >= 0 in pixels (clamped at borders; may exceed the image).
      eps: ε > 0, the regularisation: small keeps edges of the guide, large smooths more.

    Returns:
      The filtered ``src``, same shape; float64, or ``src``'s dtype when it is a float type.
    """
    guide = np.asarray(guide)
    src = np.asarray(src)
    if guide.ndim == 3 and guide.shape[2] == 1:
        guide = guide[:, :, 0]
    if guide.ndim != 2:
        raise ValueError(f"guide must be (H, W) or (H, W, 1), got shape {guide.shape}")
    if src.ndim not in (2, 3) or src.shape[:2] != guide.shape:
        raise ValueError(f"src must be (H, W) or (H, W, C) with (H, W) = {guide.shape}, "
                         f"got shape {src.shape}")
    _check_eps(eps)
    radius = _check_radius(radius)
    out_dtype = src.dtype if np.issubdtype(src.dtype, np.floating) else np.float64
    image = guide.astype(np.float64)
    p = src.astype(np.float64)
    squeeze = p.ndim == 2
    if squeeze:
        p = p[:, :, None]
    i3 = image[:, :, None]

    mean_i = box_filter(image, radius)[:, :, None]  # (H, W, 1)
    var_i = box_filter(image * image, radius)[:, :, None] - mean_i * mean_i
    mean_p = box_filter(p, radius)  # (H, W, C)
    cov_ip = box_filter(i3 * p, radius) - mean_i * mean_p
    a = cov_ip / (np.maximum(var_i, 0.0) + eps)  # var_I >= 0 up to rounding
    b = mean_p - a * mean_i
    q = box_filter(a, radius) * i3 + box_filter(b, radius)
    return (q[:, :, 0] if squeeze else q).astype(out_dtype, copy=False)


def _box_mean_tf(x, radius: int):
    """TensorFlow :func:`box_filter` of (B, H, W, C) float64 over axes 1 and 2 (integral images,
    windows clamped at the borders and divided by their pixel count)."""
    import tensorflow as tf

    def along(x, axis):
        n = tf.shape(x)[axis]
        cumsum = tf.cumsum(x, axis=axis, exclusive=False)
        zero = tf.zeros_like(tf.gather(x, [0], axis=axis))
        cumsum = tf.concat([zero, cumsum], axis=axis)  # cumsum[k] = sum of x[:k]
        i = tf.range(n)
        hi, lo = tf.minimum(i + radius + 1, n), tf.maximum(i - radius, 0)
        total = tf.gather(cumsum, hi, axis=axis) - tf.gather(cumsum, lo, axis=axis)
        count = tf.cast(hi - lo, x.dtype)
        return total / tf.reshape(count, [-1, 1, 1] if axis == 1 else [-1, 1])

    return along(along(x, 1), 2)


def guided_filter_tf(guide, src, radius: int, eps: float):
    """:func:`guided_filter` inside a TensorFlow graph (koala.export's served colorizer), in
    float64 as the NumPy one; equal to it within float rounding (tests/test_guided.py).

    Args:
      guide: (B, H, W, 1) gray image in [0, 1].
      src: (B, H, W, C), any units.
      radius, eps: as :func:`guided_filter`.

    Returns:
      (B, H, W, C) float64.
    """
    import tensorflow as tf

    radius = _check_radius(radius)
    _check_eps(eps)
    image = tf.cast(guide, tf.float64)
    p = tf.cast(src, tf.float64)
    mean_i = _box_mean_tf(image, radius)
    var_i = _box_mean_tf(image * image, radius) - mean_i * mean_i
    mean_p = _box_mean_tf(p, radius)
    cov_ip = _box_mean_tf(image * p, radius) - mean_i * mean_p
    a = cov_ip / (tf.maximum(var_i, 0.0) + eps)
    b = mean_p - a * mean_i
    return _box_mean_tf(a, radius) * image + _box_mean_tf(b, radius)

