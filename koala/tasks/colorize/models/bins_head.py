"""The fusion colorizer's classification head (Zhang et al. 2016, SPEC §5): the annealed-mean
decoding layer and the class-rebalanced cross-entropy, on TensorFlow and the ab bins
(:mod:`koala.ops.colorbins`).

Apart from :mod:`koala.tasks.colorize.models.fusion` so that the regression model, which
trains with Keras' own steps, builds on any Keras backend (JAX included) without TensorFlow:
``fusion`` imports this module when it builds a classification head, and re-exports its names.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from koala.ops import color, colorbins

__all__ = ["CE_EPSILON", "AnnealedMean", "num_bins", "rebalanced_cross_entropy"]

AB_CHANNELS = 2  # a*, b*
CE_EPSILON = 1e-8
"""Added to the probabilities inside the cross-entropy's log (Zhang et al.'s code)."""


def num_bins(rule: str = "nearest") -> int:
    """Q, the number of ab bins of the classification head (262 for "nearest")."""
    return len(colorbins.ab_bins(rule=rule))



@keras.saving.register_keras_serializable(package="koala")
class AnnealedMean(keras.layers.Layer):
    """Decodes ab bin distributions by their annealed mean
    (:func:`koala.ops.colorbins.annealed_mean`).

    Call with probs ``(B, h, w, Q)``, non-negative, summing to 1 over Q (a softmax output);
    returns ``(B, h, w, 2)`` ab in Lab units (not normalised), float32 (the layer computes in
    float32 under any policy unless given another dtype). The Q bin centres are
    ``ab_bins(rule=rule)``, rebuilt from the rule (not stored as weights). No weights.
    """

    def __init__(self, temperature: float = colorbins.ANNEAL_TEMPERATURE, rule: str = "nearest",
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if rule not in colorbins.GAMUT_RULES:
            raise ValueError(f"rule must be one of {colorbins.GAMUT_RULES}, got {rule!r}")
        self.temperature = float(temperature)
        self.rule = rule
        self._bins = colorbins.ab_bins(rule=rule)  # (Q, 2) NumPy: a constant, not a weight

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != len(self._bins):
            raise ValueError(f"{self.name}: expected {len(self._bins)} bin probabilities "
                             f"(rule={self.rule!r}), got {input_shape[-1]}")
        self.built = True

    def call(self, probs):
        return colorbins.annealed_mean(probs, self._bins, self.temperature)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], AB_CHANNELS)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "rule": self.rule}


def rebalanced_cross_entropy(probs, ab, *, bins, class_weights=None,
                             neighbours: int = colorbins.SOFT_NEIGHBOURS,
                             sigma: float = colorbins.SIGMA, epsilon: float = CE_EPSILON):
    """Zhang et al.'s class-rebalanced multinomial cross-entropy (SPEC §5).

    The target ab is average-pooled to the probabilities' grid, taken to Lab units (x 128),
    soft-encoded onto its ``neighbours`` nearest bins with a Gaussian of σ = ``sigma``
    (Z, :func:`koala.ops.colorbins.soft_encode`); each pixel is weighted by the class weight of
    its most likely target bin, v = w[argmax_q Z_q]::

        loss = mean over the B*h*w pixels of  -v * sum_q Z_q * log(p_q + epsilon)

    computed in float32. The targets carry no gradient.

    Args:
      probs: ``(B, h, w, Q)`` predicted bin probabilities (any float dtype).
      ab: ``(B, f*h, f*w, 2)`` target ab / 128 (koala.ops.color.normalize_ab), f a whole factor
        (2 for the fusion model: probabilities at S/2, targets at S).
      bins: ``(Q, 2)`` bin centres in Lab units (:func:`koala.ops.colorbins.ab_bins`).
      class_weights: ``(Q,)`` rebalancing weights, or None for 1 everywhere.
      neighbours, sigma: the soft encoding (Zhang et al.: 5 and 5).
      epsilon: added inside the log.

    Returns:
      float32 scalar.
    """
    probs = tf.cast(probs, tf.float32)
    ab = tf.cast(ab, tf.float32)
    factor = ab.shape[1] // probs.shape[1] if ab.shape[1] and probs.shape[1] else None
    if factor is None or factor * probs.shape[1] != ab.shape[1]:
        raise ValueError(f"the target's side {ab.shape[1]} must be a whole multiple of the "
                         f"probabilities' side {probs.shape[1]}")
    if factor > 1:  # (B, S, S, 2) -> (B, S/f, S/f, 2)
        ab = tf.nn.avg_pool2d(ab, factor, factor, "VALID")
    target = tf.stop_gradient(colorbins.soft_encode(
        ab * color.AB_SCALE, bins, k=neighbours, sigma=sigma))  # (B, h, w, Q)
    cross_entropy = -tf.reduce_sum(target * tf.math.log(probs + epsilon), axis=-1)  # (B, h, w)
    if class_weights is not None:
        weights = tf.constant(np.asarray(class_weights, np.float32))
        cross_entropy *= tf.gather(weights, tf.argmax(target, axis=-1))
    return tf.reduce_mean(cross_entropy)
