"""Lal et al.'s adversarial colorization with classification (koala.tasks.colorize.models.lal):
sizes, the colorize tool, the shared model checks (config and .keras round trips, each
player's gradients, bfloat16), training, and the semantic classification term."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import smooth_image
from model_checks import check_config_round_trip, check_gradients, check_precision, check_saving

from koala.ops import color
from koala.tasks.colorize.inference import Colorizer, colorize
from koala.tasks.colorize.models import colorgan
from koala.tasks.colorize.models import lal as L
from koala.tasks.colorize.models.fusion import FusionConfig, num_bins, parameter_count_from_table

REPO = pathlib.Path(__file__).resolve().parent.parent
SIZE = 32
EMBED = 16
Q = num_bins()


def small(**kw):
    return L.lal_small(**{"image_size": SIZE, "embedding_dim": EMBED, **kw})


def batch(n=2, seed=0, dim=EMBED):
    """({"l", "embedding"}, ab): l in [-1, 1], a softmax-like embedding, ab in [-0.5, 0.5]."""
    rng = np.random.default_rng(seed)
    emb = rng.random((n, dim)).astype(np.float32)
    x = {"l": rng.uniform(-1, 1, (n, SIZE, SIZE, 1)).astype(np.float32),
         "embedding": emb / emb.sum(-1, keepdims=True)}
    return x, rng.uniform(-0.5, 0.5, (n, SIZE, SIZE, 2)).astype(np.float32)


def dataset(n=4, seed=0):
    x, ab = batch(n, seed)
    return tf.data.Dataset.from_tensor_slices((x, ab)).batch(2)


# --- sizes and shapes ----------------------------------------------------------------------


def test_parameter_counts():
    # From the module docstring: the fusion table (classification head) + ColorGAN's critic.
    paper = L.lal()
    assert paper.generator.count_params() == 6_651_494 == parameter_count_from_table(
        paper.config)
    assert paper.critic.count_params() == 2_766_528
    assert paper.count_params() == 9_418_022
    tiny = L.lal_small()
    assert tiny.config.image_size == 64 and tiny.lal_config.critic_widths == (16, 32, 64)
    assert tiny.generator.count_params() == 141_074 == parameter_count_from_table(tiny.config)
    assert tiny.critic.count_params() == 43_056


def test_shapes_and_config():
    model = small()
    assert isinstance(model.config, FusionConfig) and model.config.head == "classification"
    assert model.lal_config == L.LalConfig(critic_widths=(16, 32, 64))
    assert (model.lal_config.colorization_weight, model.lal_config.semantic_weight,
            model.lal_config.adversarial_weight, model.lal_config.gp_weight,
            model.lal_config.n_critic) == (1.0, 0.0, 0.1, 10.0, 1)
    x, ab = batch()
    out = model(x)
    assert out.shape == (2, SIZE, SIZE, 2) and out.dtype == tf.float32
    assert float(tf.reduce_max(tf.abs(out))) <= 1.0
    probs, decoded = model.classify(x)
    assert probs.shape == (2, SIZE // 2, SIZE // 2, Q)
    np.testing.assert_allclose(decoded.numpy(), out.numpy(), atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0), out.numpy(), atol=1e-6)
    # The critic sees the prediction's grid, S/2 (x 1/4 more for the small critic).
    lab = tf.concat([L._pool(x["l"]), L._pool(ab)], -1)
    assert model.critic(lab).shape == (2, SIZE // 8, SIZE // 8, 1)


def test_config_checks():
    for bad in ({"head": "regression"}, {"critic_norm": "batch"}, {"n_critic": 0},
                {"adversarial_weight": -1.0}, {"critic_widths": (16,)}, {"image_size": 30}):
        with pytest.raises(ValueError):
            small(**bad)
    with pytest.raises(TypeError):
        small(perceptual_weight=1.0)  # not a field of either config
    assert small(head="classification").config.head == "classification"


def test_semantic_cross_entropy_on_hand_made_targets():
    # Uniform logits over 4 classes: the cross-entropy of any distribution is log 4.
    zeros = tf.zeros((2, 4))
    onehot = tf.constant([[1.0, 0, 0, 0], [0, 0, 1.0, 0]])
    assert float(L.semantic_cross_entropy(zeros, onehot)) == pytest.approx(np.log(4), 1e-6)
    # Logits log([0.5, 0.25, 0.125, 0.125]); targets (0.5, 0.5, 0, 0) and, unnormalised,
    # 2 x (0, 0, 0, 1): -(0.5 log 0.5 + 0.5 log 0.25) and -log 0.125, averaged.
    q = np.array([0.5, 0.25, 0.125, 0.125], np.float32)
    logits = tf.constant(np.log([q, q]))
    soft = tf.constant([[0.5, 0.5, 0, 0], [0, 0, 0, 2.0]])
    want = (-(0.5 * np.log(0.5) + 0.5 * np.log(0.25)) - np.log(0.125)) / 2
    assert float(L.semantic_cross_entropy(logits, soft)) == pytest.approx(want, 1e-5)
    labels = tf.constant([[0], [3]])  # (B, 1) int, as the records' label field
    want = (-np.log(0.5) - np.log(0.125)) / 2
    assert float(L.semantic_cross_entropy(logits, labels, "labels")) == pytest.approx(want, 1e-5)


def test_the_semantic_head_sits_on_the_generators_last_features(tmp_path):
    with pytest.raises(ValueError, match="class_targets"):
        L.LalConfig(semantic_weight=1.0, class_targets="captions")
    with pytest.raises(ValueError, match="num_classes"):
        L.LalConfig(semantic_weight=1.0, class_targets="labels")
    assert small().class_head is None  # λ2 = 0: the model earlier versions saved
    model = small(semantic_weight=0.5)
    head = model.class_head
    assert head.layers[-1].units == EMBED  # K = the embedding's classes
    # Its input is the decoder's last conv (the layer before the bin logits).
    probs, ab, features = model.generator.classify_features(batch()[0])
    assert features.shape[1:] == (SIZE // 2, SIZE // 2, model.config.filters(32))
    assert model.generator.get_layer("dec_logits").input.shape[1:] == features.shape[1:]
    model.compile()
    history = model.fit(dataset(), epochs=1, verbose=0)
    assert np.isfinite(history.history["semantic_ce"][0])
    assert history.history["semantic_ce"][0] > 0
    # λ2 adds the term to the generator's loss: loss = class_ce + λ2 semantic_ce + λ3 g_adv.
    x, ab = batch()
    terms, loss = model.generator_terms(x, tf.constant(ab), training=False)
    want = (terms["class_ce"] + 0.5 * terms["semantic_ce"] + 0.1 * terms["g_adv"])
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    # The head trains with the generator and is saved with it.
    assert all(any(v is w for w in model.generator_variables) for v in head.trainable_variables)
    path = tmp_path / "lal.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.lal_config.semantic_weight == 0.5
    for a, b in zip(head.get_weights(), loaded.class_head.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# --- the colorize tool -----------------------------------------------------------------------


def test_colorizer_uses_the_generator(mobilenet_none):
    model = L.lal_small(image_size=SIZE)  # embedding_dim 1000, MobileNet's softmax
    rgb = smooth_image(SIZE, SIZE, seed=7)  # already S x S: no padding, no resize
    l = color.normalize_l(color.srgb_to_lab(rgb / 255.0)[..., :1]).numpy()[None]
    inputs = {"l": l.astype(np.float32),
              "embedding": mobilenet_none.embed(mobilenet_none.fit(rgb)[None])}
    # Fresh weights give nearly uniform bin probabilities, so a flat ab: scale the logits
    # conv (zero bias) to logits of about +-20, so that the prediction varies over the image
    # and a mix-up of inputs could not hide under the tolerance.
    logits = model.generator.get_layer("dec_logits")
    kernel, bias = logits.get_weights()
    peak = np.abs(keras.Model(model.generator.inputs, logits.output)(inputs).numpy()).max()
    logits.set_weights([kernel * (20.0 / peak), bias])
    expected = model(inputs).numpy()[0] * 128
    assert expected.std(axis=(0, 1)).min() > 2
    colorizer = Colorizer(model, mobilenet_none)
    assert not colorizer.is_gan and colorizer.image_size == SIZE
    np.testing.assert_allclose(colorizer.predict_ab(rgb), expected, rtol=1e-4, atol=1e-2)
    out = colorize(model, smooth_image(24, 40, seed=3), embedder=mobilenet_none)
    assert out.shape == (24, 40, 3) and out.dtype == np.uint8


# --- serialisation ---------------------------------------------------------------------------


def test_save_and_load_with_both_optimizers(tmp_path):
    keras.utils.set_random_seed(4)
    model = small()
    model.compile(run_eagerly=True)  # defaults: WGAN-GP's Adam pair; no tracing: fast
    x, ab = batch()
    model.train_on_batch(x, ab)
    lab = np.concatenate([x["l"], ab], -1)
    # Both players: the generator's ab and the critic's scores.
    loaded = check_saving(model, x, tmp_path / "lal.keras",
                          call=lambda m: (m(x, training=False), m.critic(lab)))
    assert isinstance(loaded, L.LalColorizer)
    assert loaded.config == model.config and loaded.lal_config == model.lal_config
    # Both optimizers come back with their settings and state (a resumed run continues them).
    assert int(loaded.optimizer.iterations) == 1 == int(loaded.d_optimizer.iterations)
    for opt in (loaded.optimizer, loaded.d_optimizer):
        assert opt.learning_rate.numpy() == pytest.approx(1e-4)
        assert (opt.beta_1, opt.beta_2) == (0.5, 0.9)
    for before, after in zip(model.d_optimizer.variables, loaded.d_optimizer.variables,
                             strict=True):
        np.testing.assert_allclose(after.numpy(), before.numpy())
    # get_config is JSON-friendly and round-trips.
    config = model.get_config()
    assert isinstance(config["critic_widths"], list) and "head" not in config
    assert check_config_round_trip(model, x).lal_config == model.lal_config


# --- losses ----------------------------------------------------------------------------------


def test_every_trainable_weight_gets_a_gradient():
    keras.utils.set_random_seed(1)
    model = small()
    x, ab = batch(seed=3)
    g_vars = model.generator.trainable_variables
    assert len(g_vars) == len(model.generator.trainable_weights) > 0

    def g_loss():
        terms, loss = model.generator_terms(x, ab)
        expected = terms["class_ce"] + 0.1 * terms["g_adv"]
        np.testing.assert_allclose(float(loss), float(expected), rtol=1e-6)
        return loss

    # The generator's BN moving statistics are frozen: they get none.
    check_gradients(model.generator, g_loss, trainable=g_vars)
    # The adversarial term alone reaches the generator too (through the annealed mean).
    check_gradients(model.generator, lambda: model.generator_terms(x, ab)[0]["g_adv"],
                    trainable=g_vars)
    fake = model(x, training=True)
    epsilon = tf.fill((2, 1, 1, 1), 0.3)
    critic_vars = model.critic.trainable_variables
    check_gradients(model.critic, lambda: model.critic_terms(x["l"], ab, fake, epsilon)[1],
                    trainable=critic_vars)
    # The penalty alone reaches every kernel (a second-order gradient).
    kernels = [v for v in critic_vars if "kernel" in v.path]
    check_gradients(model.critic, lambda: colorgan.gradient_penalty(
        model.critic, L._pool(x["l"]), L._pool(ab), L._pool(fake), epsilon), trainable=kernels)


# --- training --------------------------------------------------------------------------------


def test_two_fit_steps_log_every_term():
    keras.utils.set_random_seed(5)
    model = small()
    model.compile(optimizer=keras.optimizers.Adam(1e-4))  # the trainer's generic call
    assert isinstance(model.d_optimizer, keras.optimizers.Adam)
    critic_before = [v.numpy() for v in model.critic.trainable_variables]
    generator_before = [v.numpy() for v in model.generator.trainable_variables]
    history = model.fit(dataset(4), epochs=1, validation_data=dataset(2, seed=9), verbose=0,
                        shuffle=False).history
    for term in L.TERMS:
        assert np.isfinite(history[term][0]), term
    for term in L.TEST_TERMS:
        assert np.isfinite(history["val_" + term][0]), term
    assert "val_d_loss" not in history
    assert history["class_ce"][0] > 0 and history["gp"][0] > 0 and history["ab_mse"][0] > 0
    # Epoch means of a linear combination with fixed weights.
    assert history["loss"][0] == pytest.approx(
        history["class_ce"][0] + 0.1 * history["g_adv"][0], rel=1e-4, abs=1e-5)
    assert int(model.optimizer.iterations) == 2 == int(model.d_optimizer.iterations)
    for before, variables in ((critic_before, model.critic.trainable_variables),
                              (generator_before, model.generator.trainable_variables)):
        assert all(np.any(v.numpy() != b) for v, b in zip(variables, before, strict=True))


def test_n_critic_and_compile_errors():
    model = small(n_critic=2)
    model.compile(run_eagerly=True)
    model.train_on_batch(*batch())
    assert int(model.d_optimizer.iterations) == 2 and int(model.optimizer.iterations) == 1
    with pytest.raises(ValueError, match="loss=None"):
        model.compile(loss="mse")
    adam = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="two optimizer"):
        model.compile(adam, adam)


def test_bfloat16_computes_all_but_the_outputs_in_bfloat16():
    # The generator's decoding from the softmax on and the critic's scores are float32.
    x, ab = batch()
    lab = tf.concat([L._pool(x["l"]), L._pool(ab)], -1)
    _, (out, scores) = check_precision(
        small, x, call=lambda m: (m(x), m.critic(lab)),
        float32_layers=("generator/probs", "generator/ab_mean", "generator/ab_norm",
                        "generator/ab_clip", "generator/ab", "critic/score"))
    assert out.shape == (2, SIZE, SIZE, 2) and scores.shape == (2, SIZE // 8, SIZE // 8, 1)


def test_mixed_float16_wraps_both_optimizers():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small()
        model.compile(run_eagerly=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.critic.get_layer("c1").compute_dtype == "float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.d_optimizer, keras.optimizers.LossScaleOptimizer)
    logs = model.train_on_batch(*batch(), return_dict=True)
    assert all(np.isfinite(logs[t]) for t in L.TERMS)


PARITY = """
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from koala.core import distributed
from koala.tasks.colorize.models import lal

rng = np.random.default_rng(0)
x = {"l": rng.uniform(-1, 1, (4, 32, 32, 1)).astype("float32"),
     "embedding": rng.random((4, 16)).astype("float32")}
ab = rng.uniform(-0.6, 0.6, (4, 32, 32, 2)).astype("float32")
# No BN (per-replica batch statistics) and no GP (per-replica ε): the rest must match.
kw = dict(image_size=32, embedding_dim=16, batch_norm=False, gp_weight=0.0)
data = tf.data.Dataset.from_tensor_slices((x, ab)).batch(4)
keras.utils.set_random_seed(0)
single = lal.lal_small(**kw)
initial = single.get_weights()
single.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1))
loss = single.fit(data, epochs=1, verbose=0).history
strategy = tf.distribute.MirroredStrategy()
with strategy.scope():
    mirrored = lal.lal_small(**kw)
    mirrored.set_weights(initial)
    mirrored.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1))
history = distributed.fit(mirrored, strategy.experimental_distribute_dataset(data.repeat()),
                          strategy=strategy, epochs=1, steps_per_epoch=1, verbose=0)
pairs = list(zip(single.get_weights(), mirrored.get_weights(), initial))
print("RESULT", json.dumps({
    "replicas": strategy.num_replicas_in_sync, "loss": loss["loss"][0], "d": loss["d_loss"][0],
    "mirrored_loss": history.history["loss"][0], "md": history.history["d_loss"][0],
    "diff": max(float(np.abs(s - m).max()) for s, m, _ in pairs),
    "moved": max(float(np.abs(s - i).max()) for s, _, i in pairs)}))
"""


def test_mirrored_step_matches_single_device():
    # 2 replicas x 2 examples through distributed.fit must update both networks as one step
    # on the 4 examples (losses divided by the replicas). BatchNorm (per-replica statistics)
    # and the GP (per-replica ε) are off, so the rest must match exactly.
    proc = subprocess.run([sys.executable, "-c", PARITY], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["replicas"] == 2
    np.testing.assert_allclose(result["mirrored_loss"], result["loss"], rtol=1e-5)
    np.testing.assert_allclose(result["md"], result["d"], rtol=1e-4, atol=1e-6)
    assert result["moved"] > 1e-4
    assert result["diff"] < 1e-3 * result["moved"], result
