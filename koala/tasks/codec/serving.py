"""The invertible-grayscale codec as two uint8 image servers: ``koala.export``'s signatures.

``CodecServer(encoder, decoder)``: ``encode``: uint8 (B, H, W, 3) RGB -> uint8 (B, H, W, 1)
grayscale, ``decode``: uint8 (B, H, W, 1) -> uint8 (B, H, W, 3), as
:func:`koala.tasks.codec.inference.encode` and ``decode`` without the tiling (a server bounds
the image size itself): reflect-padded at the bottom and right to a multiple of 4, run,
cropped back, clipped to [0, 1] and rounded to 8 bits.
"""

from __future__ import annotations

import tensorflow as tf

from koala.tasks.codec.inference import ALIGN

__all__ = ["CodecServer"]


def _run_aligned(model, x):
    """float (B, H, W, C) -> the model's output for it, padded to multiples of ALIGN by
    reflection at the bottom and right and cropped back, as uint8."""
    shape = tf.shape(x)
    # (A - n % A) % A, not -n % A: tf2onnx's Mod of a negative number truncates (ONNX
    # output cropped to a multiple of A); with non-negative operands every runtime agrees.
    ph, pw = (ALIGN - shape[1] % ALIGN) % ALIGN, (ALIGN - shape[2] % ALIGN) % ALIGN
    padded = tf.pad(x, [[0, 0], [0, ph], [0, pw], [0, 0]], mode="REFLECT")
    # Pads held in a tensor hide the channels from the converter's shape inference, and
    # LiteRT's convolution needs them static: a reshape to (B, H', W', C) restores them.
    padded = tf.reshape(padded, tf.concat([tf.shape(padded)[:3], [x.shape[-1]]], axis=0))
    out = tf.cast(model(padded, training=False), tf.float32)[:, :shape[1], :shape[2]]
    return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 1.0) * 255.0), tf.uint8)


class CodecServer(tf.Module):
    """``encode`` (RGB -> gray) and ``decode`` (gray -> RGB), uint8, batch first."""

    def __init__(self, encoder, decoder):
        super().__init__(name="koala_codec")
        self.encoder, self.decoder = encoder, decoder
        self.encode = tf.function(
            lambda images: _run_aligned(encoder, tf.cast(images, tf.float32) / 255.0),
            autograph=False,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
        self.decode = tf.function(
            lambda gray: _run_aligned(decoder, tf.cast(gray, tf.float32) / 255.0),
            autograph=False,
            input_signature=[tf.TensorSpec([None, None, None, 1], tf.uint8, name="gray")])
