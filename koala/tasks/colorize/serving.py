"""A fusion colorizer (or Lal et al.'s) as a uint8 image server: ``koala.export``'s signature.

``ColorizeServer(colorizer).serve(images)``: uint8 (B, H, W, 3) -> uint8 (B, H, W, 3), the
whole of :meth:`koala.tasks.colorize.inference.Colorizer.colorize` in one graph, the
embedder included: each image is fitted into the network's square and the embedder's (aspect
kept, white padding; bicubic with anti-aliasing, rounded to uint8 as the tool's Pillow resize
does), L* of the square goes through the network, the embedder sees the gray image of its
square, the predicted a*b* are cropped to the image's region, resized bilinearly to (H, W),
refined by the guided filter when the colorizer's ``refine`` is "guided" (as the presets'
decoding; :func:`koala.ops.guided.guided_filter_tf`, float64, L*/100 as guide, the tool's
radius and ε), multiplied by the colorizer's saturation and joined with the full-resolution
L*. The images of one batch share a size. The resize is TensorFlow's, not Pillow's: outputs
differ from the tool's by a few levels where the fitted square's pixels round differently
(tests/test_export.py states the tolerance).
"""

from __future__ import annotations

import tensorflow as tf

from koala.core.errors import KoalaError
from koala.ops import color, guided
from koala.ops.geometry import PAD_VALUE
from koala.tasks.colorize.inference import DEFAULT_EPS, DEFAULT_RADIUS

__all__ = ["ColorizeServer"]


def _fit_pad(rgb, size: int):
    """uint8 (B, H, W, 3) -> (uint8 (B, size, size, 3), (top, left, nh, nw)): the images'
    ``fit="pad"`` square (koala.ops.geometry.fit_square) and where they land in it."""
    shape = tf.shape(rgb)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)  # LiteRT: no float64
    scale = size / tf.maximum(h, w)
    nh = tf.maximum(1, tf.cast(tf.round(h * scale), tf.int32))
    nw = tf.maximum(1, tf.cast(tf.round(w * scale), tf.int32))
    top, left = (size - nh) // 2, (size - nw) // 2
    resized = tf.image.resize(tf.cast(rgb, tf.float32), tf.stack([nh, nw]), "bicubic",
                              antialias=True)
    resized = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
    same = tf.logical_and(tf.equal(nh, shape[1]), tf.equal(nw, shape[2]))
    resized = tf.cond(same, lambda: rgb, lambda: resized)  # the tool skips an equal resize
    paddings = [[0, 0], [top, size - nh - top], [left, size - nw - left], [0, 0]]
    square = tf.pad(resized, paddings, constant_values=PAD_VALUE)
    # Pads held in a tensor hide the shape from the LiteRT converter: reshape restores it.
    square = tf.reshape(square, tf.stack([tf.shape(rgb)[0], size, size, 3]))
    return square, (top, left, nh, nw)


class ColorizeServer(tf.Module):
    """``serve``: uint8 (B, H, W, 3) -> uint8 (B, H, W, 3); the colorizer's saturation (and
    a classification head's temperature) are baked in."""

    def __init__(self, colorizer):
        super().__init__(name="koala_colorize")
        if (colorizer.is_stochastic or colorizer.is_vcnn or colorizer.embedder is None):
            raise KoalaError(f"{type(colorizer.model).__name__}: koala.export serves the fusion "
                             f"colorizers (and Lal et al.'s) for now")
        if colorizer.embedder.fit_mode != "pad":
            raise KoalaError(f"embedder fit {colorizer.embedder.fit_mode!r}: the served graph "
                             f"fits images with 'pad' only")
        if colorizer.refine not in ("none", "guided"):
            raise KoalaError(f"refine {colorizer.refine!r}: the served graph refines with "
                             f"'none' or 'guided'")
        self.model = colorizer.model
        self.embedder_model = colorizer.embedder.model
        embedder = colorizer.embedder
        size, saturation = colorizer.image_size, colorizer.saturation
        refine = colorizer.refine == "guided"

        def run(images):
            lightness = color.srgb_to_lab(tf.cast(images, tf.float32) / 255.0)[..., :1]
            square, (top, left, nh, nw) = _fit_pad(images, size)
            l_in = color.normalize_l(color.srgb_to_lab(tf.cast(square, tf.float32) / 255.0)
                                     [..., :1])
            embed_square, _ = _fit_pad(images, embedder.input_size)
            embedding = tf.cast(self.embedder_model(embedder.preprocess(embed_square),
                                                    training=False), tf.float32)
            ab = color.denormalize_ab(tf.cast(
                self.model({"l": l_in, "embedding": embedding}, training=False), tf.float32))
            ab = ab[:, top:top + nh, left:left + nw]
            full = tf.shape(images)[1:3]
            ab = tf.image.resize(ab, full, "bilinear", antialias=True)
            if refine:
                ab = tf.cast(guided.guided_filter_tf(lightness / 100.0, ab, DEFAULT_RADIUS,
                                                     DEFAULT_EPS), tf.float32)
            rgb = color.lab_to_srgb(tf.concat([lightness, ab * saturation], axis=-1))
            return tf.cast(tf.round(tf.clip_by_value(rgb, 0.0, 1.0) * 255.0), tf.uint8)

        self.serve = tf.function(
            run, autograph=False,
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")])
