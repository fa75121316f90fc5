"""Colour propagation by optimisation (Levin, Lischinski, Weiss 2004, "Colorization using
optimization"), the engine of koala's scribble colorization and of hints on a model.

Neighbouring pixels with similar intensity should get similar colour. For a chroma channel U
and an intensity image Y, the paper minimises

    J(U) = Σ_r ( U(r) - Σ_{s ∈ N(r)} w_rs U(s) )²,   w_rs ∝ exp(-(Y(r) - Y(s))² / 2σ_r²)

over the 3 x 3 neighbourhood N(r) (8 neighbours, fewer at the border), the weights of each r
summing to 1, with the scribbled pixels fixed. As in the authors' MATLAB code
(``getColorExposure``), J is minimised by solving ``U(r) - Σ_s w_rs U(s) = 0`` at every free
pixel and ``U(r) = given`` at every fixed one: one sparse linear system ``A U = b`` per
channel, the same ``A`` for all channels. Also as in the code, ``2σ_r²`` is 0.6 times the
variance of Y over r's 3 x 3 window, raised where needed so that r's most similar neighbour
keeps a weight of at least 0.01 before normalisation, and never below 2e-6.

**Solver.** Up to :data:`DIRECT_MAX` pixels: a sparse LU factorisation (SuperLU, scipy's
``splu``), exact to rounding, factorised once and used for every channel. Larger images: a
coarse-to-fine pyramid (a cascade): Y is averaged over 2 x 2 blocks (a coarse pixel is fixed when
any of its 4 pixels is, with their mean value) until at most :data:`DIRECT_MAX` pixels remain,
that level is solved exactly, and each finer level starts from the bilinear upsampling of the
coarser solution and runs BiCGSTAB (scipy) to a relative residual of ``tol`` (default 1e-3) or
``maxiter`` (default 30) iterations. The upsampled start already holds the smooth,
far-reaching part of the solution, which an iterative solver on the fine grid alone would take
thousands of iterations to carry across the image. Memory is bounded by the fine matrix
(9 non-zeros a pixel) plus the exact factorisation of ≤ DIRECT_MAX pixels. Against the exact
solution the cascade is off by a fraction of a grey level on average
(``benchmarks/user_guided.py`` prints it).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy import ndimage

__all__ = ["DIRECT_MAX", "propagate", "weights"]

DIRECT_MAX = 1 << 16  # pixels solved exactly (sparse LU); larger images go coarse-to-fine
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_MIN_WEIGHT = 0.01  # the most similar neighbour's weight before normalisation (the code's)
_MIN_SIGMA = 2e-6


def weights(y: np.ndarray) -> np.ndarray:
    """The normalised affinities ``w_rs`` of every pixel r to its 8 neighbours s.

    Args:
      y: float (H, W) intensity (koala uses Y of YUV, in [0, 1]).

    Returns:
      float64 (8, H, W): ``w[k, i, j]`` is the weight of neighbour ``(i, j) + _OFFSETS[k]``
      of pixel (i, j), 0 where that neighbour is outside the image; the 8 weights of a pixel
      sum to 1.
    """
    y = np.asarray(y, np.float64)
    if y.ndim != 2:
        raise ValueError(f"y must be (H, W), got shape {y.shape}")
    h, w = y.shape
    padded = np.pad(y, 1, mode="edge")
    inside = np.pad(np.ones((h, w), bool), 1)
    neighbours = np.stack([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in _OFFSETS])
    valid = np.stack([inside[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in _OFFSETS])
    count = valid.sum(0) + 1.0
    mean = (np.where(valid, neighbours, 0.0).sum(0) + y) / count
    var = (np.where(valid, (neighbours - mean) ** 2, 0.0).sum(0) + (y - mean) ** 2) / count
    d2 = (neighbours - y) ** 2
    closest = np.where(valid, d2, np.inf).min(0)
    sigma = np.maximum(0.6 * var, -closest / np.log(_MIN_WEIGHT))
    sigma = np.maximum(sigma, _MIN_SIGMA)
    affinity = np.where(valid, np.exp(-d2 / sigma), 0.0)
    return affinity / affinity.sum(0)


def _matrix(y: np.ndarray, fixed: np.ndarray) -> sp.csr_matrix:
    """``A``: identity rows at fixed pixels, ``U(r) - Σ w_rs U(s)`` rows elsewhere."""
    h, w = y.shape
    n = h * w
    wt = weights(y)
    index = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64).reshape(h, w)
    free = ~fixed
    rows, cols, vals = [index.ravel()], [index.ravel()], [np.ones(n)]
    for k, (dy, dx) in enumerate(_OFFSETS):
        # pixels whose neighbour k is inside the image
        r0, r1 = max(0, -dy), h - max(0, dy)
        c0, c1 = max(0, -dx), w - max(0, dx)
        keep = free[r0:r1, c0:c1]
        rows.append(index[r0:r1, c0:c1][keep])
        cols.append(index[r0 + dy:r1 + dy, c0 + dx:c1 + dx][keep])
        vals.append(-wt[k, r0:r1, c0:c1][keep])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n, n))


def _coarsen(y, fixed, values):
    """2 x 2 block means of Y and of the fixed values; a block is fixed if any pixel is."""
    h, w = y.shape
    hc, wc = (h + 1) // 2, (w + 1) // 2

    def blocks(a):
        a = np.pad(a, ((0, 2 * hc - h), (0, 2 * wc - w)) + ((0, 0),) * (a.ndim - 2),
                   mode="edge")
        return a.reshape(hc, 2, wc, 2, *a.shape[2:])

    yc = blocks(y).mean((1, 3))
    f = blocks(fixed)
    fc = f.any((1, 3))
    count = np.maximum(f.sum((1, 3)), 1)[..., None]
    vc = (blocks(np.where(fixed[..., None], values, 0.0)) * f[:, :, :, :, None]).sum((1, 3)) / count
    return yc, fc, vc


def _upsample(x, shape):
    """Bilinear 2x upsampling of (h, w, C) to ``shape`` (H, W) (cropping odd sizes)."""
    zoomed = ndimage.zoom(x, (2, 2, 1), order=1, mode="nearest", grid_mode=True)
    return zoomed[:shape[0], :shape[1]]


def propagate(y, fixed, values, *, tol: float = 1e-3, maxiter: int = 30,
              direct_max: int = DIRECT_MAX) -> np.ndarray:
    """Spreads the ``values`` given at the ``fixed`` pixels over the image (Levin et al. 2004).

    Args:
      y: float (H, W) intensity, e.g. Y of YUV in [0, 1].
      fixed: bool (H, W), True where the value is given (a scribble). At least one.
      values: float (H, W, C): the given values (read at fixed pixels only), one channel per
        quantity to propagate (U and V; or a*b* corrections).
      tol, maxiter: BiCGSTAB's relative residual and iteration cap on the levels finer than
        ``direct_max`` pixels (see the module docstring).
      direct_max: images of at most this many pixels are solved exactly.

    Returns:
      float64 (H, W, C), equal to ``values`` at the fixed pixels.
    """
    y = np.asarray(y, np.float64)
    fixed = np.asarray(fixed, bool)
    values = np.asarray(values, np.float64)
    if values.ndim == 2:
        values = values[..., None]
    if y.ndim != 2 or fixed.shape != y.shape or values.shape[:2] != y.shape:
        raise ValueError(f"y {y.shape}, fixed {fixed.shape} and values {values.shape} must "
                         f"share (H, W)")
    if not fixed.any():
        raise ValueError("no fixed pixel: nothing to propagate")
    return _solve(y, fixed, values, tol, maxiter, max(int(direct_max), 4))


def _solve(y, fixed, values, tol, maxiter, direct_max):
    a = _matrix(y, fixed)
    b = np.where(fixed[..., None], values, 0.0).reshape(-1, values.shape[-1])
    if y.size <= direct_max:
        lu = spla.splu(a.tocsc())
        return lu.solve(b).reshape(values.shape)
    coarse = _solve(*_coarsen(y, fixed, values), tol, maxiter, direct_max)
    start = np.where(fixed[..., None], values, _upsample(coarse, y.shape))
    out = np.empty_like(values)
    for c in range(values.shape[-1]):
        x, _ = spla.bicgstab(a, b[:, c], x0=start[..., c].ravel(), rtol=tol, maxiter=maxiter)
        out[..., c] = x.reshape(y.shape)
    return out
