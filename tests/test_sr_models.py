"""Super-resolution models (SRCNN, FSRCNN, auto-encoder): shapes, parameter counts pinned from
the papers' layer tables, compute, the shared model checks (config and .keras round trips,
gradients, bfloat16) and a 2-step fit."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_checks import check_config_round_trip, check_gradients, check_precision, check_saving

from koala.tasks.sr import models as sr
from koala.tasks.sr.models import (
    FSRCNN,
    SRCNN,
    AutoencoderConfig,
    FSRCNNConfig,
    SRAutoencoder,
    SRCNNConfig,
    border,
    multiply_adds_per_output_pixel,
    parameter_count_from_table,
)

# One small model per family and the input size (px) it gets in the tests below.
SMALL = {
    "srcnn": (sr.srcnn_small, 24),  # valid 9-1-5: output 24 - 12 = 12 px
    "fsrcnn": (sr.fsrcnn_small, 8),  # x3: output 24 px
    "sr_autoencoder": (sr.sr_autoencoder_small, 16),
}
# The layers that run in float32 under mixed precision: the last conv (and the residual sum).
FLOAT32_LAYERS = {
    "srcnn": ("output",),
    "fsrcnn": ("output",),
    "sr_autoencoder": ("output", "global_residual"),
}


@pytest.fixture(autouse=True)
def _seed():
    # Weight init and data are seeded: a ReLU unit dead on all the random data would get a
    # zero gradient, so the "every weight learns" checks need reproducible weights.
    keras.utils.set_random_seed(0)


def images(shape, seed=0):
    """Random images in [0, 1], float32."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def output_size(model, size):
    """Output side for a square input side, from the config."""
    config = model.config
    return size * config.scale if not config.upsampled_input else size - 2 * border(config)


# ----------------------------------------------------------------------------------------
# Shapes


def test_srcnn_shapes():
    # The paper's 33 x 33 sub-images give 21 x 21 outputs with 9-1-5 (33 - 2*6).
    assert sr.srcnn()(images((2, 33, 33, 1))).shape == (2, 21, 21, 1)
    assert sr.srcnn_955()(images((2, 33, 33, 1))).shape == (2, 17, 17, 1)  # 33 - 2*8
    assert sr.srcnn(padding="same")(images((2, 33, 20, 1))).shape == (2, 33, 20, 1)
    assert sr.srcnn(channels=3)(images((2, 33, 33, 3))).shape == (2, 21, 21, 3)
    model = sr.srcnn()
    assert model.input.shape == (None, None, None, 1) and model.name == "srcnn"
    assert model(images((1, 40, 29, 1))).shape == (1, 28, 17, 1)  # any size, not only square


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_fsrcnn_output_is_exactly_scale_times_input(scale):
    out = sr.fsrcnn(scale=scale)(images((2, 10, 12, 1)))
    assert out.shape == (2, 10 * scale, 12 * scale, 1)


def test_autoencoder_keeps_size():
    assert sr.sr_autoencoder()(images((2, 17, 23, 1))).shape == (2, 17, 23, 1)
    assert sr.sr_autoencoder_small(channels=3)(images((1, 16, 9, 3))).shape == (1, 16, 9, 3)


def test_border_and_input_kind():
    assert border(SRCNNConfig()) == 6 and SRCNNConfig().border == 6  # 4 + 0 + 2
    assert border(SRCNNConfig(kernels=(9, 5, 5))) == 8  # 4 + 2 + 2
    assert border(SRCNNConfig(padding="same")) == 0
    assert border(FSRCNNConfig()) == 0 and border(AutoencoderConfig()) == 0
    assert border(sr.srcnn_small()) == 6  # a model works as well as its config
    assert SRCNNConfig().upsampled_input and AutoencoderConfig().upsampled_input
    assert not FSRCNNConfig().upsampled_input
    assert SRCNNConfig().scale == 3 and AutoencoderConfig().scale == 3


def test_x3_deconvolution_is_centred():
    # A centre-tap deconvolution kernel copies LR pixel (i, j) to HR pixel (3i + 1, 3j + 1),
    # the centre of its 3 x 3 block: "same" padding keeps the x3 grids aligned.
    model = sr.fsrcnn_small()
    deconv = model.get_layer("output")
    kernel = np.zeros(deconv.kernel.shape, np.float32)  # (9, 9, C_out, C_in)
    kernel[4, 4, 0, 0] = 1.0
    deconv.kernel.assign(kernel)
    features = np.zeros((1, 5, 6, 16), np.float32)
    features[0, 2, 3, 0] = 1.0
    hr = deconv(features).numpy()[0, ..., 0]
    assert hr.shape == (15, 18)
    assert list(zip(*np.nonzero(hr), strict=True)) == [(7, 10)]


@pytest.mark.parametrize("family", sorted(SMALL))
def test_bfloat16_computes_all_but_the_output_in_bfloat16(family):
    build, size = SMALL[family]
    model, out = check_precision(build, images((2, size, size, 1)),
                                 float32_layers=FLOAT32_LAYERS[family])
    assert out.shape == (2, output_size(model, size), output_size(model, size), 1)


# ----------------------------------------------------------------------------------------
# Parameter counts and compute


def test_paper_parameter_counts():
    # k*k*c_in*c_out + c_out per conv (or deconv); PReLU: one slope per channel.
    # SRCNN 9-1-5 Y:    9*9*1*64+64 = 5 248;  1*1*64*32+32 = 2 080;  5*5*32*1+1 = 801
    #                   -> 8 129
    # SRCNN 9-1-5 RGB:  9*9*3*64+64 = 15 616; 2 080;  5*5*32*3+3 = 2 403 -> 20 099 (the seed)
    # SRCNN 9-5-5 Y:    5 248;  5*5*64*32+32 = 51 232;  801 -> 57 281
    # FSRCNN (56, 12, 4) x3 Y, conv + bias + PReLU slopes:
    #   feature 5*5*1*56+56+56 = 1 512;  shrink 1*1*56*12+12+12 = 696;
    #   map 4*(3*3*12*12+12+12) = 5 280;  expand 1*1*12*56+56+56 = 784;
    #   deconv 9*9*56*1+1 = 4 537  -> 12 809
    #   weights only (the paper's count): 1 400 + 672 + 5 184 + 672 + 4 536 = 12 464
    # Auto-encoder depth 5, 64 filters, Y:
    #   3*3*1*64+64 = 640;  9 * (3*3*64*64+64) = 9 * 36 928 = 332 352;  3*3*64*1+1 = 577
    #   -> 333 569
    expected = [
        (sr.srcnn, {}, 8_129),
        (sr.srcnn, {"channels": 3}, 20_099),
        (sr.srcnn_955, {}, 57_281),
        (sr.fsrcnn, {}, 12_809),
        (sr.sr_autoencoder, {}, 333_569),
    ]
    for build, kwargs, total in expected:
        model = build(**kwargs)
        assert parameter_count_from_table(model.config) == total, (build.__name__, kwargs)
        assert model.count_params() == total, (build.__name__, kwargs)

    model = sr.fsrcnn()
    kernels = [w for w in model.weights if w.path.endswith("/kernel")]
    assert sum(int(np.prod(w.shape)) for w in kernels) == 12_464
    alphas = [w for w in model.weights if w.path.endswith("/alpha")]
    assert [tuple(w.shape) for w in alphas] == [(1, 1, 56)] + [(1, 1, 12)] * 5 + [(1, 1, 56)]
    # The deconvolution's size does not depend on the scale.
    assert sr.fsrcnn(scale=2).count_params() == sr.fsrcnn(scale=4).count_params() == 12_809


@pytest.mark.parametrize(
    "config",
    [
        SRCNNConfig(filters=(16, 8)),
        SRCNNConfig(channels=3, kernels=(9, 5, 5), padding="same", init="glorot"),
        SRCNNConfig(filters=(32, 16, 8), kernels=(9, 3, 1, 5)),
        FSRCNNConfig(d=16, s=8, m=2),
        FSRCNNConfig(d=32, s=5, m=0, scale=2, channels=3),
        AutoencoderConfig(depth=2, filters=16),
        AutoencoderConfig(depth=4, filters=8, channels=3),
    ],
    ids=repr,
)
def test_parameter_count_matches_table(config):
    build = {SRCNNConfig: sr.build_srcnn, FSRCNNConfig: sr.build_fsrcnn,
             AutoencoderConfig: sr.build_sr_autoencoder}[type(config)]
    assert build(config).count_params() == parameter_count_from_table(config)


def test_small_parameter_counts():
    # srcnn_small:  9*9*1*16+16 + 1*1*16*8+8 + 5*5*8*1+1 = 1 312 + 136 + 201 = 1 649
    # fsrcnn_small: (400+16+16) + (128+8+8) + 2*(576+8+8) + (128+16+16) + (1 296+1) = 3 217
    # sr_autoencoder_small: 160 + 3 * (2 304+16) + 145 = 7 265
    assert [build().count_params() for build, _ in SMALL.values()] == [1_649, 3_217, 7_265]


def test_multiply_adds_per_output_pixel():
    # SRCNN runs at HR: 9*9*1*64 + 1*1*64*32 + 5*5*32*1 = 5 184 + 2 048 + 800 = 8 032.
    srcnn_915 = multiply_adds_per_output_pixel(SRCNNConfig())
    assert srcnn_915 == 8_032
    # 9-5-5: 5 184 + 5*5*64*32 + 800 = 5 184 + 51 200 + 800 = 57 184.
    srcnn_955 = multiply_adds_per_output_pixel(SRCNNConfig(kernels=(9, 5, 5)))
    assert srcnn_955 == 57_184
    # FSRCNN runs at LR, 1/9 of the HR pixels at x3 (the deconvolution too, per input pixel):
    # (1 400 + 672 + 5 184 + 672 + 4 536) / 9 = 12 464 / 9 ~ 1 384.9.
    fast = multiply_adds_per_output_pixel(sr.fsrcnn())  # a model works too
    assert fast == pytest.approx(12_464 / 9)
    assert multiply_adds_per_output_pixel(FSRCNNConfig(scale=2)) == pytest.approx(12_464 / 4)
    assert srcnn_915 / fast == pytest.approx(5.80, abs=0.01) and srcnn_915 / fast >= 5
    assert srcnn_955 / fast > 40  # the paper's "more than 40 times faster"
    # Auto-encoder at HR: 9*(1*64 + 9*64*64 + 64*1) = 332 928.
    assert multiply_adds_per_output_pixel(AutoencoderConfig()) == 332_928


def test_config_validation():
    with pytest.raises(ValueError, match="odd"):
        SRCNNConfig(kernels=(9, 2, 5))
    with pytest.raises(ValueError, match="one kernel per layer"):
        SRCNNConfig(kernels=(9, 5))
    with pytest.raises(ValueError, match="padding"):
        SRCNNConfig(padding="full")
    with pytest.raises(ValueError, match="init"):
        SRCNNConfig(init="he")
    with pytest.raises(ValueError, match="scale"):
        FSRCNNConfig(scale=0)
    with pytest.raises(ValueError, match="depth"):
        AutoencoderConfig(depth=0)
    with pytest.raises(TypeError):
        multiply_adds_per_output_pixel("srcnn")
    # JSON turns tuples into lists: the config stores tuples again, so configs compare.
    assert SRCNNConfig(filters=[64, 32], kernels=[9, 1, 5]) == SRCNNConfig()


def test_initialisation_follows_the_papers():
    model = sr.srcnn()
    for name in ("conv1", "conv2", "output"):
        kernel, bias = model.get_layer(name).get_weights()
        assert np.std(kernel) == pytest.approx(0.001, rel=0.2) and not np.any(bias), name
    glorot = sr.srcnn(init="glorot").get_layer("conv1").kernel.numpy()
    assert np.std(glorot) > 0.01
    model = sr.fsrcnn()
    kernel = model.get_layer("feature").kernel.numpy()  # He: std sqrt(2 / (5*5*1))
    assert np.std(kernel) == pytest.approx(np.sqrt(2 / 25), rel=0.2)
    assert np.std(model.get_layer("output").kernel.numpy()) == pytest.approx(0.001, rel=0.2)
    np.testing.assert_array_equal(model.get_layer("map1_prelu").alpha.numpy(), 0.25)


# ----------------------------------------------------------------------------------------
# Serialisation, gradients, training


@pytest.mark.parametrize("family", sorted(SMALL))
def test_config_and_keras_file_round_trips(family, tmp_path):
    build, size = SMALL[family]
    model = build(channels=3, scale=2)
    x = images((2, size, size, 3))
    assert check_config_round_trip(model, x).config == model.config
    loaded = check_saving(model, x, tmp_path / f"{family}.keras")
    assert loaded.name == family
    assert loaded.config == model.config and loaded.config.scale == 2


def test_registered_names():
    for cls in (SRCNN, FSRCNN, SRAutoencoder):
        assert keras.saving.get_registered_name(cls) == f"koala>{cls.__name__}"
    config = SRCNN(name="mine", filters=(16, 8)).get_config()
    assert config == {"name": "mine", "trainable": True, "channels": 1, "filters": (16, 8),
                      "kernels": (9, 1, 5), "padding": "valid", "init": "paper", "scale": 3}
    assert SRCNN.from_config(config).config == SRCNNConfig(filters=(16, 8))


@pytest.mark.parametrize("family", sorted(SMALL))
def test_every_trainable_weight_gets_a_gradient(family):
    build, size = SMALL[family]
    model = build()
    x = images((2, size, size, 1))
    out_size = output_size(model, size)
    target = images((2, out_size, out_size, 1), seed=1)
    assert model.non_trainable_weights == []
    check_gradients(model, lambda: tf.reduce_mean(tf.square(model(x, training=True) - target)))
    if family == "fsrcnn":  # PReLU slopes are trainable weights: 1 + 1 + m + 1 = 5 of them
        assert sum(w.path.endswith("/alpha") for w in model.trainable_weights) == 5


def test_autoencoder_global_residual():
    model = sr.sr_autoencoder_small()
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, np.float32))
    x = images((2, 16, 16, 1))
    np.testing.assert_array_equal(model(x).numpy(), x)  # no prediction: bicubic comes back


def test_autoencoder_skips():
    config = AutoencoderConfig()
    assert config.skips() == {1: 4, 3: 2}  # e4 -> d1, e2 -> d3
    assert AutoencoderConfig(depth=2).skips() == {1: 1}
    model = sr.sr_autoencoder()
    assert [t.name for t in model.get_layer("skip1").input] == [
        model.get_layer("dec_deconv1").output.name, model.get_layer("enc_conv4").output.name]
    assert model.get_layer("dec_deconv1").activation.__name__ == "linear"
    assert model.get_layer("dec_deconv2").activation.__name__ == "relu"


def test_output_layer_is_the_last_with_weights():
    for build, _ in SMALL.values():
        model = build()
        with_weights = [layer for layer in model.layers if layer.weights]
        assert with_weights[-1] is model.get_layer("output")


@pytest.mark.parametrize("family", sorted(SMALL))
def test_two_training_steps(family):
    build, size = SMALL[family]
    model = build()
    out_size = output_size(model, size)
    x = images((4, size, size, 1))
    y = images((4, out_size, out_size, 1), seed=2)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)  # 2 steps
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert model.optimizer.iterations.numpy() == 2
    for b, w in zip(before, model.trainable_weights, strict=True):
        assert not np.array_equal(b, w.numpy()), w.path
