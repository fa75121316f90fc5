"""Stage 2 of the codec: the paper's quantization weight in grey levels collapses a small
model (the tanh saturates, the grayscale turns black and white), the fix does not
(issue 14; departure 9 of koala/tasks/codec/model.py)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from koala.tasks.codec.model import codec_small, reset_optimizer

TINY = {"encoder_filters": 8, "encoder_res_blocks": (1, 1, 1), "decoder_filters": 8,
        "decoder_res_blocks": 1, "contrast_weight": 0.0}


def _images():
    """64 smooth colour images of 32 px (random 4 x 4 colours, bilinearly enlarged)."""
    rng = np.random.default_rng(0)
    base = rng.random((64, 4, 4, 3)).astype("float32")
    return tf.image.resize(base, (32, 32), method="bilinear").numpy()


def _saturated(model, images) -> float:
    """Fraction of grayscale pixels at black or white (the collapsed tanh)."""
    g = model.encoder.predict(images, verbose=0)
    return float(np.mean((g < 0.5 / 255) | (g > 1 - 0.5 / 255)))


@pytest.fixture(scope="module")
def stage1():
    """A tiny codec after 640 stage-1 steps (batch 4, Adam 2e-3): its weights and data."""
    keras.utils.set_random_seed(0)
    images = _images()
    model = codec_small(**TINY)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(images, batch_size=4, epochs=40, verbose=0)
    return model.get_weights(), images


def _stage2(weights, images, **config):
    keras.utils.set_random_seed(1)
    model = codec_small(**TINY, **config)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(images[:4], batch_size=4, epochs=1, verbose=0)  # builds the optimizer
    model.set_weights(weights)
    before = _saturated(model, images)
    model.set_stage(2)
    reset_optimizer(model.optimizer)  # what CodecStages does at the switch
    history = model.fit(images, batch_size=4, epochs=8, verbose=0).history
    return before, _saturated(model, images), history


def test_paper_weight_in_grey_levels_collapses_stage_2(stage1):
    before, after, history = _stage2(*stage1)
    assert before < 0.05
    assert after > 0.9, after  # black and white
    assert history["quantization"][-1] < 0.05  # "solved" by saturation
    assert history["invertibility"][-1] > history["invertibility"][0]


@pytest.mark.parametrize("config", [{"quant_unit": "signed"},
                                    {"quant_unit": "signed", "quant_ste": True}])
def test_weight_in_the_authors_unit_does_not_collapse(stage1, config):
    before, after, history = _stage2(*stage1, **config)
    assert after < 0.05, after
    assert history["lightness"][-1] < 0.01
    assert history["invertibility"][-1] <= history["invertibility"][0] * 1.05


def test_straight_through_rounding_decodes_8_bit_gray_in_stage_2_only():
    keras.utils.set_random_seed(0)
    model = codec_small(**TINY, quant_ste=True)
    x = _images()[:2]
    gray = model.encoder(x)
    rounded = tf.round(gray * 255) / 255
    expected = {1: model.decoder(gray), 2: model.decoder(rounded)}
    for stage in (1, 2):
        model.set_stage(stage)
        terms, _ = model.compute_terms(x, training=False)
        want = tf.reduce_mean(tf.square(2 * expected[stage] - 2 * x))
        np.testing.assert_allclose(terms["invertibility"], want, rtol=1e-5)
    # and the gradient reaches the encoder through the rounding
    with tf.GradientTape() as tape:
        terms, _ = model.compute_terms(x, training=True)
    grads = tape.gradient(terms["invertibility"], model.encoder.trainable_variables)
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in grads)
    # validation always decodes the 8-bit grayscale, in either stage
    model.set_stage(1)
    terms, _ = model.compute_terms(x, training=False, rounded=True)
    want = tf.reduce_mean(tf.square(2 * expected[2] - 2 * x))
    np.testing.assert_allclose(terms["invertibility"], want, rtol=1e-5)


def test_quant_unit_rescales_the_stage_2_weight():
    levels = codec_small(**TINY).loss_weights(2).quantization
    signed = codec_small(**TINY, quant_unit="signed").loss_weights(2).quantization
    assert levels == 10.0
    assert signed == pytest.approx(10.0 * 2 / 255)
    authors = codec_small(**TINY, loss_preset="authors")
    assert authors.loss_weights(2).quantization == pytest.approx(10.0 * 2 / 255)
    assert codec_small(**TINY, loss_preset="authors", quant_unit="levels").loss_weights(
        2).quantization == pytest.approx(10.0)
    with pytest.raises(ValueError, match="quant_unit"):
        codec_small(**TINY, quant_unit="bits")


def test_residual_ends_start_at_the_luma_and_add_no_trainable_weight(tmp_path):
    from conftest import smooth_image

    from koala.ops import color
    from koala.tasks.codec import inference

    keras.utils.set_random_seed(0)
    plain, residual = codec_small(**TINY), codec_small(**TINY, residual=True)
    assert len(residual.trainable_weights) == len(plain.trainable_weights)
    assert sum(int(np.prod(w.shape)) for w in residual.trainable_weights) == \
        sum(int(np.prod(w.shape)) for w in plain.trainable_weights)
    x = smooth_image(32, 48, seed=2)[None].astype("float32") / 255
    out = residual(x)
    luma = color.rgb_to_luma(x).numpy()
    # at N(0, 0.02) initialisation the encoder is the luma, the decoder the gray, nearly
    assert np.abs(out["gray"].numpy() - luma).max() < 0.05
    assert np.abs(out["restored"].numpy() - out["gray"].numpy()).max() < 0.05
    assert np.abs(plain(x)["gray"].numpy() - luma).mean() > 0.1  # the paper's tanh does not
    # outputs stay in [0, 1] however large the residual (the clip)
    big = residual.encoder.get_layer("conv_out")
    big.set_weights([w * 1000 for w in big.get_weights()])
    gray = residual.encoder(x).numpy()
    assert gray.min() >= 0.0 and gray.max() <= 1.0 and (gray == 1.0).any() | (gray == 0).any()
    # it saves, reloads and tiles like the paper's model (every layer known to the reader)
    path = tmp_path / "residual.keras"
    residual.save(path)
    again = keras.saving.load_model(path)
    assert again.config.residual
    np.testing.assert_allclose(again.encoder(x), residual.encoder(x), atol=1e-6)
    assert inference.receptive_radius(residual.encoder) == inference.receptive_radius(
        plain.encoder)
