"""The frozen global-feature embedder of Deep Koalarization (SPEC §1), shared by the record
builder and by inference, so preprocessing is identical in training and serving.

What the embedder sees is *the grayscale image*, never the colour one: the source is fitted
into the embedder's square (aspect kept, white padding; ``koala.ops.geometry.fit_square``), its
lightness L* is taken (``koala.ops.color.srgb_to_lab``), turned back into a neutral sRGB image with
that lightness (``koala.ops.color.gray_from_l``), replicated to three channels and scaled to
[-1, 1] — exactly what the colorizer gets at inference from a grayscale photo.

Embedders:
  ``inception_resnet_v2``  the paper's: Keras' InceptionResNetV2 at 299 px, 1000-way softmax.
  ``mobilenet``            MobileNet v1 (alpha 1.0) at 224 px, 1000-way softmax: cheap, and
                           a real ImageNet copy ships in the project's shared weights for
                           offline work.

Weights (``weights=``):
  ``"imagenet"``  keras.applications' ImageNet weights (downloaded once by Keras, or found in
                  ``$KERAS_HOME/models``). If they can't be had, loading fails with
                  :class:`koala.core.errors.WeightsError` naming the alternatives: koala never
                  falls back to random weights on its own.
  ``"none"``      random initialisation, for tests and offline smoke runs. Logged as a
                  warning and recorded wherever the embedding is stored. The random weights
                  are drawn from a fixed seed (``NONE_WEIGHTS_SEED``), so records built in one
                  process and inference in another see the same random embedder.
  a path          a local Keras weights file for the full classifier (with its top).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random

import keras
import numpy as np
import tensorflow as tf

from koala.core.errors import WeightsError
from koala.ops import color, geometry

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EmbedderSpec:
    input_size: int
    constructor: str  # attribute of keras.applications
    kwargs: tuple = ()


# Keras initializers without a seed draw one from Python's `random`; seeding it around the
# construction makes `weights="none"` the same function in every process.
NONE_WEIGHTS_SEED = 20171228

EMBEDDERS = {
    "inception_resnet_v2": EmbedderSpec(299, "InceptionResNetV2"),
    "mobilenet": EmbedderSpec(224, "MobileNet", (("alpha", 1.0),)),
}


def describe_weights(weights: str) -> dict:
    """What the manifest records about a weights choice (a file also gets its size and sha256)."""
    if weights in ("imagenet", "none"):
        return {"weights": weights}
    with open(weights, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"weights": os.path.abspath(weights), "bytes": os.path.getsize(weights),
            "sha256": digest}


def describe_embedder(name: str, weights: str, fit: str, dim: int | None) -> dict:
    """What :meth:`Embedder.describe` records, without building the embedder (a driver that
    only plans work, e.g. the Beam build's, knows ``dim`` from the embeddings it got back)."""
    return {"name": name, "input_size": EMBEDDERS[name].input_size, "dim": dim, "fit": fit,
            **describe_weights(weights)}


def load_application(constructor: str, weights: str, alternatives: str, *,
                     what: str = "embedder", **kwargs) -> keras.Model:
    """``keras.applications.<constructor>(**kwargs)`` with koala's weights choices, frozen.

    ``weights`` is ``"imagenet"``, ``"none"`` (random, drawn from ``NONE_WEIGHTS_SEED``) or a
    local Keras weights file matching ``kwargs`` (Keras builds the net with ``weights=None``
    and calls ``load_weights``). Shared by the embedders and by :mod:`koala.ops.perceptual`.

    Raises:
      WeightsError: the weights can't be had (offline, missing or mismatched file); the
        message names ``what`` and ends with ``alternatives``. Never falls back to random.
    """
    ctor = getattr(keras.applications, constructor)
    if weights == "none":
        state = random.getstate()
        random.seed(NONE_WEIGHTS_SEED)
        try:
            model = ctor(weights=None, **kwargs)
        finally:
            random.setstate(state)
    elif weights == "imagenet":
        try:
            model = ctor(weights="imagenet", **kwargs)
        except Exception as e:  # offline, proxy, corrupt cache: all end the same way
            raise WeightsError(
                f"could not load the ImageNet weights of {constructor} ({type(e).__name__}: "
                f"{e}). koala never falls back to random weights. {alternatives}"
            ) from e
    else:
        if not os.path.isfile(weights):
            raise WeightsError(f"{what} weights file not found: {weights}. {alternatives}")
        try:
            model = ctor(weights=weights, **kwargs)
        except Exception as e:
            raise WeightsError(
                f"could not load {what} weights from {weights} into {constructor} "
                f"({type(e).__name__}: {e}). {alternatives}"
            ) from e
    model.trainable = False
    return model


def build_classifier(name: str, weights: str) -> keras.Model:
    """The Keras ImageNet classifier behind an embedder, frozen. See the module docstring."""
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; choose from {sorted(EMBEDDERS)}")
    spec = EMBEDDERS[name]
    size = spec.input_size
    alternatives = (
        f"Alternatives: pass a local Keras weights file for {spec.constructor} with its top "
        f"(--embedder_weights=PATH), place Keras' cached file in $KERAS_HOME/models "
        f"(default ~/.keras/models), or use --embedder_weights=none for random weights "
        f"(recorded as such; the embedding then carries no semantics)."
    )
    if weights == "none":
        log.warning(
            "embedder %s uses RANDOM weights (--embedder_weights=none): the embedding carries "
            "no ImageNet semantics.", name
        )
    return load_application(
        spec.constructor, weights, alternatives, what="embedder",
        **dict(spec.kwargs), input_shape=(size, size, 3), include_top=True,
    )


class Embedder:
    """A frozen classifier that maps sRGB images to their grayscale embedding.

    >>> emb = Embedder("mobilenet", weights="none")
    >>> square = emb.fit(rgb_uint8)               # (224, 224, 3) uint8, white-padded
    >>> vectors = emb.embed(np.stack([square]))   # (1, 1000) float32, softmax

    ``embed`` runs in batches of ``batch_size``; the traced graph has a dynamic batch
    dimension, so a short last batch costs only its own images and no retrace.
    """

    def __init__(self, name: str = "inception_resnet_v2", weights: str = "imagenet",
                 *, batch_size: int = 16, fit: str = "pad"):
        self.name = name
        self.weights = weights
        self.fit_mode = fit
        self.batch_size = batch_size
        self.model = build_classifier(name, weights)
        self.input_size = EMBEDDERS[name].input_size
        self.dim = int(self.model.output_shape[-1])
        size = self.input_size
        self._embed_batch = tf.function(
            self._forward,
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)],
        )

    def preprocess(self, rgb: tf.Tensor) -> tf.Tensor:
        """uint8 sRGB (B, S, S, 3) -> the classifier's input: gray replicated, in [-1, 1]."""
        lab = color.srgb_to_lab(tf.cast(rgb, tf.float32) / 255.0)
        gray = color.gray_from_l(lab[..., :1])
        return gray * 2.0 - 1.0

    def _forward(self, rgb):
        return self.model(self.preprocess(rgb), training=False)

    def fit(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) image of any size -> uint8 (S, S, 3), as the embedder wants it."""
        return geometry.fit_square(rgb, self.input_size, self.fit_mode)

    def embed(self, squares: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) fitted images -> float32 (N, dim) embeddings."""
        squares = np.asarray(squares, np.uint8)
        out = [self._embed_batch(tf.constant(squares[start : start + self.batch_size])).numpy()
               for start in range(0, len(squares), self.batch_size)]
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return np.concatenate(out).astype(np.float32)

    def describe(self) -> dict:
        """Name, input size, output dim and weights, for manifests and logs."""
        return describe_embedder(self.name, self.weights, self.fit_mode, self.dim)


class Classifier:
    """The embedder's ImageNet classifier on the *colour* image, for the semantic check of a
    colorizer (Zhang et al. 2016: does the classifier recognise a colorized photo as it
    recognises the original?).

    The image is fitted into the classifier's square as the embedder does (aspect kept,
    white padding) and scaled to [-1, 1] (MobileNet's and Inception's preprocessing), with
    its colour. ``weights`` as for :class:`Embedder` ("imagenet", "none" or a file).

    >>> clf = Classifier("mobilenet", "../shared/weights/mobilenet_1_0_224_imagenet.weights.h5")
    >>> probs = clf.probabilities(rgb_uint8)      # (1000,) float32, softmax
    """

    def __init__(self, name: str = "mobilenet", weights: str = "imagenet", *,
                 fit: str = "pad"):
        self.name, self.weights, self.fit_mode = name, weights, fit
        self.model = build_classifier(name, weights)
        self.input_size = EMBEDDERS[name].input_size
        size = self.input_size
        self._forward = tf.function(
            lambda rgb: self.model(tf.cast(rgb, tf.float32) / 127.5 - 1.0, training=False),
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])

    def probabilities(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) of any size -> float32 (classes,) softmax."""
        square = geometry.fit_square(np.asarray(rgb, np.uint8), self.input_size, self.fit_mode)
        return self._forward(tf.constant(square[None])).numpy()[0].astype(np.float32)

    def describe(self) -> dict:
        return {"name": self.name, "input_size": self.input_size, "fit": self.fit_mode,
                **describe_weights(self.weights)}
