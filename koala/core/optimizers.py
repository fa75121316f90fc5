"""Optimizers with per-layer learning-rate multipliers (SRCNN, SPEC §3: 1e-4 for the first
layers and 1e-5 for the last one).

Scaling the *gradients* of a layer would only mimic a smaller learning rate for plain SGD
(Adam divides the scale away), so these subclasses scale the *learning rate* each variable is
updated with, inside ``update_step``, which works for SGD (with momentum) and Adam alike and
composes with the loss scaling of mixed precision (that happens before, on the gradients).

``lr_multipliers`` maps a layer name to a factor; a variable belongs to a layer when its
Keras ``variable.path`` starts with ``"<layer name>/"`` (``"output/kernel"``). The factors
are resolved once, in ``build``: on the TensorFlow backend ``update_step`` receives the raw
``tf.Variable``, which has no Keras path, so it looks its factor up by variable index.
"""

from __future__ import annotations

import keras


class _LayerwiseMixin:
    def _init_multipliers(self, lr_multipliers):
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}

    def _multiplier(self, path: str) -> float:
        for layer, factor in self.lr_multipliers.items():
            if path.startswith(layer + "/"):
                return factor
        return 1.0

    def build(self, variables):
        super().build(variables)
        self._lr_factors = [self._multiplier(getattr(v, "path", "") or "") for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._lr_factors[self._get_variable_index(variable)]
        if factor != 1.0:
            learning_rate = keras.ops.multiply(learning_rate, factor)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": dict(self.lr_multipliers)}


@keras.saving.register_keras_serializable(package="koala")
class LayerwiseSGD(_LayerwiseMixin, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with ``lr_multipliers={"layer": factor}``."""

    def __init__(self, lr_multipliers=None, **kwargs):
        super().__init__(**kwargs)
        self._init_multipliers(lr_multipliers)


@keras.saving.register_keras_serializable(package="koala")
class LayerwiseAdam(_LayerwiseMixin, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with ``lr_multipliers={"layer": factor}``."""

    def __init__(self, lr_multipliers=None, **kwargs):
        super().__init__(**kwargs)
        self._init_multipliers(lr_multipliers)


OPTIMIZERS = {"sgd": LayerwiseSGD, "adam": LayerwiseAdam}


def build(name: str, learning_rate: float, *, momentum: float = 0.9,
          lr_multipliers: dict | None = None) -> keras.optimizers.Optimizer:
    """``name`` in OPTIMIZERS; SGD gets ``momentum`` (SRCNN: 0.9)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    kwargs = {"learning_rate": learning_rate, "lr_multipliers": lr_multipliers}
    if name == "sgd":
        kwargs["momentum"] = momentum
    return OPTIMIZERS[name](**kwargs)
