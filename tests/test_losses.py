"""Invertible Grayscale's loss terms on hand-computed inputs, and the perceptual extractor."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from koala.core.errors import WeightsError
from koala.ops import perceptual
from koala.tasks.codec import losses

THETA = 70 / 127

# A 1 x 2 x 2 image whose luma is easy to do by hand: red, green / blue, white.
RGB = np.array([[[[1, 0, 0], [0, 1, 0]], [[0, 0, 1], [1, 1, 1]]]], np.float32)
LUMA = np.array([[[[0.299], [0.587]], [[0.114], [1.0]]]], np.float32)  # BT.601
GRAY_HALF = np.full((1, 2, 2, 1), 0.5, np.float32)


def value(x):
    assert x.shape == () and x.dtype == tf.float32
    return float(x)


def test_invertibility_is_mse_on_the_signed_scale():
    restored = RGB.copy()
    restored[0, 0, 0, 1] = 0.1  # one of 12 values off by 0.1, i.e. 0.2 on [-1, 1]
    assert value(losses.invertibility(RGB, restored)) == pytest.approx(0.04 / 12, abs=1e-6)
    assert value(losses.invertibility(RGB, RGB)) == 0.0


def test_lightness_by_hand():
    # |G' - Y'| = 2 |0.5 - Y| = 0.402, 0.174, 0.772, 1.0; only the last two exceed theta.
    expected = ((0.772 - THETA) + (1.0 - THETA)) / 4
    assert value(losses.lightness(GRAY_HALF, RGB)) == pytest.approx(expected, abs=1e-6)
    assert value(losses.lightness(GRAY_HALF, RGB, theta=0.0)) == pytest.approx(
        (0.402 + 0.174 + 0.772 + 1.0) / 4, abs=1e-6)
    assert value(losses.lightness(LUMA, RGB)) == pytest.approx(0.0, abs=1e-7)


def test_lightness_slack_gives_exactly_zero():
    # Every gray value within theta (on [-1, 1], i.e. theta / 2 on [0, 1]) of the luma.
    rng = np.random.default_rng(0)
    rgb = rng.random((2, 8, 8, 3)).astype(np.float32)
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    offset = rng.uniform(-0.99, 0.99, luma.shape) * THETA / 2
    gray = (luma + offset)[..., None].astype(np.float32)
    assert value(losses.lightness(gray, rgb)) == 0.0
    assert value(losses.lightness(gray, rgb, theta=0.0)) > 0.0


def test_structure_by_hand():
    # G' = 0 everywhere; Y' = 2Y - 1 = [[-0.402, 0.174], [-0.772, 1.0]].
    # dx: 0.576, 1.772 -> mean 1.174; dy: -0.37, 0.826 -> mean |.| 0.598.
    assert value(losses.structure(GRAY_HALF, RGB)) == pytest.approx(1.174 + 0.598, abs=1e-6)
    assert value(losses.structure(LUMA, RGB)) == pytest.approx(0.0, abs=1e-7)
    # A constant offset changes no difference: zero structure loss.
    assert value(losses.structure(LUMA * 0.5 + 0.25, RGB * 0.5 + 0.25)) == pytest.approx(
        0.0, abs=1e-6)


def test_quantization_by_hand_and_its_gradient():
    gray = np.array([0.0, 0.5, 10.25, 255.0], np.float32).reshape(1, 2, 2, 1) / 255
    assert value(losses.quantization(gray)) == pytest.approx((0 + 0.5 + 0.25 + 0) / 4, abs=1e-6)
    levels = (np.arange(256, dtype=np.float32) / 255).reshape(1, 16, 16, 1)
    assert value(losses.quantization(levels)) == pytest.approx(0.0, abs=1e-5)
    midpoints = ((np.arange(255, dtype=np.float32) + 0.5) / 255).reshape(1, 15, 17, 1)
    assert value(losses.quantization(midpoints)) == pytest.approx(0.5, abs=1e-5)

    g = tf.Variable(np.array([10.25, 20.75], np.float32).reshape(1, 1, 2, 1) / 255)
    with tf.GradientTape() as tape:
        loss = losses.quantization(g)
    # d/dG mean|255 G - round(255 G)| = 255 * sign(...) / N, N = 2.
    np.testing.assert_allclose(tape.gradient(loss, g).numpy().ravel(), [127.5, -127.5],
                               rtol=1e-6)


def test_contrast_distances_by_hand():
    a = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32).reshape(1, 2, 2, 1)
    b = np.array([[1.0, 0.0], [0.0, 4.0]], np.float32).reshape(1, 2, 2, 1)
    assert value(losses.contrast(a, b, "l1")) == pytest.approx(1.25, abs=1e-6)
    assert value(losses.contrast(a, b, "mse")) == pytest.approx(3.25, abs=1e-6)
    assert value(losses.contrast(a, a)) == 0.0
    with pytest.raises(ValueError, match="distance"):
        losses.contrast(a, b, "l2")


def test_contrast_loss_replicates_gray_and_runs_one_batch():
    seen = []

    def identity(x, training=False):
        seen.append((tuple(x.shape), training))
        return x

    # Gray 0.5 against channels of 0 or 1: every difference is 0.5.
    assert value(losses.contrast_loss(identity, GRAY_HALF, RGB, "l1")) == pytest.approx(0.5)
    assert seen == [((2, 2, 2, 3), False)]
    assert value(losses.contrast_loss(identity, LUMA, np.repeat(LUMA, 3, -1))) == 0.0


def test_losses_run_inside_tf_function_and_accept_float16():
    fn = tf.function(lambda g, i: losses.lightness(g, i) + losses.structure(g, i)
                     + losses.quantization(g))
    out = fn(tf.constant(GRAY_HALF, tf.float16), tf.constant(RGB, tf.float16))
    # lightness + structure (as above) + quantization (0.5 * 255 = 127.5, a midpoint)
    expected = ((0.772 - THETA) + (1.0 - THETA)) / 4 + 1.772 + 0.5
    assert out.dtype == tf.float32 and float(out) == pytest.approx(expected, abs=1e-3)


# --- perceptual feature extractor ----------------------------------------------------------


def test_preprocessing():
    red = np.array([[[[1.0, 0.0, 0.0]]]], np.float32)
    caffe = perceptual.PerceptualPreprocess("caffe", 0)(red).numpy().ravel()
    np.testing.assert_allclose(caffe, [-103.939, -116.779, 255 - 123.68], rtol=1e-6)
    tf_mode = perceptual.PerceptualPreprocess("tf", 4)(red).numpy()
    assert tf_mode.shape == (1, 4, 4, 3)
    np.testing.assert_allclose(tf_mode[0, 0, 0], [1.0, -1.0, -1.0])


def test_random_vgg19_extractor_shapes_and_frozen():
    fx = perceptual.feature_extractor("vgg19", "none", input_size=32)
    assert not fx.trainable and not fx.trainable_weights
    assert fx.get_layer("vgg19_to_block4_conv4") is not None
    out = fx(np.random.default_rng(0).random((2, 48, 40, 3)).astype(np.float32))
    assert out.shape == (2, 4, 4, 512) and out.dtype == tf.float32
    with pytest.raises(ValueError, match="no layer"):
        perceptual.feature_extractor("vgg19", "none", layer="block9_conv9")
    with pytest.raises(ValueError, match="unknown perceptual net"):
        perceptual.feature_extractor("resnet", "none")


def test_mobilenet_weights_file_gives_the_classifiers_own_features(tmp_path):
    # A weights file like ../shared/weights' (the whole 224 px classifier), made here with
    # seeded random weights so the test always runs.
    keras.utils.set_random_seed(3)
    path = str(tmp_path / "mobilenet_1_0_224.weights.h5")
    keras.applications.MobileNet(alpha=1.0, weights=None).save_weights(path)
    fx = perceptual.feature_extractor("mobilenet", path, input_size=224)
    full = keras.applications.MobileNet(alpha=1.0, weights=path)
    reference = keras.Model(full.input, full.get_layer("conv_pw_5_relu").output)
    x = np.random.default_rng(1).random((1, 224, 224, 3)).astype(np.float32)
    features = fx(x).numpy()
    assert features.shape == (1, 28, 28, 256)
    assert np.abs(features).max() > 0
    np.testing.assert_allclose(features, reference(x * 2 - 1).numpy(), atol=1e-5)
    # input_size=0: no resize, features follow the input's grid (stride 8).
    native = perceptual.feature_extractor("mobilenet", path, input_size=0)
    assert native(x[:, :64, :48]).shape == (1, 8, 6, 256)


def test_unreadable_weights_raise_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="not found") as err:
        perceptual.feature_extractor("vgg19", str(tmp_path / "missing.weights.h5"))
    message = str(err.value)
    assert "--perceptual_weights=none" in message and "--contrast_weight=0" in message
    assert "--perceptual_net=mobilenet --perceptual_weights=" in message
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"definitely not HDF5")
    with pytest.raises(WeightsError, match="could not load"):
        perceptual.feature_extractor("mobilenet", str(junk))


def test_imagenet_failure_is_loud(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", offline)
    with pytest.raises(WeightsError) as err:
        perceptual.feature_extractor("vgg19", "imagenet")
    message = str(err.value)
    assert "never falls back" in message and "--perceptual_weights=PATH" in message
