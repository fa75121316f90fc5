"""Tests for koala.ops.color: agreement with scikit-image, round trips, scaling, graph mode."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
from skimage import color as skcolor

from koala.ops import color

EDGE_COLOURS = np.array(
    [
        [0.0, 0.0, 0.0],
        [1.0, 1.0, 1.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 0.0],
        [0.0, 1.0, 1.0],
        [1.0, 0.0, 1.0],
        [0.5, 0.5, 0.5],
        [0.04045, 0.0031308, 0.01],  # around the sRGB gamma thresholds
    ]
)


@pytest.fixture(scope="module")
def random_rgb() -> np.ndarray:
    """Random image (32, 32, 3) in [0, 1], float64."""
    return np.random.default_rng(0).random((32, 32, 3))


@pytest.fixture(scope="module")
def rgb_cube() -> np.ndarray:
    """A dense 32^3 grid of the RGB cube, (32768, 3) float64, corners included."""
    axis = np.linspace(0.0, 1.0, 32)
    return np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)


# --- Lab --------------------------------------------------------------------------------


def test_srgb_to_lab_matches_skimage(random_rgb: np.ndarray, rgb_cube: np.ndarray) -> None:
    for rgb in (random_rgb, EDGE_COLOURS, rgb_cube):
        np.testing.assert_allclose(
            color.srgb_to_lab(rgb).numpy(), skcolor.rgb2lab(rgb), rtol=0, atol=1e-9
        )


def test_lab_to_srgb_matches_skimage(random_rgb: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    in_gamut = skcolor.rgb2lab(random_rgb)
    # Arbitrary Lab, many out of gamut; b up to 300 makes fz < 0 (clipped to 0 by both).
    arbitrary = np.stack(
        [rng.uniform(0, 100, 2000), rng.uniform(-200, 200, 2000), rng.uniform(-300, 300, 2000)],
        axis=-1,
    )
    assert np.any((arbitrary[:, 0] + 16) / 116 - arbitrary[:, 2] / 200 < 0)
    for lab in (in_gamut, arbitrary):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skimage warns about the negative Z it clips
            expected = skcolor.lab2rgb(lab)
        got = color.lab_to_srgb(lab).numpy()
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        assert got.min() >= 0.0 and got.max() <= 1.0


def test_lab_round_trip(random_rgb: np.ndarray, rgb_cube: np.ndarray) -> None:
    # 1e-7, not 1e-12: the sRGB curve's two pieces meet only to ~3e-8 at 0.04045 (the
    # standard's rounded constants; skimage behaves the same).
    for rgb in (random_rgb, EDGE_COLOURS, rgb_cube):
        back = color.lab_to_srgb(color.srgb_to_lab(rgb)).numpy()
        np.testing.assert_allclose(back, rgb, rtol=0, atol=1e-7)
    back32 = color.lab_to_srgb(color.srgb_to_lab(random_rgb.astype(np.float32))).numpy()
    np.testing.assert_allclose(back32, random_rgb, rtol=0, atol=1e-4)


def test_white_and_black() -> None:
    lab = color.srgb_to_lab([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]).numpy()
    # The sRGB matrix rows don't sum exactly to the D65 white point (skimage gives the same
    # a, b = -0.0024, 0.0047 for white), hence the 0.01 tolerance on a and b.
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=1e-2)
    assert lab[0, 0] == pytest.approx(100.0, abs=1e-4)
    np.testing.assert_array_equal(lab[1], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(
        color.lab_to_srgb([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).numpy(),
        [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]],
        atol=1e-4,
    )


def test_float32_close_to_float64(random_rgb: np.ndarray) -> None:
    lab64 = color.srgb_to_lab(random_rgb).numpy()
    lab32 = color.srgb_to_lab(random_rgb.astype(np.float32)).numpy()
    np.testing.assert_allclose(lab32, lab64, rtol=0, atol=1e-3)


# --- Scaling ----------------------------------------------------------------------------


def test_normalize_denormalize_are_inverses() -> None:
    values = np.linspace(-150.0, 150.0, 61)
    np.testing.assert_allclose(color.denormalize_l(color.normalize_l(values)), values, atol=1e-12)
    np.testing.assert_allclose(color.normalize_l(color.denormalize_l(values)), values, atol=1e-12)
    np.testing.assert_allclose(color.denormalize_ab(color.normalize_ab(values)), values, atol=1e-12)
    np.testing.assert_allclose(color.normalize_ab(color.denormalize_ab(values)), values, atol=1e-12)


def test_normalize_l_range() -> None:
    np.testing.assert_allclose(color.normalize_l([0.0, 50.0, 100.0]).numpy(), [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(color.denormalize_l([-1.0, 1.0]).numpy(), [0.0, 100.0])
    assert color.L_SCALE == 50.0 and color.AB_SCALE == 128.0
    np.testing.assert_allclose(color.normalize_ab([-128.0, 64.0]).numpy(), [-1.0, 0.5])


def test_every_srgb_colour_has_normalized_ab_in_range(rgb_cube: np.ndarray) -> None:
    lab = color.srgb_to_lab(rgb_cube)
    ab = color.normalize_ab(lab[..., 1:]).numpy()
    assert np.all(np.abs(ab) <= 1.0)
    lightness = color.normalize_l(lab[..., :1]).numpy()
    assert lightness.min() >= -1.0 - 1e-9 and lightness.max() <= 1.0 + 1e-9


# --- Grey, luma, YCbCr ------------------------------------------------------------------


def test_gray_from_l() -> None:
    lightness = np.linspace(0.0, 100.0, 201)[:, None]
    gray = color.gray_from_l(lightness).numpy()
    assert gray.shape == (201, 3)
    np.testing.assert_array_equal(gray[:, 0], gray[:, 1])
    np.testing.assert_array_equal(gray[:, 1], gray[:, 2])
    assert gray.min() >= 0.0 and gray.max() <= 1.0
    lab = color.srgb_to_lab(gray).numpy()
    np.testing.assert_allclose(lab[:, :1], lightness, rtol=0, atol=1e-4)
    np.testing.assert_allclose(lab[:, 1:], 0.0, atol=1e-2)
    lab_neutral = np.concatenate([lightness, np.zeros((201, 2))], axis=-1)
    np.testing.assert_allclose(gray, color.lab_to_srgb(lab_neutral).numpy(), atol=1e-4)
    image = color.gray_from_l(np.full((2, 4, 4, 1), 50.0, np.float32))
    assert image.shape == (2, 4, 4, 3) and image.dtype == tf.float32


def test_rgb_to_luma_known_colours() -> None:
    luma = color.rgb_to_luma(EDGE_COLOURS[:5]).numpy()
    np.testing.assert_allclose(luma[:, 0], [0.0, 1.0, 0.299, 0.587, 0.114], atol=1e-12)
    assert luma.shape == (5, 1)
    np.testing.assert_allclose(color.rgb_to_luma([[255.0, 0.0, 0.0]]).numpy(), [[76.245]])
    assert color.rgb_to_luma(np.zeros((2, 5, 6, 3))).shape == (2, 5, 6, 1)


def test_ycbcr_matches_skimage_and_round_trips(random_rgb: np.ndarray) -> None:
    for rgb in (random_rgb, EDGE_COLOURS):
        ycbcr = color.rgb_to_ycbcr(rgb).numpy()
        np.testing.assert_allclose(ycbcr, skcolor.rgb2ycbcr(rgb), rtol=0, atol=1e-9)
        np.testing.assert_allclose(color.ycbcr_to_rgb(ycbcr).numpy(), rgb, rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        color.rgb_to_ycbcr([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]).numpy(),
        [[235.0, 128.0, 128.0], [16.0, 128.0, 128.0]],
        atol=1e-9,
    )
    # Not clipped: Y above 235 gives RGB above 1.
    assert np.all(color.ycbcr_to_rgb([[255.0, 128.0, 128.0]]).numpy() > 1.0)


# --- TensorFlow integration --------------------------------------------------------------

FUNCTIONS: dict[str, tuple[Callable, int, float, float]] = {
    # name: (function, channels, low, high) of a sensible random input
    "srgb_to_lab": (color.srgb_to_lab, 3, 0.0, 1.0),
    "lab_to_srgb": (color.lab_to_srgb, 3, -60.0, 100.0),
    "normalize_l": (color.normalize_l, 1, 0.0, 100.0),
    "denormalize_l": (color.denormalize_l, 1, -1.0, 1.0),
    "normalize_ab": (color.normalize_ab, 2, -100.0, 100.0),
    "denormalize_ab": (color.denormalize_ab, 2, -1.0, 1.0),
    "gray_from_l": (color.gray_from_l, 1, 0.0, 100.0),
    "rgb_to_luma": (color.rgb_to_luma, 3, 0.0, 1.0),
    "rgb_to_ycbcr": (color.rgb_to_ycbcr, 3, 0.0, 1.0),
    "ycbcr_to_rgb": (color.ycbcr_to_rgb, 3, 16.0, 235.0),
}


def _inputs(name: str, dtype: type) -> np.ndarray:
    _, channels, low, high = FUNCTIONS[name]
    rng = np.random.default_rng(sorted(FUNCTIONS).index(name))
    return rng.uniform(low, high, (3, 8, 8, channels)).astype(dtype)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_graph_mode_matches_eager_and_keeps_dtype(name: str, dtype: type) -> None:
    fn = FUNCTIONS[name][0]
    x = _inputs(name, dtype)
    eager = fn(x)
    assert isinstance(eager, tf.Tensor)
    assert eager.dtype == tf.as_dtype(dtype)
    assert eager.shape[:-1] == x.shape[:-1]

    atol = 1e-4 if dtype == np.float32 else 1e-10  # graph rewrites may reorder float32 ops
    mapped = tf.data.Dataset.from_tensor_slices(x).map(fn).batch(len(x))
    (batch,) = list(mapped)
    assert batch.dtype == tf.as_dtype(dtype)
    np.testing.assert_allclose(batch.numpy(), eager.numpy(), rtol=0, atol=atol)

    traced = tf.function(fn)(tf.constant(x))
    assert traced.dtype == tf.as_dtype(dtype)
    assert traced.shape == eager.shape  # static shape survives tracing
    np.testing.assert_allclose(traced.numpy(), eager.numpy(), rtol=0, atol=atol)


def test_integer_and_half_inputs() -> None:
    assert color.rgb_to_luma(np.array([[1, 0, 0]], np.uint8)).dtype == tf.float32
    assert color.normalize_l(tf.constant([50], tf.int32)).dtype == tf.float32
    half = color.srgb_to_lab(np.array([[0.5, 0.2, 0.9]], np.float16))
    assert half.dtype == tf.float16
    np.testing.assert_allclose(
        half.numpy().astype(np.float64), skcolor.rgb2lab([[0.5, 0.2, 0.9]]), atol=0.1
    )


def test_inside_keras_model() -> None:
    inputs = keras.Input((8, 8, 3))
    lab = keras.layers.Lambda(color.srgb_to_lab, output_shape=(8, 8, 3))(inputs)
    model = keras.Model(inputs, lab)
    x = np.random.default_rng(2).random((2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x).numpy(), skcolor.rgb2lab(x), atol=2e-3)


def test_gradients_are_finite() -> None:
    rgb = tf.constant(np.concatenate([EDGE_COLOURS, [[0.02, 0.002, 0.5]]]), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(rgb)
        lab = color.srgb_to_lab(rgb)
        back = color.lab_to_srgb(lab + tf.constant([0.0, 1.0, -1.0]))
        gray = color.gray_from_l(lab[:, :1])
        loss = tf.reduce_sum(lab) + tf.reduce_sum(back) + tf.reduce_sum(gray)
    grad = tape.gradient(loss, rgb)
    assert np.all(np.isfinite(grad.numpy()))
