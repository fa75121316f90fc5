"""ColorGAN (koala.tasks.colorize.models.colorgan): sizes, sampling, the shared model checks
(config and .keras round trips, each player's gradients, bfloat16), losses, training."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_checks import check_config_round_trip, check_gradients, check_precision, check_saving

from koala.core.errors import KoalaError
from koala.ops import perceptual
from koala.tasks.colorize.models import colorgan as C

PERCEPTUAL = {"perceptual_net": "mobilenet", "perceptual_weights": "none",
              "perceptual_size": 32}
NO_PERCEPTUAL = {"perceptual_weight": 0.0, "noise_feature_weight": 0.0}


def lab_batch(n=2, size=32, seed=0):
    """Normalised l (n, size, size, 1) and ab (n, size, size, 2), random in [-1, 1]."""
    rng = np.random.default_rng(seed)
    l = rng.uniform(-1, 1, (n, size, size, 1)).astype(np.float32)
    ab = rng.uniform(-0.5, 0.5, (n, size, size, 2)).astype(np.float32)
    return l, ab


def dataset(n=4, size=32, seed=0):
    """The trainer's colorization batches: ({"l", "embedding"}, ab), batch 2."""
    l, ab = lab_batch(n, size, seed)
    embedding = np.zeros((n, 5), np.float32)
    return tf.data.Dataset.from_tensor_slices(({"l": l, "embedding": embedding}, ab)).batch(2)


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(0)
    return C.colorgan_small(**NO_PERCEPTUAL)


# --- sizes -------------------------------------------------------------------------------------


def test_paper_parameter_counts():
    # From the layer tables in the module docstring.
    generator = C.generator_network()
    assert generator.count_params() == 13_117_442
    assert sum(int(np.prod(v.shape)) for v in generator.non_trainable_weights) == 5_504
    assert C.critic_network().count_params() == 2_766_528
    cfg = C.ColorGANConfig()
    assert cfg.feature_channels == 512 and not cfg.needs_projection  # VGG19 block4_conv4


def test_small_parameter_counts(small):
    assert small.generator.count_params() == 200_770
    assert small.critic.count_params() == 43_056
    assert small.noise_projection is None
    with_projection = C.colorgan_small(**PERCEPTUAL)  # MobileNet: 256 channels, latent 64
    assert with_projection.noise_projection.count_params() == 64 * 256 + 256
    assert with_projection.count_params() == 200_770 + 43_056 + 16_640


def test_shapes_ranges_and_dtypes(small):
    l, ab = lab_batch()
    out = small.generator(l)
    assert out.shape == (2, 32, 32, 2) and out.dtype == tf.float32
    assert float(tf.reduce_max(tf.abs(out))) <= 1.0
    assert small.critic(np.concatenate([l, ab], -1)).shape == (2, 8, 8, 1)  # H/4 when small
    assert C.critic_network()(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 4, 4, 1)
    assert small.generator.noise_shape(l).numpy().tolist() == [2, 8, 8, 8]
    # The trainer's input dict works; the embedding is ignored.
    predicted = small.predict({"l": l, "embedding": np.zeros((2, 5), np.float32)}, verbose=0)
    assert predicted.shape == (2, 32, 32, 2)
    with pytest.raises(ValueError, match="multiples of 4"):
        small.generator(lab_batch(1, 30)[0])


def test_config_checks_and_round_trip(small):
    config = {k: v for k, v in small.get_config().items() if k not in ("name", "trainable")}
    assert isinstance(config["widths"], list)  # JSON-friendly
    assert C.ColorGANConfig(**config) == small.config
    l, _ = lab_batch()
    assert check_config_round_trip(small, l).config == small.config
    for bad in ({"n_critic": 0}, {"critic_norm": "batch"}, {"perceptual_net": "resnet"},
                {"l1_weight": -1.0}, {"widths": (16,)}, {"perceptual_size": -1}):
        with pytest.raises(ValueError):
            C.ColorGANConfig(**bad)
    assert C.feature_channels("vgg19", "block3_conv2") == 256
    assert C.feature_channels("mobilenet", "conv_pw_12_relu") == 1024


# --- noise and sampling ------------------------------------------------------------------------


def test_sample_is_reproducible_and_call_draws_fresh_noise(small):
    l, _ = lab_batch()
    a = small.sample(l, seed=7, samples=3)
    assert a.shape == (3, 2, 32, 32, 2)
    np.testing.assert_array_equal(a.numpy(), small.sample(l, seed=7, samples=3).numpy())
    b = small.sample(l, seed=8)

    def differ(x, y):
        # At initialisation the outputs are ~1e-4 and the noise moves them by ~1 %.
        x, y = np.asarray(x), np.asarray(y)
        return np.abs(x - y).max() > 1e-3 * np.abs(x).max()

    assert differ(a[0], b[0])
    assert differ(a[0], a[1])  # the samples of one seed differ too
    assert differ(small.generator(l), small.generator(l))  # call: fresh noise each time


# --- serialisation -----------------------------------------------------------------------------


def test_generator_save_and_load(small, tmp_path):
    l, _ = lab_batch()
    # A call draws fresh noise: compare seeded samples.
    loaded = check_saving(small.generator, l, tmp_path / "generator.keras",
                          call=lambda m: m.sample(l, seed=3))
    assert isinstance(loaded, C.ColorGenerator) and loaded.widths == small.generator.widths
    assert loaded.predict(l, verbose=0).shape == (2, 32, 32, 2)


def test_colorgan_save_and_load_with_optimizers(tmp_path, monkeypatch):
    keras.utils.set_random_seed(4)
    model = C.colorgan_small(**NO_PERCEPTUAL)
    model.compile(*C.default_optimizers(), run_eagerly=True)  # no tracing: fast
    l, ab = lab_batch()
    model.train_on_batch({"l": l}, ab)

    def forbidden(*args, **kwargs):
        raise AssertionError("load_model built a perceptual network")

    monkeypatch.setattr(perceptual, "feature_extractor", forbidden)
    lab = np.concatenate([l, ab], -1)
    # Both players: the generator's seeded samples and the critic's scores.
    loaded = check_saving(model, l, tmp_path / "colorgan.keras",
                          call=lambda m: (m.sample(l, seed=5), m.critic(lab)))
    assert isinstance(loaded, C.ColorGAN) and loaded.config == model.config
    assert loaded.get_perceptual() is None
    # Both optimizers come back with their state (a resumed run continues them).
    assert int(loaded.optimizer.iterations) == 1 == int(loaded.d_optimizer.iterations)
    assert loaded.d_optimizer.learning_rate.numpy() == pytest.approx(2e-4)
    assert loaded.optimizer.learning_rate.numpy() == pytest.approx(1e-4)
    assert loaded.d_optimizer.beta_1 == 0.5
    for before, after in zip(model.d_optimizer.variables, loaded.d_optimizer.variables,
                             strict=True):
        np.testing.assert_allclose(after.numpy(), before.numpy())


def test_perceptual_net_is_not_part_of_the_model(tmp_path):
    model = C.colorgan_small(**PERCEPTUAL)
    n_params, n_vars = model.count_params(), len(model.variables)
    net = model.make_perceptual()
    model.set_perceptual(net)
    assert model.get_perceptual() is net
    assert model.count_params() == n_params and len(model.variables) == n_vars
    model.save(tmp_path / "with.keras")
    assert keras.saving.load_model(tmp_path / "with.keras").get_perceptual() is None
    wrong = C.colorgan_small(**PERCEPTUAL, perceptual_layer="conv_pw_6_relu")
    with pytest.raises(KoalaError, match="channels"):
        wrong.set_perceptual(net)  # 256 channels, the config expects 512


# --- losses ------------------------------------------------------------------------------------


def test_gradient_penalty_of_a_linear_critic():
    # D(x) = mean over the 4 x 4 map of w . x: ∂D/∂ab = w_ab / 16 at each of the 16 pixels,
    # so ‖∇‖ = |w_ab| * sqrt(16) / 16 = |(12, 16)| / 4 = 5 and GP = (5 - 1)^2 = 16,
    # whatever ε, l, real and fake are.
    inputs = keras.Input((None, None, 3))
    critic = keras.Model(inputs, keras.layers.Conv2D(1, 1, use_bias=False)(inputs))
    critic.set_weights([np.array([7.0, 12.0, 16.0], np.float32).reshape(1, 1, 3, 1)])
    (l, real), (_, fake) = lab_batch(2, 4, seed=1), lab_batch(2, 4, seed=2)
    epsilon = np.array([0.2, 0.9], np.float32).reshape(2, 1, 1, 1)
    gp = C.gradient_penalty(critic, l, real, fake, epsilon)
    assert float(gp) == pytest.approx(16.0, rel=1e-5)
    critic.set_weights([np.array([0.0, 4.0, 0.0], np.float32).reshape(1, 1, 3, 1)])  # ‖∇‖ = 1
    assert float(C.gradient_penalty(critic, l, real, fake, epsilon)) == pytest.approx(0.0,
                                                                                    abs=1e-6)


def test_every_trainable_weight_gets_a_gradient():
    keras.utils.set_random_seed(1)
    model = C.colorgan_small(**PERCEPTUAL)
    model.set_perceptual(model.make_perceptual())
    l, ab = lab_batch(seed=3)
    noise = tf.random.normal(model.generator.noise_shape(l), stddev=0.1)
    g_vars = model.generator_variables
    assert len(g_vars) == len(model.generator.trainable_weights) + 2  # + the projection

    def g_loss():
        terms, loss = model.generator_terms(l, ab, noise)
        assert all(float(terms[t]) > 0 for t in ("perceptual", "l1", "noise_feature"))
        return loss

    # The generator's BN moving statistics are frozen: they get none.
    check_gradients(model.generator, g_loss, trainable=g_vars)
    fake = model.generator(l, training=True)
    epsilon = tf.fill((2, 1, 1, 1), 0.3)
    check_gradients(model.critic, lambda: model.critic_terms(l, ab, fake, epsilon)[1],
                    trainable=model.critic.trainable_variables)
    # The penalty alone reaches every kernel (a second-order gradient).
    kernels = [v for v in model.critic.trainable_variables if "kernel" in v.path]
    check_gradients(model.critic, lambda: C.gradient_penalty(model.critic, l, ab, fake, epsilon),
                    trainable=kernels)


def test_bfloat16_computes_all_but_the_outputs_in_bfloat16():
    # The generator's ab and G_f(z) and the critic's scores are float32; nothing else is.
    l, ab = lab_batch()
    lab = np.concatenate([l, ab], -1)
    _, (out, scores) = check_precision(
        lambda: C.colorgan_small(**NO_PERCEPTUAL), l, call=lambda m: (m(l), m.critic(lab)),
        float32_layers=("generator/network/ab", "generator/network/noise_features",
                        "critic/score"))
    assert out.shape == (2, 32, 32, 2) and scores.shape == (2, 8, 8, 1)


def test_missing_perceptual_net_and_bad_compile_are_clear_errors():
    model = C.colorgan_small(**PERCEPTUAL)
    model.compile()
    l, ab = lab_batch()
    with pytest.raises(KoalaError, match="set_perceptual"):
        model.train_on_batch(l, ab)
    with pytest.raises(ValueError, match="loss=None"):
        model.compile(loss="mse")
    adam = keras.optimizers.Adam()
    with pytest.raises(ValueError, match="two optimizer"):
        model.compile(adam, adam)


# --- training ----------------------------------------------------------------------------------


def test_fit_logs_every_term():
    keras.utils.set_random_seed(5)
    model = C.colorgan_small(**PERCEPTUAL)
    model.set_perceptual(model.make_perceptual())
    model.compile(optimizer=keras.optimizers.Adam(1e-4, beta_1=0.5))  # the trainer's call
    assert isinstance(model.d_optimizer, keras.optimizers.Adam)
    before = [v.numpy() for v in model.critic.trainable_variables]
    history = model.fit(dataset(4), epochs=1, validation_data=dataset(2, seed=9), verbose=0,
                        shuffle=False).history
    for term in C.TERMS:
        for key in (term, "val_" + term):
            assert np.isfinite(history[key][0]), key
    for term in ("perceptual", "l1", "noise_feature", "gp"):
        assert history[term][0] > 0 and history["val_" + term][0] > 0, term
    assert history["loss"] == history["g_loss"]
    assert int(model.optimizer.iterations) == 2 == int(model.d_optimizer.iterations)
    assert all(np.any(v.numpy() != b)
               for v, b in zip(model.critic.trainable_variables, before, strict=True))


def test_n_critic_steps():
    model = C.colorgan_small(**NO_PERCEPTUAL, n_critic=3)
    model.compile(run_eagerly=True)  # test_fit_logs_every_term covers the traced step
    model.train_on_batch(*lab_batch())
    assert int(model.d_optimizer.iterations) == 3 and int(model.optimizer.iterations) == 1


def test_mixed_precision_updates_match_float32():
    l, ab = lab_batch(seed=6)

    def build(policy, weights=None):
        keras.mixed_precision.set_global_policy(policy)
        try:
            model = C.colorgan_small(**NO_PERCEPTUAL)
            if weights is not None:
                model.set_weights(weights)
            model.compile(keras.optimizers.SGD(1e-3), keras.optimizers.SGD(1e-3),
                          run_eagerly=True)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        return model

    def update_norms(model, max_tries=1):
        # Per part (critic, generator): the first step that moved it. A step whose scaled
        # gradients are not finite is skipped by the LossScaleOptimizer and tried again.
        parts = {"critic": model.critic.trainable_variables,
                 "generator": model.generator.trainable_variables}
        norms = {}
        for _ in range(max_tries):
            before = {k: [v.numpy() for v in vs] for k, vs in parts.items()}
            model.train_on_batch(l, ab)
            for key, variables in parts.items():
                moved = [np.linalg.norm(v.numpy() - b)
                         for v, b in zip(variables, before[key], strict=True)]
                if key not in norms and any(m > 0 for m in moved):
                    norms[key] = np.array(moved)
            if len(norms) == 2:
                break
        return norms

    keras.utils.set_random_seed(2)
    full = build("float32")
    mixed = build("mixed_float16", full.get_weights())
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert mixed.generator.network.get_layer("enc1_a").compute_dtype == "float16"
    assert mixed.critic.get_layer("c1").compute_dtype == "float16"
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(mixed.d_optimizer, keras.optimizers.LossScaleOptimizer)
    assert not isinstance(full.d_optimizer, keras.optimizers.LossScaleOptimizer)
    expected = update_norms(full)
    got = update_norms(mixed, max_tries=8)
    for key in ("critic", "generator"):
        assert np.all(expected[key] > 0), key
        # A loss-scale slip would be off by 2^k or by the replica count; float16 rounding
        # moves a few tiny per-variable updates by up to ~10 %.
        np.testing.assert_allclose(np.linalg.norm(got[key]), np.linalg.norm(expected[key]),
                                   rtol=0.02, err_msg=key)
        np.testing.assert_allclose(got[key], expected[key], rtol=0.25, err_msg=key)
