"""Deep Koalarization: the fusion colorizer (SPEC §1).

Paper: F. Baldassarre, D. González Morín, L. Rodés-Guirao, "Deep Koalarization: Image
Colorization using CNNs and Inception-ResNet-v2", 2017 (arXiv:1712.03400); authors' code
``baldassarreFe/deep-koalarization`` (TF 1.3 / Keras). Re-implementation notes:
``seeds/koalarization_report_zh.txt``.

A grayscale L channel goes through a convolutional encoder; a precomputed global embedding
(the 1000-way ImageNet softmax of a frozen classifier applied to the same grayscale image,
see :mod:`koala.ops.embedder`) is tiled over the encoder's grid and concatenated to it ("fusion");
a convolutional decoder with nearest-neighbour upsampling predicts a*b*.

Inputs and output (names match :func:`koala.data.pipelines.colorization_dataset`)::

    "l"          (B, S, S, 1)  float32, L / 50 - 1 in [-1, 1]   (koala.ops.color.normalize_l)
    "embedding"  (B, D)        float32, D = 1000 by default
    output       (B, S, S, 2)  float32, ab / 128 in [-1, 1]      (koala.ops.color.normalize_ab)

S is any multiple of 8 (224 in the paper). Every conv is 3x3 ("same" padding, ReLU) unless
marked; "BN" rows exist only with ``batch_norm=True``. Shapes and parameter counts for the
paper model (S = 224, D = 1000, ``filters_scale=1``); a conv has k*k*c_in*c_out + c_out
parameters, a BatchNorm 4*c (gamma, beta trainable; moving mean, variance not)::

    layer                      output            params
    input "l"                  224 x 224 x 1
    enc_conv1   conv3/64/2     112 x 112 x 64        640
    enc_bn1     BN             112 x 112 x 64        256
    enc_conv2   conv3/128/1    112 x 112 x 128    73 856
    enc_conv3   conv3/128/2     56 x 56 x 128    147 584
    enc_bn2     BN              56 x 56 x 128        512
    enc_conv4   conv3/256/1     56 x 56 x 256    295 168
    enc_conv5   conv3/256/2     28 x 28 x 256    590 080
    enc_bn3     BN              28 x 28 x 256      1 024
    enc_conv6   conv3/512/1     28 x 28 x 512  1 180 160
    enc_conv7   conv3/512/1     28 x 28 x 512  2 359 808
    enc_conv8   conv3/256/1     28 x 28 x 256  1 179 904
    input "embedding"          1000
    fusion      tile + concat   28 x 28 x 1256         0
    fusion_conv conv1/256/1     28 x 28 x 256    321 792
    dec_conv1   conv3/128       28 x 28 x 128    295 040
    dec_up1     up x2           56 x 56 x 128          0
    dec_bn1     BN              56 x 56 x 128        512
    dec_conv2   conv3/64        56 x 56 x 64      73 792
    dec_conv3   conv3/64        56 x 56 x 64      36 928
    dec_up2     up x2          112 x 112 x 64          0
    dec_bn2     BN             112 x 112 x 64        256
    dec_conv4   conv3/32       112 x 112 x 32     18 464
    dec_conv5   conv3/2        112 x 112 x 2         578   (linear; tanh in "ab_tanh")
    ab_tanh     tanh           112 x 112 x 2           0
    ab          up x2          224 x 224 x 2           0
    total: 6 573 794 without BN, 6 576 354 with BN (+2 560 = 4 * (64+128+256 + 128+64))

Departures from the paper and the authors' code:

1. **BatchNorm** (``batch_norm=True``, the default, is the report's choice; ``False`` is the
   paper/original code, which has no normalisation). BN sits *after the ReLU* of each
   stride-2 encoder conv, and right after the first two decoder upsamplings. The report puts
   BN "after each upsampling"; the third upsampling follows the tanh output, and a BN there
   would shift and scale the prediction out of [-1, 1] (and the ab target's range), so that
   one gets none.
2. **ab scaling**: the target is ``ab / 128`` (``koala.ops.color.AB_SCALE``, as in the paper);
   the original code divided by 127. This changes the data, not the network.
3. **Where the last upsample sits**: as in the original code, the tanh comes *before* the
   final x2 nearest upsampling, so the network predicts ab at S/2 and repeats each value in
   a 2x2 block. (Nearest upsampling commutes with tanh, so the order changes nothing
   numerically.) The final conv is linear and the tanh is a separate float32 layer, so the
   output is float32 and in [-1, 1] under a mixed-precision policy too.
4. **Embedding size**: Keras' ImageNet classifiers have a 1000-way softmax; the original
   TF-slim Inception-ResNet-v2 had 1001 logits (with "background"). ``embedding_dim``
   defaults to 1000.
5. **Input size**: the original hard-codes 224 (28x28 fusion grid); here S is any multiple
   of 8, and :class:`FusionLayer` tiles over whatever grid the encoder produces.
6. ``filters_scale`` (1.0 = paper) multiplies every filter count except the 2 ab channels;
   ``fusion_small`` (1/8 of the filters) exists for tests and smoke runs, not for results.

Weights use Keras' defaults (Glorot-uniform kernels, zero biases), as the original Keras code
did.

Backends: the regression model is Keras layers and ``keras.ops`` only, and trains with Keras'
own steps, so it builds, trains and loads its ``.keras`` files on the JAX backend too, without
TensorFlow (tests/test_jax_backend.py; benchmarks/gpu.py). The classification head's pieces
(:class:`~koala.tasks.colorize.models.bins_head.AnnealedMean`, the rebalanced cross-entropy)
and its training step are TensorFlow's, in :mod:`koala.tasks.colorize.models.bins_head`.

Classification head (``head="classification"``, SPEC §5)
--------------------------------------------------------
Zhang, Isola & Efros 2016, "Colorful Image Colorization" (as used by Lal et al. 2017): the
network predicts a distribution over Q quantised ab bins (:func:`koala.ops.colorbins.ab_bins`)
instead of ab, is trained with a class-rebalanced cross-entropy against soft targets, and
decodes with the annealed mean. The encoder, fusion and decoder are the same; only the head
changes (Q = 262 with ``bin_rule="nearest"``)::

    layer                      output            params
    dec_conv4   conv3/32       112 x 112 x 32     18 464   (as above)
    dec_logits  conv3/Q        112 x 112 x Q      75 718   (linear; 9*32*262 + 262)
    probs       softmax        112 x 112 x Q           0   (float32)
    ab_mean     annealed mean  112 x 112 x 2           0   (Lab units, T = 0.38)
    ab_norm     x 1/128        112 x 112 x 2           0
    ab_clip     clip [-1, 1]   112 x 112 x 2           0   (hard_tanh; a no-op for these bins)
    ab          up x2          224 x 224 x 2           0
    total: 6 651 494 with BN (6 576 354 - 578 + 75 718), 6 648 934 without

The model's output is the same normalised ab as the regression model's, so ``predict``,
:mod:`koala.tasks.colorize.inference`, :mod:`koala.cli.evaluate` and the trainer's image grids work
unchanged.
:meth:`FusionColorizer.classify` gives ``(probs, ab)``; training (:meth:`FusionColorizer.
train_step`) minimises :func:`rebalanced_cross_entropy` and logs ``loss`` and ``ab_mse`` (the
MSE of the decoded ab, the regression model's loss, for comparison). The class-rebalancing
weights live in the config (``class_weights``), so a saved model is self-contained; the
trainer computes them from the records' bin prior (:mod:`koala.data.bin_prior`).

Departures from Zhang et al. / Lal et al.:

7. **Q = 262 bins** (the sRGB gamut on the grid of 10), not Zhang's 313: see
   :mod:`koala.ops.colorbins`.
8. **The logits conv is 3x3** (it replaces the regression model's 3x3 ab conv one for one);
   Zhang's ``conv8_313`` is 1x1.
9. **Resolution**: the distribution is predicted at S/2 (112 x 112 for 224 px; Zhang: S/4,
   Lal: 64 x 64) and the target ab is average-pooled x2 to S/2 before soft-encoding; the
   decoded ab is upsampled x2 by nearest neighbour, like the regression model's (Zhang:
   bilinear).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

from koala.ops.colorbins_params import ANNEAL_TEMPERATURE, GAMUT_RULES

__all__ = [
    "HEADS",
    "FusionColorizer",
    "FusionConfig",
    "FusionLayer",
    "build_fusion",
    "fusion",
    "fusion_small",
    "parameter_count_from_table",
]

# The layer table, shared by the builder and by :func:`parameter_count_from_table`.
# Encoder: (filters, stride) of each 3x3 conv; BN follows each stride-2 conv.
ENCODER = ((64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 1), (256, 1))
# Decoder: 3x3 conv filter counts, or "up" for a x2 nearest upsampling. The last conv is the
# 2-channel ab output (tanh), followed by one more "up" (see departure 3).
DECODER = (128, "up", 64, 64, "up", 32)
AB_CHANNELS = 2
DOWNSAMPLING = 8  # three stride-2 convs
from koala.tasks.colorize.config import HEADS  # noqa: E402

"""regression: ab through tanh, MSE (the paper); classification: Q bin logits (SPEC §5)."""

# The classification head's pieces need TensorFlow (koala.ops.colorbins): they live in
# bins_head, imported when a classification head is built; their names are re-exported here.
_HEAD_NAMES = ("AnnealedMean", "CE_EPSILON", "num_bins", "rebalanced_cross_entropy")


def __getattr__(name):
    if name in _HEAD_NAMES:
        from koala.tasks.colorize.models import bins_head

        return getattr(bins_head, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
@dataclasses.dataclass(frozen=True)
class FusionConfig:
    """Hyper-parameters of the fusion colorizer (defaults = the paper with the report's BN).

    image_size:     S, side of the square L input and ab output; a multiple of 8.
    embedding_dim:  D, length of the global embedding (1000 for Keras' ImageNet softmax).
    filters_scale:  multiplies every filter count except the 2 ab channels (rounded, >= 1).
    batch_norm:     the report's BatchNorm layers (see the module docstring, departure 1).
    fusion_filters: filters of the 1x1 conv after the fusion (256 in the paper); scaled too.
    embedder, embedder_weights, embedder_fit:
                    which :class:`koala.ops.embedder.Embedder` makes the "embedding" input (name,
                    weights, fit). Not part of the network: recorded in the saved model so
                    ``koala.tasks.colorize.inference`` rebuilds the embedder the model was trained
                    with. The
                    trainer copies them from the records' manifest.
    head:           "regression" (the paper) or "classification" (SPEC §5, see the module
                    docstring).
    temperature:    classification: T of the annealed-mean decoding (Zhang et al.: 0.38).
    bin_rule:       classification: the gamut rule of the ab bins (koala.ops.colorbins.ab_bins).
    class_weights:  classification: the Q class-rebalancing weights
                    (koala.ops.colorbins.rebalancing_weights), kept here so that a saved model is
                    self-contained; None gives every bin weight 1.
    """

    image_size: int = 224
    embedding_dim: int = 1000
    filters_scale: float = 1.0
    batch_norm: bool = True
    fusion_filters: int = 256
    embedder: str = "inception_resnet_v2"
    embedder_weights: str = "imagenet"
    embedder_fit: str = "pad"
    head: str = "regression"
    temperature: float = ANNEAL_TEMPERATURE
    bin_rule: str = "nearest"
    class_weights: tuple | None = None

    def __post_init__(self):
        if self.image_size <= 0 or self.image_size % DOWNSAMPLING:
            raise ValueError(
                f"image_size must be a positive multiple of {DOWNSAMPLING}, got {self.image_size}"
            )
        if self.embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {self.embedding_dim}")
        if not self.filters_scale > 0:
            raise ValueError(f"filters_scale must be positive, got {self.filters_scale}")
        if self.fusion_filters <= 0:
            raise ValueError(f"fusion_filters must be positive, got {self.fusion_filters}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.bin_rule not in GAMUT_RULES:
            raise ValueError(f"bin_rule must be one of {GAMUT_RULES}, "
                             f"got {self.bin_rule!r}")
        if self.class_weights is not None:
            if self.head != "classification":
                raise ValueError("class_weights apply to head='classification' only")
            # A saved config holds a JSON list: back to a tuple of floats (hashable, ==).
            weights = tuple(float(w) for w in self.class_weights)
            from koala.tasks.colorize.models.bins_head import num_bins

            q = num_bins(self.bin_rule)
            if len(weights) != q:
                raise ValueError(f"class_weights needs one weight per bin ({q} for "
                                 f"bin_rule={self.bin_rule!r}), got {len(weights)}")
            if not all(np.isfinite(w) and w >= 0 for w in weights):
                raise ValueError("class_weights must be finite and non-negative")
            object.__setattr__(self, "class_weights", weights)

    def filters(self, paper_filters: int) -> int:
        """A paper filter count scaled by ``filters_scale``, rounded, at least 1."""
        return max(1, round(paper_filters * self.filters_scale))


@keras.saving.register_keras_serializable(package="koala")
class FusionLayer(keras.layers.Layer):
    """Tile a global vector over a feature map's grid and concatenate it to the channels.

    Call with ``[features, embedding]``:
      features:  (B, h, w, C) encoder output.
      embedding: (B, D) global embedding.
    Returns (B, h, w, C + D), where ``out[b, i, j, C:] == embedding[b]`` for every (i, j).

    h and w are read from ``features`` when the layer runs, so the same layer works on any
    grid (not only the 28x28 of a 224 px input). No weights.
    """

    def call(self, inputs):
        features, embedding = inputs
        # Under mixed precision both arrive in the compute dtype already (Keras autocasts
        # the inputs); the cast keeps concatenation safe when they don't (e.g. autocast off).
        embedding = ops.cast(embedding, features.dtype)
        shape = ops.shape(features)  # dynamic where the grid is unknown until run time
        tiled = ops.broadcast_to(
            embedding[:, None, None, :], (shape[0], shape[1], shape[2], ops.shape(embedding)[-1])
        )
        return ops.concatenate([features, tiled], axis=-1)

    def compute_output_shape(self, input_shape):
        features_shape, embedding_shape = input_shape
        channels = None
        if features_shape[-1] is not None and embedding_shape[-1] is not None:
            channels = features_shape[-1] + embedding_shape[-1]
        return (*features_shape[:-1], channels)

    def get_config(self):
        # No hyper-parameters of its own: name, dtype policy and trainable are the base's.
        return super().get_config()


class _Untracked:
    """A box Keras does not look into (as in koala/tasks/codec/model.py): a Keras model held
    here is not tracked as a sub-model, so its layers are not saved a second time."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value


def _batch_norm(name: str) -> keras.layers.BatchNormalization:
    """BatchNorm whose batch statistics are all-reduced over the replicas of a distribution
    strategy (TensorFlow backend): each replica normalises with the global batch's statistics
    and the moving averages stay identical on every worker, so distributed training matches
    single-device training on the same global batch. Without a strategy it is plain BN."""
    return keras.layers.BatchNormalization(
        name=name, synchronized=keras.backend.backend() == "tensorflow")


def _conv(filters: int, kernel: int, name: str, strides: int = 1, activation="relu"):
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", activation=activation, name=name
    )


def encoder(x, config):
    """The encoder (the table's enc_* layers) on x: (B, S, S, 1) -> (B, S/8, S/8, 256 *
    scale); ``config`` gives ``filters()`` and ``batch_norm`` (PixColor's conditioning net
    reuses it)."""
    n_bn = 0
    for i, (filters, stride) in enumerate(ENCODER, start=1):
        x = _conv(config.filters(filters), 3, f"enc_conv{i}", strides=stride)(x)
        if config.batch_norm and stride == 2:
            n_bn += 1
            x = _batch_norm(f"enc_bn{n_bn}")(x)
    return x


def _fusion_graph(config: FusionConfig):
    """The functional graph: returns (inputs dict, ab output, probs or None, features). See
    the module docstring; probs (B, S/2, S/2, Q) exists for the classification head only;
    features (B, S/2, S/2, 32 * scale) is the decoder's last feature layer, the input of
    the head (Lal et al.'s semantic classifier branches off it)."""
    size, dim = config.image_size, config.embedding_dim
    l_input = keras.Input((size, size, 1), name="l")
    embedding = keras.Input((dim,), name="embedding")

    x = encoder(l_input, config)  # (B, S, S, 1) -> (B, S/8, S/8, 256 * scale)

    # Fusion: (B, h, w, C) + (B, D) -> (B, h, w, C + D) -> 1x1 conv -> (B, h, w, F).
    x = FusionLayer(name="fusion")([x, embedding])
    x = _conv(config.filters(config.fusion_filters), 1, "fusion_conv")(x)

    # Decoder: (B, S/8, S/8, F) -> (B, S/2, S/2, 32 * scale).
    n_conv = n_up = 0
    for item in DECODER:
        if item == "up":
            n_up += 1
            x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"dec_up{n_up}")(x)
            if config.batch_norm:
                x = _batch_norm(f"dec_bn{n_up}")(x)
        else:
            n_conv += 1
            x = _conv(config.filters(item), 3, f"dec_conv{n_conv}")(x)

    probs, features = None, x
    if config.head == "regression":
        # ab head: linear conv, then tanh and the final upsampling in float32, so the output is
        # float32 in [-1, 1] even under a mixed-precision policy: (B, S/2, S/2, 2).
        x = _conv(AB_CHANNELS, 3, f"dec_conv{n_conv + 1}", activation=None)(x)
        x = keras.layers.Activation("tanh", dtype="float32", name="ab_tanh")(x)
    else:
        # Classification head (SPEC §5): Q linear logits, softmax in float32 ->
        # (B, S/2, S/2, Q); annealed mean -> ab in Lab units -> / 128 -> clip to [-1, 1]
        # -> (B, S/2, S/2, 2), all float32.
        from koala.ops import color
        from koala.tasks.colorize.models.bins_head import AnnealedMean, num_bins

        q = num_bins(config.bin_rule)
        x = _conv(q, 3, "dec_logits", activation=None)(x)
        probs = keras.layers.Activation("softmax", dtype="float32", name="probs")(x)
        x = AnnealedMean(config.temperature, config.bin_rule, name="ab_mean")(probs)
        x = keras.layers.Rescaling(1.0 / color.AB_SCALE, dtype="float32", name="ab_norm")(x)
        x = keras.layers.Activation("hard_tanh", dtype="float32", name="ab_clip")(x)
    # The final x2 nearest upsampling, in float32: (B, S/2, S/2, 2) -> (B, S, S, 2).
    ab = keras.layers.UpSampling2D(2, interpolation="nearest", dtype="float32", name="ab")(x)
    return {"l": l_input, "embedding": embedding}, ab, probs, features


@keras.saving.register_keras_serializable(package="koala")
class FusionColorizer(keras.Model):
    """The fusion colorizer: a functional Keras model whose config is a :class:`FusionConfig`.

    Inputs ``{"l": (B, S, S, 1), "embedding": (B, D)}`` (a dict, as the data pipeline yields
    it); output ab (B, S, S, 2), float32, in [-1, 1]. ``model.config`` gives the
    hyper-parameters and the embedder that makes the "embedding" input; a saved ``.keras``
    file reloads with plain ``keras.saving.load_model`` once koala.registry is imported.

    With ``head="classification"`` the output is the same (the annealed mean of the bin
    distribution, normalised); :meth:`classify` also gives the distribution, and
    ``train_step``/``test_step`` minimise :func:`rebalanced_cross_entropy` with the config's
    ``class_weights``: ``compile(optimizer=...)`` (a compiled loss is not used), then ``fit``
    on ``(inputs, ab)`` batches. They log ``loss`` and ``ab_mse`` (the decoded ab's MSE, the
    regression model's loss). The regression model trains with Keras' own steps and the
    compiled loss.
    """

    def __init__(self, name="fusion", **config):
        kwargs = {k: config.pop(k) for k in ("trainable", "dtype") if k in config}
        self.config = FusionConfig(**config)
        inputs, outputs, probs, features = _fusion_graph(self.config)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        if self.config.head == "classification":
            # The same layers, to the probabilities too; boxed so that Keras neither tracks
            # nor saves it a second time.
            self._classifier = _Untracked(
                keras.Model(inputs, [probs, outputs, features], name=f"{name}_classifier"))
            self._class_trackers = [keras.metrics.Mean(name="loss"),
                                    keras.metrics.Mean(name="ab_mse")]
            from koala.ops import colorbins

            weights = self.config.class_weights
            self._bins = colorbins.ab_bins(rule=self.config.bin_rule)
            self._class_weights = (None if weights is None
                                   else np.asarray(weights, np.float32))

    def get_config(self):
        config = dataclasses.asdict(self.config)
        if config["class_weights"] is not None:
            config["class_weights"] = list(config["class_weights"])
        return {"name": self.name, "trainable": self.trainable, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- classification head -----------------------------------------------------------

    def classify(self, inputs, training=False):
        """Classification head only: ``(probs (B, S/2, S/2, Q), ab (B, S, S, 2))``, float32;
        ``ab`` is the model's output (the normalised annealed mean of ``probs``)."""
        if self.config.head != "classification":
            raise ValueError(f"{self.name} has a {self.config.head} head, no bin distribution")
        probs, ab, _ = self.classify_features(inputs, training=training)
        return probs, ab

    def classify_features(self, inputs, training=False):
        """:meth:`classify` and the decoder's last feature layer (B, S/2, S/2, C)."""
        if self.config.head != "classification":
            raise ValueError(f"{self.name} has a {self.config.head} head, no bin distribution")
        return tuple(self._classifier.value(inputs, training=training))

    def classification_loss(self, probs, ab):
        """:func:`rebalanced_cross_entropy` with this model's bins and class weights."""
        from koala.tasks.colorize.models.bins_head import rebalanced_cross_entropy

        return rebalanced_cross_entropy(probs, ab, bins=self._bins,
                                        class_weights=self._class_weights)

    @property
    def metrics(self):
        if self.config.head != "classification":
            return super().metrics
        return list(self._class_trackers)  # reset by Keras at each epoch

    def _class_step(self, data, training: bool):
        import tensorflow as tf

        x, ab, _ = keras.utils.unpack_x_y_sample_weight(data)
        ab = tf.cast(ab, tf.float32)
        probs, pred = self.classify(x, training=training)
        loss = self.classification_loss(probs, ab)
        ab_mse = tf.reduce_mean(tf.square(tf.cast(pred, tf.float32) - ab))
        return loss, ab_mse, ab

    def _record(self, ab, loss, ab_mse):
        import tensorflow as tf

        batch = tf.cast(tf.shape(ab)[0], tf.float32)
        for tracker, value in zip(self._class_trackers, (loss, ab_mse), strict=True):
            tracker.update_state(value, sample_weight=batch)
        return {tracker.name: tracker.result() for tracker in self._class_trackers}

    def train_step(self, *args):
        # Keras' own step for the regression head, on any backend (JAX's takes (state, data)).
        if self.config.head != "classification":
            return super().train_step(*args)
        _tensorflow_only(self)
        (data,) = args
        import tensorflow as tf  # the classification step is TensorFlow's (GradientTape)

        with tf.GradientTape() as tape:
            loss, ab_mse, ab = self._class_step(data, training=True)
            # Gradients are summed over replicas under tf.distribute: average them instead.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            # Multiplies by the loss scale under mixed precision (a LossScaleOptimizer,
            # which `apply` divides back out); a no-op otherwise.
            scaled = self.optimizer.scale_loss(loss / replicas)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._record(ab, loss, ab_mse)

    def test_step(self, *args):
        if self.config.head != "classification":
            return super().test_step(*args)
        _tensorflow_only(self)
        (data,) = args
        loss, ab_mse, ab = self._class_step(data, training=False)
        return self._record(ab, loss, ab_mse)


def _tensorflow_only(model) -> None:
    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError(
            f"{model.name}: the classification head trains with koala's TensorFlow step; "
            f"on the {keras.backend.backend()} backend only the regression head trains")


def build_fusion(config: FusionConfig) -> FusionColorizer:
    """The fusion colorizer for a config (see :class:`FusionColorizer`)."""
    return FusionColorizer(**dataclasses.asdict(config))


def parameter_count_from_table(config: FusionConfig) -> int:
    """The model's parameter count, computed by hand from the layer table (not from Keras).

    A k x k conv from c_in to c_out channels has k*k*c_in*c_out + c_out parameters; a
    BatchNorm over c channels has 4*c (gamma, beta; moving mean, moving variance). The last
    conv has 2 outputs (regression) or Q (classification).
    """

    def conv(k, c_in, c_out):
        return k * k * c_in * c_out + c_out

    total, channels = 0, 1  # the L input has one channel
    for filters, stride in ENCODER:
        c_out = config.filters(filters)
        total += conv(3, channels, c_out)
        if config.batch_norm and stride == 2:
            total += 4 * c_out
        channels = c_out
    fused = config.filters(config.fusion_filters)
    total += conv(1, channels + config.embedding_dim, fused)
    channels = fused
    for item in DECODER:
        if item == "up":
            total += 4 * channels if config.batch_norm else 0
        else:
            total += conv(3, channels, config.filters(item))
            channels = config.filters(item)
    if config.head == "regression":
        out = AB_CHANNELS
    else:
        from koala.tasks.colorize.models.bins_head import num_bins

        out = num_bins(config.bin_rule)
    return total + conv(3, channels, out)


def fusion(**kwargs) -> FusionColorizer:
    """The paper's fusion colorizer; keyword arguments override :class:`FusionConfig`."""
    return build_fusion(FusionConfig(**kwargs))


def fusion_small(**kwargs) -> FusionColorizer:
    """1/8 of the paper's filters at 64 px, for tests and smoke runs (not for results).

    Defaults ``filters_scale=0.125, image_size=64``; keyword arguments override any
    :class:`FusionConfig` field (``embedding_dim`` stays 1000 unless given, matching records).
    """
    return build_fusion(FusionConfig(**{"filters_scale": 0.125, "image_size": 64, **kwargs}))
