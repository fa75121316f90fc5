"""The TFRecord schema: every feature key, dtype and encoding, defined once.

The writer (``koala.data.build``) and every reader (``koala.data.pipelines``) import this
module; nothing else spells a feature key.

One ``tf.train.Example`` per source image, with field groups that can be written separately
(``GROUPS``), so each model's pipeline parses only what it needs:

``meta`` (always written)
    ``name``                 relative path of the source image (bytes, posix separators)
    ``source/height|width``  size of the source after EXIF orientation (int64)
    ``source/was_grayscale`` 1 if the source was a grayscale image (int64)

``color`` (the colorizers: SPEC §1, §4, §5)
    ``color/l``          L* at ``image_size``, a 1-channel 8-bit PNG of ``round(L * 2.55)``.
                         Stored precision: step 100/255 = 0.392 L units, so the round-trip
                         error is at most 0.196 L units (0.0039 after ``L / 50 - 1``).
    ``color/ab``         a*b* at ``image_size``, a 2-channel 8-bit PNG of ``round(ab) + 128``.
                         Step 1 ab unit: error at most 0.5 (0.0039 after ``ab / 128``); every
                         sRGB colour has a* in [-86.2, 98.3] and b* in [-107.9, 94.5], so the
                         offset never clips.
    ``color/embedding``  the embedder's output (e.g. the 1000-way softmax), raw float16 bytes,
                         little-endian. Relative error ≤ 2**-11 (≈ 4.9e-4).

``label`` (optional: ``build_records --labels_from=dirname``; Lal et al.'s semantic term)
    ``class/label``      the image's class: the index of its top-level folder in the
                         manifest's sorted ``classes`` list (int64)

``rgb`` (the codec and super-resolution: SPEC §2, §3)
    ``rgb/encoded``      the sRGB image as JPEG or PNG bytes, long side ≤ ``max_side``. When the
                         source was already a plain RGB JPEG/PNG within the cap, its bytes are
                         stored unchanged (no generation loss); otherwise it is re-encoded
                         losslessly as PNG (or JPEG, if the build asked for it).
    ``rgb/height|width`` the stored image's size (int64)

The float32 layout of the original Deep Koalarization records took ≈ 606 KB per example; this
one takes ≈ 45–50 KB for the colour group at 224 px (measured: see the README).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

SCHEMA_VERSION = 1

# Feature keys: the only place they are spelled.
NAME = "name"
SOURCE_HEIGHT = "source/height"
SOURCE_WIDTH = "source/width"
WAS_GRAYSCALE = "source/was_grayscale"
L = "color/l"
AB = "color/ab"
EMBEDDING = "color/embedding"
RGB = "rgb/encoded"
RGB_HEIGHT = "rgb/height"
RGB_WIDTH = "rgb/width"
LABEL = "class/label"

META_KEYS = (NAME, SOURCE_HEIGHT, SOURCE_WIDTH, WAS_GRAYSCALE)
GROUPS = {
    "color": (L, AB, EMBEDDING),
    "rgb": (RGB, RGB_HEIGHT, RGB_WIDTH),
    "label": (LABEL,),
}

# Quantisation of the colour group (see the module docstring for the error bounds).
L_LEVELS_PER_UNIT = 2.55  # L in [0, 100] -> 0..255
AB_OFFSET = 128.0  # ab -> round(ab) + 128 in 0..255
EMBEDDING_DTYPE = np.dtype("<f2")
# zlib level of the L and ab PNGs. Measured on ../shared/photos/train at 224 px: level 1 takes
# 2.0 ms per image for 46.9 KB, the default (6) 11.7 ms for 40.7 KB. Speed wins: the build
# must keep up with the embedder, and the size stays well under the 100 KB budget.
PNG_COMPRESSION = 1

_FEATURE_TYPES = {
    NAME: tf.io.FixedLenFeature([], tf.string),
    SOURCE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    SOURCE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
    WAS_GRAYSCALE: tf.io.FixedLenFeature([], tf.int64),
    L: tf.io.FixedLenFeature([], tf.string),
    AB: tf.io.FixedLenFeature([], tf.string),
    EMBEDDING: tf.io.FixedLenFeature([], tf.string),
    RGB: tf.io.FixedLenFeature([], tf.string),
    RGB_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    RGB_WIDTH: tf.io.FixedLenFeature([], tf.int64),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
}


def check_groups(groups) -> tuple[str, ...]:
    """Validates a collection of group names and returns them in canonical order."""
    groups = tuple(groups)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown or not groups:
        raise ValueError(
            f"unknown record field group(s) {unknown or groups!r}; choose from {sorted(GROUPS)}"
        )
    return tuple(g for g in GROUPS if g in groups)


def feature_spec(groups) -> dict:
    """The ``tf.io.parse_*example`` spec for the meta fields plus the given groups."""
    keys = META_KEYS + tuple(k for g in check_groups(groups) for k in GROUPS[g])
    return {k: _FEATURE_TYPES[k] for k in keys}


# --- encoding (writer side, numpy) -----------------------------------------------------------


def quantize_l(l: np.ndarray) -> np.ndarray:
    """L* (H, W) or (H, W, 1) float in [0, 100] -> uint8 (H, W, 1)."""
    l = np.asarray(l, np.float32).reshape(l.shape[0], l.shape[1], 1)
    return np.clip(np.rint(l * L_LEVELS_PER_UNIT), 0, 255).astype(np.uint8)


def quantize_ab(ab: np.ndarray) -> np.ndarray:
    """a*b* (H, W, 2) float -> uint8 (H, W, 2), ``round(ab) + 128``."""
    return np.clip(np.rint(np.asarray(ab, np.float32)) + AB_OFFSET, 0, 255).astype(np.uint8)


def encode_embedding(embedding: np.ndarray) -> bytes:
    """(D,) float -> little-endian float16 bytes."""
    return np.asarray(embedding, np.float32).astype(EMBEDDING_DTYPE).tobytes()


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def make_example(
    *,
    name: str,
    source_height: int,
    source_width: int,
    was_grayscale: bool,
    l_png: bytes | None = None,
    ab_png: bytes | None = None,
    embedding: bytes | None = None,
    rgb: bytes | None = None,
    rgb_height: int | None = None,
    rgb_width: int | None = None,
    label: int | None = None,
) -> bytes:
    """Serialises one example. Pass all fields of a group or none of them."""
    feature = {
        NAME: _bytes(name.encode("utf-8")),
        SOURCE_HEIGHT: _int(source_height),
        SOURCE_WIDTH: _int(source_width),
        WAS_GRAYSCALE: _int(bool(was_grayscale)),
    }
    color = (l_png, ab_png, embedding)
    if any(v is not None for v in color):
        if any(v is None for v in color):
            raise ValueError("the color group needs l_png, ab_png and embedding together")
        feature.update({L: _bytes(l_png), AB: _bytes(ab_png), EMBEDDING: _bytes(embedding)})
    rgb_fields = (rgb, rgb_height, rgb_width)
    if any(v is not None for v in rgb_fields):
        if any(v is None for v in rgb_fields):
            raise ValueError("the rgb group needs rgb, rgb_height and rgb_width together")
        feature.update({RGB: _bytes(rgb), RGB_HEIGHT: _int(rgb_height), RGB_WIDTH: _int(rgb_width)})
    if label is not None:
        feature[LABEL] = _int(label)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True)  # map order fixed: byte-identical shards across processes


# --- decoding (reader side, TF ops usable inside tf.data) ------------------------------------


def decode_l(l_png: tf.Tensor) -> tf.Tensor:
    """Encoded L -> float32 (H, W, 1), L* in [0, 100]."""
    q = tf.io.decode_png(l_png, channels=1, dtype=tf.uint8)
    return tf.cast(q, tf.float32) / L_LEVELS_PER_UNIT


def decode_ab(ab_png: tf.Tensor) -> tf.Tensor:
    """Encoded ab -> float32 (H, W, 2), a*b* in [-128, 127]."""
    # decode_png refuses channels=2; 0 keeps the stored gray+alpha pair.
    q = tf.ensure_shape(tf.io.decode_png(ab_png, channels=0, dtype=tf.uint8), [None, None, 2])
    return tf.cast(q, tf.float32) - AB_OFFSET


def decode_embedding(raw: tf.Tensor, dim: int | None = None) -> tf.Tensor:
    """float16 bytes -> float32 (D,). ``dim`` (from the manifest) fixes the static shape."""
    vec = tf.cast(tf.io.decode_raw(raw, tf.float16, little_endian=True), tf.float32)
    return tf.ensure_shape(vec, [dim]) if dim else vec


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Encoded JPEG/PNG -> uint8 (H, W, 3).

    JPEGs use the accurate integer IDCT: TensorFlow's default fast IDCT differs from Pillow
    (and libjpeg's default) by up to 8 levels, so training would see other pixels than the
    loader, the evaluation and every image viewer.
    """
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_png(encoded, channels=3, dtype=tf.uint8),
    )


def parse(serialized: tf.Tensor, groups) -> dict:
    """Parses one serialized example into its raw (still encoded) features."""
    return tf.io.parse_single_example(serialized, feature_spec(groups))
