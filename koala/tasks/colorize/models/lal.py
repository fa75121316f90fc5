"""Adversarial colorization with classification: the fusion colorizer's classification head
trained against a WGAN critic (SPEC §5).

Paper: S. Lal, V. Garg, O. P. Verma, "Automatic Image Colorization Using Adversarial
Training", ICSIP 2017 (doi:10.1145/3163080.3163104), as summarised in
``seeds/colorization_survey_en.txt``; the paper itself and its code are not in the project.
It builds on Zhang, Isola & Efros 2016 ("Colorful Image Colorization"): the generator
predicts a distribution over quantised ab bins, trained with a class-rebalanced
cross-entropy and decoded by the annealed mean; Lal et al. add a Wasserstein critic on
(L, ab) and a semantic classification head.

Here the generator is koala's fusion colorizer with ``head="classification"``
(:class:`koala.tasks.colorize.models.fusion.FusionColorizer`, which documents the bins, the
loss and the decoding), the critic is the PatchGAN that ColorGAN uses too
(:func:`koala.tasks.colorize.models.wgan.critic_network`), and the training is
:class:`koala.tasks.colorize.models.wgan.WGANGP`'s. Inputs and output are the fusion model's::

    "l"          (B, S, S, 1)  float32, L / 50 - 1 in [-1, 1]
    "embedding"  (B, D)        float32, the frozen classifier's softmax (koala.ops.embedder)
    output       (B, S, S, 2)  float32, ab / 128 in [-1, 1]: the generator's decoded ab

so ``predict``, :class:`koala.tasks.colorize.inference.Colorizer` and :mod:`koala.cli.evaluate`
treat it as a fusion model (``model.config`` is the generator's
:class:`~koala.tasks.colorize.models.fusion.FusionConfig`; the loss weights and the critic are in
``model.lal_config``, a :class:`LalConfig`).

Objective (SPEC §5: L = λ1·L_co + λ2·L_cl + λ3·L_g), every term a float32 mean::

    G:  loss     = λ1 class_ce + λ2 semantic_ce + λ3 g_adv
        class_ce = rebalanced cross-entropy of the bin distribution  (L_co; the generator's
                   :meth:`~koala.tasks.colorize.models.fusion.FusionColorizer.classification_loss`)
        semantic_ce = cross-entropy of the class head's softmax against the image's class
                   targets (L_cl; only with λ2 > 0, see departure 1)
        g_adv    = -mean critic(l↓, ab↓_fake)                        (L_g, Wasserstein)
    D:  d_loss   = mean critic(l↓, ab↓_fake) - mean critic(l↓, ab↓_real) + λ_gp gp
        gp       = WGAN-GP's penalty (:func:`koala.tasks.colorize.models.wgan.gradient_penalty`)

where ↓ is a x2 average pooling to the grid of the bin distribution, S/2 (see departure 2).
``ab_mse`` (the decoded ab's MSE against the truth at S, the regression model's loss) is
logged for comparison.

Parameter counts (D = 1000): paper size (``lal``, S = 224, BN) generator 6 651 494
(the fusion table with the classification head), critic 2 766 528 (the table in wgan), total
9 418 022; ``lal_small`` (S = 64, 1/8 of the fusion filters, critic (16, 32, 64)) generator
141 074, critic 43 056.

Departures and choices (the survey gives no layer sizes, no λ values and no optimizer):

1. **L_cl, the semantic classification term** (``semantic_weight`` λ2 > 0): as the survey
   describes, a class head on the generator's last feature layer (the decoder's last conv,
   (B, S/2, S/2, 32·scale), :meth:`FusionColorizer.classify_features
   <koala.tasks.colorize.models.fusion.FusionColorizer.classify_features>`): global average
   pooling and one dense layer to K class logits (``class_head``; the survey gives no
   layers: the smallest head that makes the features carry the class). It trains with the
   generator. Targets (``class_targets``):

   * ``"embedding"`` (the default, offline): the precomputed embedder softmax every record
     holds (the "embedding" input, K = its 1000 classes) as soft targets, ``-Σ t log q``.
     **This is distillation from the frozen ImageNet classifier, a departure**: Lal et al.
     train on ground-truth class labels, which koala's photos do not have.
   * ``"labels"``: integer class labels (the "label" input, K = ``num_classes``), sparse
     softmax cross-entropy, as the paper.

   With λ2 = 0 (the default, :data:`TERMS`) no head is built and the model is the one
   earlier koala versions saved.
2. **The critic sees the prediction's grid**, as in Lal et al. (their 64 x 64 x 2 ab
   concatenated with L): (l, ab) are average-pooled x2 to S/2, where the fusion generator
   predicts its distribution (its S-sized output repeats each prediction in a 2 x 2 block,
   fusion departure 9, so the pooling recovers it exactly). A critic at S would see the
   true ab's detail inside each 2 x 2 block, which no prediction can have, and could tell
   fake from real by that alone. The pooled truth is the one the cross-entropy uses.
3. **Critic**: ColorGAN's PatchGAN (LayerNorm, no BN, no sigmoid; ``critic_widths``
   (64, 128, 256, 512); wgan, departure 1). Lal et al.'s critic layers are not given.
4. **WGAN-GP** (Gulrajani et al. 2017, λ_gp = 10) enforces the critic's Lipschitz bound;
   the survey describes a WGAN without saying how. ε ~ U(0, 1) per sample is drawn
   statelessly from the critic optimizer's step counter and the replica id (wgan,
   departure 4).
5. **Loss weights**: the survey gives none. λ1 = 1 (the cross-entropy at its own scale, as in
   Zhang et al.), λ3 = 0.1 (the adversarial weight ColorGAN's paper uses, SPEC §4: the
   critic's scores are unbounded, so the adversarial term is kept a small correction to the
   cross-entropy), λ2 = 0 (departure 1). ``n_critic`` = 1 (two-time-scale, as ColorGAN);
   WGAN-GP's 5 is ``n_critic=5``.
6. **Optimizers** (:func:`default_optimizers`): Adam(1e-4, β = (0.5, 0.9)) for both, WGAN-GP's
   settings (Gulrajani et al.). ``compile(optimizer=...)`` replaces the generator's.
7. **Bins and resolution** are the fusion head's (Q = 262, S/2; its departures 7-9), the
   annealed mean is its in-graph decoding (T = 0.38).
8. **One generator pass per step**: the generator takes no noise, so its output is the same
   for every critic step of a training step; it runs once (BatchNorm in training mode), the
   critic steps use that output, then the generator step reuses it against the updated
   critic (``noisy_generator = False``, wgan departure 3). ColorGAN runs its generator once
   per critic step (its noise changes).
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

from koala.core.errors import KoalaError
from koala.tasks.colorize.models import wgan
from koala.tasks.colorize.models.fusion import FusionColorizer, FusionConfig
from koala.tasks.colorize.models.wgan import critic_network, default_optimizers

__all__ = [
    "LalColorizer",
    "LalConfig",
    "CLASS_TARGETS",
    "TERMS",
    "TEST_TERMS",
    "default_optimizers",
    "lal",
    "lal_small",
    "semantic_cross_entropy",
]

# Logged in this order; "loss" is the generator's total loss. With semantic_weight > 0,
# "semantic_ce" follows "class_ce".
TERMS = ("loss", "class_ce", "g_adv", "d_loss", "gp", "ab_mse")
TEST_TERMS = ("loss", "class_ce", "g_adv", "ab_mse")
CLASS_TARGETS = ("embedding", "labels")
"""What ``evaluate`` (and ``val_*``) reports: no critic update, so no d_loss or gp."""
CRITIC_POOL = 2
"""The fusion generator predicts at S/2: the critic sees (l, ab) pooled by 2 (departure 2)."""


@dataclasses.dataclass(frozen=True)
class LalConfig:
    """The adversarial part of :class:`LalColorizer` (the generator's is a FusionConfig).

    colorization_weight: λ1, weight of the class-rebalanced cross-entropy L_co (1).
    semantic_weight:     λ2, weight of the semantic classification loss L_cl (0: no class
                         head; module docstring, departure 1).
    class_targets:       "embedding" (soft targets: the records' embedder softmax) or
                         "labels" (integer class labels).
    num_classes:         K with class_targets="labels" (0: the embedding's size, for
                         "embedding").
    adversarial_weight:  λ3, weight of the Wasserstein generator loss L_g (0.1; the survey
                         gives no value, departure 5).
    gp_weight:           λ_gp of WGAN-GP (10).
    n_critic:            critic updates per generator update (1).
    critic_widths:       the PatchGAN's widths (ColorGAN's (64, 128, 256, 512)).
    critic_norm:         "layer" (LayerNormalization) or "none".
    """

    colorization_weight: float = 1.0
    semantic_weight: float = 0.0
    adversarial_weight: float = 0.1
    gp_weight: float = 10.0
    n_critic: int = 1
    critic_widths: tuple[int, ...] = (64, 128, 256, 512)
    critic_norm: str = "layer"
    class_targets: str = "embedding"
    num_classes: int = 0

    def __post_init__(self):
        wgan.check_config(self, weights=("colorization_weight", "semantic_weight",
                                          "adversarial_weight"))
        if self.class_targets not in CLASS_TARGETS:
            raise ValueError(f"class_targets must be one of {CLASS_TARGETS}, "
                             f"got {self.class_targets!r}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.semantic_weight > 0 and self.class_targets == "labels" and self.num_classes < 2:
            raise ValueError("class_targets='labels' needs num_classes >= 2 (the records' "
                             "class count)")

    @property
    def semantic(self) -> bool:
        return self.semantic_weight > 0


def semantic_cross_entropy(logits, targets, class_targets: str = "embedding"):
    """L_cl (departure 1): mean over the batch of the cross-entropy of softmax(logits).

    logits (B, K); targets a distribution (B, K) (``"embedding"``: ``-Σ t log q``, soft
    targets, renormalised to sum to 1) or integer labels (B,) or (B, 1) (``"labels"``).
    Returns a float32 scalar.
    """
    logits = tf.cast(logits, tf.float32)
    if class_targets == "labels":
        labels = tf.reshape(tf.cast(targets, tf.int32), [-1])
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    t = tf.cast(targets, tf.float32)
    t = t / tf.maximum(tf.reduce_sum(t, axis=-1, keepdims=True), 1e-12)
    return tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(t, logits))


def _pool(x):
    """(B, S, S, C) -> (B, S/2, S/2, C), float32: the critic's grid (departure 2)."""
    return tf.nn.avg_pool2d(tf.cast(x, tf.float32), CRITIC_POOL, CRITIC_POOL, "VALID")


@keras.saving.register_keras_serializable(package="koala")
class LalColorizer(wgan.WGANGP):
    """A classification fusion colorizer (``generator``) and a PatchGAN (``critic``),
    trained with the objective of SPEC §5 (see the module docstring).

    ``model(inputs)`` / ``predict`` give the generator's ab (B, S, S, 2) for
    ``{"l", "embedding"}``; :meth:`classify` gives ``(probs, ab)``. ``model.config`` is the
    generator's FusionConfig (size, embedder), ``model.lal_config`` the :class:`LalConfig`.
    Keyword arguments are the fields of both (``head`` may only be "classification").

    Training (:class:`~koala.tasks.colorize.models.wgan.WGANGP`): ``compile(g_optimizer,
    d_optimizer)`` (defaults :func:`default_optimizers`), then ``fit`` on
    ``({"l", "embedding"}, ab)`` batches; logs :data:`TERMS` (evaluation: :data:`TEST_TERMS`).
    """

    noisy_generator = False  # departure 8
    test_critic = False  # TEST_TERMS

    def __init__(self, name: str = "lal", **config):
        kwargs = {k: config.pop(k) for k in ("trainable", "dtype") if k in config}
        head = config.pop("head", "classification")
        if head != "classification":
            raise ValueError(f"{name}: the generator has the classification head, not {head!r}")
        lal_fields = {f.name for f in dataclasses.fields(LalConfig)}
        self.lal_config = LalConfig(**{k: config.pop(k) for k in list(config)
                                       if k in lal_fields})
        generator_config = FusionConfig(head="classification", **config)
        terms = TERMS[:2] + ("semantic_ce",) + TERMS[2:] if self.lal_config.semantic else TERMS
        super().__init__(name=name, terms=terms, n_critic=self.lal_config.n_critic,
                         gp_weight=self.lal_config.gp_weight, **kwargs)
        self.generator = FusionColorizer(name="generator", **dataclasses.asdict(generator_config))
        # The generator's config (image size, embedder): what koala.tasks.colorize.inference
        # needs.
        self.config = self.generator.config
        self.critic = critic_network(self.lal_config.critic_widths, self.lal_config.critic_norm,
                                     name="critic")
        self.class_head = None
        if self.lal_config.semantic:  # departure 1
            k = self.lal_config.num_classes or generator_config.embedding_dim
            self.class_head = keras.Sequential(
                [keras.layers.GlobalAveragePooling2D(name="class_pool"),
                 keras.layers.Dense(k, dtype="float32", name="class_logits")],
                name="class_head")
            size = generator_config.image_size // 2
            self.class_head.build((None, size, size, generator_config.filters(32)))
        self.built = True

    # -- inference ---------------------------------------------------------------------

    def call(self, inputs, training=None):
        return self.generator(inputs, training=training)

    def classify(self, inputs, training=False):
        """``(probs (B, S/2, S/2, Q), ab (B, S, S, 2))``, float32 (the generator's)."""
        return self.generator.classify(inputs, training=training)

    def get_config(self):
        generator = self.generator.get_config()
        for key in ("name", "trainable", "head"):
            generator.pop(key)
        lal = dataclasses.asdict(self.lal_config)
        lal["critic_widths"] = list(lal["critic_widths"])
        return {"name": self.name, "trainable": self.trainable, **generator, **lal}

    # -- the WGAN-GP terms (wgan.WGANGP) -----------------------------------------------

    def unpack(self, data):
        """fit/evaluate data ``({"l", "embedding"[, "label"]}, ab[, sample_weight])`` ->
        (inputs, l, ab); "label" is needed with class_targets="labels"."""
        x, ab, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not isinstance(x, dict) or not {"l", "embedding"} <= set(x):
            raise KoalaError("LalColorizer trains on ({'l': ..., 'embedding': ...}, ab) batches")
        if self.class_head is not None and self.lal_config.class_targets == "labels" \
                and "label" not in x:
            raise KoalaError("class_targets='labels' needs a 'label' input: records built "
                             "with build_records --labels_from=dirname")
        return x, tf.cast(x["l"], tf.float32), tf.cast(ab, tf.float32)

    def generator_pass(self, inputs, seed, training):
        """``(ab (B, S, S, 2), aux)``; aux is the bin probabilities (B, S/2, S/2, Q), and with
        the semantic term ``(probs, class logits (B, K), class targets)``. The generator
        takes no noise, so ``seed`` is unused."""
        net_inputs = {k: inputs[k] for k in ("l", "embedding")}  # not "label"
        if self.class_head is None:
            probs, fake = self.classify(net_inputs, training=training)
            return fake, probs
        probs, fake, features = self.generator.classify_features(net_inputs, training=training)
        logits = self.class_head(features, training=training)
        key = "label" if self.lal_config.class_targets == "labels" else "embedding"
        return fake, (probs, logits, inputs[key])

    @property
    def generator_variables(self):
        """The generator's trainable variables and the class head's (trained with it)."""
        head = self.class_head.trainable_variables if self.class_head is not None else []
        return self.generator.trainable_variables + head

    def critic_view(self, l, ab, fake_ab):
        """l, ab and fake_ab average-pooled x2 to the prediction's grid (departure 2)."""
        return _pool(l), _pool(ab), _pool(fake_ab)

    def generator_terms(self, inputs, ab, training=True):
        """``({"loss", "class_ce", "g_adv", "ab_mse"}, loss)``, float32.

        inputs ``{"l": (B, S, S, 1), "embedding": (B, D)}``, ab (B, S, S, 2) the truth.
        """
        fake, probs = self.generator_pass(inputs, None, training)
        return self.generator_loss(inputs["l"], ab, fake, probs, training)

    def generator_loss(self, l, ab, fake_ab, aux, training):
        """:meth:`generator_terms` of the decoded ab fake_ab (B, S, S, 2) and ``aux`` from
        :meth:`generator_pass`."""
        cfg = self.lal_config
        fake = tf.cast(fake_ab, tf.float32)
        probs = aux if self.class_head is None else aux[0]
        terms = {
            "class_ce": self.generator.classification_loss(probs, ab),
            "g_adv": -tf.reduce_mean(self.score(_pool(l), _pool(fake), training)),
            "ab_mse": tf.reduce_mean(tf.square(fake - ab)),
        }
        loss = cfg.colorization_weight * terms["class_ce"] + cfg.adversarial_weight * terms[
            "g_adv"]
        if self.class_head is not None:  # λ2 L_cl (departure 1)
            terms["semantic_ce"] = semantic_cross_entropy(aux[1], aux[2], cfg.class_targets)
            loss = loss + cfg.semantic_weight * terms["semantic_ce"]
        terms["loss"] = loss
        return terms, loss


def lal(**kwargs) -> LalColorizer:
    """The paper-size model: the fusion classification colorizer (S = 224, FusionConfig's
    defaults) and ColorGAN's paper critic; keyword arguments override any field of
    :class:`~koala.tasks.colorize.models.fusion.FusionConfig` (except ``head``) or
    :class:`LalConfig`."""
    return LalColorizer(**kwargs)


def lal_small(**kwargs) -> LalColorizer:
    """A small model for tests and CPU smoke runs (not for results): ``fusion_small``'s sizes
    (``filters_scale=0.125, image_size=64``) and ``colorgan_small``'s critic (16, 32, 64);
    keyword arguments override any field."""
    small = {"filters_scale": 0.125, "image_size": 64, "critic_widths": (16, 32, 64)}
    return LalColorizer(**{**small, **kwargs})
