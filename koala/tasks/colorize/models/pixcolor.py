"""PixColor (Guadarrama et al. 2017): a conditional PixelCNN samples low-resolution chroma,
a feed-forward refinement network brings it to the image's resolution.

Paper: S. Guadarrama, R. Dahl, D. Bieber, M. Norouzi, J. Shlens, K. Murphy, "PixColor: Pixel
Recursive Colorization", BMVC 2017, as summarised in ``seeds/colorization_survey_en.txt``
(SPEC §5). It has no public code; what the summary leaves open is koala's choice, listed
below.

Three networks inside one Keras model (``model.cond_net``, ``model.pixelcnn``,
``model.refine_net``), trained together in one run but with no gradient between them (the
paper trains them separately; each one's loss reaches only its own weights)::

    input "l"          (B, S, S, 1)   float32, L / 50 - 1 in [-1, 1]  (S = 224: the records')
    input "embedding"  (B, D)         float32, the records' global embedding (MobileNet: 1000)
    chroma bins        (B, s, s, 2)   int32 in [0, K), s = S / 8 = 28, (Cr, Cb) of YCbCr
    output "ab"        (B, S, S, 2)   float32, ab / 128 in [-1, 1]

1. **Conditioning network** (``cond_net``): the fusion colorizer's encoder
   (:mod:`~koala.tasks.colorize.models.fusion`, eight 3×3 convs, three of stride 2) on L,
   the precomputed embedding tiled and concatenated over its 28×28 grid, and a 1×1 conv:
   (B, 28, 28, ``pixel_filters``). The paper used the first three blocks of an ImageNet
   ResNet-101 on the gray image instead; koala reuses the fusion encoder and the embedder's
   global class evidence that the records already hold.
2. **Gated PixelCNN** (``pixelcnn``, :class:`GatedPixelCNN`; van den Oord et al. 2016) over
   the 28×28 chroma, in raster order. A vertical stack sees the rows above (its output is
   shifted down one row before it feeds the horizontal stack); the horizontal stack sees
   the pixels to the left in the same row (strictly left in the first layer, "mask A", then
   up to and including the pixel, "mask B"). Every gate gets the conditioning map through a
   1×1 conv (location-dependent conditioning). Cb and Cr are quantised to K = 32 equal bins
   of the BT.601 range each (:func:`chroma_bins`). The paper's factorisation
   p(y_i,r | y_<i, x) · p(y_i,b | y_i,r, y_<i, x) is exact here: Cr's logits at pixel i
   come from the stack's features h_i (which see y_<i only), Cb's from h_i plus an embedding
   of Cr at i. Training is teacher forcing: all pixels in parallel, the true chroma as
   input, per-pixel cross-entropy on both channels (``nll``, nats per channel).
3. **Sampling** (:meth:`PixColor.sample`): ancestral, pixel by pixel, with a temperature
   (logits / T) and Gumbel noise drawn statelessly from ``(seed, k)`` for sample k, so equal
   seeds give equal samples whatever the batch. The vertical stack is run once per row and
   the horizontal stack on the current row only (28 + 784 small passes instead of 784
   whole-image passes); :meth:`PixColor.sample_naive` is the plain version, kept for the
   test that the two agree.
4. **Refinement network** (``refine_net``): L and the 28×28 chroma upsampled bilinearly to
   S, three stride-2 convs to 28×28, then a decoder of bilinear ×2 upsamplings and 3×3
   convs back to S, tanh ab/128 (the paper: "similar to Let there be Color", bilinear
   upsampling instead of learned). It is trained on the *ground-truth* 28×28 chroma, as
   the paper argues, with MSE on ab (``refine_mse``); at inference it gets the PixelCNN's
   samples.

Departures and koala's choices (each a config field):

- ``pixel_layers``, ``pixel_filters`` (the paper's PixelCNN is larger; the CPU recipe uses
  a small stack), ``filters_scale`` on the conditioning and refinement widths.
- The refinement predicts CIE a*b* (koala's colour space everywhere else), not Cb/Cr; its
  output joins the image's own L* at full resolution like every koala colorizer.
- ``refine_weight`` weighs the refinement MSE in the one optimizer's loss (the gradients
  do not mix, so it only sets that network's effective learning rate).
- The refinement's decoder has BatchNorm after each upsampling and its last conv also sees
  L and the upsampled hints directly (a skip): at ¼ widths its 8-channel last ReLU layer
  died in the first preset run and the output ignored the hints (``refine_version`` 2;
  version 1, without them, still loads).
- ``train_parts="refine"`` trains the refinement alone, the other two frozen (with
  ``koala.train --init_from=... --init_skip=refine_net``), as the paper trains it apart.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from koala.ops import color
from koala.tasks.colorize.models.fusion import FusionLayer, _batch_norm, _conv, encoder

TRAIN_PARTS = ("all", "refine")
"""What ``fit`` trains: every network, or the refinement network alone (the others frozen)."""
DOWNSAMPLING = 8
"""S / s: the conditioning grid and the chroma are at 1/8 of the image (224 -> 28)."""
CHROMA_SCALE = 112.0
"""BT.601 studio-swing Cb and Cr span 128 ± 112 (koala.ops.color.rgb_to_ycbcr)."""
REFINE_ENCODER = ((64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (256, 1))
REFINE_DECODER = (128, 64, 32)  # each after a bilinear x2 upsampling

__all__ = ["GatedPixelCNN", "PixColor", "PixColorConfig", "chroma_bins", "chroma_values",
           "pixcolor", "pixcolor_small"]


@dataclasses.dataclass(frozen=True)
class PixColorConfig:
    """image_size: S, a multiple of 8; the chroma grid is S / 8. embedding_dim, embedder,
    embedder_weights, embedder_fit: the records' embedder (as the fusion model's).
    filters_scale: conditioning and refinement widths. pixel_layers, pixel_filters,
    pixel_kernel: the gated stack. chroma_levels: K bins per chroma channel. temperature:
    the default sampling temperature. refine_weight: the refinement MSE's weight."""

    image_size: int = 224
    embedding_dim: int = 1000
    embedder: str = "mobilenet"
    embedder_weights: str = "imagenet"
    embedder_fit: str = "pad"
    filters_scale: float = 1.0
    batch_norm: bool = True
    pixel_layers: int = 20
    pixel_filters: int = 128
    pixel_kernel: int = 3
    chroma_levels: int = 32
    temperature: float = 1.0
    refine_weight: float = 1.0
    train_parts: str = "all"
    refine_version: int = 2

    def __post_init__(self):
        checks = [
            (self.image_size > 0 and self.image_size % DOWNSAMPLING == 0,
             f"image_size must be a positive multiple of {DOWNSAMPLING}"),
            (self.embedding_dim > 0, "embedding_dim must be positive"),
            (self.filters_scale > 0, "filters_scale must be positive"),
            (self.pixel_layers >= 1, "pixel_layers must be >= 1"),
            (self.pixel_filters >= 1, "pixel_filters must be >= 1"),
            (self.pixel_kernel >= 2, "pixel_kernel must be >= 2"),
            (self.chroma_levels >= 2, "chroma_levels must be >= 2"),
            (self.temperature > 0, "temperature must be > 0"),
            (self.refine_weight >= 0, "refine_weight must be >= 0"),
            (self.train_parts in TRAIN_PARTS, f"train_parts must be one of {TRAIN_PARTS}"),
            (self.refine_version in (1, 2), "refine_version must be 1 or 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}, got {dataclasses.asdict(self)}")

    @property
    def grid(self) -> int:
        return self.image_size // DOWNSAMPLING

    def filters(self, paper_filters: int) -> int:
        return max(1, round(paper_filters * self.filters_scale))


def chroma_bins(l_norm, ab_norm, levels: int) -> tf.Tensor:
    """The 1/8-resolution chroma targets: normalised L (B, S, S, 1) and ab (B, S, S, 2) ->
    int32 (B, S/8, S/8, 2) bins of (Cr, Cb), each channel's BT.601 range [16, 240] cut into
    ``levels`` equal bins; the chroma is averaged over each 8×8 block (area downsampling)."""
    lab = tf.concat([color.denormalize_l(tf.cast(l_norm, tf.float32)),
                     color.denormalize_ab(tf.cast(ab_norm, tf.float32))], axis=-1)
    ycbcr = color.rgb_to_ycbcr(color.lab_to_srgb(lab))
    crcb = (tf.stack([ycbcr[..., 2], ycbcr[..., 1]], axis=-1) - 128.0) / CHROMA_SCALE
    crcb = tf.nn.avg_pool2d(crcb, DOWNSAMPLING, DOWNSAMPLING, "VALID")
    bins = tf.floor((crcb + 1.0) / 2.0 * levels)
    return tf.cast(tf.clip_by_value(bins, 0, levels - 1), tf.int32)


def chroma_values(bins, levels: int) -> tf.Tensor:
    """int (..., 2) bins -> float32 (..., 2) bin centres in [-1, 1] ((Cr, Cb) / 112)."""
    return (tf.cast(bins, tf.float32) + 0.5) / levels * 2.0 - 1.0


def _gate(pre):
    a, b = tf.split(pre, 2, axis=-1)
    return tf.tanh(a) * tf.sigmoid(b)


@keras.saving.register_keras_serializable(package="koala")
class GatedPixelCNN(keras.layers.Layer):
    """The gated PixelCNN over (B, s, s, 2) chroma bins, conditioned on (B, s, s, C).

    ``call([bins, cond])`` -> (Cr logits, Cb logits), each float32 (B, s, s, K): teacher
    forcing, every pixel at once. Causal: the logits at pixel i do not depend on the bins at
    pixels > i in raster order, nor Cr's at i on anything at i (see the module docstring).
    """

    def __init__(self, layers=20, filters=128, kernel=3, levels=32, **kwargs):
        super().__init__(**kwargs)
        self.n_layers, self.filters, self.kernel, self.levels = layers, filters, kernel, levels
        f, k = filters, kernel
        conv = keras.layers.Conv2D
        self.v_convs = [conv(2 * f, (k // 2 + 1, k), name=f"v{i}") for i in range(layers)]
        self.h_convs = [conv(2 * f, (1, k // 2 + 1), name=f"h{i}") for i in range(layers)]
        self.v_to_h = [conv(2 * f, 1, name=f"v_to_h{i}") for i in range(layers)]
        self.h_out = [conv(f, 1, name=f"h_out{i}") for i in range(layers)]
        self.cond_proj = [conv(4 * f, 1, use_bias=False, name=f"cond{i}") for i in range(layers)]
        self.head_hidden = conv(f, 1, name="head_hidden")
        self.cr_logits = conv(levels, 1, name="cr_logits", dtype="float32")
        self.cr_embed = keras.layers.Embedding(levels, f, name="cr_embed")
        self.cb_logits = conv(levels, 1, name="cb_logits", dtype="float32")

    def get_config(self):
        return {**super().get_config(), "layers": self.n_layers, "filters": self.filters,
                "kernel": self.kernel, "levels": self.levels}

    def build(self, input_shape):
        bins_shape, cond_shape = input_shape
        f, c_in = self.filters, 2
        for i in range(self.n_layers):
            self.v_convs[i].build((None, None, None, c_in))
            self.h_convs[i].build((None, None, None, c_in))
            self.v_to_h[i].build((None, None, None, 2 * f))
            self.h_out[i].build((None, None, None, f))
            self.cond_proj[i].build((None, None, None, cond_shape[-1]))
            c_in = f
        self.head_hidden.build((None, None, None, f))
        self.cr_logits.build((None, None, None, f))
        self.cr_embed.build((None, None, None))
        self.cb_logits.build((None, None, None, f))
        self.built = True

    def project(self, cond):
        """Per layer (vertical, horizontal) conditioning terms, each (B, s, s, 2F)."""
        return [tuple(tf.split(p(cond), 2, axis=-1)) for p in self.cond_proj]

    def inputs_of(self, bins):
        return tf.cast(chroma_values(bins, self.levels), self.compute_dtype)

    def vertical(self, x, cond_terms):
        """The vertical stack's pre-gate outputs, one (B, rows, s, 2F) per layer; row r of
        each sees input rows <= r (the caller shifts it down one row)."""
        k, out, v = self.kernel, [], x
        for conv, (cond_v, _) in zip(self.v_convs, cond_terms, strict=True):
            pre = conv(tf.pad(v, [[0, 0], [k // 2, 0], [k // 2, k // 2], [0, 0]])) + cond_v
            out.append(pre)
            v = _gate(pre)
        return out

    def horizontal(self, x, v_above, cond_terms):
        """The horizontal stack on whole rows: x (B, rows, s, 2) inputs, ``v_above`` the
        shifted vertical terms and the horizontal conditioning of the same rows ->
        features (B, rows, s, F); column c sees columns < c of x in the first layer."""
        k, h = self.kernel, x
        for i, (conv, (_, cond_h)) in enumerate(zip(self.h_convs, cond_terms, strict=True)):
            if i == 0:  # mask A: strictly left
                padded = tf.pad(h, [[0, 0], [0, 0], [k // 2 + 1, 0], [0, 0]])[:, :, :-1]
            else:  # mask B: up to and including the pixel
                padded = tf.pad(h, [[0, 0], [0, 0], [k // 2, 0], [0, 0]])
            pre = conv(padded) + self.v_to_h[i](v_above[i]) + cond_h
            out = self.h_out[i](_gate(pre))
            h = out if i == 0 else h + out
        return h

    def heads(self, h, cr_bins):
        """(Cr logits, Cb logits) float32 (..., K) from features h (..., F) and Cr's bins."""
        a = self.head_hidden(tf.nn.relu(h))
        cr = self.cr_logits(tf.nn.relu(a))
        embedded = tf.cast(self.cr_embed(cr_bins), a.dtype)
        cb = self.cb_logits(tf.nn.relu(a + embedded))
        return cr, cb

    def call(self, inputs):
        bins, cond = inputs
        bins = tf.cast(bins, tf.int32)
        x = self.inputs_of(bins)
        terms = self.project(cond)
        v_above = [_shift_down(v) for v in self.vertical(x, terms)]
        h = self.horizontal(x, v_above, terms)
        return self.heads(h, bins[..., 0])


def _shift_down(v):
    return tf.pad(v, [[0, 0], [1, 0], [0, 0], [0, 0]])[:, :-1]


def _rows(terms, start, size):
    return [(cv[:, start:start + size], ch[:, start:start + size]) for cv, ch in terms]


def _cond_net(config: PixColorConfig) -> keras.Model:
    size, dim = config.image_size, config.embedding_dim
    l_input = keras.Input((size, size, 1), name="l")
    embedding = keras.Input((dim,), name="embedding")
    x = FusionLayer(name="fusion")([encoder(l_input, config), embedding])
    x = _conv(config.pixel_filters, 1, "cond_out")(x)
    return keras.Model({"l": l_input, "embedding": embedding}, x, name="cond_net")


def _refine_net(config: PixColorConfig) -> keras.Model:
    size = config.image_size
    l_input = keras.Input((size, size, 1), name="l")
    hints = keras.Input((size, size, 2), name="chroma")
    x = keras.layers.Concatenate(name="inputs")([l_input, hints])
    for i, (filters, stride) in enumerate(REFINE_ENCODER, start=1):
        x = _conv(config.filters(filters), 3, f"enc_conv{i}", strides=stride)(x)
        if config.batch_norm and stride == 2:
            x = _batch_norm(f"enc_bn{i}")(x)
    for i, filters in enumerate(REFINE_DECODER, start=1):
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"dec_up{i}")(x)
        if config.batch_norm and config.refine_version >= 2:
            x = _batch_norm(f"dec_bn{i}")(x)
        x = _conv(config.filters(filters), 3, f"dec_conv{i}")(x)
    if config.refine_version >= 2:
        # The hints and L join the last conv directly: the output can always use the hints,
        # even where a thin ReLU layer has died (it did at 1/4 widths without this path).
        x = keras.layers.Concatenate(name="skip")([x, l_input, hints])
    x = _conv(2, 3, "ab_linear", activation=None)(x)
    ab = keras.layers.Activation("tanh", dtype="float32", name="ab")(x)
    return keras.Model({"l": l_input, "chroma": hints}, ab, name="refine_net")


@keras.saving.register_keras_serializable(package="koala")
class PixColor(keras.Model):
    """The three networks (module docstring). ``model({"l", "embedding"})`` -> ab/128
    (B, S, S, 2): one sample at the default temperature from seed 0. ``fit`` on the
    colorization records' ``({"l", "embedding"}, ab)`` batches trains the PixelCNN (teacher
    forcing) and the refinement network (on the true low-resolution chroma) at once; it logs
    ``loss``, ``nll`` (nats per chroma channel) and ``refine_mse``."""

    def __init__(self, name="pixcolor", **config):
        kwargs = {k: config.pop(k) for k in ("trainable", "dtype") if k in config}
        super().__init__(name=name, **kwargs)
        self.config = cfg = PixColorConfig(**config)
        self.cond_net = _cond_net(cfg)
        self.refine_net = _refine_net(cfg)
        self.pixelcnn = GatedPixelCNN(cfg.pixel_layers, cfg.pixel_filters, cfg.pixel_kernel,
                                      cfg.chroma_levels, name="pixelcnn")
        self.pixelcnn.build(((None, cfg.grid, cfg.grid, 2),
                             (None, cfg.grid, cfg.grid, cfg.pixel_filters)))
        self.refine_only = cfg.train_parts == "refine"
        if self.refine_only:  # the others keep their (--init_from) weights
            self.cond_net.trainable = False
            self.pixelcnn.trainable = False
        names = ("loss", "refine_mse") if self.refine_only else ("loss", "nll", "refine_mse")
        self._trackers = [keras.metrics.Mean(name=n) for n in names]
        self.built = True

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                **dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config):
        # Files saved before the refinement's version 2 (no field) hold version 1.
        return cls(**{"refine_version": 1, **config})

    @property
    def metrics(self):
        return list(self._trackers)

    # -- the parts ---------------------------------------------------------------------

    def condition(self, inputs, training=False):
        return self.cond_net({"l": inputs["l"], "embedding": inputs["embedding"]},
                             training=training)

    def refine(self, l, bins, training=False):
        """ab/128 (B, S, S, 2) from L and (B, s, s, 2) chroma bins."""
        hints = chroma_values(bins, self.config.chroma_levels)
        size = self.config.image_size
        hints = tf.image.resize(hints, (size, size), method="bilinear")
        return self.refine_net({"l": l, "chroma": hints}, training=training)

    def losses_of(self, inputs, ab, training=False):
        """``{"nll", "refine_mse"}`` float32 scalars for a batch of records (``refine_mse``
        alone when only the refinement trains)."""
        bins = chroma_bins(inputs["l"], ab, self.config.chroma_levels)
        pred = self.refine(inputs["l"], bins, training=training)
        mse = tf.reduce_mean(tf.square(tf.cast(pred, tf.float32) - tf.cast(ab, tf.float32)))
        if self.refine_only:
            return {"refine_mse": mse}
        cond = self.condition(inputs, training=training)
        cr, cb = self.pixelcnn([bins, cond])
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits
        nll = (tf.reduce_mean(ce(bins[..., 0], tf.cast(cr, tf.float32)))
               + tf.reduce_mean(ce(bins[..., 1], tf.cast(cb, tf.float32)))) / 2.0
        return {"nll": nll, "refine_mse": mse}

    def _loss(self, terms):
        return terms.get("nll", 0.0) + self.config.refine_weight * terms["refine_mse"]

    def train_step(self, data):
        inputs, ab = data[0], data[1]
        with tf.GradientTape() as tape:
            terms = self.losses_of(inputs, ab, training=True)
            loss = self._loss(terms)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._record(ab, {**terms, "loss": loss})

    def test_step(self, data):
        inputs, ab = data[0], data[1]
        terms = self.losses_of(inputs, ab)
        loss = self._loss(terms)
        return self._record(ab, {**terms, "loss": loss})

    def _record(self, ab, values):
        batch = tf.cast(tf.shape(ab)[0], tf.float32)
        for tracker in self._trackers:
            tracker.update_state(values[tracker.name], sample_weight=batch)
        return {t.name: t.result() for t in self._trackers}

    # -- sampling ----------------------------------------------------------------------

    def noise(self, seed: int, samples: int) -> tf.Tensor:
        """Gumbel noise (samples, s, s, 2, K) float32; sample k's from the seed (seed, k)."""
        s, k = self.config.grid, self.config.chroma_levels
        u = tf.stack([tf.random.stateless_uniform((s, s, 2, k), seed=[seed, i],
                                                  minval=1e-7, maxval=1.0)
                      for i in range(samples)])
        return -tf.math.log(-tf.math.log(u))

    def sample_bins(self, inputs, seed: int = 0, samples: int = 1,
                    temperature: float | None = None, naive: bool = False) -> tf.Tensor:
        """int32 (samples, B, s, s, 2) chroma bins drawn pixel by pixel (Cr, then Cb)."""
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive integer, got {samples!r}")
        t = self.config.temperature if temperature is None else float(temperature)
        if not t > 0:
            raise ValueError(f"temperature must be > 0, got {t}")
        cond = self.condition(inputs)  # (B, s, s, F), once per image
        b = tf.shape(cond)[0]
        g = self.noise(seed, samples)  # (N, s, s, 2, K)
        cond = tf.repeat(cond, samples, axis=0)  # row b * N + k
        g = tf.tile(g, [b, 1, 1, 1, 1])
        draw = self._draw_naive if naive else self._draw
        bins = draw(cond, g, tf.constant(t, tf.float32))
        s = self.config.grid
        return tf.transpose(tf.reshape(bins, (b, samples, s, s, 2)), (1, 0, 2, 3, 4))

    @tf.function(reduce_retracing=True)
    def _draw(self, cond, gumbel, temperature):
        net, s = self.pixelcnn, self.config.grid
        terms = net.project(cond)
        n = tf.shape(cond)[0]
        bins = tf.zeros((n, s, s, 2), tf.int32)
        for r in tf.range(s):
            tf.autograph.experimental.set_loop_options(
                shape_invariants=[(bins, tf.TensorShape([None, s, s, 2]))])
            x = net.inputs_of(bins)
            v_above = [_shift_down(v)[:, r:r + 1] for v in net.vertical(x, terms)]
            row_terms = _rows(terms, r, 1)
            for c in tf.range(s):
                h = net.horizontal(net.inputs_of(bins[:, r:r + 1]), v_above, row_terms)
                bins = _place(net, bins, h[:, 0, c], gumbel[:, r, c], temperature, r, c)
        return bins

    @tf.function(reduce_retracing=True)
    def _draw_naive(self, cond, gumbel, temperature):
        net, s = self.pixelcnn, self.config.grid
        n = tf.shape(cond)[0]
        bins = tf.zeros((n, s, s, 2), tf.int32)
        for i in tf.range(s * s):
            tf.autograph.experimental.set_loop_options(
                shape_invariants=[(bins, tf.TensorShape([None, s, s, 2]))])
            r, c = i // s, i % s
            x = net.inputs_of(bins)
            terms = net.project(cond)
            v_above = [_shift_down(v) for v in net.vertical(x, terms)]
            h = net.horizontal(x, v_above, terms)
            bins = _place(net, bins, h[:, r, c], gumbel[:, r, c], temperature, r, c)
        return bins

    def sample(self, inputs, seed: int = 0, samples: int = 1,
               temperature: float | None = None) -> tf.Tensor:
        """``samples`` colourings: (samples, B, S, S, 2) float32 ab/128, each the refinement
        of one PixelCNN sample; equal seeds give equal samples."""
        bins = self.sample_bins(inputs, seed, samples, temperature)  # (N, B, s, s, 2)
        s = self.config.grid
        # One refinement call for every sample: row k * B + b is sample k of image b.
        l = tf.tile(inputs["l"], [samples, 1, 1, 1])
        ab = self.refine(l, tf.reshape(bins, (-1, s, s, 2)))
        return tf.reshape(ab, (samples, -1, *ab.shape[1:]))

    def call(self, inputs, training=False):
        return self.sample(inputs, 0, 1)[0]


def _place(net, bins, h, gumbel, temperature, r, c):
    """Draws Cr then Cb at pixel (r, c) from features h (N, F) and writes them into bins."""
    h = h[:, None, None, :]
    cr_logits, _ = net.heads(h, tf.zeros(tf.shape(h)[:-1], tf.int32))
    cr = tf.argmax(cr_logits[:, 0, 0] / temperature + gumbel[:, 0], axis=-1, output_type=tf.int32)
    _, cb_logits = net.heads(h, cr[:, None, None])
    cb = tf.argmax(cb_logits[:, 0, 0] / temperature + gumbel[:, 1], axis=-1, output_type=tf.int32)
    n = tf.shape(bins)[0]
    index = tf.stack([tf.range(n), tf.fill([n], r), tf.fill([n], c)], axis=1)
    return tf.tensor_scatter_nd_update(bins, index, tf.stack([cr, cb], axis=1))


def pixcolor(**kwargs) -> PixColor:
    """The default model (20 gated layers of 128, the fusion encoder's widths)."""
    return PixColor(**kwargs)


def pixcolor_small(**kwargs) -> PixColor:
    """Small widths and 3 layers at 32 px (a 4×4 chroma grid): tests and smoke runs."""
    return PixColor(**{"filters_scale": 0.125, "pixel_layers": 3, "pixel_filters": 16,
                       "chroma_levels": 8, **kwargs})


def parameter_counts(model: PixColor) -> dict:
    """Parameters of each part."""
    return {name: int(sum(np.prod(w.shape) for w in part.weights))
            for name, part in (("cond_net", model.cond_net), ("pixelcnn", model.pixelcnn),
                               ("refine_net", model.refine_net))}
