"""The two-stage schedule of the invertible-grayscale codec (SPEC §2): stage 1 without the
quantization loss, stage 2 with it and a fresh optimizer state at the switch."""

from __future__ import annotations

import logging

import keras
from keras import ops

from koala.core.errors import KoalaError

log = logging.getLogger(__name__)


def _inner(optimizer):
    """The optimizer that holds the slots (a LossScaleOptimizer's inner one)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def reset_optimizer(optimizer) -> int:
    """Gives ``optimizer`` a fresh state in place; returns how many variables were reset.

    Zeroes every variable of the (inner) optimizer but its learning rate: the iteration
    count (Adam's bias correction starts again) and the slots (Adam's moments, SGD's
    momentum; EMA averages and gradient accumulators too, which Keras re-initialises at
    iteration 0). The learning rate, and a LossScaleOptimizer's own variables (its loss
    scale and step counter), are untouched. An unbuilt optimizer is already fresh.
    """
    inner = _inner(optimizer)
    if not inner.built:
        return 0
    lr = inner.learning_rate
    n = 0
    for var in inner.variables:
        if var is lr:
            continue
        var.assign(ops.zeros(var.shape, var.dtype))
        n += 1
    return n


class CodecStages(keras.callbacks.Callback):
    """Runs the two-stage schedule of SPEC §2: stage 1 before ``stage2_epoch``, stage 2 from
    it on (epochs are 0-based: 90 = after 90 epochs of stage 1, of 120).

    At the epoch that moves the model from stage 1 to 2 it resets the optimizer
    (:func:`reset_optimizer`: "the code builds a fresh Adam at the switch"). A resumed run
    that starts after the switch finds ``model.stage`` already 2 (it is saved with the
    weights) and resets nothing. The learning rate must be a variable (set per epoch by a
    callback), not a ``LearningRateSchedule`` of the iteration count, which the reset would
    restart: that is refused when training begins.
    """

    def __init__(self, stage2_epoch: int = 90):
        super().__init__()
        if not isinstance(stage2_epoch, int) or stage2_epoch < 0:
            raise ValueError(f"stage2_epoch must be a non-negative integer, got {stage2_epoch!r}")
        self.stage2_epoch = stage2_epoch

    def on_train_begin(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and not isinstance(
                _inner(optimizer).learning_rate, keras.Variable):
            raise KoalaError(
                "CodecStages resets the optimizer's iteration count at the stage switch, "
                "which would restart a LearningRateSchedule; set the learning rate per "
                "epoch with a callback (keras.callbacks.LearningRateScheduler) instead.")

    def on_epoch_begin(self, epoch, logs=None):
        target = 2 if epoch >= self.stage2_epoch else 1
        current = self.model.current_stage()
        if target == current:
            return
        self.model.set_stage(target)
        if current == 1:
            n = reset_optimizer(self.model.optimizer)
            log.info("epoch %d: stage 2 (quantization loss on); optimizer reset (%d variables)",
                     epoch, n)
        else:
            log.warning("epoch %d is before stage2_epoch=%d but the model was in stage 2: "
                        "back to stage 1 (optimizer kept)", epoch, self.stage2_epoch)
