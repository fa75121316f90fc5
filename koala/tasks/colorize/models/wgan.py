"""WGAN-GP: the two-player training that ColorGAN and Lal et al.'s colorizer share.

Paper: I. Gulrajani, F. Ahmed, M. Arjovsky, V. Dumoulin, A. Courville, "Improved Training of
Wasserstein GANs", NeurIPS 2017 (arXiv:1704.00028), Algorithm 1: per generator update,
``n_critic`` critic updates on

    L_D = mean D(fake) - mean D(real) + λ_gp mean_b (‖∇_â D(â)‖_2 - 1)^2,
    â = ε real + (1 - ε) fake,  ε ~ U(0, 1) per sample,

then one generator update on the generator's loss, whose adversarial part is -mean D(fake).
The critic is Isola et al.'s PatchGAN ("Image-to-Image Translation with Conditional
Adversarial Networks", CVPR 2017, the 70 x 70 discriminator; ``critic_widths`` (64, 128, 256,
512)), on concat(l, ab) (B, H, W, 3); "LN" is LayerNormalization over channels, kernels
N(0, 0.02), LeakyReLU(0.2)::

    c1         conv4/64/2, LReLU                 H/2 x W/2 x 64        3 136
    c2         conv4/128/2, LN, LReLU            H/4 x W/4 x 128     131 456
    c3         conv4/256/2, LN, LReLU            H/8 x W/8 x 256     525 056
    c4         conv4/512, LN, LReLU              H/8 x W/8 x 512   2 098 688
    score      conv4/1, no bias (linear, float32) H/8 x W/8 x 1        8 192
    total 2 766 528 (LN: 2c parameters, gamma and beta); (16, 32, 64): 43 056

:class:`WGANGP` is the Keras model that owns the loop: ``compile`` with two optimizers (and
their saving), the n-critic ``train_step``, ``test_step``, loss scaling, the replica average
and the stateless seeds. A model (:class:`~koala.tasks.colorize.models.colorgan.ColorGAN`,
:class:`~koala.tasks.colorize.models.lal.LalColorizer`) sets ``self.generator`` and
``self.critic`` and fills in its terms (BasicSR's ``esrgan_model.py`` over ``srgan_model.py``)::

    generator_pass(inputs, seed, training) -> (fake_ab, aux)   the generator's forward pass
    generator_loss(l, ab, fake_ab, aux, training) -> (terms, loss)   the generator's terms
    critic_view(l, ab, fake_ab) -> (l, real_ab, fake_ab)   what the critic sees (default: as is)
    unpack(data) -> (inputs, l, ab)                        a batch (default: ({"l"} or l, ab))
    generator_variables                                    what the generator step trains
    default_optimizers()                                   (generator's, critic's)

and the class attributes ``noisy_generator`` and ``test_critic`` (see :class:`WGANGP`).

Departures and choices (each applies to both models):

1. **Critic**: no BatchNorm (it would make the gradient penalty depend on the batch);
   LayerNormalization over the channels of each position instead (Gulrajani et al.'s advice;
   ``norm="none"`` drops it). No sigmoid. "same" padding, so the score map is (B, H/8, W/8, 1)
   for the paper widths. The score conv has no bias (it would never get a gradient).
2. **Critic value and GP**: a sample's critic value is the *mean* of its patch scores, as the
   Wasserstein terms use it; the gradient penalty constrains that mean's gradient with respect
   to the interpolated *ab* (L is the condition, equal for real and fake), per sample, over all
   of its values.
3. **n_critic** critic steps reuse the step's batch (Algorithm 1 draws a fresh real batch for
   each) with fresh noise and ε. A generator without noise (``noisy_generator = False``) gives
   the same output to every critic step: it runs once, and the generator step reuses that
   output against the updated critic.
4. **Stateless seeds**: inside ``train_step``/``test_step`` the generator's noise and the GP's ε
   are drawn statelessly (:func:`step_seed`) from the optimizers' step counters and the replica
   id: a pure function of the step (a resumed run sees the same draws), different on every
   replica, and no state variable is written in replica context under ``tf.distribute``.
   Validation uses one fixed seed, so ``val_loss`` compares checkpoints on equal terms.
5. **Replicas and precision**: each loss is divided by the replicas in sync (tf.distribute sums
   the gradients) and multiplied by the optimizer's loss scale (``scale_loss``, a no-op unless
   the optimizer is a LossScaleOptimizer); under mixed_float16 both optimizers are wrapped.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from koala.core.errors import KoalaError
from koala.tasks.colorize.models.fusion import AB_CHANNELS

__all__ = [
    "CRITIC_NORMS",
    "WGANGP",
    "check_config",
    "check_positive_int",
    "check_widths",
    "critic_network",
    "default_optimizers",
    "gradient_penalty",
    "pix2pix_conv",
    "step_seed",
]

INIT_STDDEV = 0.02  # pix2pix / DCGAN kernels
LEAK = 0.2  # LeakyReLU slope, pix2pix
CRITIC_NORMS = ("layer", "none")
TRAIN_SEED = 20_231_104
# Stateless streams (departure 4); critic step k uses stream + 4 k.
CRITIC_NOISE, CRITIC_EPSILON, GENERATOR_NOISE, VALIDATION = 0, 1, 2, 3
STREAMS_PER_CRITIC_STEP = 4


# ----------------------------------------------------------------------------------------
# The critic and its penalty


def pix2pix_conv(filters, kernel, name, strides=1, use_bias=True):
    """A "same" Conv2D with pix2pix's N(0, 0.02) kernels."""
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=use_bias,
        kernel_initializer=keras.initializers.RandomNormal(0.0, INIT_STDDEV), name=name)


def check_widths(name, widths, minimum=2):
    """``widths`` as a tuple of at least ``minimum`` positive ints (else ValueError)."""
    widths = tuple(widths)
    if len(widths) < minimum or any(
            not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
        raise ValueError(f"{name} must be at least {minimum} positive integers, got {widths}")
    return widths


def check_positive_int(name, value):
    """``value`` if it is a positive int (not a bool), else ValueError."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_config(config, weights=()):
    """Checks a frozen config's WGAN-GP fields (ValueError): ``critic_widths`` (stored back as
    a tuple: a list arrives from a reloaded .keras file's JSON, and configs must compare),
    ``critic_norm``, ``n_critic``, and ``gp_weight`` and the named ``weights`` >= 0."""
    widths = check_widths("critic_widths", config.critic_widths)
    object.__setattr__(config, "critic_widths", widths)
    if config.critic_norm not in CRITIC_NORMS:
        raise ValueError(f"critic_norm must be one of {CRITIC_NORMS}, "
                         f"got {config.critic_norm!r}")
    for name in (*weights, "gp_weight"):
        if not getattr(config, name) >= 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    check_positive_int("n_critic", config.n_critic)


def critic_network(widths=(64, 128, 256, 512), norm: str = "layer",
                   name: str = "critic") -> keras.Model:
    """The PatchGAN critic: concat(l, ab) (B, H, W, 3) -> scores (B, H/s, W/s, 1) float32,
    s = 2 ** (len(widths) - 1); no sigmoid (Wasserstein), no BatchNorm (departure 1)."""
    widths = check_widths("critic_widths", widths)
    if norm not in CRITIC_NORMS:
        raise ValueError(f"critic_norm must be one of {CRITIC_NORMS}, got {norm!r}")
    lab = keras.Input((None, None, 3), name="lab")
    x = lab
    for i, width in enumerate(widths, start=1):
        strides = 1 if i == len(widths) else 2
        x = pix2pix_conv(width, 4, f"c{i}", strides=strides)(x)
        if i > 1 and norm == "layer":
            x = keras.layers.LayerNormalization(axis=-1, epsilon=1e-5, name=f"c{i}_ln")(x)
        x = keras.layers.LeakyReLU(LEAK, name=f"c{i}_lrelu")(x)
    # No bias: a constant shift of every score cancels in mean D(fake) - mean D(real) and
    # leaves the gradient penalty unchanged, so it would never get a gradient.
    x = pix2pix_conv(1, 4, "score_conv", use_bias=False)(x)
    score = keras.layers.Activation("linear", dtype="float32", name="score")(x)
    return keras.Model(lab, score, name=name)


def gradient_penalty(critic, l, real_ab, fake_ab, epsilon):
    """WGAN-GP's penalty (Gulrajani et al. 2017): mean_b (‖∇_â D(l, â)‖_2 - 1)^2.

    l (B, H, W, 1); real_ab, fake_ab (B, H, W, 2); epsilon (B, 1, 1, 1) in [0, 1];
    â = ε real + (1 - ε) fake. D(l, â) is a sample's mean patch score of ``critic`` on
    concat(l, â); the gradient is taken with respect to â (departure 2). Returns a float32
    scalar, differentiable with respect to the critic's weights.
    """
    real_ab = tf.cast(real_ab, tf.float32)
    fake_ab = tf.cast(fake_ab, tf.float32)
    l = tf.cast(l, tf.float32)
    mixed = epsilon * real_ab + (1.0 - epsilon) * fake_ab
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        scores = tf.cast(critic(tf.concat([l, mixed], axis=-1), training=True), tf.float32)
        value = tf.reduce_mean(scores, axis=[1, 2, 3])  # (B,), one value per sample
        total = tf.reduce_sum(value)  # ∂total/∂â_b = ∂value_b/∂â_b
    grads = tape.gradient(total, mixed)
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) + 1e-12)
    return tf.reduce_mean(tf.square(norms - 1.0))


# ----------------------------------------------------------------------------------------
# Seeds and optimizers


def replica_id() -> tf.Tensor:
    """The replica's index in its sync group, int64 (0 outside tf.distribute)."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return tf.constant(0, tf.int64)
    return tf.cast(context.replica_id_in_sync_group, tf.int64)


def step_seed(stream: int, step, replica=None) -> tf.Tensor:
    """A stateless seed (2,) int64 from a stream id, a step counter and a replica id (the
    current replica's when None): equal arguments give equal seeds (departure 4)."""
    seed = tf.constant([TRAIN_SEED, stream], tf.int64)
    seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(step, tf.int64))
    replica = replica_id() if replica is None else tf.cast(replica, tf.int64)
    return tf.random.experimental.stateless_fold_in(seed, replica)


def default_optimizers(g_learning_rate: float = 1e-4, d_learning_rate: float = 1e-4):
    """WGAN-GP's optimizers (Gulrajani et al. 2017): Adam(β = (0.5, 0.9)) at 1e-4 for both."""
    return (keras.optimizers.Adam(g_learning_rate, beta_1=0.5, beta_2=0.9, name="g_adam"),
            keras.optimizers.Adam(d_learning_rate, beta_1=0.5, beta_2=0.9, name="d_adam"))


def _inner(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


# ----------------------------------------------------------------------------------------
# The model


class WGANGP(keras.Model):
    """A generator (``self.generator``) and a critic (``self.critic``, scores of concat(l, ab))
    trained as a WGAN-GP; a subclass fills in its terms (module docstring).

    ``terms`` are the logged names, in order; ``"loss"`` (the generator's loss, which the
    trainer's checkpoint monitor reads) is always logged. Class attributes:
    ``noisy_generator`` (True: the generator runs once per critic step and once more for the
    generator step, each with its own seed; False: once per training step, departure 3) and
    ``test_critic`` (True: ``test_step`` also reports the critic's terms).

    ``compile(g_optimizer, d_optimizer)``: the generator's optimizer becomes
    ``self.optimizer`` (Keras' own, so LearningRateScheduler, saving and mixed-precision
    wrapping apply to it), the critic's ``self.d_optimizer``. Missing ones come from the
    class's ``default_optimizers()``; ``optimizer`` is an alias of ``g_optimizer``; ``loss``
    must be None (the losses are the model's own). Both optimizers are built at compile time,
    each on its own variables, and both are saved and restored with the model.
    """

    noisy_generator = True
    test_critic = True
    default_optimizers = staticmethod(default_optimizers)

    def __init__(self, *, terms, n_critic: int = 1, gp_weight: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        if "loss" not in terms:
            raise ValueError(f"terms must include 'loss', got {terms}")
        self.n_critic = int(n_critic)
        self.gp_weight = float(gp_weight)
        self.d_optimizer = None
        self._trackers = [keras.metrics.Mean(name=n) for n in terms]

    # -- what a model fills in --------------------------------------------------------

    def unpack(self, data):
        """fit/evaluate data ``({"l", ...} or l, ab[, sample_weight])`` -> (inputs, l, ab),
        inputs what :meth:`generator_pass` takes (here l), l and ab float32."""
        x, ab = data[0], data[1]
        l = tf.cast(x["l"] if isinstance(x, dict) else x, tf.float32)
        return l, l, tf.cast(ab, tf.float32)

    def generator_pass(self, inputs, seed, training):
        """``(fake_ab (B, H, W, 2), aux)``: the generator on ``inputs``, with noise drawn from
        the stateless ``seed`` (2,) int64 (a generator without noise ignores it); ``aux`` is
        whatever else :meth:`generator_loss` needs."""
        raise NotImplementedError

    def generator_loss(self, l, ab, fake_ab, aux, training):
        """``(terms, loss)``: the generator's float32 terms (a dict of scalars) and the total
        it minimises, for the truth ab and the pass's ``(fake_ab, aux)``."""
        raise NotImplementedError

    def critic_view(self, l, ab, fake_ab):
        """``(l, real_ab, fake_ab)`` as the critic sees them, float32 (here unchanged)."""
        return tuple(tf.cast(x, tf.float32) for x in (l, ab, fake_ab))

    @property
    def generator_variables(self):
        """What the generator step trains (here the generator's trainable variables)."""
        return self.generator.trainable_variables

    # -- shared terms -----------------------------------------------------------------

    def score(self, l, ab, training):
        """The critic's patch scores of concat(l, ab): (B, h, w, 1) float32."""
        lab = tf.concat([tf.cast(l, tf.float32), tf.cast(ab, tf.float32)], axis=-1)
        return tf.cast(self.critic(lab, training=training), tf.float32)

    def critic_terms(self, l, ab, fake_ab, epsilon, training=True):
        """``({"d_loss", "gp"}, d_loss)``, float32: mean D(fake) - mean D(real) + λ_gp GP.

        l (B, H, W, 1), ab (B, H, W, 2) the truth, fake_ab (B, H, W, 2) the generator's
        output (no gradient flows into it), epsilon (B, 1, 1, 1) in [0, 1]; all go through
        :meth:`critic_view` first.
        """
        l, real, fake = self.critic_view(l, ab, fake_ab)
        fake = tf.stop_gradient(fake)
        wasserstein = (tf.reduce_mean(self.score(l, fake, training))
                       - tf.reduce_mean(self.score(l, real, training)))
        gp = gradient_penalty(self.critic, l, real, fake, epsilon)
        d_loss = wasserstein + self.gp_weight * gp
        return {"d_loss": d_loss, "gp": gp}, d_loss

    def epsilon(self, l, stream, step):
        """The GP's ε (B, 1, 1, 1) ~ U(0, 1), drawn from :func:`step_seed`."""
        return tf.random.stateless_uniform(tf.stack([tf.shape(l)[0], 1, 1, 1]),
                                           seed=step_seed(stream, step))

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["l"]
        return (*tuple(input_shape)[:3], AB_CHANNELS)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- compile ----------------------------------------------------------------------

    def compile(self, g_optimizer=None, d_optimizer=None, *, optimizer=None, loss=None,
                **kwargs):
        if loss is not None:
            raise ValueError(f"{self.name} computes its own losses; compile it with loss=None")
        if g_optimizer is not None and optimizer is not None:
            raise ValueError("pass g_optimizer or optimizer, not both")
        g_optimizer = g_optimizer if g_optimizer is not None else optimizer
        default_g, default_d = self.default_optimizers()
        g_optimizer = keras.optimizers.get(g_optimizer if g_optimizer is not None else default_g)
        d_optimizer = keras.optimizers.get(d_optimizer if d_optimizer is not None else default_d)
        if _inner(g_optimizer) is _inner(d_optimizer):
            raise ValueError("the generator and the critic need two optimizer instances")
        super().compile(optimizer=g_optimizer, **kwargs)
        # Keras wraps only self.optimizer under mixed_float16: wrap the critic's the same way.
        if (kwargs.get("auto_scale_loss", True) and self.dtype_policy.name == "mixed_float16"
                and not isinstance(d_optimizer, keras.optimizers.LossScaleOptimizer)):
            d_optimizer = keras.optimizers.LossScaleOptimizer(
                d_optimizer, name="d_loss_scale_optimizer")
        self.d_optimizer = d_optimizer
        self.optimizer.build(self.generator_variables)
        self.d_optimizer.build(self.critic.trainable_variables)

    @property
    def g_optimizer(self):
        return self.optimizer

    def get_compile_config(self):
        if not self.compiled:
            return {}
        return {"g_optimizer": keras.saving.serialize_keras_object(_inner(self.optimizer)),
                "d_optimizer": keras.saving.serialize_keras_object(_inner(self.d_optimizer))}

    def compile_from_config(self, config):
        self.compile(g_optimizer=keras.saving.deserialize_keras_object(config["g_optimizer"]),
                     d_optimizer=keras.saving.deserialize_keras_object(config["d_optimizer"]))

    # -- training ---------------------------------------------------------------------

    @property
    def metrics(self):
        return list(self._trackers)

    def _record(self, l, values):
        batch = tf.cast(tf.shape(l)[0], tf.float32)
        logs = {}
        for tracker in self._trackers:
            if tracker.name in values:
                tracker.update_state(values[tracker.name], sample_weight=batch)
                logs[tracker.name] = tracker.result()
        return logs

    def train_step(self, data):
        if self.d_optimizer is None:
            raise KoalaError(f"{self.name}: compile(g_optimizer, d_optimizer) before fit")
        inputs, l, ab = self.unpack(data)
        # Gradients are summed over replicas under tf.distribute: average them instead.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        critic_vars = self.critic.trainable_variables
        g_vars = self.generator_variables
        g_seed = step_seed(GENERATOR_NOISE, self.optimizer.iterations)
        with tf.GradientTape() as g_tape:
            output = None if self.noisy_generator else self.generator_pass(inputs, g_seed, True)
            d_terms = None
            with g_tape.stop_recording():
                for k in range(self.n_critic):
                    # Read afresh each time: the counter moves with every applied update.
                    step = self.d_optimizer.iterations
                    stream = STREAMS_PER_CRITIC_STEP * k
                    fake = (self.generator_pass(inputs, step_seed(CRITIC_NOISE + stream, step),
                                                True) if output is None else output)[0]
                    epsilon = self.epsilon(l, CRITIC_EPSILON + stream, step)
                    with tf.GradientTape() as d_tape:
                        d_terms, d_loss = self.critic_terms(l, ab, fake, epsilon, training=True)
                        # Multiplies by the loss scale under mixed precision (divided back
                        # out in apply), a no-op otherwise.
                        scaled = self.d_optimizer.scale_loss(d_loss / replicas)
                    self.d_optimizer.apply(d_tape.gradient(scaled, critic_vars), critic_vars)
            if output is None:
                output = self.generator_pass(inputs, g_seed, True)
            # Against the updated critic.
            g_terms, g_loss = self.generator_loss(l, ab, *output, training=True)
            scaled = self.optimizer.scale_loss(g_loss / replicas)
        self.optimizer.apply(g_tape.gradient(scaled, g_vars), g_vars)
        return self._record(l, {**d_terms, **g_terms, "loss": g_loss})

    def test_step(self, data):
        inputs, l, ab = self.unpack(data)
        # One fixed noise and ε for every validation batch and epoch (departure 4).
        fake, aux = self.generator_pass(inputs, step_seed(VALIDATION, 0), False)
        terms, loss = self.generator_loss(l, ab, fake, aux, training=False)
        if self.test_critic:
            d_terms, _ = self.critic_terms(l, ab, fake, self.epsilon(l, VALIDATION, 1),
                                           training=False)
            terms = {**d_terms, **terms}
        return self._record(l, {**terms, "loss": loss})
