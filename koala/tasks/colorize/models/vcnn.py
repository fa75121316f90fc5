"""Deep patch-wise colorization (Liang et al. 2016): two VCNNs predict U and V of a patch.

Paper: X. Liang, Z. Su, Y. Xiao, J. Guo, X. Luo, "Deep patch-wise colorization model for
grayscale images", SIGGRAPH Asia 2016 Technical Briefs, as summarised in
``seeds/colorization_survey_en.txt`` (SPEC §5); the paper's layer sizes and code are not in
the project. The survey's author calls the method weak; koala runs it as described.

YUV (BT.601, :func:`koala.ops.color.rgb_to_yuv`): the network sees Y of a 64×64 patch and
predicts U and V of its centre 56×56, the 4-pixel border giving every output pixel its
neighbours. Two networks of the same architecture, one per channel ("u_net", "v_net"),
inside one Keras model::

    input "y"      (B, 64, 64, 1)   float32, Y in [0, 1]
    output         (B, 56, 56, 2)   float32, (U, V) in [-U_MAX, U_MAX] x [-V_MAX, V_MAX]

Each network (``filters_scale=1``; "same" padding, ReLU unless marked)::

    layer        kernel / filters    output          params
    conv1        11x11 / 64          64 x 64 x 64     7 808
    conv2         4x4 / 64           64 x 64 x 64    65 600
    conv3         3x3 / 128          64 x 64 x 128   73 856
    conv4         3x3 / 64           64 x 64 x 64    73 792
    conv5         1x1 / 64           64 x 64 x 64     4 160
    logits        1x1 / K (linear)   64 x 64 x K      65 K      (K = uv_bins = 32: 2 080)
    crop          centre 56          56 x 56 x K          0
    softmax, expectation over the K bin centres -> 56 x 56 x 1
    total per network 227 296 (K = 32); the model 454 592

What the survey leaves open and koala chooses:

1. **Layer sizes and order.** The survey names the kernels (11×11, 4×4, 3×3, 1×1) and a
   VGG-like design; the widths and depth above are koala's, the smallest stack with those
   kernels whose receptive field (18 px) exceeds the 4-pixel border. "Same" padding and a
   centre crop give 56 from 64 (valid convolutions with these kernels cannot land on 56).
2. **"Vectorized" convolution** (VCNN) is an implementation trick for speed (im2col); a Keras
   convolution computes the same function, so it is not reproduced.
3. **The log loss on a real-valued U** (``L = -Σ U log Û``): each channel's range is cut into
   ``uv_bins`` equal bins; the network outputs a softmax over them, and the log loss is the
   cross-entropy against the true value's bin, soft-encoded linearly between the two
   nearest bin centres (so it keeps the value, not only its bin). The prediction Û is the
   distribution's expectation over the bin centres, so MSE applies to the same head.
4. **Schedule.** MSE for ``mse_steps`` optimizer steps (the survey: 100 iterations), then the
   two losses alternate, ``alternate_every`` steps each, log loss first.
5. **Optimizer**: the survey says SGD; koala's flagfiles use Adam (``--optimizer``), a flag.
6. **Inference** (:func:`colorize_uv`): the image is padded by 4 pixels (edge-replicated)
   and to a multiple of 56; 64×64 windows at stride 56 tile it so that their centres cover
   every pixel exactly once; U and V go through the guided filter (radius 40, ε = 1e-4, the
   gray image as guide) as in the paper.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from koala.core.errors import KoalaError

PATCH = 64
CENTRE = 56
BORDER = (PATCH - CENTRE) // 2
U_MAX = 0.436  # |U| = 0.492 |B - Y| <= 0.436 for sRGB in [0, 1]
V_MAX = 0.615  # |V| = 0.877 |R - Y| <= 0.615
LAYERS = ((11, 64), (4, 64), (3, 128), (3, 64), (1, 64))
"""(kernel, paper-scale filters) of each ReLU conv before the bin logits."""

__all__ = ["BORDER", "CENTRE", "PATCH", "VCNN", "VCNNConfig", "bin_centres", "colorize_uv",
           "soft_bins", "tile_origins", "vcnn", "vcnn_small"]


@dataclasses.dataclass(frozen=True)
class VCNNConfig:
    """filters_scale: multiplies every width (1 = the table). uv_bins: K, bins per channel.
    mse_steps: steps of MSE alone before the alternation. alternate_every: steps per loss
    in the alternation (log loss first)."""

    filters_scale: float = 1.0
    uv_bins: int = 32
    mse_steps: int = 100
    alternate_every: int = 1

    def __post_init__(self):
        if not self.filters_scale > 0:
            raise ValueError(f"filters_scale must be > 0, got {self.filters_scale}")
        if self.uv_bins < 2:
            raise ValueError(f"uv_bins must be >= 2, got {self.uv_bins}")
        if self.mse_steps < 0 or self.alternate_every < 1:
            raise ValueError("mse_steps must be >= 0 and alternate_every >= 1")

    @property
    def image_size(self) -> int:
        return PATCH


def bin_centres(k: int, limit: float) -> np.ndarray:
    """K equal bins over [-limit, limit]: their centres, float32 (K,)."""
    edges = np.linspace(-limit, limit, k + 1, dtype=np.float64)
    return ((edges[:-1] + edges[1:]) / 2).astype(np.float32)


def soft_bins(value, centres) -> tf.Tensor:
    """(...,) values -> (..., K) targets: weight split linearly between the two nearest bin
    centres (clamped at the ends), summing to 1; their expectation is the value itself
    (within the centres' range)."""
    centres = tf.constant(centres, tf.float32)
    k = centres.shape[0]
    step = centres[1] - centres[0]
    pos = tf.clip_by_value((tf.cast(value, tf.float32) - centres[0]) / step, 0.0, k - 1.0)
    low = tf.minimum(tf.floor(pos), k - 2.0)
    frac = pos - low
    low = tf.cast(low, tf.int32)
    return (tf.one_hot(low, k) * (1.0 - frac)[..., None]
            + tf.one_hot(low + 1, k) * frac[..., None])


def _channel_net(config: VCNNConfig, name: str) -> keras.Model:
    y = keras.Input((None, None, 1), name="y")
    x = y
    for i, (kernel, filters) in enumerate(LAYERS, start=1):
        width = max(1, round(filters * config.filters_scale))
        x = keras.layers.Conv2D(width, kernel, padding="same", activation="relu",
                                name=f"conv{i}")(x)
    logits = keras.layers.Conv2D(config.uv_bins, 1, name="logits")(x)
    return keras.Model(y, logits, name=name)


@keras.saving.register_keras_serializable(package="koala")
class VCNN(keras.Model):
    """The two channel networks; ``model(y)`` -> (B, 56, 56, 2) (U, V) for a (B, 64, 64, 1)
    Y patch (any (B, H, W, 1) gives (B, H - 8, W - 8, 2)); :meth:`distributions` gives each
    channel's bin probabilities. ``fit`` on ``(y, uv)`` batches (uv the centre's truth)
    follows the schedule of the module docstring and logs ``loss``, ``mse`` and ``log_loss``.
    """

    def __init__(self, name="vcnn", **config):
        kwargs = {k: config.pop(k) for k in ("trainable", "dtype") if k in config}
        super().__init__(name=name, **kwargs)
        self.config = VCNNConfig(**config)
        self.u_net = _channel_net(self.config, "u_net")
        self.v_net = _channel_net(self.config, "v_net")
        k = self.config.uv_bins
        self._centres = (bin_centres(k, U_MAX), bin_centres(k, V_MAX))
        self._trackers = [keras.metrics.Mean(name=n) for n in ("loss", "mse", "log_loss")]
        self.build((None, PATCH, PATCH, 1))

    def build(self, input_shape):
        self.u_net.build(input_shape)
        self.v_net.build(input_shape)
        self.built = True

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                **dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def distributions(self, y, training=False):
        """(U probs, V probs), each (B, H - 8, W - 8, K) float32: the centre's softmax."""
        out = []
        for net in (self.u_net, self.v_net):
            logits = net(y, training=training)[:, BORDER:-BORDER, BORDER:-BORDER]
            out.append(tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1))
        return tuple(out)

    def _expect(self, probs):
        return tf.stack([tf.reduce_sum(p * c, axis=-1) for p, c in
                         zip(probs, self._centres, strict=True)], axis=-1)

    def call(self, y, training=False):
        return self._expect(self.distributions(y, training=training))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        shrink = 2 * BORDER
        return (b, None if h is None else h - shrink, None if w is None else w - shrink, 2)

    @property
    def metrics(self):
        return list(self._trackers)

    def losses_of(self, y, uv, training=False):
        """``{"mse", "log_loss"}`` float32 scalars for a batch: Y (B, 64, 64, 1) and the
        centre's true (U, V) (B, 56, 56, 2)."""
        probs = self.distributions(y, training=training)
        uv = tf.cast(uv, tf.float32)
        mse = tf.reduce_mean(tf.square(self._expect(probs) - uv))
        log_loss = 0.0
        for c, (p, centres) in enumerate(zip(probs, self._centres, strict=True)):
            target = soft_bins(uv[..., c], centres)
            log_loss += -tf.reduce_mean(tf.reduce_sum(target * tf.math.log(p + 1e-7), -1))
        return {"mse": mse, "log_loss": log_loss / 2.0}

    def uses_log_loss(self, step) -> tf.Tensor:
        """Whether optimizer step ``step`` (0-based) trains on the log loss (schedule 4)."""
        cfg = self.config
        step = tf.cast(step, tf.int64)
        after = step - cfg.mse_steps
        return tf.logical_and(after >= 0, (after // cfg.alternate_every) % 2 == 0)

    def train_step(self, data):
        y, uv = data[0], data[1]
        use_log = self.uses_log_loss(self.optimizer.iterations)
        with tf.GradientTape() as tape:
            terms = self.losses_of(y, uv, training=True)
            loss = tf.where(use_log, terms["log_loss"], terms["mse"])
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._record(y, {**terms, "loss": loss})

    def test_step(self, data):
        y, uv = data[0], data[1]
        terms = self.losses_of(y, uv)
        return self._record(y, {**terms, "loss": terms["mse"]})  # validation: MSE

    def _record(self, y, values):
        batch = tf.cast(tf.shape(y)[0], tf.float32)
        for tracker in self._trackers:
            tracker.update_state(values[tracker.name], sample_weight=batch)
        return {t.name: t.result() for t in self._trackers}


def vcnn(**kwargs) -> VCNN:
    """The table's model (``filters_scale=1``, K = 32)."""
    return VCNN(**kwargs)


def vcnn_small(**kwargs) -> VCNN:
    """¼ of the widths, K = 8: tests and smoke runs (not for results)."""
    return VCNN(**{"filters_scale": 0.25, "uv_bins": 8, **kwargs})


def tile_origins(length: int) -> list[int]:
    """Top (or left) coordinates, in the padded image, of the windows along one side: the
    image of ``length`` pixels is padded by BORDER before and up to a multiple of CENTRE
    (+ BORDER) after; window i starts at ``i * CENTRE`` and its centre covers image pixels
    ``[i * CENTRE, (i + 1) * CENTRE)``."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    return list(range(0, -(-length // CENTRE) * CENTRE, CENTRE))


def colorize_uv(model: VCNN, y: np.ndarray, *, batch_size: int = 16) -> np.ndarray:
    """Predicted (U, V) (H, W, 2) float32 for a whole Y image (H, W) in [0, 1], any size:
    64×64 windows whose 56×56 centres tile it (:func:`tile_origins`), edges replicated."""
    y = np.asarray(y, np.float32)
    if y.ndim != 2 or min(y.shape) < 1:
        raise KoalaError(f"expected a 2-D Y image, got shape {y.shape}")
    h, w = y.shape
    rows, cols = tile_origins(h), tile_origins(w)
    padded = np.pad(y, ((BORDER, rows[-1] + PATCH - BORDER - h),
                        (BORDER, cols[-1] + PATCH - BORDER - w)), mode="edge")
    windows = [(r, c) for r in rows for c in cols]
    out = np.zeros((rows[-1] + CENTRE, cols[-1] + CENTRE, 2), np.float32)
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        patches = np.stack([padded[r:r + PATCH, c:c + PATCH] for r, c in chunk])[..., None]
        uv = model(tf.constant(patches), training=False).numpy()
        for (r, c), pred in zip(chunk, uv, strict=True):
            out[r:r + CENTRE, c:c + CENTRE] = pred
    return out[:h, :w]
