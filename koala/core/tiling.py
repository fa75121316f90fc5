r"""One tiler for fully-convolutional image models: the receptive radius read off the layer
graph, the overlap that covers it, and the windows a big image is cut into and stitched back
from, so that activations stay bounded and the stitched output equals the whole image run at
once (up to float rounding).

Users: :class:`koala.tasks.sr.inference.Upscaler` (low-res -> ``scale`` x high-res) and
:class:`koala.tasks.codec.inference.TiledPart` (1:1). This module knows neither.

Geometry of one axis (both axes are planned alike, :func:`plan`). The input has ``size`` px,
the output ``scale * size``. Output tiles are ``tile`` output px, starting at multiples of
``tile`` (the last one shorter); the input window of a tile is its source span
``[start // scale, ceil(stop / scale))`` widened by ``context`` input px per side and clipped
to the axis (:func:`source`). Where a window touches an image edge it is padded by ``border``
px (reflected, :func:`take`), so a model with "valid" padding, whose output is ``border`` px
smaller per side, still covers the edge. With ``tile``, ``context`` and ``size`` multiples of
``align`` (``tile`` of ``align * scale``), every window starts and ends on the stride grid of
the whole image, which strided convolutions need to see the same pixels.

Receptive radius (:func:`reach`, :func:`receptive_radius`): the px of input one output pixel
can depend on, walked from the outputs back to the inputs::

    layer                                   reach, in the layer's input px      grid step
    pointwise (activations, Add, Rescaling)  0                                  same
    Conv2D / pooling, stride 1, odd span    (k - 1) d / 2 (centred: "same" pads and "valid"
                                             crops both sides alike)            same
    the same, strided or even span          (k - 1) d (a one-sided pad)         x stride
    Conv2DTranspose, stride 1, "same"       as Conv2D                           same
    Conv2DTranspose, stride s > 1, "same"   ceil((k - 1) / (2 s)) + 1           / s
    UpSampling2D                            nearest 1, bilinear 2, bicubic 3,   / size
                                             lanczos3 4, lanczos5 6
    a nested functional model               its own radius                      its step
    a custom layer with sub-layers          its sub-layers, as a chain

Each reach is taken times the grid step at the layer's input, in model-input px; the radius in
output px is that over the output's step (FSRCNN x3: 9 low-res px = 27 high-res px). The
strided transposed convolution's rule is SR's hand formula (the tight reach is smaller by 1
or 2: for FSRCNN's 9 x 9, stride 3, 1 low-res px; tests/test_tiling.py checks the bound on
every k <= 11, s <= 5). A layer not in the table raises :class:`UnknownLayerError` (a caller
may then ask for an explicit overlap); nothing falls back silently here. Pre-processing
outside the model (SR's bicubic upscale) is the caller's to cover.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from fractions import Fraction

import keras
import numpy as np
import tensorflow as tf

from koala.core.errors import KoalaError

__all__ = [
    "OVERLAP_MULTIPLE",
    "Reach",
    "UnknownLayerError",
    "Window",
    "check_overlap",
    "check_tile",
    "compile_forward",
    "plan",
    "reach",
    "receptive_radius",
    "round_overlap",
    "source",
    "stitch",
    "take",
]

OVERLAP_MULTIPLE = 8
"""A default overlap is the receptive radius rounded up to a multiple of this (slack)."""


class UnknownLayerError(KoalaError):
    """A layer whose reach the graph reader does not know, or a model without a layer graph."""


# --- Receptive radius from the layer graph -----------------------------------------------------

# Layers and symbolic keras.ops that act on each pixel on its own (spatially pointwise;
# Concatenate and Softmax taken on the channel axis, as in image models).
_POINTWISE = frozenset({
    "InputLayer", "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Rescaling",
    "BatchNormalization", "LayerNormalization", "Dropout", "SpatialDropout2D", "GaussianNoise",
    "Identity", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate",
    "Absolute", "Cast", "Clip", "Divide", "TrueDivide", "Exp", "Log", "Negative", "Power",
    "Relu", "Sigmoid", "Sqrt", "Square", "Tanh", "Where",
})
# Layers that read a k x k window of their input, possibly with a stride.
_WINDOWED = frozenset({"Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D",
                       "AveragePooling2D"})
# UpSampling2D: input px an output pixel reads beyond the one under it (the kernel's support
# plus one for the output pixel's offset inside that input pixel).
_UPSAMPLING_REACH = {"nearest": 1, "bilinear": 2, "bicubic": 3, "lanczos3": 4, "lanczos5": 6}
_KNOWN = _POINTWISE | _WINDOWED | {"Conv2DTranspose", "UpSampling2D"}


@dataclasses.dataclass(frozen=True)
class Reach:
    """What one output pixel of a model depends on.

    radius: model-input px on each side (an upper bound).
    step:   model-input px between neighbouring output pixels (1 / s for x s upsampling).
    """

    radius: Fraction
    step: Fraction

    @property
    def output_radius(self) -> int:
        """The radius in output px, rounded up: the context a tile needs."""
        return math.ceil(self.radius / self.step)


def _largest(value) -> int:
    return max(value) if isinstance(value, (tuple, list)) else int(value)


def _kind(op) -> str | None:
    """The first class name in ``op``'s MRO that the reader knows (subclasses count)."""
    return next((c.__name__ for c in type(op).__mro__ if c.__name__ in _KNOWN), None)


def _describe(op) -> str:
    name = getattr(op, "name", None)
    return f"{type(op).__name__} {name!r}" if name else type(op).__name__


def _span(op) -> int:
    """Input px from a window's first tap to its last: (k - 1) * dilation."""
    k = _largest(getattr(op, "kernel_size", None) or op.pool_size)
    return (k - 1) * _largest(getattr(op, "dilation_rate", 1))


def _transposed_reach(op) -> int:
    if op.padding != "same" or getattr(op, "output_padding", None) is not None:
        raise UnknownLayerError(f"{_describe(op)}: only a transposed convolution with "
                                "padding='same' and no output_padding has a known reach")
    stride, span = _largest(op.strides), _span(op)
    if stride == 1:
        return span // 2 if span % 2 == 0 else span
    # Output pixel o reads the inputs within (k - 1) / 2 output px of it, i.e.
    # ceil((k - 1) / (2 s)) input px, plus one for o's offset inside its input pixel.
    return math.ceil(Fraction(span, 2 * stride)) + 1


def _layer_reach(op, radius: Fraction, step: Fraction) -> tuple[Fraction, Fraction]:
    """(radius, step) after ``op``, both in model-input px (see the module docstring)."""
    kind = _kind(op)
    if kind in _POINTWISE:
        return radius, step
    if kind in _WINDOWED:
        stride, span = _largest(op.strides), _span(op)
        centred = stride == 1 and span % 2 == 0
        return radius + (span // 2 if centred else span) * step, step * stride
    if kind == "Conv2DTranspose":
        return radius + _transposed_reach(op) * step, step / _largest(op.strides)
    if kind == "UpSampling2D":
        if op.interpolation not in _UPSAMPLING_REACH:
            raise UnknownLayerError(f"{_describe(op)}: unknown interpolation "
                                    f"{op.interpolation!r}")
        return (radius + _UPSAMPLING_REACH[op.interpolation] * step,
                step / _largest(op.size))
    if isinstance(op, keras.Model) and getattr(op, "outputs", None):  # a nested model
        inner = _graph_reach(op)
        return radius + inner.radius * step, step * inner.step
    flatten = getattr(op, "_flatten_layers", None)
    sublayers = list(flatten(include_self=False, recursive=False)) if flatten else []
    if not sublayers:
        raise UnknownLayerError(f"{_describe(op)}: the receptive radius can't be read off "
                                "this layer")
    for sub in sublayers:  # a custom block (residual): its layers taken as a chain
        radius, step = _layer_reach(sub, radius, step)
    return radius, step


def _graph_reach(model) -> Reach:
    """Walks a functional model's graph from its outputs back to its inputs."""
    memo: dict[int, tuple[Fraction, Fraction]] = {}

    def walk(tensor) -> tuple[Fraction, Fraction]:
        key = id(tensor)
        if key not in memo:
            op, node_index, _ = tensor._keras_history
            parents = op._inbound_nodes[node_index].input_tensors
            if not parents:  # an input
                memo[key] = (Fraction(0), Fraction(1))
            else:
                known = [walk(t) for t in parents]
                memo[key] = _layer_reach(op, max(r for r, _ in known),
                                         max(s for _, s in known))
        return memo[key]

    found = [walk(t) for t in model.outputs]
    return Reach(max(r for r, _ in found), max(s for _, s in found))


def reach(model) -> Reach:
    """The :class:`Reach` of a functional Keras model, read off its layer graph.

    Raises:
      UnknownLayerError: a layer is not one the reader knows (the message names it), or
        ``model`` has no functional graph (a subclassed model).
    """
    outputs = getattr(model, "outputs", None)
    if not outputs or not all(hasattr(t, "_keras_history") for t in outputs):
        raise UnknownLayerError(f"{type(model).__name__} has no functional layer graph to "
                                "read a receptive radius off")
    return _graph_reach(model)


def receptive_radius(model) -> int:
    """Output px of context on each side that one output pixel of ``model`` can depend on:
    :attr:`Reach.output_radius` of :func:`reach`. SRCNN 9-1-5: 6; FSRCNN(56, 12, 4) x3: 27;
    the paper codec encoder: 66.

    Raises:
      UnknownLayerError: see :func:`reach`.
    """
    return reach(model).output_radius


def round_overlap(radius: int, multiple: int = OVERLAP_MULTIPLE) -> int:
    """``radius`` rounded up to a multiple of ``multiple``, at least ``multiple``: the default
    overlap (SRCNN 9-1-5: 6 -> 8; FSRCNN x3: 27 -> 32; codec encoder 66 -> 72)."""
    return max(multiple, -(-radius // multiple) * multiple)


def check_tile(tile: int | None, multiple: int = 1) -> int | None:
    """``tile`` rounded down to a multiple of ``multiple`` (at least ``multiple``); None stays
    None (the whole image at once).

    Raises:
      ValueError: ``tile`` is not a positive integer or None.
    """
    if tile is None:
        return None
    if not isinstance(tile, int) or isinstance(tile, bool) or tile < 1:
        raise ValueError(f"tile must be a positive integer or None, got {tile!r}")
    return max(multiple, tile // multiple * multiple)


def check_overlap(overlap: int, radius: int | None, multiple: int = 1) -> int:
    """``overlap`` rounded up to a multiple of ``multiple``, once checked against the
    receptive radius (None: unknown, only >= 0 is checked).

    Raises:
      ValueError: ``overlap`` < 0 or < ``radius`` (the tiles would not join up exactly).
    """
    if overlap < 0 or (radius is not None and overlap < radius):
        raise ValueError(f"overlap must be >= the model's receptive radius {radius or 0} px, "
                         f"got {overlap}")
    return -(-int(overlap) // multiple) * multiple


# --- Tile windows ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Window:
    """One axis of one tile.

    start, stop: the output tile ``[start, stop)``, in output px.
    lo, hi:      the input window ``[lo, hi)`` that feeds it, in input px, before padding.
    pad:         (before, after) input px of edge padding: ``border`` where the window touches
                 an image edge, else 0.
    origin:      the output px where the model's output for the padded window begins.
    """

    start: int
    stop: int
    lo: int
    hi: int
    pad: tuple[int, int] = (0, 0)
    origin: int = 0

    @property
    def tile(self) -> slice:
        """The tile in the output image."""
        return slice(self.start, self.stop)

    @property
    def crop(self) -> slice:
        """The tile in the model's output for the window."""
        return slice(self.start - self.origin, self.stop - self.origin)


def source(start: int, stop: int, size: int, context: int, *, scale: int = 1) -> tuple[int, int]:
    """The input span ``[lo, hi)`` whose ``scale`` x upscale covers the output span
    ``[start, stop)``, widened by ``context`` input px per side and clipped to ``[0, size)``."""
    return max(0, start // scale - context), min(size, -(-stop // scale) + context)


def plan(size: int, tile: int | None, context: int, *, scale: int = 1, align: int = 1,
         border: int = 0) -> list[Window]:
    """Cuts an axis of ``size`` input px (``scale * size`` output px) into output tiles of
    ``tile`` px (the last one shorter; None or ``tile >= scale * size``: one tile), each fed by
    a window with ``context`` input px per side (:func:`source`) and ``border`` px of edge
    padding for a model that loses that much per side ("valid" padding).

    Raises:
      ValueError: ``size`` < 1, or ``tile``, ``context`` or ``size`` off the ``align`` grid
        (``tile`` must be a multiple of ``align * scale``).
    """
    if size < 1:
        raise ValueError(f"empty axis of size {size}")
    if (tile is not None and tile % (align * scale)) or context % align or size % align:
        raise ValueError(f"tile {tile}, context {context} and size {size} must be multiples "
                         f"of {align} (tile of {align * scale})")
    out_size = scale * size
    if tile is None or tile >= out_size:
        tile = out_size
    windows = []
    for start in range(0, out_size, tile):
        stop = min(start + tile, out_size)
        lo, hi = source(start, stop, size, context, scale=scale)
        pad = (border if lo == 0 else 0, border if hi == size else 0)
        windows.append(Window(start, stop, lo, hi, pad, scale * (lo - pad[0] + border)))
    return windows


def take(x: np.ndarray, rows: Window, cols: Window, *, offset: tuple[int, int] = (0, 0),
         mode: str = "reflect") -> np.ndarray:
    """The part of ``x`` (H, W, ...) under the two windows, with their edge padding.

    ``offset``: the input px of ``x[0, 0]`` (``x`` may be a part of the input). numpy's
    reflect repeats the reflection for pads longer than the side (tiny images); a window at an
    edge is then the whole side, as untiled.
    """
    part = x[rows.lo - offset[0]:rows.hi - offset[0], cols.lo - offset[1]:cols.hi - offset[1]]
    if rows.pad != (0, 0) or cols.pad != (0, 0):
        part = np.pad(part, (rows.pad, cols.pad) + ((0, 0),) * (part.ndim - 2), mode=mode)
    return part


def stitch(height: int, width: int, run: Callable[[Window, Window], np.ndarray],
           out: np.ndarray, *, tile: int | None, context: int, scale: int = 1, align: int = 1,
           border: int = 0, convert: Callable | None = None) -> np.ndarray:
    """Runs ``run(rows, cols)`` for every tile of a ``height`` x ``width`` input (the model's
    output for the padded window, from ``(rows.origin, cols.origin)``) and writes its tile
    (``convert``-ed, e.g. rounded to uint8) into ``out`` ((scale * height, scale * width,
    ...)). Arguments as :func:`plan`. Returns ``out``."""
    cols = plan(width, tile, context, scale=scale, align=align, border=border)
    for r in plan(height, tile, context, scale=scale, align=align, border=border):
        for c in cols:
            part = run(r, c)[r.crop, c.crop]
            out[r.tile, c.tile] = part if convert is None else convert(part)
    return out


def compile_forward(model, channels: int) -> Callable:
    """``model(x, training=False)`` as a ``tf.function`` on float32 (B, H, W, channels) of any
    size: one trace serves every tile size, and a graph (not eager Keras) frees each activation
    once its last consumer has run. No autograph: nothing to convert."""
    return tf.function(lambda x: model(x, training=False), autograph=False,
                       input_signature=[tf.TensorSpec([None, None, None, channels], tf.float32)])
