"""The ab bins' parameters (Zhang et al. 2016), without TensorFlow: what
:mod:`koala.ops.colorbins` uses and re-exports, and what a model config needs as defaults on any
Keras backend (:class:`koala.tasks.colorize.models.fusion.FusionConfig`)."""

__all__ = ["ANNEAL_TEMPERATURE", "GAMUT_RULES", "GRID", "REBALANCE_LAMBDA", "SIGMA",
           "SOFT_NEIGHBOURS"]

GRID = 10.0
"""Bin spacing in ab units (Zhang et al.)."""
SOFT_NEIGHBOURS = 5
"""Nearest bins a target is soft-encoded onto."""
SIGMA = 5.0
"""Gaussian σ of the soft encoding and of the prior smoothing, in ab units."""
REBALANCE_LAMBDA = 0.5
"""Mix of the smoothed prior and the uniform distribution in the rebalancing weights."""
ANNEAL_TEMPERATURE = 0.38
"""Temperature of the annealed-mean decoding."""
GAMUT_RULES = ("nearest", "adjacent")
"""How :func:`ab_bins` decides that a grid point is in gamut (see there)."""
