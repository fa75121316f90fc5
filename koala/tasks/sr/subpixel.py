r"""FSRCNN's deconvolution in sub-pixel form, for inference: the same function, faster.

FSRCNN ends in a k x k transposed convolution of stride s ("same" padding, the output s times
the input). On a CPU that op (a conv2d back-propagation kernel) runs far below the speed of a
regular convolution. It is exactly a regular K x K convolution on the low-res grid with
s² · C outputs, one per output phase, followed by depth-to-space (Shi et al. 2016's sub-pixel
layer), so :func:`fast_fsrcnn` converts a trained model's weights; nothing is retrained and the
training graph keeps the paper's deconvolution.

Derivation, one axis. TensorFlow's "same" transposed convolution is the adjoint of a stride-s
"same" convolution of an (s·h)-px signal, which pads ``p = (k - s) // 2`` px before it; so
output pixel o receives ``x[i] · W[t]`` for every ``o = i·s + t - p``. Write ``o = q·s + r``
(phase r in [0, s)) and ``j = q - i``: then ``t = j·s + r + p`` and

    y[q·s + r] = Σ_j x[q - j] · W[j·s + r + p]        over 0 <= j·s + r + p < k,

a correlation on the low-res grid with taps j in [j_lo, j_hi] (the union over phases), i.e. a
conv of ``K = j_hi - j_lo + 1`` taps whose tap u = j_hi - j holds ``W[j·s + r + p]`` (zero where
that index is outside the kernel), with ``j_hi`` px of zero padding before and ``-j_lo`` after.
In two dimensions the phases (r_h, r_w) become the output channels in depth-to-space order,
``(r_h · s + r_w) · C + c``. FSRCNN's 9 x 9 kernel gives K = 5 at x2 and 3 at x3 and x4 (every
padding symmetric), so a 9 x 9 x 56 -> 1 deconvolution becomes a 3 x 3 x 56 -> 9 convolution
at x3: the same multiply-adds per output pixel, in an op that runs at full speed.

    model = koala.core.saving.load("fsrcnn_x3", (FSRCNN,), "an FSRCNN")
    fast = fast_fsrcnn(model)      # same inputs, outputs equal within float rounding

The fast model also runs each PReLU as :class:`SlopeMax`, max(x, a·x): Keras's PReLU is
relu(x) - a·relu(-x), five elementwise passes over the activations against two, and the two
56-channel PReLUs are memory-bound (one pass over a 600 x 400 tile's activations costs about
as much as a 12-channel 3 x 3 convolution). max is the PReLU only where a <= 1; trained
slopes reach ~2, so those channels are negated through the weights around them, which is
exact.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from koala.tasks.sr.models import FSRCNN

__all__ = ["DepthToSpace", "SlopeMax", "fast_fsrcnn", "subpixel_kernel", "taps"]


def taps(k: int, s: int) -> tuple[int, int, int]:
    """``(p, j_lo, j_hi)`` of a k-tap, stride-s "same" transposed convolution on one axis:
    its padding before (p) and the range of low-res offsets j its output phases read."""
    p = max(k - s, 0) // 2
    js = [j for r in range(s) for j in range(-k, k + 1) if 0 <= j * s + r + p < k]
    return p, min(js), max(js)


def subpixel_kernel(kernel: np.ndarray, bias: np.ndarray, s: int):
    """A Conv2DTranspose's ``kernel`` (k, k, C_out, C_in) and ``bias`` (C_out,) of stride s ->
    ``(kernel (K, K, C_in, s²·C_out), bias (s²·C_out,), (before, after) padding)`` of the
    equivalent regular convolution followed by depth-to-space with block s."""
    k, k2, c_out, c_in = kernel.shape
    if k != k2:
        raise ValueError(f"expected a square kernel, got {kernel.shape}")
    p, j_lo, j_hi = taps(k, s)
    size = j_hi - j_lo + 1
    out = np.zeros((size, size, c_in, s * s * c_out), kernel.dtype)
    for rh in range(s):
        for rw in range(s):
            phase = (rh * s + rw) * c_out
            for jh in range(j_lo, j_hi + 1):
                th = jh * s + rh + p
                if not 0 <= th < k:
                    continue
                for jw in range(j_lo, j_hi + 1):
                    tw = jw * s + rw + p
                    if 0 <= tw < k:
                        out[j_hi - jh, j_hi - jw, :, phase:phase + c_out] = kernel[th, tw].T
    return out, np.tile(bias, s * s), (j_hi, -j_lo)


@keras.saving.register_keras_serializable(package="koala")
class DepthToSpace(keras.layers.Layer):
    """(B, h, w, s²·C) -> (B, s·h, s·w, C): channel ``(r_h · s + r_w) · C + c`` of low-res
    pixel (q_h, q_w) goes to high-res pixel (q_h · s + r_h, q_w · s + r_w), as
    ``tf.nn.depth_to_space`` orders it."""

    def __init__(self, block: int, **kwargs):
        super().__init__(**kwargs)
        self.block = int(block)

    def call(self, x):
        s = self.block
        shape = ops.shape(x)
        b, h, w, c = shape[0], shape[1], shape[2], x.shape[-1] // (s * s)
        x = ops.reshape(x, (b, h, w, s, s, c))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (b, h * s, w * s, c))

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.block
        return (b, None if h is None else h * s, None if w is None else w * s, c // (s * s))

    def get_config(self):
        return {**super().get_config(), "block": self.block}


@keras.saving.register_keras_serializable(package="koala")
class SlopeMax(keras.layers.Layer):
    """A PReLU for inference: ``max(x, a·x)`` per channel, 2 ops where Keras's PReLU takes 5.

    It equals PReLU(x) where a <= 1. Where a > 1 it equals min(x, a·x) = PReLU(x) only with
    min, so :func:`fast_fsrcnn` negates those channels before it (their convolution's
    kernel and bias), max then gives -PReLU(x), and the next convolution's input weights are
    negated back. Negation is exact, so the result is bit for bit the PReLU's."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)

    def build(self, input_shape):
        self.alpha = self.add_weight(shape=(self.channels,), initializer="zeros",
                                     trainable=False, name="alpha")

    def call(self, x):
        return ops.maximum(x, x * ops.cast(self.alpha, x.dtype))

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


def _trunk(model: FSRCNN):
    """(conv name, kernel, bias, slopes) of the FSRCNN trunk, input to output."""
    names = ["feature", "shrink", *(f"map{i}" for i in range(1, model.config.m + 1)), "expand"]
    for name in names:
        kernel, bias = (np.asarray(w) for w in model.get_layer(name).get_weights())
        (alpha,) = model.get_layer(f"{name}_prelu").get_weights()
        yield name, kernel, bias, np.asarray(alpha).reshape(-1)


def fast_fsrcnn(model: FSRCNN) -> keras.Model:
    """The FSRCNN ``model`` rebuilt for inference, same input and output:

    * each PReLU as :class:`SlopeMax`, the channels with a slope above 1 negated through
      the weights around it (exact);
    * the deconvolution in sub-pixel form: a K x K convolution with s²·C outputs holding the
      converted weights, then :class:`DepthToSpace`.

    Weights are copied, so later changes to ``model`` do not reach the result."""
    if not isinstance(model, FSRCNN):
        raise TypeError(f"expected an FSRCNN, got {type(model).__name__}")
    x = image = keras.Input((None, None, model.config.channels), name="image")
    sign = np.ones(model.config.channels, np.float32)  # of the current input's channels
    for name, kernel, bias, alpha in _trunk(model):
        out_sign = np.where(alpha > 1, -1.0, 1.0).astype(kernel.dtype)
        layer = model.get_layer(name)
        conv = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[0], padding="same",
                                   dtype=layer.dtype_policy, name=name)
        x = conv(x)
        conv.set_weights([kernel * sign[:, None] * out_sign, bias * out_sign])
        act = SlopeMax(len(alpha), dtype=layer.dtype_policy, name=f"{name}_slopemax")
        x = act(x)
        act.set_weights([alpha])
        sign = out_sign
    deconv = model.get_layer("output")
    kernel, bias = (np.asarray(w) for w in deconv.get_weights())
    s = model.config.scale
    sub_kernel, sub_bias, (before, after) = subpixel_kernel(kernel * sign, bias, s)
    if before == after:
        padding = "same"
    else:
        x = keras.layers.ZeroPadding2D(((before, after), (before, after)), name="pad")(x)
        padding = "valid"
    conv = keras.layers.Conv2D(sub_kernel.shape[-1], sub_kernel.shape[0], padding=padding,
                               dtype=deconv.dtype_policy, name="output_subpixel")
    y = conv(x)
    conv.set_weights([sub_kernel, sub_bias])
    out = DepthToSpace(s, dtype=deconv.dtype_policy, name="depth_to_space")(y)
    return keras.Model(image, out, name=f"{model.name}_fast")
