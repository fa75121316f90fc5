"""Tests for koala.ops.metrics against scikit-image, hand-computed cases and published data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage import color as skcolor
from skimage import metrics as skmetrics

from koala.ops import metrics


def _sk_ssim(a: np.ndarray, b: np.ndarray, data_range: float, channel_axis=None) -> float:
    return skmetrics.structural_similarity(
        a,
        b,
        data_range=data_range,
        channel_axis=channel_axis,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def image_pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random uint8 RGB image (40, 48, 3) and a noisy copy."""
    a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    noisy = a.astype(np.float64) + rng.normal(0.0, 12.0, a.shape)
    return a, np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _smooth(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth random field in [0, 1]: a sum of low-frequency sinusoids."""
    y, x = np.meshgrid(np.linspace(0, 1, shape[0]), np.linspace(0, 1, shape[1]), indexing="ij")
    out = np.zeros(shape)
    for _ in range(4):
        fy, fx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (fy * y + fx * x) + phase)
        if len(shape) == 3:  # a different amplitude per channel
            wave = wave[..., None] * rng.uniform(0.2, 1.0, shape[2])
        out += wave
    return (out - out.min()) / (out.max() - out.min())


# --- PSNR -------------------------------------------------------------------------------


@pytest.mark.parametrize("peak", [1.0, 255.0])
def test_psnr_matches_skimage(rng: np.random.Generator, peak: float) -> None:
    a = rng.random((32, 40, 3)) * peak
    b = np.clip(a + rng.normal(0, 0.05 * peak, a.shape), 0, peak)
    expected = skmetrics.peak_signal_noise_ratio(a, b, data_range=peak)
    assert metrics.psnr(a, b, peak=peak) == pytest.approx(expected, abs=1e-10)


def test_psnr_uint8_does_not_wrap_and_identical_is_inf(
    image_pair: tuple[np.ndarray, np.ndarray],
) -> None:
    a, b = image_pair
    expected = skmetrics.peak_signal_noise_ratio(a, b, data_range=255)
    assert metrics.psnr(a, b) == pytest.approx(expected, abs=1e-10)
    zeros, full = np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8)
    assert metrics.psnr(zeros, full) == pytest.approx(0.0, abs=1e-12)  # MSE = 255^2
    assert metrics.psnr(a, a) == math.inf
    assert metrics.psnr(a / 255.0, a / 255.0, peak=1.0) == math.inf


def test_psnr_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr_y(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))


def test_psnr_y_border_only_difference_is_cropped(
    image_pair: tuple[np.ndarray, np.ndarray],
) -> None:
    a, _ = image_pair
    b = a.copy()
    b[:4] = 255 - b[:4]  # change a 4-pixel band at the top and at the right
    b[:, -4:] = 0
    assert metrics.psnr_y(a, b, crop=4) == math.inf
    assert math.isfinite(metrics.psnr_y(a, b, crop=3))


def test_psnr_y_uniform_offset() -> None:
    # Grey 100 vs grey 110: every channel moves by 10/255, so Y moves by
    # (65.481 + 128.553 + 24.966) * 10 / 255 = 219 * 10 / 255 = 8.5882... everywhere, and
    # PSNR = 20 log10(255 / 8.5882...) = 29.4527... dB.
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 110, np.uint8)
    delta_y = 219.0 * 10.0 / 255.0
    expected = 20.0 * math.log10(255.0 / delta_y)
    assert expected == pytest.approx(29.4527, abs=1e-4)
    assert metrics.psnr_y(a, b) == pytest.approx(expected, abs=1e-10)
    assert metrics.psnr_y(a, b, crop=2) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_y_matches_skimage(image_pair: tuple[np.ndarray, np.ndarray], crop: int) -> None:
    a, b = image_pair
    ya = skcolor.rgb2ycbcr(a / 255.0)[..., 0]
    yb = skcolor.rgb2ycbcr(b / 255.0)[..., 0]
    if crop:
        ya, yb = ya[crop:-crop, crop:-crop], yb[crop:-crop, crop:-crop]
    expected = skmetrics.peak_signal_noise_ratio(ya, yb, data_range=255)
    assert metrics.psnr_y(a, b, crop=crop) == pytest.approx(expected, abs=1e-9)


def test_psnr_y_bad_crop(image_pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = image_pair
    with pytest.raises(ValueError):
        metrics.psnr_y(a, b, crop=-1)
    with pytest.raises(ValueError):
        metrics.psnr_y(a, b, crop=20)


# --- SSIM -------------------------------------------------------------------------------


def test_ssim_random_grayscale(rng: np.random.Generator) -> None:
    a = rng.random((32, 40)) * 255
    b = np.clip(a + rng.normal(0, 30, a.shape), 0, 255)
    got = metrics.ssim(a, b, data_range=255)
    assert got == pytest.approx(_sk_ssim(a, b, 255), abs=1e-9)
    assert metrics.ssim(a, a, data_range=255) == pytest.approx(1.0, abs=1e-12)


def test_ssim_smooth_grayscale_and_multichannel(rng: np.random.Generator) -> None:
    a = _smooth(rng, (48, 40))
    b = np.clip(a + rng.normal(0, 0.03, a.shape), 0, 1)
    assert metrics.ssim(a, b, data_range=1.0) == pytest.approx(_sk_ssim(a, b, 1.0), abs=1e-9)

    a3 = _smooth(rng, (40, 48, 3))
    b3 = np.clip(a3 * 0.9 + 0.05 + rng.normal(0, 0.02, a3.shape), 0, 1)
    got = metrics.ssim(a3, b3, data_range=1.0, channel_axis=-1)
    assert got == pytest.approx(_sk_ssim(a3, b3, 1.0, channel_axis=-1), abs=1e-9)
    # Channels first gives the same mean.
    got_first = metrics.ssim(
        np.moveaxis(a3, -1, 0), np.moveaxis(b3, -1, 0), data_range=1.0, channel_axis=0
    )
    assert got_first == pytest.approx(got, abs=1e-12)


def test_ssim_random_multichannel_uint8(image_pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = image_pair
    got = metrics.ssim(a, b, data_range=255, channel_axis=-1)
    expected = _sk_ssim(a.astype(np.float64), b.astype(np.float64), 255, channel_axis=-1)
    assert got == pytest.approx(expected, abs=1e-9)


def test_ssim_y_matches_skimage(image_pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = image_pair
    crop = 3
    ya = skcolor.rgb2ycbcr(a / 255.0)[crop:-crop, crop:-crop, 0]
    yb = skcolor.rgb2ycbcr(b / 255.0)[crop:-crop, crop:-crop, 0]
    assert metrics.ssim_y(a, b, crop=crop) == pytest.approx(_sk_ssim(ya, yb, 255), abs=1e-9)
    assert metrics.ssim_y(a, a, crop=crop) == pytest.approx(1.0, abs=1e-12)


def test_ssim_too_small() -> None:
    with pytest.raises(ValueError, match=">= 11"):
        metrics.ssim(np.zeros((10, 20)), np.zeros((10, 20)))


# --- Colourfulness ----------------------------------------------------------------------


def test_colorfulness_gray_is_zero(rng: np.random.Generator) -> None:
    gray = rng.integers(0, 256, (16, 16, 1)).repeat(3, axis=-1)
    assert metrics.colorfulness(gray) == pytest.approx(0.0, abs=1e-12)


def test_colorfulness_hand_computed() -> None:
    # Two pixels, pure red (255, 0, 0) and black (0, 0, 0):
    #   rg = R - G          = [255, 0]     -> mean 127.5, population std 127.5
    #   yb = (R + G)/2 - B  = [127.5, 0]   -> mean 63.75, population std 63.75
    #   sqrt(127.5^2 + 63.75^2) = 63.75 sqrt(5) for both the std and the mean term, so
    #   M = 63.75 sqrt(5) + 0.3 * 63.75 sqrt(5) = 82.875 sqrt(5) = 185.3141...
    image = np.array([[[255, 0, 0], [0, 0, 0]]], np.uint8)
    assert metrics.colorfulness(image) == pytest.approx(82.875 * math.sqrt(5.0), abs=1e-9)
    # Red, green, blue, white: rg = [255, -255, 0, 0], yb = [127.5, 127.5, -255, 0]; both
    # means are 0; var_rg = 2 * 255^2 / 4 = 32512.5, var_yb = (2 * 127.5^2 + 255^2) / 4 =
    # 24384.375, so M = sqrt(56896.875) = 238.5307...
    rgbw = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]])
    assert metrics.colorfulness(rgbw) == pytest.approx(math.sqrt(56896.875), abs=1e-9)


# --- CIEDE2000 --------------------------------------------------------------------------

# Sharma, Wu & Dalal (2005), Table 1: (Lab1, Lab2, ΔE00), pair numbers in comments.
SHARMA_ROWS = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),  # 1
    ((50.0, 3.1571, -77.2803), (50.0, 0.0, -82.7485), 2.8615),  # 2
    ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),  # 4
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),  # 7: one chroma is 0
    ((50.0, -1.0, 2.0), (50.0, 0.0, 0.0), 2.3669),  # 8
    ((50.0, 2.4900, -0.0010), (50.0, -2.4900, 0.0009), 7.1792),  # 9: hue wrap-around
    ((50.0, 2.4900, -0.0010), (50.0, -2.4900, 0.0011), 7.2195),  # 11
    ((50.0, -0.0010, 2.4900), (50.0, 0.0009, -2.4900), 4.8045),  # 13
    ((50.0, -0.0010, 2.4900), (50.0, 0.0011, -2.4900), 4.7461),  # 15
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),  # 17
    ((50.0, 2.5, 0.0), (61.0, -5.0, 29.0), 22.8977),  # 18
    ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),  # 25
]


def test_ciede2000_sharma_data() -> None:
    lab1 = np.array([row[0] for row in SHARMA_ROWS])
    lab2 = np.array([row[1] for row in SHARMA_ROWS])
    expected = np.array([row[2] for row in SHARMA_ROWS])
    got = metrics.ciede2000(lab1, lab2)
    assert got.shape == (len(SHARMA_ROWS),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-5)  # table is to 4 decimals
    np.testing.assert_allclose(metrics.ciede2000(lab2, lab1), got, rtol=0, atol=1e-12)


def test_ciede2000_matches_skimage(rng: np.random.Generator) -> None:
    n = 4000
    lab1 = np.stack(
        [rng.uniform(0, 100, n), rng.uniform(-128, 127, n), rng.uniform(-128, 127, n)], axis=-1
    )
    near = lab1 + rng.normal(0, 3, lab1.shape)
    far = np.stack(
        [rng.uniform(0, 100, n), rng.uniform(-128, 127, n), rng.uniform(-128, 127, n)], axis=-1
    )
    for lab2 in (near, far):
        np.testing.assert_allclose(
            metrics.ciede2000(lab1, lab2), skcolor.deltaE_ciede2000(lab1, lab2), rtol=0, atol=1e-6
        )
    image1, image2 = lab1.reshape(40, 100, 3), far.reshape(40, 100, 3)
    assert metrics.ciede2000(image1, image2).shape == (40, 100)


def test_mean_ciede2000(image_pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = image_pair
    assert metrics.mean_ciede2000(a, a) == 0.0
    expected = skcolor.deltaE_ciede2000(skcolor.rgb2lab(a / 255.0), skcolor.rgb2lab(b / 255.0))
    assert metrics.mean_ciede2000(a, b) == pytest.approx(float(expected.mean()), abs=1e-9)
