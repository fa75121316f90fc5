"""Frozen perceptual feature extractors (the contrast loss of Invertible Grayscale, SPEC §2).

:func:`feature_extractor` wraps a Keras ImageNet network into a frozen model that takes sRGB
in [0, 1] and returns one layer's activations::

    input     (B, H, W, 3)  sRGB in [0, 1], any size (float32, or the compute dtype)
    resize    (B, S, S, 3)  bilinear, S = input_size (0: no resize, features keep the
                            input's aspect ratio)
    preprocess              the network's own: VGG19 "caffe" (RGB -> BGR, 0..255, ImageNet
                            mean subtracted); MobileNet [-1, 1]
    network   (B, S/8, S/8, C)  layers up to ``layer``
    output    float32 (also under a mixed-precision policy)

Networks and their default layers (both stride 8, so a 224 px input gives 28 x 28 features)::

    vgg19      block4_conv4  C = 512   the paper's conv4_4 (authors' code: block4_conv1)
    mobilenet  conv_pw_5_relu C = 256  MobileNet v1, alpha 1.0: a real ImageNet copy ships
                                      in the project's shared weights, for offline work

Weights (``weights=``), loaded by :func:`koala.ops.embedder.load_application` as the embedders':
  ``"imagenet"``  keras.applications' ImageNet weights without the classifier top
                  (downloaded once by Keras or found in ``$KERAS_HOME/models``).
  ``"none"``      random initialisation (seeded): for tests and smoke runs only; the
                  "contrast" it measures carries no perception. Logged as a warning.
  a path          a local Keras weights file for the *full* classifier, with its top, at
                  224 x 224 (e.g. ``../shared/weights/mobilenet_1_0_224_imagenet.weights.h5``).
If the weights can't be loaded, :class:`koala.core.errors.WeightsError` names the alternatives;
koala never falls back to random weights on its own.

The extractor is not part of any saved model: :class:`koala.tasks.codec.model.InvertibleGrayscale`
keeps it outside Keras' tracking, and the trainer rebuilds it from the model's config.
"""

from __future__ import annotations

import dataclasses
import logging

import keras
from keras import ops

from koala.ops.embedder import load_application

log = logging.getLogger(__name__)

__all__ = ["NETS", "PerceptualPreprocess", "PerceptualNet", "feature_extractor"]

# The shared MobileNet file named in error messages (relative to the repository root).
SHARED_MOBILENET = "../shared/weights/mobilenet_1_0_224_imagenet.weights.h5"
# Caffe-style VGG preprocessing: ImageNet channel means, BGR order, 0..255 (keras'
# ``vgg19.preprocess_input``, and the authors' ``VGG_MEAN``).
VGG_MEAN_BGR = (103.939, 116.779, 123.68)
CLASSIFIER_SIZE = 224  # the side both classifiers (with their top) are built for


@dataclasses.dataclass(frozen=True)
class PerceptualNet:
    constructor: str  # attribute of keras.applications
    default_layer: str
    preprocessing: str  # "caffe" or "tf" (see PerceptualPreprocess)
    kwargs: tuple = ()


NETS = {
    "vgg19": PerceptualNet("VGG19", "block4_conv4", "caffe"),
    "mobilenet": PerceptualNet("MobileNet", "conv_pw_5_relu", "tf", (("alpha", 1.0),)),
}


@keras.saving.register_keras_serializable(package="koala")
class PerceptualPreprocess(keras.layers.Layer):
    """sRGB (B, H, W, 3) in [0, 1] -> a network's input: optional bilinear resize to
    ``size`` x ``size`` (0 = keep the size), then ``mode`` "caffe" (BGR, 0..255, ImageNet
    mean subtracted) or "tf" ([-1, 1]). Computes in float32 (set by default)."""

    def __init__(self, mode: str = "caffe", size: int = 0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf"):
            raise ValueError(f"mode must be 'caffe' or 'tf', got {mode!r}")
        self.mode = mode
        self.size = int(size)

    def call(self, rgb):
        x = ops.cast(rgb, self.compute_dtype)
        if self.size:
            x = ops.image.resize(x, (self.size, self.size), interpolation="bilinear")
        if self.mode == "tf":
            return x * 2.0 - 1.0
        bgr = ops.flip(x, axis=-1) * 255.0
        return bgr - ops.convert_to_tensor(VGG_MEAN_BGR, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        if self.size:
            return (input_shape[0], self.size, self.size, input_shape[-1])
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "size": self.size}


def _alternatives(net: str) -> str:
    spec = NETS[net]
    return (
        f"Alternatives: --perceptual_weights=PATH (a local Keras weights file for "
        f"{spec.constructor} with its top, at 224 px), place Keras' cached ImageNet file in "
        f"$KERAS_HOME/models (default ~/.keras/models), "
        f"--perceptual_net=mobilenet --perceptual_weights={SHARED_MOBILENET} (a real ImageNet "
        f"MobileNet that ships with the project), --perceptual_weights=none (random features: "
        f"smoke runs only), or --contrast_weight=0 (no contrast term, no perceptual network)."
    )


def _truncate(network: keras.Model, layer: str) -> keras.Model:
    """``network``'s layers up to and including ``layer``, on an input of any size.

    VGG19 and MobileNet v1 are plain chains, so re-applying their layers in order to a new
    ``(None, None, 3)`` input gives the same function on any image size and shares (does
    not copy) the weights. The classifier top, if any, is left behind.
    """
    names = [lyr.name for lyr in network.layers]
    if layer not in names:
        convs = [n for n in names if "conv" in n and "pad" not in n and "bn" not in n]
        raise ValueError(f"{network.name} has no layer {layer!r}; e.g. {convs[-8:]}")
    inputs = keras.Input((None, None, 3), name="net_input")
    x = inputs
    for lyr in network.layers[1:]:  # [0] is the InputLayer
        x = lyr(x)
        if lyr.name == layer:
            break
    return keras.Model(inputs, x, name=f"{network.name}_to_{layer}")


def feature_extractor(net: str = "vgg19", weights: str = "imagenet", layer: str | None = None,
                      input_size: int = 224) -> keras.Model:
    """A frozen model: sRGB (B, H, W, 3) in [0, 1] -> float32 features of ``layer``.

    Args:
      net: a key of ``NETS`` ("vgg19", "mobilenet").
      weights: "imagenet", "none" or a path (see the module docstring).
      layer: the layer whose activations are returned; None = the net's default.
      input_size: both images are resized (bilinear) to this square before the network,
        as the authors' code does (224); 0 = no resize.

    Raises:
      ValueError: unknown net or layer, negative input_size.
      WeightsError: the weights can't be loaded (the message names the alternatives).
    """
    if net not in NETS:
        raise ValueError(f"unknown perceptual net {net!r}; choose from {sorted(NETS)}")
    if not isinstance(input_size, int) or input_size < 0:
        raise ValueError(f"input_size must be a non-negative integer, got {input_size!r}")
    spec = NETS[net]
    layer = layer or spec.default_layer
    if weights == "none":
        log.warning("perceptual net %s uses RANDOM weights (--perceptual_weights=none): the "
                    "contrast loss then carries no perception.", net)
    # A weights file holds the full classifier (see the module docstring); keras' own
    # ImageNet download and random weights need no top (VGG19's top is 480 MB).
    with_top = weights not in ("imagenet", "none")
    network = load_application(
        spec.constructor, weights, _alternatives(net), what="perceptual network",
        **dict(spec.kwargs), include_top=with_top,
        input_shape=(CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3),
    )
    body = _truncate(network, layer)

    rgb = keras.Input((None, None, 3), name="rgb")
    x = PerceptualPreprocess(spec.preprocessing, input_size, name="preprocess")(rgb)
    x = body(x)
    features = keras.layers.Activation("linear", dtype="float32", name="features")(x)
    model = keras.Model(rgb, features, name=f"perceptual_{net}")
    model.trainable = False
    return model
