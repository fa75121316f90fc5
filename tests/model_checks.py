"""The model checks every koala model test runs (after keras-hub's ``src/tests/test_case.py``:
``run_serialization_test``, ``run_model_saving_test``, ``run_precision_test``).

Four functions, each one check, so that a test calls those that apply to its model:

- :func:`check_config_round_trip`: ``type(model).from_config(get_config())``, through JSON, gives
  the same config, the same variable shapes and the same output shapes;
- :func:`check_saving`: a ``.keras`` file reloads with a plain ``keras.saving.load_model`` (no
  ``custom_objects``; the tests import :mod:`koala.registry`, as a user does) to the same class,
  config, weights and outputs;
- :func:`check_gradients`: a loss gives every trainable variable a finite, not-all-zero
  gradient, and every frozen one none;
- :func:`check_precision`: built under a mixed policy (``mixed_bfloat16``), every variable is
  float32 and every layer computes in bfloat16 except the named float32 ones; the outputs are
  finite and float32. The global policy is restored, also on failure.

``inputs`` is a small batch as the model's ``__call__`` takes it (an array or a dict of them);
``call(model) -> outputs`` replaces ``model(inputs, training=False)`` where a model needs it
(ColorGAN draws fresh noise on each call: compare ``model.sample(l, seed=...)`` instead).
"""

import json

import keras
import numpy as np
import tensorflow as tf

import koala.registry  # noqa: F401  (registers koala's layers, as a user does before load_model)


def _outputs(model, inputs, call):
    """``call(model)``, or ``model(inputs, training=False)``; the structure of numpy arrays."""
    out = call(model) if call is not None else model(inputs, training=False)
    return keras.tree.map_structure(keras.ops.convert_to_numpy, out)


def _config_json(model):
    return json.dumps(model.get_config(), sort_keys=True)


def check_config_round_trip(model, inputs, *, call=None):
    """``type(model).from_config(json.loads(json.dumps(model.get_config())))`` rebuilds the
    model: same class and config, same variable shapes, same output structure and shapes.

    The config must be JSON-friendly (a ``.keras`` file stores it as JSON). Returns the clone.
    """
    text = _config_json(model)
    clone = type(model).from_config(json.loads(text))
    assert type(clone) is type(model)
    assert _config_json(clone) == text
    assert [tuple(v.shape) for v in clone.weights] == [tuple(v.shape) for v in model.weights]
    expected, got = _outputs(model, inputs, call), _outputs(clone, inputs, call)
    keras.tree.assert_same_structure(got, expected)
    assert keras.tree.map_structure(np.shape, got) == keras.tree.map_structure(np.shape, expected)
    return clone


def check_saving(model, inputs, path, *, call=None, atol=1e-6):
    """Saves ``model`` to ``path`` (a ``.keras`` file) and reloads it with a plain
    ``keras.saving.load_model``, no ``custom_objects``: the same class and config, equal
    weights, and outputs equal to ``atol``. Returns the loaded model."""
    expected = _outputs(model, inputs, call)
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model), type(loaded)
    assert _config_json(loaded) == _config_json(model)
    saved, restored = model.get_weights(), loaded.get_weights()
    assert len(restored) == len(saved)
    for a, b in zip(saved, restored, strict=True):
        np.testing.assert_array_equal(b, a)
    got = _outputs(loaded, inputs, call)
    keras.tree.assert_same_structure(got, expected)
    for a, b in zip(keras.tree.flatten(expected), keras.tree.flatten(got), strict=True):
        np.testing.assert_allclose(b, a, atol=atol)
    return loaded


def check_gradients(model, loss_fn, *, trainable=None, frozen=None):
    """Runs ``loss_fn()`` under a tape: every variable of ``trainable`` (default
    ``model.trainable_weights``) gets a finite gradient that isn't all zero, every one of
    ``frozen`` (default ``model.non_trainable_weights``: BN moving statistics, counters) gets
    none. Returns the loss.

    For a two-player model pass each player's loss and its variables (the generator's loss
    and ``generator_variables``; the critic's and ``critic.trainable_variables``).
    """
    trainable = list(model.trainable_weights if trainable is None else trainable)
    frozen = list(model.non_trainable_weights if frozen is None else frozen)
    assert trainable, "no trainable variables to check"
    with tf.GradientTape() as tape:
        loss = loss_fn()
    grads = tape.gradient(loss, trainable + frozen)
    for var, grad in zip(trainable, grads[: len(trainable)], strict=True):
        assert grad is not None, var.path
        grad = keras.ops.convert_to_numpy(grad)
        assert np.all(np.isfinite(grad)) and np.any(grad != 0), var.path
    for var, grad in zip(frozen, grads[len(trainable):], strict=True):
        assert grad is None, var.path
    return loss


def named_layers(layer, prefix=""):
    """``(path, layer)`` for every layer under ``layer``, nested models included, input layers
    left out; a path joins the names with "/" (``"encoder/conv_out"``)."""
    for sub in layer._flatten_layers(include_self=False, recursive=False):
        if isinstance(sub, keras.layers.InputLayer):
            continue
        name = prefix + sub.name
        yield name, sub
        yield from named_layers(sub, name + "/")


def check_precision(build, inputs, *, float32_layers=(), call=None, policy="mixed_bfloat16",
                    output_dtype="float32"):
    """Builds ``build()`` and runs it on ``inputs`` with the global dtype policy ``policy``,
    then restores the previous global policy (also when a check fails).

    Asserts: the model's policy is ``policy``; every float variable has its variable dtype
    (float32); every layer has that variable dtype and computes in the policy's compute dtype
    (bfloat16), except exactly the layers named in ``float32_layers`` (paths of
    :func:`named_layers`), which compute in float32; every float output is finite and of
    ``output_dtype`` (also the symbolic outputs of a functional model). Returns
    ``(model, outputs)``, the outputs as numpy arrays.
    """
    target = keras.mixed_precision.Policy(policy)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(target)
    try:
        model = build()
        out = call(model) if call is not None else model(inputs, training=False)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert keras.mixed_precision.global_policy().name == previous.name

    assert model.dtype_policy.name == target.name
    for var in model.weights:
        if keras.backend.is_float_dtype(var.dtype):
            assert var.dtype == target.variable_dtype, var.path
    compute = {}
    for name, layer in named_layers(model):
        assert layer.variable_dtype == target.variable_dtype, name
        compute[name] = layer.compute_dtype
    assert compute, "no layers"
    wrong = {n for n in float32_layers if n not in compute}
    assert not wrong, f"no such layers: {sorted(wrong)}"
    assert {n: d for n, d in compute.items() if d != target.compute_dtype} == dict.fromkeys(
        float32_layers, "float32")

    for spec in keras.tree.flatten(getattr(model, "outputs", None) or []):
        assert spec.dtype == output_dtype, spec
    for tensor in keras.tree.flatten(out):
        if keras.backend.is_float_dtype(tensor.dtype):
            assert keras.backend.standardize_dtype(tensor.dtype) == output_dtype
    out = keras.tree.map_structure(keras.ops.convert_to_numpy, out)
    for array in keras.tree.flatten(out):
        assert np.all(np.isfinite(array))
    return model, out
