"""Colour classification maths: quantised ab bins, soft targets, class rebalancing, decoding.

Zhang, Isola & Efros 2016, "Colorful Image Colorization", as used by Lal et al. 2017
(SPEC §5): the ab plane is quantised on a grid of 10 and only the in-gamut bins are kept;
a target ab is soft-encoded onto its 5 nearest bins with a Gaussian (σ = 5); the per-pixel
cross-entropy is weighted by class rebalancing, w ∝ ((1 − λ)·p̃ + λ/Q)⁻¹ with λ = 0.5 and
p̃ the empirical bin prior smoothed with σ = 5, normalised so that E_p̃[w] = 1; a predicted
distribution is decoded by its annealed mean (T = 0.38).

Departures from Zhang et al., and why
-------------------------------------
* **The bins are computed here, from the sRGB gamut, not loaded** (Zhang's
  ``pts_in_hull.npy`` is not shipped). :func:`ab_bins` keeps a grid point when some sRGB
  colour (any L) has it as its nearest grid point: **262 bins** on the grid of 10
  (``rule="nearest"``, the default). Zhang's published set has 313. No gamut rule reproduces
  it exactly: ``rule="adjacent"`` (the grid point is a corner of the 10×10 cell holding some
  sRGB colour, i.e. within L∞ distance < 10 of it) gives 309 bins, all of them in Zhang's
  set; Zhang's 4 others, (40, 90), (100, −90), (100, −10) and (100, 0), lie 11–13 units (L∞)
  from every sRGB colour, so Zhang's gamut is somewhat larger than sRGB's (his exact rule
  isn't documented). Bins that no sRGB pixel can reach only ever receive soft-encoding
  mass, so "nearest" gives the smallest set with which every pixel has its own bin. Q is
  ``len(ab_bins())``, never a hard-coded 313.
* **The prior is smoothed on the bin centres** (:func:`bin_prior`), not on a fine ab
  histogram: p̃_i ∝ Σ_j p_j·exp(−|c_i − c_j|²/(2σ²)). With centres 10 apart and σ = 5, a
  neighbour weighs e^−2 ≈ 0.135 and a diagonal neighbour e^−4 ≈ 0.018.
* **Hard assignment splits ties**: a pixel exactly halfway between bins (common, as the
  records store integer ab and the bins sit on multiples of 10) counts equally for each,
  where a nearest-neighbour search would pick one arbitrarily.

Shapes and units: ab in Lab units (not the networks' ab/128), channels last; ``bins`` is
``(Q, 2)``; distributions are ``(..., Q)``. :func:`soft_encode` and :func:`annealed_mean` are
TensorFlow ops (eager, ``tf.function``, ``tf.data``); the prior and the weights are NumPy,
computed once per dataset.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from koala.ops import color
from koala.ops.colorbins_params import (  # noqa: F401  (re-exported: see __all__)
    ANNEAL_TEMPERATURE,
    GAMUT_RULES,
    GRID,
    REBALANCE_LAMBDA,
    SIGMA,
    SOFT_NEIGHBOURS,
)

__all__ = [
    "ANNEAL_TEMPERATURE",
    "GAMUT_RULES",
    "GRID",
    "REBALANCE_LAMBDA",
    "SIGMA",
    "SOFT_NEIGHBOURS",
    "ab_bins",
    "annealed_mean",
    "bin_counts",
    "bin_prior",
    "empirical_prior",
    "rebalancing_weights",
    "soft_encode",
]


# Gamut sampling. RGB -> Lab is a homeomorphism, so the ab projection of the solid sRGB cube
# is the projection of its surface (a line of constant ab meets the solid in a segment whose
# end points lie on the surface): sampling the 6 faces is enough. The projection's outline is
# traced mostly by the cube's 12 edges, which get a denser sampling so that a cell the gamut
# only grazes is still found. The counts are stable from 129 face levels and 4097 edge
# points up (checked to 2049 x 2049 faces: 262 "nearest" / 309 "adjacent" bins at grid 10).
_FACE_LEVELS = 257
_EDGE_POINTS = 16385


def _cube_surface() -> np.ndarray:
    """(N, 3) float64 sRGB points on the faces and edges of the unit cube."""
    g = np.linspace(0.0, 1.0, _FACE_LEVELS)
    u, v = (x.ravel() for x in np.meshgrid(g, g, indexing="ij"))
    t = np.linspace(0.0, 1.0, _EDGE_POINTS)
    points = []
    for axis in range(3):
        for value in (0.0, 1.0):  # a face: one coordinate fixed at 0 or 1
            cols = [u, v]
            cols.insert(axis, np.full_like(u, value))
            points.append(np.stack(cols, axis=-1))
        for c0 in (0.0, 1.0):  # an edge: two coordinates fixed
            for c1 in (0.0, 1.0):
                cols = [np.full_like(t, c0), np.full_like(t, c1)]
                cols.insert(axis, t)
                points.append(np.stack(cols, axis=-1))
    return np.concatenate(points)


@functools.lru_cache(maxsize=1)
def _gamut_ab() -> np.ndarray:
    """(N, 2) float64 ab of the sRGB cube's surface (computed once per process)."""
    return color.srgb_to_lab(_cube_surface()).numpy()[:, 1:]


@functools.lru_cache(maxsize=8)
def ab_bins(grid: float = GRID, rule: str = "nearest") -> np.ndarray:
    """The in-gamut ab bin centres on a square grid (Zhang et al.'s quantisation).

    Bin centres are the points ``grid * (i, j)``, (0, 0) included. A centre is kept when
    some sRGB colour (any lightness; D65 Lab as :mod:`koala.ops.color`, computed in float64):

    * ``rule="nearest"``: has it as its nearest grid point, ``round(ab / grid) * grid``
      (the centre's own ``grid``-wide cell meets the gamut's ab projection). 262 bins at
      grid 10: every sRGB pixel has its own bin and every bin is some pixel's own.
    * ``rule="adjacent"``: lies in one of the 4 cells the centre is a corner of, i.e. within
      L∞ distance < ``grid``. 309 bins at grid 10, all in Zhang's published 313.

    See the module docstring for why neither is exactly Zhang's 313.

    Returns:
      float32 ``(Q, 2)`` (a, b), sorted by a then b (Zhang's order), read-only (cached).
    """
    if not grid > 0:
        raise ValueError(f"grid must be > 0, got {grid}")
    if rule not in GAMUT_RULES:
        raise ValueError(f"rule must be one of {GAMUT_RULES}, got {rule!r}")
    ab = _gamut_ab() / grid
    if rule == "nearest":
        cells = np.unique(np.round(ab).astype(np.int64), axis=0)
    else:
        corner = np.unique(np.floor(ab).astype(np.int64), axis=0)
        cells = np.concatenate([corner + offset for offset in ((0, 0), (0, 1), (1, 0), (1, 1))])
        cells = np.unique(cells, axis=0)  # np.unique sorts rows: by a, then b
    bins = (cells * grid).astype(np.float32)
    bins.setflags(write=False)
    return bins


def _squared_distances(ab: tf.Tensor, bins: tf.Tensor) -> tf.Tensor:
    """(N, 2), (Q, 2) -> (N, Q) squared Euclidean distances (exact differences, no expansion)."""
    da = ab[:, :1] - bins[None, :, 0]
    db = ab[:, 1:] - bins[None, :, 1]
    return da * da + db * db


def soft_encode(ab, bins, k: int = SOFT_NEIGHBOURS, sigma: float = SIGMA) -> tf.Tensor:
    """Soft classification targets: each ab spread over its ``k`` nearest bins.

    The ``k`` nearest bins get weights ``exp(-d² / (2σ²))`` normalised to sum to 1, every
    other bin 0 (exactly ``k`` non-zeros; ties at the k-th place go to the bin listed
    first). The weights are computed relative to the nearest bin's distance, which cancels
    in the normalisation, so ab far outside the bins still gives finite targets.

    Memory is O(N·Q) for N = the number of ab points: encode per example inside
    ``tf.data`` (before batching) or at the network's output resolution (64×64 in Lal et al.).

    Args:
      ab: ``(..., 2)`` in Lab units (e.g. ``(B, H, W, 2)``; multiply the networks' ab/128 by
        ``color.AB_SCALE`` first).
      bins: ``(Q, 2)`` bin centres, e.g. :func:`ab_bins`.
      k: neighbours (1 gives the one-hot nearest bin).
      sigma: Gaussian σ in ab units.

    Returns:
      float32 ``(..., Q)``, non-negative, summing to 1 over the last axis.
    """
    bins = tf.convert_to_tensor(bins, tf.float32)
    num_bins = bins.shape[0]
    if not 1 <= k <= num_bins:
        raise ValueError(f"k must be in [1, {num_bins}], got {k}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    ab = tf.convert_to_tensor(ab)
    ab = tf.cast(ab, tf.float32)
    lead = tf.shape(ab)[:-1]
    flat = tf.reshape(ab, [-1, 2])
    neg_d2, index = tf.math.top_k(-_squared_distances(flat, bins), k=k)  # (N, k), nearest first
    logits = (neg_d2 - neg_d2[:, :1]) / (2.0 * sigma * sigma)  # <= 0; 0 for the nearest
    weights = tf.nn.softmax(logits, axis=-1)  # exp(-d²/2σ²), normalised
    n = tf.shape(flat)[0]
    rows = tf.repeat(tf.range(n), k)
    indices = tf.stack([rows, tf.reshape(index, [-1])], axis=1)
    encoded = tf.scatter_nd(indices, tf.reshape(weights, [-1]), tf.stack([n, num_bins]))
    return tf.reshape(encoded, tf.concat([lead, [num_bins]], axis=0))


def _nearest_bin_shares(ab: np.ndarray, bins: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """(N, 2) -> (N, Q) float64 hard assignment: 1 for the nearest bin, split equally on ties."""
    ab = np.asarray(ab, np.float64)
    bins = np.asarray(bins, np.float64)
    out = np.empty((len(ab), len(bins)))
    for start in range(0, len(ab), chunk):
        part = ab[start:start + chunk]
        d2 = ((part[:, None, :] - bins[None]) ** 2).sum(-1)
        nearest = d2 <= d2.min(axis=1, keepdims=True) + 1e-9
        out[start:start + chunk] = nearest / nearest.sum(axis=1, keepdims=True)
    return out


def bin_counts(ab_iterable: Iterable, bins) -> np.ndarray:
    """Pixel counts per bin by hard nearest-bin assignment.

    Args:
      ab_iterable: arrays (or tensors) of shape ``(..., 2)`` in Lab units, e.g. one per
        batch. A pixel exactly halfway between bins counts equally for each.
      bins: ``(Q, 2)`` bin centres.

    Returns:
      float64 ``(Q,)`` counts (whole numbers except for split ties), summing to the number
      of pixels.
    """
    bins = np.asarray(bins, np.float64)
    counts = np.zeros(len(bins))
    for ab in ab_iterable:
        ab = np.asarray(ab, np.float64).reshape(-1, 2)
        if not len(ab):
            continue
        if not np.all(np.isfinite(ab)):
            raise ValueError("ab holds NaN or infinite values")
        # Records hold integer ab, so the distinct values are few: assign each once.
        values, multiplicity = np.unique(ab, axis=0, return_counts=True)
        counts += multiplicity @ _nearest_bin_shares(values, bins)
    return counts


def bin_prior(counts, bins=None, sigma: float = SIGMA) -> np.ndarray:
    """The smoothed empirical bin distribution p̃ from per-bin counts.

    ``p = counts / Σ counts``, then ``p̃_i ∝ Σ_j p_j·exp(-|c_i − c_j|² / (2σ²))`` over the bin
    centres c, renormalised to sum to 1 (``sigma=0``: no smoothing).

    Args:
      counts: ``(Q,)`` non-negative, not all zero.
      bins: ``(Q, 2)`` centres; default :func:`ab_bins` ``()``.
      sigma: smoothing σ in ab units.

    Returns:
      float64 ``(Q,)`` summing to 1.
    """
    counts = np.asarray(counts, np.float64)
    bins = np.asarray(ab_bins() if bins is None else bins, np.float64)
    if counts.shape != (len(bins),):
        raise ValueError(f"counts has shape {counts.shape}, expected ({len(bins)},) (one per bin)")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)) or counts.sum() <= 0:
        raise ValueError("counts must be finite, non-negative and not all zero")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    p = counts / counts.sum()
    if sigma > 0:
        d2 = ((bins[:, None, :] - bins[None]) ** 2).sum(-1)
        p = np.exp(-d2 / (2.0 * sigma * sigma)) @ p
    return p / p.sum()


def empirical_prior(ab_iterable: Iterable, bins, sigma: float = SIGMA) -> np.ndarray:
    """:func:`bin_prior` of :func:`bin_counts`: p̃ over the pixels of ``ab_iterable``."""
    return bin_prior(bin_counts(ab_iterable, bins), bins, sigma)


def rebalancing_weights(prior, lam: float = REBALANCE_LAMBDA) -> np.ndarray:
    """Class-rebalancing weights ``w ∝ ((1 − λ)·p̃ + λ/Q)⁻¹`` with ``Σ p̃·w = 1``.

    λ = 0 weighs bins by their inverse frequency, λ = 1 gives every bin weight 1. The
    per-pixel loss weight is ``w`` at the target's most likely bin.

    Args:
      prior: ``(Q,)`` p̃ (renormalised to sum 1), e.g. :func:`bin_prior`.
      lam: λ in [0, 1].

    Returns:
      float64 ``(Q,)``, positive, with expectation 1 under ``prior``.
    """
    p = np.asarray(prior, np.float64)
    if p.ndim != 1 or np.any(p < 0) or not np.all(np.isfinite(p)) or p.sum() <= 0:
        raise ValueError("prior must be a finite, non-negative (Q,) vector, not all zero")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    p = p / p.sum()
    mixed = (1.0 - lam) * p + lam / len(p)
    if np.any(mixed <= 0):
        raise ValueError("with lam=0 every bin needs a positive prior (smooth it)")
    w = 1.0 / mixed
    return w / np.sum(p * w)


def annealed_mean(probs, bins, temperature: float = ANNEAL_TEMPERATURE) -> tf.Tensor:
    """Decodes bin distributions to ab: the mean of ``f_T(z) = exp(log z / T) / Σ exp(log z / T)``.

    T = 1 is the plain mean of the (renormalised) distribution, T -> 0 its mode; Zhang et al.
    use T = 0.38. Zero probabilities stay zero for any T.

    Args:
      probs: ``(..., Q)`` non-negative, not all zero (e.g. a softmax output). float16 and
        bfloat16 are computed in float32, ints as float32.
      bins: ``(Q, 2)`` bin centres.
      temperature: T > 0.

    Returns:
      ``(..., 2)`` ab in Lab units, in ``probs``' float dtype (float32 for other inputs).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    probs = tf.convert_to_tensor(probs)
    out_dtype = probs.dtype if probs.dtype.is_floating else tf.float32
    probs = tf.cast(probs, tf.float64 if probs.dtype == tf.float64 else tf.float32)
    # log z / T where z > 0, -inf (weight exactly 0) where z = 0, whatever T.
    safe = tf.math.log(tf.where(probs > 0, probs, tf.ones_like(probs)))
    logits = tf.where(probs > 0, safe / tf.cast(temperature, probs.dtype),
                      tf.constant(-np.inf, probs.dtype))
    annealed = tf.nn.softmax(logits, axis=-1)
    ab = tf.tensordot(annealed, tf.cast(tf.convert_to_tensor(bins), probs.dtype), axes=1)
    return tf.cast(ab, out_dtype)
