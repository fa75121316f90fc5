"""The shared WGAN-GP base (koala.tasks.colorize.models.wgan): the n-critic loop, a subclass
that fills in only its terms, loss scaling under mixed_float16, and the stateless seeds."""

import json
import os
import pathlib
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from koala.tasks.colorize.models import wgan

REPO = pathlib.Path(__file__).resolve().parent.parent
TERMS = ("loss", "d_loss", "gp", "g_adv", "l1")


def lab_batch(n=2, size=32, seed=0):
    """Normalised l (n, size, size, 1) and ab (n, size, size, 2)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (n, size, size, 1)).astype(np.float32),
            rng.uniform(-0.5, 0.5, (n, size, size, 2)).astype(np.float32))


class Tiny(wgan.WGANGP):
    """A 3 x 3 conv generator of [l, z] and a (4, 8) PatchGAN: only the terms filled in."""

    def __init__(self, n_critic=1, noisy=True):
        super().__init__(terms=TERMS, n_critic=n_critic, gp_weight=10.0, name="tiny")
        self.noisy_generator = noisy
        self.calls = types.SimpleNamespace(passes=0, critic=0)  # Keras does not track it
        l_in, z_in = keras.Input((None, None, 1)), keras.Input((None, None, 1))
        x = keras.layers.Concatenate()([l_in, z_in])
        x = keras.layers.Conv2D(2, 3, padding="same", activation="tanh")(x)
        self.generator = keras.Model([l_in, z_in], x, name="generator")
        self.critic = wgan.critic_network((4, 8), name="critic")
        self.built = True

    def call(self, l, training=None):
        return self.generator_pass(l, tf.constant([0, 0], tf.int64), training)[0]

    def generator_pass(self, inputs, seed, training):
        self.calls.passes += 1
        z = tf.random.stateless_normal(tf.shape(inputs), seed=seed)
        if not self.noisy_generator:
            z = tf.zeros_like(z)
        return self.generator([inputs, z], training=training), None

    def generator_loss(self, l, ab, fake_ab, aux, training):
        fake_ab = tf.cast(fake_ab, tf.float32)
        terms = {"g_adv": -tf.reduce_mean(self.score(l, fake_ab, training)),
                 "l1": tf.reduce_mean(tf.abs(fake_ab - ab))}
        return terms, 0.1 * terms["g_adv"] + terms["l1"]

    def critic_terms(self, l, ab, fake_ab, epsilon, training=True):
        self.calls.critic += 1
        return super().critic_terms(l, ab, fake_ab, epsilon, training)


def test_n_critic_critic_steps_per_generator_step():
    keras.utils.set_random_seed(0)
    model = Tiny(n_critic=3)
    model.compile(run_eagerly=True)  # Python counters count every call
    for _ in range(2):
        model.train_on_batch(*lab_batch())
    assert (model.calls.critic, int(model.d_optimizer.iterations)) == (6, 6)
    assert int(model.optimizer.iterations) == 2
    assert model.calls.passes == 2 * (3 + 1)  # a noisy generator: one pass per update
    still = Tiny(n_critic=3, noisy=False)
    still.compile(run_eagerly=True)
    still.train_on_batch(*lab_batch())
    assert (still.calls.critic, still.calls.passes) == (3, 1)  # one pass serves all four
    assert (int(still.d_optimizer.iterations), int(still.optimizer.iterations)) == (3, 1)


def test_a_subclass_with_only_its_terms_trains():
    keras.utils.set_random_seed(1)
    model = Tiny()
    model.compile(keras.optimizers.SGD(1e-2), keras.optimizers.SGD(1e-2), run_eagerly=True)
    l, ab = (tf.constant(x) for x in lab_batch(seed=2))
    # The first critic step's loss, from the seeds the loop draws at step 0.
    fake = model.generator_pass(l, wgan.step_seed(wgan.CRITIC_NOISE, 0), True)[0]
    epsilon = model.epsilon(l, wgan.CRITIC_EPSILON, 0)
    expected_terms, expected = model.critic_terms(l, ab, fake, epsilon)
    critic_before = [v.numpy() for v in model.critic.trainable_variables]
    generator_before = [v.numpy() for v in model.generator.trainable_variables]
    logs = model.train_on_batch({"l": l}, ab, return_dict=True)
    assert set(logs) == set(TERMS)
    assert logs["d_loss"] == pytest.approx(float(expected), rel=1e-5)
    assert logs["gp"] == pytest.approx(float(expected_terms["gp"]), rel=1e-5)
    assert logs["gp"] > 0 and logs["l1"] > 0
    assert logs["loss"] == pytest.approx(0.1 * logs["g_adv"] + logs["l1"], rel=1e-5)
    for before, variables in ((critic_before, model.critic.trainable_variables),
                              (generator_before, model.generator.trainable_variables)):
        assert all(np.any(v.numpy() != b) for v, b in zip(variables, before, strict=True))
    # Validation: one fixed seed, so two evaluations agree; the critic's terms are reported.
    first = model.evaluate(l, ab, verbose=0, return_dict=True)
    assert model.evaluate(l, ab, verbose=0, return_dict=True) == first
    assert set(first) == set(TERMS) and np.isfinite(first["d_loss"])
    with pytest.raises(ValueError, match="'loss'"):
        wgan.WGANGP(terms=("d_loss",))


class RecordingSGD(keras.optimizers.SGD):
    """SGD that keeps the gradients it applies (after a LossScaleOptimizer's unscaling)."""

    def apply(self, grads, trainable_variables=None):
        self.seen = [np.asarray(g) for g in grads]
        return super().apply(grads, trainable_variables)


def test_mixed_float16_scales_the_loss():
    # A custom train_step must call optimizer.scale_loss under mixed_float16: without it the
    # LossScaleOptimizer divides unscaled gradients by its scale (and float16 ones underflow).
    l, ab = lab_batch(seed=3)
    keras.utils.set_random_seed(4)
    full = Tiny()
    full.compile(RecordingSGD(1e-2), RecordingSGD(1e-2), run_eagerly=True)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = Tiny()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(full.get_weights())
    assert mixed.critic.get_layer("c1").compute_dtype == "float16"
    mixed.compile()  # both optimizers become LossScaleOptimizers, the critic's by WGANGP
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(mixed.d_optimizer, keras.optimizers.LossScaleOptimizer)
    # A scale of 2^8, not Keras' 2^15, so that the critic's float16 gradients stay finite
    # and the first step is not skipped.
    mixed.compile(*(keras.optimizers.LossScaleOptimizer(RecordingSGD(1e-2), initial_scale=256.0)
                    for _ in range(2)), run_eagerly=True)
    full.train_on_batch(l, ab)
    mixed.train_on_batch(l, ab)
    for name in ("optimizer", "d_optimizer"):
        scaler = getattr(mixed, name)
        assert float(scaler.dynamic_scale) == 256.0, name  # no step skipped
        expected, got = getattr(full, name).seen, scaler.inner_optimizer.seen
        assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in got), name
        # Unscaled by the LossScaleOptimizer: equal to float32's up to float16 rounding.
        np.testing.assert_allclose(np.linalg.norm(np.concatenate([g.ravel() for g in got])),
                                   np.linalg.norm(np.concatenate([g.ravel() for g in expected])),
                                   rtol=0.02, err_msg=name)


def test_step_seeds_are_reproducible_and_differ_across_steps_streams_and_replicas():
    seed = wgan.step_seed(0, 0)
    # The values of the seeds that trained koala's checkpoints (replica 0).
    assert seed.dtype == tf.int64 and seed.numpy().tolist() == [5948447610999779142, 0]
    assert wgan.step_seed(1, 7).numpy().tolist() == [2213271424338356230, 0]
    np.testing.assert_array_equal(wgan.step_seed(1, 7, replica=0), wgan.step_seed(1, 7))
    seeds = {tuple(wgan.step_seed(stream, step, replica).numpy())
             for stream in range(3) for step in range(3) for replica in range(2)}
    assert len(seeds) == 18
    # Inside a traced function, from a variable counter, as in train_step.
    step = tf.Variable(7, dtype=tf.int64)
    np.testing.assert_array_equal(tf.function(lambda: wgan.step_seed(1, step))(),
                                  wgan.step_seed(1, 7))


REPLICAS = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from koala.tasks.colorize.models import wgan

strategy = tf.distribute.MirroredStrategy()
step = tf.Variable(5, dtype=tf.int64)
per_replica = strategy.run(tf.function(lambda: wgan.step_seed(wgan.CRITIC_EPSILON, step)))
print("RESULT", json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "seeds": [s.numpy().tolist() for s in strategy.experimental_local_results(per_replica)],
    "expected": [wgan.step_seed(wgan.CRITIC_EPSILON, 5, r).numpy().tolist() for r in (0, 1)]}))
"""


def test_each_replica_draws_its_own_seed():
    proc = subprocess.run([sys.executable, "-c", REPLICAS], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["replicas"] == 2
    assert result["seeds"] == result["expected"]
    assert result["seeds"][0] != result["seeds"][1]
