"""Invertible Grayscale (koala.tasks.codec.model): sizes, the shared model checks (config and
.keras round trips, gradients, bfloat16), training, stages."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_checks import check_config_round_trip, check_gradients, check_precision, check_saving

from koala.core.errors import KoalaError
from koala.ops import perceptual
from koala.tasks.codec import model as C

TERMS = ("loss", *C.TERMS, "stage")
PERCEPTUAL = {"perceptual_net": "mobilenet", "perceptual_weights": "none",
              "perceptual_size": 32}


def images(n=2, h=32, w=32, seed=0):
    return np.random.default_rng(seed).random((n, h, w, 3)).astype(np.float32)


def dataset(n=4, size=32):
    return tf.data.Dataset.from_tensor_slices(images(n, size, size)).batch(2)


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(0)
    return C.codec_small(contrast_weight=0.0)


# --- sizes ---------------------------------------------------------------------------------


def test_paper_parameter_counts():
    # From the layer table in the module docstring (no biases).
    assert C.encoder().count_params() == 6_674_688
    assert C.decoder().count_params() == 738_624


def test_small_parameter_count(small):
    assert small.encoder.count_params() == 260_928
    assert small.decoder.count_params() == 23_376
    assert small.count_params() == 260_928 + 23_376 + 1  # + the stage variable
    assert all(not v.trainable for v in small.weights if v.path.endswith("stage"))


def test_shapes_ranges_and_dtypes(small):
    out = small(images(2, 64, 48))
    assert out["gray"].shape == (2, 64, 48, 1) and out["restored"].shape == (2, 64, 48, 3)
    for value in out.values():
        assert value.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(value)) and float(tf.reduce_max(value)) <= 1.0
    predicted = small.predict(images(3, 32, 32), batch_size=2, verbose=0)
    assert predicted["gray"].shape == (3, 32, 32, 1)
    assert predicted["restored"].shape == (3, 32, 32, 3)
    with pytest.raises(ValueError, match="multiples of 4"):
        small(images(1, 30, 32))


# --- configuration ---------------------------------------------------------------------------


def test_presets_and_loss_weights():
    paper = C.CodecConfig()
    assert paper.loss_weights(1) == C.LossWeights(1.0, 1.0, 1e-7, 0.5, 0.0)
    assert paper.loss_weights(2) == C.LossWeights(1.0, 0.5, 0.5e-7, 0.25, 10.0)
    assert paper.contrast_layer == "block4_conv4" and paper.contrast_distance == "l1"
    authors = C.CodecConfig(loss_preset="authors")
    assert authors.loss_weights(1) == C.LossWeights(3.0, 1.0, 1e-7, 0.5, 0.0)
    assert authors.loss_weights(2) == C.LossWeights(3.0, 1.0, 1e-7, 0.1, 10.0 * 2 / 255)
    assert authors.contrast_layer == "block4_conv1" and authors.contrast_distance == "mse"
    assert C.CodecConfig(perceptual_net="mobilenet").contrast_layer == "conv_pw_5_relu"
    assert C.CodecConfig(perceptual_layer="block3_conv1").contrast_layer == "block3_conv1"
    # The contrast override replaces alpha; stage 2 of "paper" still multiplies it by w1.
    override = C.CodecConfig(contrast_weight=1e-5)
    assert override.loss_weights(1).contrast == pytest.approx(1e-5)
    assert override.loss_weights(2).contrast == pytest.approx(0.5e-5)
    assert not C.CodecConfig(contrast_weight=0).needs_perceptual and paper.needs_perceptual
    # The structure override replaces beta; each stage keeps its ratio to stage 1.
    beta = C.CodecConfig(structure_weight=0.1)
    assert beta.loss_weights(1).structure == pytest.approx(0.1)
    assert beta.loss_weights(2).structure == pytest.approx(0.05)
    assert beta.loss_weights(2).lightness == 0.5  # nothing else moves
    authors_beta = C.CodecConfig(loss_preset="authors", structure_weight=0.25)
    assert authors_beta.loss_weights(1).structure == pytest.approx(0.25)
    assert authors_beta.loss_weights(2).structure == pytest.approx(0.05)
    assert C.CodecConfig(structure_weight=0).loss_weights(1).structure == 0
    with pytest.raises(ValueError, match="structure_weight"):
        C.CodecConfig(structure_weight=-1)
    with pytest.raises(ValueError, match="stage"):
        paper.loss_weights(3)
    with pytest.raises(ValueError, match="loss_preset"):
        C.CodecConfig(loss_preset="mine")


def test_config_round_trip():
    model = C.codec_small(loss_preset="authors", theta=0.5, perceptual_net="mobilenet",
                          perceptual_weights="w.h5", perceptual_layer="conv_pw_3_relu",
                          perceptual_size=0, contrast_weight=2e-7, structure_weight=0.1,
                          name="ig")
    config = model.get_config()
    for key in ("encoder_filters", "encoder_res_blocks", "decoder_filters",
                "decoder_res_blocks", "loss_preset", "theta", "perceptual_net",
                "perceptual_weights", "perceptual_layer", "perceptual_size", "contrast_weight",
                "structure_weight"):
        assert key in config
    again = check_config_round_trip(model, images(2, 32, 32))
    assert again.config == model.config and again.name == "ig"
    assert dataclasses.asdict(again.config)["encoder_res_blocks"] == (1, 2, 1)


# --- serialisation ---------------------------------------------------------------------------


def test_save_and_load(small, tmp_path, monkeypatch):
    x = images(2, 32, 32)
    expected = small.predict(x, verbose=0)

    # Loading must never build a perceptual network.
    def forbidden(*args, **kwargs):
        raise AssertionError("load_model built a perceptual network")

    monkeypatch.setattr(perceptual, "feature_extractor", forbidden)
    small.set_stage(2)
    try:
        path = tmp_path / "codec.keras"
        loaded = check_saving(small, x, path)  # outputs {"gray", "restored"} equal
        assert loaded.config == small.config
        assert loaded.current_stage() == 2 and loaded.get_perceptual() is None
        # Small: about 4 bytes per weight, nothing more.
        assert path.stat().st_size < 4 * small.count_params() + 200_000
    finally:
        small.set_stage(1)

    for part, value in (("encoder", x), ("decoder", expected["gray"])):
        alone = check_saving(getattr(small, part), value, tmp_path / f"{part}.keras")
        key = "gray" if part == "encoder" else "restored"
        np.testing.assert_allclose(alone.predict(value, verbose=0), expected[key], atol=1e-6)


def test_attached_perceptual_net_is_not_part_of_the_model(tmp_path):
    model = C.codec_small(**PERCEPTUAL)
    n_params, n_vars = model.count_params(), len(model.variables)
    model.save(tmp_path / "without.keras")
    net = model.make_perceptual()
    model.set_perceptual(net)
    assert model.get_perceptual() is net and net.count_params() > 100_000
    assert model.count_params() == n_params and len(model.variables) == n_vars
    assert not {id(v) for v in net.variables} & {id(v) for v in model.variables}
    model.save(tmp_path / "with.keras")
    assert (tmp_path / "with.keras").stat().st_size == (tmp_path / "without.keras").stat().st_size


# --- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [{"contrast_weight": 0.0}, PERCEPTUAL],
                         ids=["no_contrast", "mobilenet_none"])
def test_every_trainable_weight_gets_a_gradient(kwargs):
    keras.utils.set_random_seed(1)
    model = C.codec_small(**kwargs)
    if model.config.needs_perceptual:
        model.set_perceptual(model.make_perceptual())
    model.set_stage(2)
    assert len(model.trainable_variables) == len(model.encoder.trainable_weights) + len(
        model.decoder.trainable_weights)
    # Frozen: the stage counter (the perceptual net is not one of the model's weights).
    assert [v.path for v in model.non_trainable_weights] == ["invertible_grayscale/stage"]
    x = images(2, 32, 32)
    check_gradients(model, lambda: model.compute_terms(x, training=True)[1],
                    trainable=model.trainable_variables)


def test_contrast_without_perceptual_net_is_a_clear_error():
    model = C.codec_small(**PERCEPTUAL)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    with pytest.raises(KoalaError, match="set_perceptual"):
        model.train_on_batch(images(2))


def test_fit_logs_every_term(small):
    small.compile(optimizer=keras.optimizers.Adam(2e-4))
    history = small.fit(dataset(4), epochs=1, validation_data=dataset(2), verbose=0,
                        shuffle=False).history
    for term in TERMS:
        assert np.isfinite(history[term][0]), term
        assert np.isfinite(history["val_" + term][0]), term
    assert history["stage"] == [1.0] and history["contrast"] == [0.0]
    assert int(small.optimizer.iterations) == 2


def test_mixed_precision_updates_match_float32():
    x = images(2, 32, 32, seed=3)

    def build(policy, weights=None):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = C.codec_small(contrast_weight=0.0)
            if weights is not None:
                model.set_weights(weights)
            model.set_stage(2)
            model.compile(optimizer=keras.optimizers.SGD(1e-2))
        finally:
            keras.mixed_precision.set_global_policy("float32")
        return model

    def update_norms(model, max_tries=1):
        variables = model.trainable_variables
        before = [v.numpy() for v in variables]
        for _ in range(max_tries):  # a step with non-finite scaled gradients is skipped
            model.train_on_batch(x)
            if any(np.any(v.numpy() != b) for v, b in zip(variables, before, strict=True)):
                break
        return np.array([np.linalg.norm(v.numpy() - b)
                         for v, b in zip(variables, before, strict=True)])

    keras.utils.set_random_seed(2)
    full = build("float32")
    mixed = build("mixed_float16", full.get_weights())
    assert mixed.encoder.get_layer("conv_in").compute_dtype == "float16"
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(full.optimizer, keras.optimizers.LossScaleOptimizer)
    expected = update_norms(full)
    got = update_norms(mixed, max_tries=6)
    assert np.all(expected > 0)
    np.testing.assert_allclose(got, expected, rtol=0.05)


def test_output_convs_are_float32_under_bfloat16():
    # bfloat16 keeps 8 significant bits: a bfloat16 conv before the tanh would hold G to
    # steps of ~0.5 grey levels near white, too coarse for the 8-bit levels L_Q aims at.
    # Everything else (conv_in and the residual blocks included) computes in bfloat16.
    float32_layers = [f"{part}/{name}" for part, out in (("encoder", "gray"),
                                                         ("decoder", "rgb"))
                      for name in ("conv_out", "tanh", out)]
    _, out = check_precision(lambda: C.codec_small(contrast_weight=0.0),
                             images(1, 32, 32, seed=4), float32_layers=float32_layers)
    assert out["gray"].dtype == "float32" and out["restored"].dtype == "float32"


# --- stages -----------------------------------------------------------------------------------


def adam_state(model):
    optimizer = model.optimizer
    slots = [v for v in optimizer.variables if "momentum" in v.path or "velocity" in v.path]
    # (iterations, largest |slot value|); no slots yet before the first step builds them.
    return int(optimizer.iterations), max((float(np.abs(v.numpy()).max()) for v in slots),
                                          default=0.0)


def test_stage_switch_resets_optimizer_but_keeps_learning_rate():
    model = C.codec_small(contrast_weight=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    states = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):  # runs after CodecStages'
            states[epoch, "begin"] = adam_state(self.model)
            if epoch == 0:  # as a per-epoch learning-rate schedule would
                self.model.optimizer.learning_rate.assign(3e-4)

        def on_epoch_end(self, epoch, logs=None):
            states[epoch, "end"] = adam_state(self.model)

    stages = C.CodecStages(stage2_epoch=1)
    history = model.fit(dataset(4), epochs=2, callbacks=[stages, Probe()], verbose=0,
                        shuffle=False)
    assert history.history["stage"] == [1.0, 2.0] and model.current_stage() == 2
    iterations, slot_max = states[0, "end"]
    assert iterations == 2 and slot_max > 0
    assert states[1, "begin"] == (0, 0.0)  # fresh Adam at the switch
    assert states[1, "end"][0] == 2 and states[1, "end"][1] > 0
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)

    # Going on in stage 2 (epoch 2, no switch): no second reset.
    model.fit(dataset(4), initial_epoch=2, epochs=3, callbacks=[stages], verbose=0,
              shuffle=False)
    assert int(model.optimizer.iterations) == 4


def test_resume_after_the_switch_does_not_reset():
    model = C.codec_small(contrast_weight=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.set_stage(2)  # restored from a backup taken after the switch
    model.fit(dataset(4), epochs=1, verbose=0, shuffle=False)
    before = adam_state(model)
    history = model.fit(dataset(4), initial_epoch=5, epochs=6, verbose=0,
                        callbacks=[C.CodecStages(stage2_epoch=3)], shuffle=False)
    assert history.history["stage"] == [2.0]
    assert int(model.optimizer.iterations) == before[0] + 2


def test_reset_under_mixed_precision_keeps_the_loss_scale():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = C.codec_small(contrast_weight=0.0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    for _ in range(4):  # the first steps may be skipped while the loss scale settles
        model.train_on_batch(images(2))
    optimizer.dynamic_scale.assign(1024.0)
    optimizer.step_counter.assign(7)
    assert adam_state(model)[1] > 0
    # The loss-scale optimizer's own variables, then the inner Adam's.
    names = {v.path.split("/")[-1] for v in optimizer.variables}
    assert {"dynamic_scale", "step_counter", "iteration", "learning_rate"} <= names

    C.reset_optimizer(optimizer)
    assert adam_state(model) == (0, 0.0)
    assert float(optimizer.dynamic_scale) == 1024.0 and int(optimizer.step_counter) == 7
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)


def test_learning_rate_schedules_are_refused():
    model = C.codec_small(contrast_weight=0.0)
    schedule = keras.optimizers.schedules.PolynomialDecay(2e-4, 1000, 2e-6, power=0.9)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    stages = C.CodecStages(stage2_epoch=90)
    stages.set_model(model)
    with pytest.raises(KoalaError, match="LearningRateScheduler"):
        stages.on_train_begin()
