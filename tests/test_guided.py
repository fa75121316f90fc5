"""koala.ops.guided: the box filter with clamped borders and He et al.'s guided filter."""

import numpy as np
import pytest

from koala.ops.guided import box_filter, guided_filter


def box_reference(x, r):
    """The clamped-window mean, by explicit loops."""
    h, w = x.shape[:2]
    out = np.empty(x.shape)
    for i in range(h):
        for j in range(w):
            out[i, j] = x[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].mean(axis=(0, 1))
    return out


def step_scene(n=32, noise=0.05, seed=0):
    """A vertical step edge at column n/2: guide 0.2 | 0.8, src 0 | 1 plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    cols = np.arange(n)
    left = cols < n // 2
    guide = np.where(left, 0.2, 0.8)[None, :].repeat(n, 0)
    clean = np.where(left, 0.0, 1.0)[None, :].repeat(n, 0)
    return guide, clean, clean + rng.normal(0, noise, clean.shape), cols


@pytest.mark.parametrize("radius", [0, 1, 3, 7, 40])
def test_box_filter_matches_loops_with_clamped_borders(radius):
    x = np.random.default_rng(1).random((13, 9, 2))
    np.testing.assert_allclose(box_filter(x, radius), box_reference(x, radius), atol=1e-12)
    np.testing.assert_allclose(box_filter(x[..., 0], radius), box_reference(x[..., 0], radius),
                               atol=1e-12)


def test_constant_src_stays_constant():
    guide = np.random.default_rng(2).random((20, 24))
    src = np.full((20, 24, 2), [12.5, -30.0])
    for radius, eps in [(2, 1e-4), (40, 1e-4), (5, 1.0)]:
        np.testing.assert_allclose(guided_filter(guide, src, radius, eps), src, atol=1e-9)


def test_guide_equal_to_src_is_kept_with_tiny_eps():
    image = np.random.default_rng(3).random((24, 20))
    out = guided_filter(image, image, 3, 1e-8)
    assert out.shape == image.shape
    np.testing.assert_allclose(out, image, atol=1e-5)
    out3 = guided_filter(image[..., None], image[..., None], 3, 1e-8)  # (H, W, 1) forms
    assert out3.shape == (24, 20, 1)
    np.testing.assert_allclose(out3[..., 0], out, atol=1e-12)


def test_edges_stay_sharp_where_a_box_filter_blurs_them():
    guide, clean, noisy, cols = step_scene()
    radius = 4
    near = np.abs(cols - (len(cols) // 2 - 0.5)) <= 2  # the 2 columns each side of the edge
    guided_err = np.abs(guided_filter(guide, noisy, radius, 1e-3) - clean)[:, near].mean()
    box_err = np.abs(box_filter(noisy, radius) - clean)[:, near].mean()
    noise_err = np.abs(noisy - clean)[:, near].mean()
    # Measured (mean absolute error, columns 14-17 of 32): guided 0.005, box 0.39, noise 0.04.
    assert box_err > 0.3
    assert guided_err < 0.01 and guided_err < box_err / 30
    assert guided_err < noise_err  # it also denoises next to the edge
    far = ~near
    assert np.abs(guided_filter(guide, noisy, radius, 1e-3) - clean)[:, far].mean() < noise_err


def test_large_eps_tends_to_the_box_filter():
    rng = np.random.default_rng(4)
    guide, src = rng.random((18, 22)), rng.random((18, 22, 2)) * 100
    # a -> 0, so q -> mean(mean(p)): the box filter applied twice (the mean of the b's).
    expected = box_filter(box_filter(src, 3), 3)
    np.testing.assert_allclose(guided_filter(guide, src, 3, 1e8), expected, atol=1e-3)
    assert np.abs(guided_filter(guide, src, 3, 1e-4) - expected).max() > 1  # not for small ε


def test_radius_beyond_the_image_is_the_global_linear_fit():
    rng = np.random.default_rng(5)
    guide = rng.random((12, 16))
    src = 3.0 * guide[..., None] + np.array([1.0, -2.0]) + rng.normal(0, 0.1, (12, 16, 2))
    eps = 1e-3
    out = guided_filter(guide, src, 100, eps)
    g, p = guide.ravel(), src.reshape(-1, 2)
    a = ((g[:, None] * p).mean(0) - g.mean() * p.mean(0)) / (g.var() + eps)
    b = p.mean(0) - a * g.mean()
    np.testing.assert_allclose(out, guide[..., None] * a + b, atol=1e-10)


def test_dtypes_and_bad_arguments():
    guide = np.random.default_rng(6).random((8, 8))
    src32 = np.ones((8, 8, 2), np.float32)
    assert guided_filter(guide, src32, 2, 1e-4).dtype == np.float32
    assert guided_filter(guide, np.ones((8, 8), np.uint8), 2, 1e-4).dtype == np.float64
    with pytest.raises(ValueError, match="src"):
        guided_filter(guide, np.ones((8, 9, 2)), 2, 1e-4)
    with pytest.raises(ValueError, match="guide"):
        guided_filter(np.ones((8, 8, 3)), src32, 2, 1e-4)
    with pytest.raises(ValueError, match="eps"):
        guided_filter(guide, src32, 2, 0.0)
    with pytest.raises(ValueError, match="radius"):
        guided_filter(guide, src32, -1, 1e-4)
    with pytest.raises(ValueError, match="radius"):
        box_filter(guide, 1.5)
