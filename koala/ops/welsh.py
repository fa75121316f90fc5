"""Colour transfer from a reference photo (Welsh, Ashikhmin, Mueller 2002, "Transferring
color to greyscale images"), the paper's global matching procedure.

1. Both images go to Ruderman's lαβ (:func:`koala.ops.color.rgb_to_lalphabeta`); the gray
   target has l only.
2. **Luminance remapping**: the reference's l is shifted and scaled to the target's mean and
   standard deviation, ``l' = (l - μ_ref) σ_tgt / σ_ref + μ_tgt``, so the two are compared on
   the same scale.
3. **Jittered sampling**: about ``samples`` (200) reference pixels, one drawn at random
   inside each cell of a regular grid over the reference.
4. **Matching**: every pixel (reference samples and target) gets its (remapped) l and the
   standard deviation of l over its 5 x 5 neighbourhood; each target pixel takes the α, β
   of the sample nearest in ``0.5 l + 0.5 σ`` (equal weights, as the paper's "weighted
   average of luminance and neighbourhood statistics"; a k-d tree finds it), keeping its
   own l.
5. Back to RGB.

Simplifications, stated: the paper's optional swatches (user-picked matching rectangles) and
its texture-synthesis error-minimisation variant are not implemented; the paper's weighting
is given only as "weighted average", so equal weights are used; after step 5 koala keeps the
input's own CIE L* exactly (``colorize_from_reference`` replaces the output's L* by the
input's, as every koala colorizer does), so only the chroma comes from the transfer.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from koala.ops import color

__all__ = ["DEFAULT_SAMPLES", "WINDOW", "transfer"]

DEFAULT_SAMPLES = 200  # the paper: "approximately 200 samples"
WINDOW = 5  # the neighbourhood whose standard deviation is matched (the paper: 5 x 5)


def _local_std(l: np.ndarray, window: int) -> np.ndarray:
    mean = ndimage.uniform_filter(l, window, mode="reflect")
    mean_sq = ndimage.uniform_filter(l * l, window, mode="reflect")
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))


def _jittered(height: int, width: int, samples: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """One random pixel inside each cell of a grid of about ``samples`` cells."""
    rows = max(1, int(round(np.sqrt(samples * height / width))))
    cols = max(1, int(round(samples / rows)))
    rows, cols = min(rows, height), min(cols, width)
    r_edges = np.linspace(0, height, rows + 1).astype(int)
    c_edges = np.linspace(0, width, cols + 1).astype(int)
    r0, c0 = np.meshgrid(r_edges[:-1], c_edges[:-1], indexing="ij")
    r1, c1 = np.meshgrid(r_edges[1:], c_edges[1:], indexing="ij")
    ys = rng.integers(r0.ravel(), np.maximum(r1.ravel(), r0.ravel() + 1))
    xs = rng.integers(c0.ravel(), np.maximum(c1.ravel(), c0.ravel() + 1))
    return ys, xs


def transfer(gray_rgb, reference_rgb, *, samples: int = DEFAULT_SAMPLES, window: int = WINDOW,
             seed: int = 0) -> np.ndarray:
    """Colours ``gray_rgb`` from ``reference_rgb`` (the paper's global matching).

    Args:
      gray_rgb: float (H, W, 3) or (H, W) in [0, 1], the target (its colour, if any, is
        ignored: only its lαβ l is used).
      reference_rgb: float (h, w, 3) in [0, 1], the colour reference (any size).
      samples: how many jittered reference samples (the paper: about 200).
      window: the neighbourhood side for the standard deviation (the paper: 5).
      seed: the jitter's random seed (equal seeds give equal results).

    Returns:
      float32 (H, W, 3) sRGB in [0, 1].
    """
    target = np.asarray(gray_rgb, np.float64)
    if target.ndim == 2:
        target = np.repeat(target[..., None], 3, axis=-1)
    reference = np.asarray(reference_rgb, np.float64)
    if target.ndim != 3 or target.shape[-1] != 3 or reference.ndim != 3 \
            or reference.shape[-1] != 3:
        raise ValueError(f"expected (H, W, 3) images, got {target.shape} and {reference.shape}")
    if samples < 1 or window < 1:
        raise ValueError(f"samples and window must be >= 1, got {samples} and {window}")
    gray = target.mean(-1, keepdims=True).repeat(3, -1)  # the target's gray (l only)
    l_target = color.rgb_to_lalphabeta(gray).numpy()[..., 0]
    ref = color.rgb_to_lalphabeta(reference).numpy()
    l_ref = ref[..., 0]
    spread = l_ref.std()
    scale = l_target.std() / spread if spread > 1e-12 else 1.0
    l_ref = (l_ref - l_ref.mean()) * scale + l_target.mean()

    ys, xs = _jittered(*l_ref.shape, samples, np.random.default_rng(seed))
    std_ref = _local_std(l_ref, window)
    keys = 0.5 * np.stack([l_ref[ys, xs], std_ref[ys, xs]], -1)
    chroma = ref[ys, xs, 1:]
    query = 0.5 * np.stack([l_target, _local_std(l_target, window)], -1).reshape(-1, 2)
    _, nearest = cKDTree(keys).query(query)
    out = np.concatenate([l_target[..., None], chroma[nearest].reshape(*l_target.shape, 2)],
                         axis=-1)
    return color.lalphabeta_to_rgb(out).numpy().astype(np.float32)
