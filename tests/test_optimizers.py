"""Per-layer learning rates (SRCNN: 1e-5 on the last layer, 1e-4 elsewhere)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from koala.core import optimizers
from koala.tasks.sr import models as sr


def one_step(optimizer_name, factor):
    keras.utils.set_random_seed(0)
    model = sr.srcnn_small(padding="same", init="glorot")
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    opt = optimizers.build(optimizer_name, 1e-2, lr_multipliers={"output": factor})
    x = tf.random.uniform([2, 16, 16, 1], seed=1)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x, training=True) - x) ** 2)
    opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                            model.trainable_variables, strict=True))
    return {v.path: v.numpy() - before[v.path] for v in model.trainable_variables}


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_last_layer_gets_the_scaled_learning_rate(name):
    full, scaled = one_step(name, 1.0), one_step(name, 0.1)
    for path in full:
        if path.startswith("output/"):
            # First step: SGD moves lr * g, Adam ~ lr * sign(g): both scale with the rate.
            # float32: (new - old) of ~0.1 weights carries ~1e-8 of rounding.
            np.testing.assert_allclose(scaled[path], 0.1 * full[path], rtol=1e-3, atol=5e-8)
        else:
            np.testing.assert_allclose(scaled[path], full[path], rtol=1e-5, atol=5e-8)
    frozen = one_step(name, 0.0)
    assert all(np.all(frozen[p] == 0) for p in frozen if p.startswith("output/"))
    assert any(np.any(frozen[p] != 0) for p in frozen if not p.startswith("output/"))


def test_config_round_trip_and_validation():
    opt = optimizers.build("sgd", 1e-4, momentum=0.9, lr_multipliers={"output": 0.1})
    again = optimizers.LayerwiseSGD.from_config(opt.get_config())
    assert again.lr_multipliers == {"output": 0.1} and float(again.momentum) == 0.9
    with pytest.raises(ValueError, match="optimizer"):
        optimizers.build("rmsprop", 1e-3)
