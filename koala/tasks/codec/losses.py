"""Loss terms of Invertible Grayscale (Xia, Liu, Wong 2018; SPEC §2), as pure functions.

Every function takes images in the codec's model space, [0, 1]::

    rgb       (B, H, W, 3)  the colour input I, sRGB in [0, 1]
    restored  (B, H, W, 3)  the decoder's output R, in [0, 1]
    gray      (B, H, W, 1)  the encoder's grayscale G, in [0, 1]

and returns a float32 scalar (inputs of any float dtype are cast to float32 first). Where the
paper defines a term on the [-1, 1] scale of its network (``x' = 2x - 1``), the function
converts internally, so the numbers are the paper's: e.g. ``theta = 70/127`` is 70 grey
levels of [-1, 1] (the authors' code's value).

Y(I) is BT.601 luma, ``0.299 R + 0.587 G + 0.114 B`` (:func:`koala.ops.color.rgb_to_luma`; the
authors' code uses ``tf.image.rgb_to_grayscale``, the same weights).
"""

from __future__ import annotations

import tensorflow as tf

from koala.ops import color

__all__ = [
    "DISTANCES",
    "THETA",
    "contrast",
    "contrast_loss",
    "invertibility",
    "lightness",
    "quantization",
    "structure",
]

THETA = 70 / 127  # lightness slack: 70 grey levels on the [-1, 1] scale (SPEC §2)
DISTANCES = ("l1", "mse")
LEVELS = 255  # 8-bit grayscale: G * 255 should land on an integer


def _f32(x):
    return tf.cast(x, tf.float32)


def _signed(x):
    """[0, 1] -> [-1, 1], the papers' network scale."""
    return _f32(x) * 2.0 - 1.0


def invertibility(rgb, restored):
    """L_V: mean squared error between R and I on the [-1, 1] scale.

    ``mean((2R - 1 - (2I - 1))^2) = 4 * mean((R - I)^2)`` over all pixels and channels.
    """
    return tf.reduce_mean(tf.square(_signed(restored) - _signed(rgb)))


def lightness(gray, rgb, theta: float = THETA):
    """l_l: ``mean(max(|G' - Y'| - theta, 0))`` with G', Y' = 2x - 1 on [-1, 1].

    Zero wherever the grayscale is within ``theta`` of the luma: the slack leaves room to
    hide colour. gray (B, H, W, 1), rgb (B, H, W, 3).
    """
    luma = color.rgb_to_luma(_f32(rgb))
    excess = tf.abs(_signed(gray) - _signed(luma)) - theta
    return tf.reduce_mean(tf.maximum(excess, 0.0))


def _finite_differences(x):
    """x (B, H, W, C) -> (horizontal (B, H, W-1, C), vertical (B, H-1, W, C)) differences."""
    return x[:, :, 1:, :] - x[:, :, :-1, :], x[:, 1:, :, :] - x[:, :-1, :, :]


def structure(gray, rgb):
    """l_s: L1 between the local variation of G and of Y(I), on [-1, 1].

    With G', Y' = 2x - 1, horizontal differences ``dx(X)[i, j] = X[i, j+1] - X[i, j]`` and
    vertical ones ``dy(X)[i, j] = X[i+1, j] - X[i, j]``::

        l_s = mean_ij |dx(G') - dx(Y')| + mean_ij |dy(G') - dy(Y')|

    (each mean over its own (B, H, W-1) or (B, H-1, W) grid; the sum of the two, as the
    Chainer re-implementation in ``seeds/invertible_grayscale_notes_ja.txt`` does). Needs
    H, W >= 2.
    """
    gx, gy = _finite_differences(_signed(gray))
    yx, yy = _finite_differences(_signed(color.rgb_to_luma(_f32(rgb))))
    return tf.reduce_mean(tf.abs(gx - yx)) + tf.reduce_mean(tf.abs(gy - yy))


def quantization(gray):
    """L_Q: mean distance of G (in 0..255 units) to the nearest integer level, in [0, 0.5].

    ``mean(|255 G - round(255 G)|)``; the rounded value is a constant for the gradient
    (``stop_gradient``), so ``d/dG = 255 * sign(255 G - round(255 G))`` per pixel (divided
    by the pixel count by the mean): every value is pushed towards its nearest level, and
    the gradient flips sign at the midpoints between levels. For G in [0, 1] the nearest
    integer is always one of the 256 levels 0..255.
    """
    scaled = _f32(gray) * LEVELS
    return tf.reduce_mean(tf.abs(scaled - tf.stop_gradient(tf.round(scaled))))


def contrast(features_gray, features_rgb, distance: str = "l1"):
    """l_c from features: ``mean|F(G) - F(I)|`` ("l1", the paper) or ``mean (F(G) - F(I))^2``
    ("mse", the authors' code). Features (B, h, w, C) of any float dtype."""
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    diff = _f32(features_gray) - _f32(features_rgb)
    if distance == "l1":
        return tf.reduce_mean(tf.abs(diff))
    return tf.reduce_mean(tf.square(diff))


def contrast_loss(extractor, gray, rgb, distance: str = "l1"):
    """l_c: :func:`contrast` of the perceptual features of G (replicated to 3 channels) and I.

    ``extractor`` maps sRGB (B, H, W, 3) in [0, 1] to features (e.g.
    :func:`koala.ops.perceptual.feature_extractor`, which resizes and preprocesses). Both images
    go through it in one batch of 2B.
    """
    gray3 = tf.repeat(_f32(gray), 3, axis=-1)
    batch = tf.shape(gray3)[0]
    features = extractor(tf.concat([gray3, _f32(rgb)], axis=0), training=False)
    return contrast(features[:batch], features[batch:], distance)
