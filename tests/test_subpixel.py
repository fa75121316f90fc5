"""koala.tasks.sr.subpixel: FSRCNN's deconvolution as a convolution plus depth-to-space."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import smooth_image

from koala import presets
from koala.tasks.sr import models as sr
from koala.tasks.sr import subpixel
from koala.tasks.sr.inference import Upscaler


@pytest.mark.parametrize("k", [3, 4, 5, 9, 11])
@pytest.mark.parametrize("s", [2, 3, 4, 5])
def test_the_subpixel_conv_equals_the_transposed_conv(k, s):
    rng = np.random.default_rng(k * 10 + s)
    c_in, c_out = 3, 2
    image = keras.Input((None, None, c_in))
    deconv = keras.layers.Conv2DTranspose(c_out, k, strides=s, padding="same")
    model = keras.Model(image, deconv(image))
    deconv.set_weights([rng.normal(0, 0.1, (k, k, c_out, c_in)).astype(np.float32),
                        rng.normal(0, 0.1, c_out).astype(np.float32)])
    kernel, bias, (before, after) = subpixel.subpixel_kernel(*deconv.get_weights(), s)
    assert kernel.shape[-1] == s * s * c_out and kernel.shape[0] == before + after + 1
    x = rng.normal(size=(2, 7, 6, c_in)).astype(np.float32)
    padded = tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])
    got = tf.nn.depth_to_space(tf.nn.conv2d(padded, kernel, 1, "VALID") + bias, s).numpy()
    want = model(x).numpy()
    assert got.shape == want.shape == (2, 7 * s, 6 * s, c_out)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_fsrcnn_kernels_become_small_symmetric_convolutions():
    # x3: 9 x 9 -> 3 x 3 with 9 phases; x2: 5 x 5; x4: 3 x 3 (SPEC's FSRCNN deconv is 9 x 9).
    for s, size in ((2, 5), (3, 3), (4, 3)):
        p, j_lo, j_hi = subpixel.taps(9, s)
        assert (j_hi - j_lo + 1, j_hi) == (size, -j_lo)


def test_depth_to_space_layer_matches_tensorflow():
    x = np.arange(2 * 3 * 4 * 18, dtype=np.float32).reshape(2, 3, 4, 18)
    got = subpixel.DepthToSpace(3)(x)
    np.testing.assert_array_equal(got, tf.nn.depth_to_space(x, 3))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fast_fsrcnn_equals_the_model_on_random_weights(scale):
    keras.utils.set_random_seed(scale)
    model = sr.fsrcnn(scale=scale)
    out = model.get_layer("output")
    kernel, bias = out.get_weights()
    out.set_weights([np.random.default_rng(0).normal(0, 0.05, kernel.shape).astype(np.float32),
                     bias + 0.5])
    fast = subpixel.fast_fsrcnn(model)
    x = np.random.default_rng(1).random((2, 13, 10, 1)).astype(np.float32)
    want = model(x).numpy()
    assert want.std() > 0.01  # a real signal, not the ~0 of the paper's N(0, 0.001) init
    np.testing.assert_allclose(fast(x).numpy(), want, atol=1e-5)


def test_fast_fsrcnn_keeps_slopes_above_one_and_negative():
    """SlopeMax's max(x, a x) is the PReLU only for a <= 1: channels with a > 1 go through
    negated weights. Trained presets have slopes up to ~2 (and the test's run through 2.5)."""
    keras.utils.set_random_seed(7)
    model = sr.fsrcnn(scale=3)
    rng = np.random.default_rng(0)
    slopes = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.PReLU):
            (alpha,) = layer.get_weights()
            alpha = rng.uniform(-0.5, 2.5, alpha.shape).astype(np.float32)
            layer.set_weights([alpha])
            slopes.append(alpha.ravel())
    slopes = np.concatenate(slopes)
    assert (slopes > 1).sum() > 20 and (slopes < 0).sum() > 5
    out = model.get_layer("output")
    kernel, bias = out.get_weights()
    out.set_weights([rng.normal(0, 0.05, kernel.shape).astype(np.float32), bias + 0.5])
    fast = subpixel.fast_fsrcnn(model)
    assert not any(isinstance(layer, keras.layers.PReLU) for layer in fast.layers)
    x = rng.random((2, 23, 17, 1)).astype(np.float32)
    want = model(x).numpy()
    np.testing.assert_allclose(fast(x).numpy(), want, rtol=1e-5, atol=1e-4 * want.std())
    # Changing the model later does not reach the fast copy (its weights are copied).
    feature = model.get_layer("feature")
    feature.set_weights([w * 0 for w in feature.get_weights()])
    np.testing.assert_allclose(fast(x).numpy(), want, rtol=1e-5, atol=1e-4 * want.std())


@pytest.mark.parametrize("name", ["fsrcnn_x2", "fsrcnn_x3", "fsrcnn_x4"])
def test_fast_path_keeps_every_preset_and_the_upscaler_output(name):
    model = presets.load(name)
    x = smooth_image(37, 29, seed=3).astype(np.float32)[None, ..., :1] / 255.0
    np.testing.assert_allclose(subpixel.fast_fsrcnn(model)(x).numpy(), model(x).numpy(),
                               atol=1e-5)
    photo = smooth_image(45, 70, seed=4)
    fast, slow = Upscaler(model, tile=48), Upscaler(model, tile=48, fast=False)
    assert fast.fast and not slow.fast
    np.testing.assert_allclose(fast.upscale_float(photo / 255.0),
                               slow.upscale_float(photo / 255.0), atol=1e-4)
    assert np.abs(fast.upscale(photo).astype(int) - slow.upscale(photo).astype(int)).max() <= 1


def test_fast_fsrcnn_refuses_other_models():
    with pytest.raises(TypeError, match="expected an FSRCNN"):
        subpixel.fast_fsrcnn(sr.srcnn_small())
    assert not Upscaler(sr.srcnn_small()).fast  # SRCNN runs as it is
