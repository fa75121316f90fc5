"""Invertible Grayscale: a colour image -> a grayscale that decodes back to colour (SPEC §2).

Paper: M. Xia, X. Liu, T.-T. Wong, "Invertible Grayscale", ACM Trans. Graph. 37(6)
(SIGGRAPH Asia 2018); authors' code ``MenghanXia/InvertibleGrayscale`` (TF 1.6). Source notes
(paper summary and a Chainer re-implementation): ``seeds/invertible_grayscale_notes_ja.txt``.

An encoder E turns a colour image I into a grayscale G = E(I) that looks like an ordinary
grayscale photo; a decoder D restores R = D(G) ~ I. Both are plain conv nets (no bias, no
BatchNorm, kernels N(0, 0.02)); their input and output are in [0, 1] here (departure 1)::

    encoder  rgb  (B, H, W, 3) sRGB in [0, 1], H and W multiples of 4
             gray (B, H, W, 1) in [0, 1], float32
    decoder  gray (B, H, W, 1) in [0, 1] -> rgb (B, H, W, 3) in [0, 1], float32

Layer tables for the paper sizes (f = 64); every conv is "same", has no bias, and k x k
from c_in to c_out channels has k*k*c_in*c_out parameters. "res(c)" is a residual block
conv3/c + ReLU -> conv3/c, plus the identity: 2 * 9 * c * c parameters::

    encoder                       output             params
    input "rgb"  [0,1] -> [-1,1]  H x W x 3
    conv_in      conv3/64         H x W x 64           1 728
    res1_1..2    2 x res(64)      H x W x 64         147 456   => s1
    down1_a      conv3/128/2      H/2 x W/2 x 128     73 728
    down1_b      conv3/128 ReLU   H/2 x W/2 x 128    147 456   => s2
    down2_a      conv3/256/2      H/4 x W/4 x 256    294 912
    down2_b      conv3/256 ReLU   H/4 x W/4 x 256    589 824
    res2_1..4    4 x res(256)     H/4 x W/4 x 256  4 718 592
    up1          nearest x2       H/2 x W/2 x 256          0
    up1_a        conv3/128        H/2 x W/2 x 128    294 912
    up1_b        conv3/128 ReLU   H/2 x W/2 x 128    147 456   + s2
    up2          nearest x2       H x W x 128              0
    up2_a        conv3/64         H x W x 64          73 728
    up2_b        conv3/64 ReLU    H x W x 64          36 864   + s1
    res3_1..2    2 x res(64)      H x W x 64         147 456
    conv_out     conv3/1, tanh    H x W x 1              576
    gray         [-1,1] -> [0,1]  H x W x 1                0
    total 6 674 688

    decoder
    input "gray" [0,1] -> [-1,1]  H x W x 1
    conv_in      conv3/64         H x W x 64             576
    res1..8      8 x res(64)      H x W x 64         589 824
    conv_wide    conv3/256        H x W x 256        147 456   (no activation)
    conv_out     conv1/3, tanh    H x W x 3              768
    rgb          [-1,1] -> [0,1]  H x W x 3                0
    total 738 624

Widths scale with ``filters``: f, 2f, 4f in the encoder, f and 4f in the decoder.

Loss (SPEC §2), on the [-1, 1] scale, terms in :mod:`koala.tasks.codec.losses`::

    L = w_V * L_V + w_l * l_l + w_c * l_c + w_s * l_s + w_Q * L_Q

with per-stage weights from a preset (:data:`PRESETS`, :meth:`InvertibleGrayscale.loss_weights`)::

    preset   stage  invertibility  lightness  contrast   structure  quantization
    paper    1      1              1          1e-7       0.5        0
    paper    2      1              0.5        0.5e-7     0.25       10
    authors  1      3              1          1e-7       0.5        0
    authors  2      3              1          1e-7       0.1        10 * 2/255 (departure 5)

"paper" is L_V + w1 (l_l + a l_c + b l_s) + w2 L_Q with a = 1e-7, b = 0.5 and (w1, w2) =
(1, 0) in stage 1, (0.5, 10) in stage 2; its contrast is the L1 distance of VGG19 conv4_4
(``block4_conv4``) features. "authors" is the authors' code: ``3 MSE + 1e-7 VGG + 0.5 TV +
lightness`` then ``3 MSE + 1e-7 VGG + 0.1 TV + lightness + 10 quant``, contrast = MSE of
VGG19 conv4_1 (``block4_conv1``). Both resize the two images to 224 before the network
(``perceptual_size``), as the authors' code does.

Training runs in two stages (90 + 30 epochs in the paper): :class:`CodecStages` switches the
model's ``stage`` variable at ``stage2_epoch`` and gives the optimizer a fresh state there.

Departures from the paper and the authors' code:

1. **Scale**: the models take and return [0, 1] images (like every koala model and the
   data pipeline) and rescale to the paper's [-1, 1] inside (a ``Rescaling`` layer at each
   end). The losses convert back to [-1, 1], so their values are the paper's.
2. **No quantization in the forward pass**: ``call`` feeds the *un-quantized* G to the
   decoder, in training and in inference, as the paper and code do; only L_Q pushes G onto
   the 256 levels. Evaluation must round G to 8 bits (a real PNG round trip) and decode
   that, which ``model.decoder`` alone does.
3. **Local structure** is the paper's per-pixel L1 of horizontal and vertical finite
   differences (:func:`koala.tasks.codec.losses.structure`) in both presets. The authors' "TV" term
   is
   different: ``|mean_b TV(G) - mean_b TV(Y)| / 256^2``, a difference of *global* total
   variations, which lets local structure move as long as the total is unchanged; it is not
   implemented.
4. **Contrast** is a *mean* over the feature map in both presets (the authors' code uses
   ``tf.losses.mean_squared_error``, a mean; the paper does not say). With a = 1e-7 the term
   is tiny next to the others either way.
5. **Quantization units**: L_Q here is in grey levels (0..255), as SPEC §2 defines it, so
   it lies in [0, 0.5]. The authors' code measures the same distance on [-1, 1], i.e.
   2/255 of it; the "authors" preset's weight 10 is therefore 10 * 2/255 here, which gives
   the code's objective exactly. "paper" keeps w2 = 10 on grey levels.
6. **Fresh Adam at the switch**: the code builds a second Adam for stage 2; here
   :class:`CodecStages` zeroes the optimizer's moments and iteration count instead. The
   learning rate is a variable set per epoch by the trainer (the code's polynomial decay is
   over global steps, which the fresh Adam did not reset), so it is left alone.
7. **Perceptual network**: ImageNet VGG19 can't be downloaded offline; ``perceptual_net=
   "mobilenet"`` with the project's ImageNet MobileNet (layer ``conv_pw_5_relu``, also
   stride 8) is the offline alternative, ``perceptual_weights="none"`` a random one for
   smoke runs, ``contrast_weight=0`` drops the term (see :mod:`koala.ops.perceptual`).
8. ``codec_small`` (f = 16, fewer residual blocks) exists for tests and CPU smoke runs, not
   for results. Any H, W that are multiples of 4 work (the paper trains on 256 x 256 crops).
9. **Stage 2 that does not collapse** (issue 14; off by default, the paper's behaviour):
   with w2 = 10 on grey levels (0..255, SPEC §2) the quantization gradient, 255 w2 per unit
   of G, dwarfs the restoration's; under a fresh Adam it drives a small encoder's tanh into
   saturation within a few epochs (G turns black and white, L_Q reaches 0, restoration
   breaks; tests/test_codec_stages.py reproduces it). ``quant_unit="signed"`` gives w2 in
   the authors' code's unit ([-1, 1], 2/255 of a grey level), which does not collapse;
   ``quant_ste=True`` also feeds the decoder, in stage 2, G rounded to 8 bits with a
   straight-through gradient, so the decoder learns the input a PNG gives it. Validation
   always decodes the rounded G (``compute_terms(..., rounded=True)``): the held-out
   ``invertibility`` is the error a user gets, and best.keras follows it.
10. **Residual ends** (``residual=True``, issue 14; off by default): the encoder's last
    convolution adds to the luma, G' = clip(Y(I') + z, -1, 1), and the decoder's to the gray,
    R' = clip(G' + z, -1, 1) per channel, instead of a tanh. No trainable parameter is added
    (the luma is a frozen 1x1 convolution). A small encoder then starts at the luma, so the
    grayscale conforms from the first step, and a small decoder spends its capacity on the
    colour rather than on re-drawing the gray's detail.
11. **Structure weight** (``structure_weight``, issue 14; None = the preset's beta): the
    local-structure term is what damps the fine pattern G hides colour in. Alone, a lower
    beta also lets G drift from luma (held out: 27.9 -> 24.5 dB at beta = 0); with beta = 0
    a tighter theta (15 grey levels) holds G near luma while the pattern stays free. The
    ``codec`` preset's step 2 uses both (docs/models/codec.md).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from koala.core.errors import KoalaError
from koala.tasks.codec import losses
from koala.tasks.codec.networks import DOWNSAMPLING, decoder, encoder

__all__ = [
    "CodecConfig",
    "CodecStages",
    "InvertibleGrayscale",
    "LossPreset",
    "LossWeights",
    "PRESETS",
    "TERMS",
    "codec",
    "codec_small",
    "decoder",
    "encoder",
    "reset_optimizer",
]

TERMS = ("invertibility", "lightness", "contrast", "structure", "quantization")
STAGES = (1, 2)
QUANT_UNITS = ("levels", "signed")  # L_Q's weight in grey levels or on [-1, 1] (departure 9)
PERCEPTUAL_NETS = ("vgg19", "mobilenet")
ALPHA = 1e-7  # the paper's contrast weight a
AUTHORS_QUANT_UNIT = 2 / 255  # the authors' L_Q is on [-1, 1]: 2/255 of ours (departure 5)


# ----------------------------------------------------------------------------------------
# Loss presets


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """The weight of each loss term in one stage (see the module docstring's table)."""

    invertibility: float
    lightness: float
    contrast: float
    structure: float
    quantization: float

    def as_tuple(self) -> tuple[float, ...]:
        """The weights in ``TERMS`` order."""
        return tuple(getattr(self, t) for t in TERMS)


@dataclasses.dataclass(frozen=True)
class LossPreset:
    """Per-stage weights plus the contrast term's VGG19 layer and distance.

    ``stages[s - 1]`` holds stage s's weights; their contrast entries were computed with
    a = ``alpha``, so a ``contrast_weight`` override a' scales them by a' / a.
    """

    stages: tuple[LossWeights, LossWeights]
    vgg_layer: str
    distance: str
    alpha: float = ALPHA
    quant_unit: str = "levels"  # the unit its quantization weights are in (QUANT_UNITS)


def _paper_stage(w1: float, w2: float, alpha=ALPHA, beta=0.5) -> LossWeights:
    # L_V + w1 (l_l + a l_c + b l_s) + w2 L_Q
    return LossWeights(1.0, w1, w1 * alpha, w1 * beta, w2)


PRESETS = {
    "paper": LossPreset(
        stages=(_paper_stage(1.0, 0.0), _paper_stage(0.5, 10.0)),
        vgg_layer="block4_conv4", distance="l1",
    ),
    "authors": LossPreset(
        stages=(
            LossWeights(3.0, 1.0, ALPHA, 0.5, 0.0),
            LossWeights(3.0, 1.0, ALPHA, 0.1, 10.0 * AUTHORS_QUANT_UNIT),
        ),
        vgg_layer="block4_conv1", distance="mse", quant_unit="signed",
    ),
}


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """Hyper-parameters of :class:`InvertibleGrayscale` (defaults = the paper).

    encoder_filters, encoder_res_blocks, decoder_filters, decoder_res_blocks:
        the networks' sizes (see :func:`encoder`, :func:`decoder`).
    loss_preset:        "paper" or "authors" (:data:`PRESETS`).
    theta:              lightness slack on the [-1, 1] scale (70/127).
    perceptual_net:     "vgg19" (the paper) or "mobilenet" (offline alternative).
    perceptual_weights: "imagenet", "none" or a weights file (:mod:`koala.ops.perceptual`).
    perceptual_layer:   the feature layer; None = the preset's VGG19 layer, or
                        MobileNet's ``conv_pw_5_relu``.
    perceptual_size:    both images are resized to this square before the network (224,
                        as the authors' code); 0 = no resize.
    contrast_weight:    a, the contrast weight (None = the preset's 1e-7; in "paper" stage 2
                        it is multiplied by w1 = 0.5 like the other conformity terms). 0
                        drops the contrast term: no perceptual network is needed at all.
    quant_unit:         the unit L_Q's weight w2 is given in: "levels" (SPEC §2's 0..255,
                        the paper preset's w2 = 10 as written) or "signed" (the authors'
                        code's [-1, 1] scale: the same w2 times 2/255). None = the preset's.
                        Departure 9.
    quant_ste:          in stage 2 the decoder sees G rounded to 8 bits, with a
                        straight-through gradient (departure 9); False = the paper's
                        un-quantized G.
    residual:           the encoder adds to the luma and the decoder to the gray instead of
                        ending in tanh (departure 10); False = the paper.
    structure_weight:   beta, the local-structure weight inside w1's bracket (None = the
                        preset's: 0.5 in the paper, 0.5 / 0.1 in the authors' stages);
                        departure 11. It is the term that damps the pattern G hides colour
                        in: lower means more colour through, G further from luma's edges.
    """

    encoder_filters: int = 64
    encoder_res_blocks: tuple[int, int, int] = (2, 4, 2)
    decoder_filters: int = 64
    decoder_res_blocks: int = 8
    loss_preset: str = "paper"
    theta: float = losses.THETA
    perceptual_net: str = "vgg19"
    perceptual_weights: str = "imagenet"
    perceptual_layer: str | None = None
    perceptual_size: int = 224
    contrast_weight: float | None = None
    quant_unit: str | None = None
    quant_ste: bool = False
    residual: bool = False
    structure_weight: float | None = None

    def __post_init__(self):
        # Lists arrive from a reloaded .keras file's JSON: store tuples, so configs compare.
        object.__setattr__(self, "encoder_res_blocks", tuple(self.encoder_res_blocks))
        if self.loss_preset not in PRESETS:
            raise ValueError(f"loss_preset must be one of {sorted(PRESETS)}, "
                             f"got {self.loss_preset!r}")
        if self.perceptual_net not in PERCEPTUAL_NETS:
            raise ValueError(f"perceptual_net must be one of {PERCEPTUAL_NETS}, "
                             f"got {self.perceptual_net!r}")
        if not isinstance(self.perceptual_weights, str) or not self.perceptual_weights:
            raise ValueError("perceptual_weights must be 'imagenet', 'none' or a path, got "
                             f"{self.perceptual_weights!r}")
        if not isinstance(self.perceptual_size, int) or self.perceptual_size < 0:
            raise ValueError(f"perceptual_size must be a non-negative integer, "
                             f"got {self.perceptual_size!r}")
        if not self.theta >= 0:
            raise ValueError(f"theta must be non-negative, got {self.theta}")
        if self.contrast_weight is not None and not self.contrast_weight >= 0:
            raise ValueError(f"contrast_weight must be >= 0 or None, got {self.contrast_weight}")
        if self.structure_weight is not None and not self.structure_weight >= 0:
            raise ValueError(f"structure_weight must be >= 0 or None, "
                             f"got {self.structure_weight}")
        if self.quant_unit not in (None, *QUANT_UNITS):
            raise ValueError(f"quant_unit must be one of {QUANT_UNITS} or None, "
                             f"got {self.quant_unit!r}")

    @property
    def preset(self) -> LossPreset:
        return PRESETS[self.loss_preset]

    @property
    def contrast_layer(self) -> str:
        """The perceptual layer the contrast term uses (the override, else the default)."""
        if self.perceptual_layer:
            return self.perceptual_layer
        if self.perceptual_net == "vgg19":
            return self.preset.vgg_layer
        from koala.ops.perceptual import NETS  # the MobileNet default lives there

        return NETS[self.perceptual_net].default_layer

    @property
    def contrast_distance(self) -> str:
        return self.preset.distance

    def loss_weights(self, stage: int) -> LossWeights:
        """The term weights of ``stage`` (1 or 2), with the contrast override applied."""
        if stage not in STAGES:
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        weights = self.preset.stages[stage - 1]
        if self.contrast_weight is not None:
            scaled = weights.contrast * self.contrast_weight / self.preset.alpha
            weights = dataclasses.replace(weights, contrast=scaled)
        if self.structure_weight is not None:
            # The preset's structure weight is w1·beta (paper) or beta alone (authors, w1 = 1):
            # scale it by beta' / beta of stage 1, so stage 2's ratio to stage 1 is kept.
            base = self.preset.stages[0].structure
            weights = dataclasses.replace(
                weights, structure=weights.structure * self.structure_weight / base)
        unit = self.preset.quant_unit
        if self.quant_unit is not None and self.quant_unit != unit:
            factor = AUTHORS_QUANT_UNIT if self.quant_unit == "signed" else 1 / AUTHORS_QUANT_UNIT
            weights = dataclasses.replace(weights, quantization=weights.quantization * factor)
        return weights

    @property
    def needs_perceptual(self) -> bool:
        """True when some stage weighs the contrast term, i.e. training needs the net."""
        return any(self.loss_weights(s).contrast > 0 for s in STAGES)


# ----------------------------------------------------------------------------------------
# The model


class _Untracked:
    """A box Keras does not look into. Layer attributes that are layers, variables or
    lists of them are tracked (their weights join the model's) and saving walks every
    attribute for them; a plain object holding the perceptual net hides it from both, so
    the frozen net never enters ``model.weights``, ``count_params()`` or the .keras file."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value


def _check_sides(rgb):
    shape = getattr(rgb, "shape", None)
    if shape is not None and len(shape) == 4:
        for side in shape[1:3]:
            if side is not None and side % DOWNSAMPLING:
                raise ValueError(f"image sides must be multiples of {DOWNSAMPLING}, "
                                 f"got {tuple(shape)}")


def _images(data):
    """fit/evaluate data -> the RGB batch: a tensor, or the first item of a tuple/list."""
    if isinstance(data, (tuple, list)):
        return data[0]
    return data


@keras.saving.register_keras_serializable(package="koala")
class InvertibleGrayscale(keras.Model):
    """Encoder + decoder, trained with the two-stage loss of SPEC §2.

    ``model(rgb)`` with rgb (B, H, W, 3) in [0, 1] returns ``{"gray": (B, H, W, 1),
    "restored": (B, H, W, 3)}``, both float32 in [0, 1]; "restored" decodes the
    *un-quantized* gray (departure 2). ``model.encoder`` and ``model.decoder`` are plain
    functional models that can be used and saved on their own.

    Training: ``compile(optimizer=...)`` (no ``loss``: :meth:`train_step` computes the terms
    of :mod:`koala.tasks.codec.losses` and weighs them with the current stage's
    :meth:`loss_weights`),
    then ``fit`` on a dataset of RGB batches (or ``(rgb, ...)`` tuples). Logs ``loss``, each
    term in ``TERMS`` and ``stage``; validation logs ``val_`` of each. When the contrast term
    is weighted, attach a perceptual net first: ``model.set_perceptual(
    model.make_perceptual())``, inside the distribution scope.

    ``model.stage`` is a non-trainable int32 variable (1 or 2), saved with the weights, so a
    resumed run knows its stage. The loss configuration is part of the model's config.
    """

    def __init__(self, name: str = "invertible_grayscale", **config):
        kwargs = {k: config.pop(k) for k in ("trainable", "dtype") if k in config}
        self.config = CodecConfig(**config)
        super().__init__(name=name, **kwargs)
        cfg = self.config
        self.encoder = encoder(cfg.encoder_filters, cfg.encoder_res_blocks, name="encoder",
                               residual=cfg.residual)
        self.decoder = decoder(cfg.decoder_filters, cfg.decoder_res_blocks, name="decoder",
                               residual=cfg.residual)
        self.stage = self.add_weight(
            name="stage", shape=(), dtype="int32", trainable=False,
            initializer=keras.initializers.Constant(1), aggregation="only_first_replica",
        )
        self._trackers = [keras.metrics.Mean(name=n) for n in ("loss", *TERMS, "stage")]
        self._perceptual = _Untracked()
        # One row of term weights per stage, gathered by the stage variable in the graph,
        # so switching stages needs no retracing.
        self._weight_table = np.array(
            [cfg.loss_weights(s).as_tuple() for s in STAGES], dtype=np.float32)
        self.built = True

    # -- inference ---------------------------------------------------------------------

    def call(self, rgb, training=None):
        _check_sides(rgb)
        gray = self.encoder(rgb, training=training)
        restored = self.decoder(gray, training=training)
        return {"gray": gray, "restored": restored}

    # -- configuration -----------------------------------------------------------------

    def get_config(self):
        config = dataclasses.asdict(self.config)
        config["encoder_res_blocks"] = list(config["encoder_res_blocks"])
        return {"name": self.name, "trainable": self.trainable, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def loss_weights(self, stage: int) -> LossWeights:
        """The term weights of ``stage`` (see :meth:`CodecConfig.loss_weights`)."""
        return self.config.loss_weights(stage)

    def set_stage(self, stage: int) -> None:
        """Sets the training stage (1: conformity, 2: adds quantization)."""
        if stage not in STAGES:
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        self.stage.assign(stage)

    def current_stage(self) -> int:
        return int(ops.convert_to_numpy(self.stage))

    # -- perceptual network ------------------------------------------------------------

    def make_perceptual(self) -> keras.Model:
        """A new frozen feature extractor as the config describes it (may raise
        :class:`koala.core.errors.WeightsError`). Call inside the distribution scope."""
        from koala.ops import perceptual

        cfg = self.config
        return perceptual.feature_extractor(
            cfg.perceptual_net, cfg.perceptual_weights, cfg.contrast_layer, cfg.perceptual_size)

    def set_perceptual(self, net: keras.Model | None) -> None:
        """Attaches a frozen feature extractor for the contrast term (None detaches it).

        The net is kept in an untracked box (:class:`_Untracked`): it is not one of the
        model's layers or weights, so it never changes ``count_params()``, gets no
        gradient and is not written into (nor expected by) a saved .keras file. Attach it
        before ``compile``/``fit``; a model loaded from disk has none until this is called.
        """
        if net is not None:
            net.trainable = False
        self._perceptual.value = net

    def get_perceptual(self) -> keras.Model | None:
        """The attached feature extractor, or None. (A method, not a property: saving
        walks every attribute and property of the model.)"""
        return self._perceptual.value

    # -- training ----------------------------------------------------------------------

    @property
    def metrics(self):
        # Reset by Keras at each epoch; "loss" first, then TERMS, then "stage".
        return list(self._trackers)

    def compute_terms(self, rgb, training=False, rounded=None) -> tuple[dict, tf.Tensor]:
        """Forward pass and every loss term: returns ``({term: scalar}, weighted loss)``.

        rgb (B, H, W, 3) in [0, 1]. Terms and loss are float32 scalars; the weights are
        those of the stage held in ``self.stage`` when the graph runs. ``rounded``: decode
        G rounded to 8 bits (True), as it is (False), or (None) as training does: rounded
        with a straight-through gradient in stage 2 when ``quant_ste`` is set, else as it is.
        """
        cfg = self.config
        _check_sides(rgb)
        rgb = tf.cast(rgb, tf.float32)
        stage = tf.cast(ops.convert_to_tensor(self.stage), tf.int32)
        gray = tf.cast(self.encoder(rgb, training=training), tf.float32)
        decoded = gray
        if rounded or (rounded is None and cfg.quant_ste):
            # 1 in stage 2 (training with quant_ste) or always (rounded=True); the gradient
            # passes straight through the rounding (departure 9).
            on = (tf.cast(tf.equal(stage, 2), tf.float32) if rounded is None
                  else tf.constant(1.0))
            levels = tf.round(gray * losses.LEVELS) / losses.LEVELS
            decoded = gray + tf.stop_gradient(on * (levels - gray))
        restored = tf.cast(self.decoder(decoded, training=training), tf.float32)
        terms = {
            "invertibility": losses.invertibility(rgb, restored),
            "lightness": losses.lightness(gray, rgb, cfg.theta),
            "contrast": self._contrast(gray, rgb),
            "structure": losses.structure(gray, rgb),
            "quantization": losses.quantization(gray),
        }
        weights = tf.gather(tf.constant(self._weight_table), stage - 1)  # (len(TERMS),)
        loss = tf.add_n([weights[i] * terms[t] for i, t in enumerate(TERMS)])
        return terms, loss

    def _contrast(self, gray, rgb):
        cfg = self.config
        if not cfg.needs_perceptual:
            return tf.constant(0.0, tf.float32)
        net = self.get_perceptual()
        if net is None:
            raise KoalaError(
                f"{self.name}: the contrast loss is weighted (contrast_weight="
                f"{cfg.contrast_weight}, preset {cfg.loss_preset!r}) but no perceptual network "
                f"is attached. Call model.set_perceptual(model.make_perceptual()) before "
                f"training (the trainer does so from --perceptual_net/--perceptual_weights), "
                f"or set contrast_weight=0 (--contrast_weight=0).")
        return losses.contrast_loss(net, gray, rgb, cfg.contrast_distance)

    def _record(self, rgb, terms, loss):
        batch = tf.cast(tf.shape(rgb)[0], tf.float32)
        values = {"loss": loss, **terms,
                  "stage": tf.cast(ops.convert_to_tensor(self.stage), tf.float32)}
        for tracker in self._trackers:
            tracker.update_state(values[tracker.name], sample_weight=batch)
        return {tracker.name: tracker.result() for tracker in self._trackers}

    def train_step(self, data):
        rgb = _images(data)
        with tf.GradientTape() as tape:
            terms, loss = self.compute_terms(rgb, training=True)
            # Gradients are summed over replicas under tf.distribute: average them instead.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            # Multiplies by the loss scale under mixed precision (a LossScaleOptimizer,
            # which `apply` divides back out); a no-op otherwise.
            scaled = self.optimizer.scale_loss(loss / replicas)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply(grads, variables)
        return self._record(rgb, terms, loss)

    def test_step(self, data):
        rgb = _images(data)
        # Validation decodes the 8-bit G a PNG would hold: what a user gets back.
        terms, loss = self.compute_terms(rgb, training=False, rounded=True)
        return self._record(rgb, terms, loss)


def codec(**kwargs) -> InvertibleGrayscale:
    """The paper's codec; keyword arguments override :class:`CodecConfig`."""
    return InvertibleGrayscale(**kwargs)


def codec_small(**kwargs) -> InvertibleGrayscale:
    """A small codec for tests and CPU smoke runs (not for results): f = 16, encoder
    residual blocks (1, 2, 1), decoder 3; keyword arguments override any field."""
    small = {"encoder_filters": 16, "encoder_res_blocks": (1, 2, 1), "decoder_filters": 16,
             "decoder_res_blocks": 3}
    return InvertibleGrayscale(**{**small, **kwargs})


# The two-stage schedule (kept importable from here: koala.tasks.codec.model.CodecStages).
from koala.tasks.codec.stages import CodecStages, reset_optimizer  # noqa: E402, F401
