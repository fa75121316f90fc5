"""ColorGAN: a U-Net generator with a noise map added to its latent, trained as a WGAN-GP
against a PatchGAN critic (SPEC §4).

Paper: H. Shafiq, B. Lee, "ColorGAN: Generative Adversarial Network based Image
Colorization" (Chosun University; source notes ``seeds/colorgan_ko.txt``). The paper gives
the ideas (an encoder to a *feature map*, a noise map N(0, 0.1^2) processed by convolutions
and *added* to that map, skip connections from the encoder, a PatchGAN discriminator, a
Wasserstein loss, the four loss weights, the optimizers) but no layer table: the layers below
are koala's choices, pix2pix-style (Isola et al. 2017), listed with the departures.

Inputs and outputs follow koala's Lab conventions (:mod:`koala.ops.color`,
:mod:`koala.tasks.colorize.models.fusion`)::

    l    (B, H, W, 1)  float32, L / 50 - 1 in [-1, 1]; H, W multiples of the generator's
                       downsampling (8 for the paper sizes, 4 for ``colorgan_small``)
    ab   (B, H, W, 2)  float32, ab / 128 in [-1, 1] (tanh)

Generator (``widths`` = (64, 128, 256, 512), ``noise_channels`` c_z = 64). Every conv is
"same"; "BN" is BatchNorm, "LReLU" LeakyReLU(0.2); a conv followed by BN has no bias. Kernels
N(0, 0.02) (pix2pix / DCGAN). Parameter counts: a k x k conv c_in -> c_out has k*k*c_in*c_out
(+ c_out bias), a BN 4c (2c trainable)::

    layer                                        output              params
    input "l"                                    H x W x 1
    enc1_a     conv3/64, LReLU                   H x W x 64              640
    enc1_b     conv3/64, BN, LReLU               H x W x 64           37 120  => s1
    enc2_a     conv4/128/2, BN, LReLU            H/2 x W/2 x 128     131 584
    enc2_b     conv3/128, BN, LReLU              H/2 x W/2 x 128     147 968  => s2
    enc3_a     conv4/256/2, BN, LReLU            H/4 x W/4 x 256     525 312
    enc3_b     conv3/256, BN, LReLU              H/4 x W/4 x 256     590 848  => s3
    enc4_a     conv4/512/2, BN, LReLU            H/8 x W/8 x 512   2 099 200
    enc4_b     conv3/512, BN, LReLU              H/8 x W/8 x 512   2 361 344  => latent
    input "noise"  z ~ N(0, 0.1^2)               H/8 x W/8 x 64
    noise_1    conv3/512, LReLU                  H/8 x W/8 x 512     295 424
    noise_2    conv3/512, LReLU                  H/8 x W/8 x 512   2 359 808
    noise_out  conv1/512 (linear): G_f(z)        H/8 x W/8 x 512     262 656
    merge      latent + G_f(z)                   H/8 x W/8 x 512           0
    up3        convT4/256/2, BN, ReLU; ++ s3     H/4 x W/4 x 512   2 098 176
    dec3       conv3/256, BN, ReLU               H/4 x W/4 x 256   1 180 672
    up2        convT4/128/2, BN, ReLU; ++ s2     H/2 x W/2 x 256     524 800
    dec2       conv3/128, BN, ReLU               H/2 x W/2 x 128     295 424
    up1        convT4/64/2, BN, ReLU; ++ s1      H x W x 128         131 328
    dec1       conv3/64, BN, ReLU                H x W x 64           73 984
    ab_conv    conv3/2, tanh (float32)           H x W x 2             1 154
    total 13 117 442: 13 111 938 trainable, 5 504 non-trainable (BN moving statistics)

"++ s" is a concatenation with the encoder's skip of that resolution. The latent sits at
stride 8 with 512 channels, the stride and width of VGG19's ``block4_conv4``, so L_s compares
G_f(z) with VGG(y) without any adapter when the perceptual net sees the image at its own
size (``perceptual_size=0``, the default).

Critic: Isola et al.'s PatchGAN on concat(l, ab), (B, H, W, 3) -> (B, H/8, W/8, 1), with
its layer table in :mod:`koala.tasks.colorize.models.wgan` (2 766 528 parameters), which also
holds the WGAN-GP training that :class:`ColorGAN` shares with Lal et al.'s colorizer.

``colorgan_small`` (tests, CPU smoke runs; not for results): widths (16, 32, 64), c_z 8,
critic (16, 32, 64), both with downsampling 4: generator 200 770 parameters (200 162
trainable), critic 43 056, plus a 1 x 1 projection of G_f(z) to the perceptual net's channels
when they differ (departure 6; 16 640 for MobileNet's 256).

Objective (SPEC §4), every term a float32 mean over its elements::

    G:  g_loss = λ_g g_adv + λ_p perceptual + λ_L1 l1 + λ_s noise_feature
        g_adv          = -mean critic(l, G(l))                      (Wasserstein)
        perceptual     = |φ(rgb(l, G(l))) - φ(rgb(l, ab))|_1           (L_p)
        l1             = |G(l) - ab|_1 on normalised ab              (L_1)
        noise_feature  = |P(G_f(z)) - resize(φ(rgb(l, ab)))|_1       (L_s)
    D:  d_loss = mean critic(fake) - mean critic(real) + λ_gp gp
        gp             = mean_b (‖∇_â D(l, â)‖_2 - 1)^2, â = ε ab + (1 - ε) G(l), ε ~ U(0, 1)

with {λ_g, λ_p, λ_L1, λ_s} = {0.1, 100, 10, 1} and λ_gp = 10 (Gulrajani et al. 2017). φ is
the frozen perceptual net (:func:`koala.ops.perceptual.feature_extractor`), rgb(l, ab) the sRGB
image of the Lab pair (:func:`koala.ops.color.lab_to_srgb`), P the identity or a 1 x 1 conv
(departure 6). Training: Adam(β = (0.5, 0.999)), lr 1e-4 (G) and 2e-4 (D): see
:func:`default_optimizers`.

Departures and choices (the paper does not say; each is a choice made here):

1. **Layers**: the table above. Two convs per encoder level (a U-Net "double conv"), the
   first level at full resolution, three stride-2 4x4 convs (pix2pix's kernel), BatchNorm
   and LeakyReLU(0.2) in the encoder, transposed 4x4 convs, BatchNorm and ReLU in the
   decoder, no dropout (pix2pix uses dropout as its only noise; ColorGAN has a noise map).
2. **Noise**: z has c_z channels (the paper does not say how many) at the latent's grid.
   ``generator(l)`` (``call``, also ``predict``) draws fresh noise from the generator's own
   ``keras.random.SeedGenerator`` on every call, in training and inference alike: the model
   is a sampler. ``sample(l, seed=s)`` draws it statelessly from ``[s, k]`` for the k-th
   sample, so equal seeds give equal colourings. Inside ``train_step``/``test_step`` the noise
   (and the GP's ε) is drawn statelessly from the optimizers' step counters and the replica
   id, not from the SeedGenerator (:mod:`~koala.tasks.colorize.models.wgan`, departure 4):
   training noise is a pure function of the step; validation uses one fixed noise seed.
3. **Critic**: LayerNorm, not BatchNorm; no sigmoid (wgan, departure 1).
4. **Critic value and GP**: a sample's mean patch score; the GP's gradient is taken with
   respect to the interpolated ab only, L being the condition (wgan, departure 2).
5. **n_critic**: the paper does not say; default 1 (one critic step per generator step,
   the two-time-scale lr 2e-4 / 1e-4 of the paper); WGAN-GP's usual 5 is ``n_critic=5``.
   Extra critic steps reuse the batch with fresh noise and ε (wgan, departure 3).
6. **L_s shapes**: G_f(z) is (B, H/s, W/s, C_latent); VGG(y) is (B, S/8, S/8, C_φ) for
   perceptual input S (H when ``perceptual_size=0``). The feature map is resized
   (bilinear, antialiased) to the latent's grid when the grids differ, and G_f(z) goes
   through a 1 x 1 conv ``noise_projection`` (C_latent -> C_φ, part of :class:`ColorGAN`,
   not of the generator, since inference never uses it) when the channels differ. The paper
   sizes with VGG19 ``block4_conv4`` need neither. φ's activations are not normalised: as the
   paper writes L_s, G_f(z) is pulled to VGG's scale, and it is added to the latent at that
   scale (the decoder's BatchNorm absorbs it).
7. **Colour for L_p**: both images are converted Lab -> sRGB by ``koala.ops.color.lab_to_srgb``,
   which clips to [0, 1]; out-of-gamut predictions get no perceptual gradient there (L1 and
   the critic still act). ``perceptual_size=0`` (no resize) is the default; the paper does
   not say.
8. **Perceptual network**: ImageNet VGG19 can't be downloaded offline; ``perceptual_net=
   "mobilenet"`` with the project's ImageNet MobileNet (``conv_pw_5_relu``, stride 8, 256
   channels, so the projection of departure 6 appears) is the offline alternative,
   ``perceptual_weights="none"`` a random one for smoke runs, and ``perceptual_weight=0``
   with ``noise_feature_weight=0`` needs no network at all.
"""

from __future__ import annotations

import dataclasses
import re

import keras
import tensorflow as tf

from koala.core.errors import KoalaError
from koala.ops import color
from koala.tasks.colorize.models import wgan
from koala.tasks.colorize.models.fusion import AB_CHANNELS
from koala.tasks.colorize.models.wgan import (
    CRITIC_NORMS,
    LEAK,
    check_positive_int,
    check_widths,
    critic_network,
    gradient_penalty,
    pix2pix_conv,
)

__all__ = ["CRITIC_NORMS", "ColorGAN", "ColorGANConfig", "ColorGenerator", "TERMS", "colorgan",
           "colorgan_small", "critic_network", "default_optimizers", "feature_channels",
           "generator_network", "gradient_penalty"]

PERCEPTUAL_NETS = ("vgg19", "mobilenet")
# Logged in this order; "loss" is g_loss, so the trainer's checkpoint monitor works.
TERMS = ("loss", "d_loss", "gp", "g_adv", "perceptual", "l1", "noise_feature", "g_loss")


# ----------------------------------------------------------------------------------------
# Networks


def _conv_bn(x, filters, kernel, name, strides=1, activation="lrelu"):
    """conv (no bias) -> BatchNorm -> LeakyReLU(0.2) or ReLU."""
    x = pix2pix_conv(filters, kernel, name, strides=strides, use_bias=False)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return _activation(x, activation, name)


def _activation(x, activation, name):
    if activation == "lrelu":
        return keras.layers.LeakyReLU(LEAK, name=f"{name}_lrelu")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def generator_network(widths=(64, 128, 256, 512), noise_channels: int = 64,
                      name: str = "generator_network") -> keras.Model:
    """The generator's functional graph: ``[l, noise] -> [ab, noise_features]``.

    l (B, H, W, 1) in [-1, 1]; noise (B, H/s, W/s, c_z) with s = 2 ** (len(widths) - 1);
    ab (B, H, W, 2) float32 in [-1, 1]; noise_features = G_f(noise), (B, H/s, W/s,
    widths[-1]) float32. See the module docstring for the layer table.
    """
    widths = check_widths("widths", widths)
    if not isinstance(noise_channels, int) or noise_channels < 1:
        raise ValueError(f"noise_channels must be a positive integer, got {noise_channels!r}")
    l_in = keras.Input((None, None, 1), name="l")
    z_in = keras.Input((None, None, noise_channels), name="noise")

    # Encoder: level 1 at full resolution, then one stride-2 conv per level.
    x = pix2pix_conv(widths[0], 3, "enc1_a")(l_in)
    x = keras.layers.LeakyReLU(LEAK, name="enc1_a_lrelu")(x)
    x = _conv_bn(x, widths[0], 3, "enc1_b")
    skips = [x]
    for i, width in enumerate(widths[1:], start=2):
        x = _conv_bn(x, width, 4, f"enc{i}_a", strides=2)
        x = _conv_bn(x, width, 3, f"enc{i}_b")
        skips.append(x)
    latent = skips.pop()  # (B, H/s, W/s, widths[-1])

    # Noise branch G_f: a few convs from c_z to the latent's width, linear at the end.
    top = widths[-1]
    z = pix2pix_conv(top, 3, "noise_1")(z_in)
    z = keras.layers.LeakyReLU(LEAK, name="noise_1_lrelu")(z)
    z = pix2pix_conv(top, 3, "noise_2")(z)
    z = keras.layers.LeakyReLU(LEAK, name="noise_2_lrelu")(z)
    g_f = pix2pix_conv(top, 1, "noise_out")(z)
    x = keras.layers.Add(name="merge")([latent, g_f])

    # Decoder with the encoder's skips (U-Net).
    for i in range(len(widths) - 1, 0, -1):
        width = widths[i - 1]
        x = keras.layers.Conv2DTranspose(
            width, 4, strides=2, padding="same", use_bias=False,
            kernel_initializer=keras.initializers.RandomNormal(0.0, wgan.INIT_STDDEV),
            name=f"up{i}")(x)
        x = keras.layers.BatchNormalization(name=f"up{i}_bn")(x)
        x = keras.layers.ReLU(name=f"up{i}_relu")(x)
        x = keras.layers.Concatenate(name=f"skip{i}")([x, skips[i - 1]])
        x = _conv_bn(x, width, 3, f"dec{i}", activation="relu")
    x = pix2pix_conv(AB_CHANNELS, 3, "ab_conv")(x)
    ab = keras.layers.Activation("tanh", dtype="float32", name="ab")(x)
    features = keras.layers.Activation("linear", dtype="float32", name="noise_features")(g_f)
    return keras.Model([l_in, z_in], [ab, features], name=name)


def _check_sides(shape, multiple):
    if shape is not None and len(shape) == 4:
        for side in shape[1:3]:
            if side is not None and side % multiple:
                raise ValueError(f"image sides must be multiples of {multiple}, "
                                 f"got {tuple(shape)}")


@keras.saving.register_keras_serializable(package="koala")
class ColorGenerator(keras.Model):
    """The ColorGAN generator: l (B, H, W, 1) -> ab (B, H, W, 2), float32 in [-1, 1].

    ``generator(l)`` (and ``predict``) draws fresh noise z ~ N(0, ``noise_stddev``^2) from
    its SeedGenerator on each call; ``generator(l, noise=z)`` uses the given z;
    :meth:`sample` is reproducible. ``network`` is the functional graph
    (:func:`generator_network`) that also returns G_f(z).
    """

    def __init__(self, widths=(64, 128, 256, 512), noise_channels: int = 64,
                 noise_stddev: float = 0.1, seed: int | None = None,
                 name: str = "generator", **kwargs):
        super().__init__(name=name, **kwargs)
        self.widths = check_widths("widths", widths)
        self.noise_channels = int(noise_channels)
        if not noise_stddev > 0:
            raise ValueError(f"noise_stddev must be positive, got {noise_stddev}")
        self.noise_stddev = float(noise_stddev)
        self.seed = seed
        self.downsampling = 2 ** (len(self.widths) - 1)
        self.network = generator_network(self.widths, self.noise_channels, name="network")
        self.seed_generator = keras.random.SeedGenerator(seed, name="noise_seed")
        self.built = True

    def noise_shape(self, l):
        """(B, H/s, W/s, c_z) for an l batch (a tensor of ints, works in graphs)."""
        shape = tf.shape(l)
        s = self.downsampling
        return tf.stack([shape[0], shape[1] // s, shape[2] // s, self.noise_channels])

    def generate(self, l, noise, training=None):
        """``(ab, G_f(noise))``, both float32 (see :func:`generator_network`)."""
        _check_sides(getattr(l, "shape", None), self.downsampling)
        # Keras refuses a mix of arrays and tensors in one nested input.
        l, noise = (x if isinstance(x, keras.KerasTensor) else tf.convert_to_tensor(x)
                    for x in (l, noise))
        ab, features = self.network([l, noise], training=training)
        return ab, features

    def call(self, l, training=None, noise=None):
        if noise is None:
            noise = keras.random.normal(self.noise_shape(l), stddev=self.noise_stddev,
                                        seed=self.seed_generator)
        return self.generate(l, noise, training=training)[0]

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:3], AB_CHANNELS)

    def sample(self, l, seed: int, samples: int = 1):
        """``samples`` colourings of l: (samples, B, H, W, 2) float32 normalised ab.

        Sample k uses noise drawn statelessly from the seed ``[seed, k]``: equal seeds give
        equal outputs, different seeds different ones (inference mode: BatchNorm uses its
        moving statistics).
        """
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be a positive integer, got {samples!r}")
        l = tf.convert_to_tensor(l, tf.float32)
        shape = self.noise_shape(l)
        out = []
        for k in range(samples):
            z = tf.random.stateless_normal(shape, seed=tf.constant([seed, k], tf.int64),
                                           stddev=self.noise_stddev)
            out.append(self.generate(l, z, training=False)[0])
        return tf.stack(out)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "widths": list(self.widths),
                "noise_channels": self.noise_channels, "noise_stddev": self.noise_stddev,
                "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("dtype", None)
        return cls(**config)


# ----------------------------------------------------------------------------------------
# Losses


def _rgb(l, ab):
    """Normalised l (B, H, W, 1), ab (B, H, W, 2) -> sRGB (B, H, W, 3) in [0, 1], float32."""
    lab = tf.concat([color.denormalize_l(tf.cast(l, tf.float32)),
                     color.denormalize_ab(tf.cast(ab, tf.float32))], axis=-1)
    return color.lab_to_srgb(lab)


def _l1(a, b):
    return tf.reduce_mean(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))


# ----------------------------------------------------------------------------------------
# Configuration


def feature_channels(net: str, layer: str) -> int:
    """Channels of a perceptual layer: VGG19 ``blockN_...`` or MobileNet ``conv_pw_N_...``."""
    if net == "vgg19":
        match = re.match(r"block(\d)_", layer)
        if match and 1 <= int(match.group(1)) <= 5:
            return (64, 128, 256, 512, 512)[int(match.group(1)) - 1]
    elif net == "mobilenet":
        match = re.match(r"conv_pw_(\d+)", layer)
        if match and 1 <= int(match.group(1)) <= 13:
            return (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024,
                    1024)[int(match.group(1)) - 1]
    raise ValueError(f"unknown channel count of {net} layer {layer!r}: "
                     f"set perceptual_channels")


@dataclasses.dataclass(frozen=True)
class ColorGANConfig:
    """Hyper-parameters of :class:`ColorGAN` (defaults = the paper where it says).

    widths:              generator widths per level, full resolution first (64..512).
    noise_channels:      c_z, channels of the noise map (64).
    noise_stddev:        σ of z ~ N(0, σ^2) (0.1, the paper).
    critic_widths:       PatchGAN widths (64..512).
    critic_norm:         "layer" (LayerNormalization) or "none".
    adversarial_weight, perceptual_weight, l1_weight, noise_feature_weight:
                         λ_g, λ_p, λ_L1, λ_s = 0.1, 100, 10, 1 (the paper). With
                         perceptual_weight = noise_feature_weight = 0 no perceptual net is
                         needed.
    gp_weight:           λ_gp, WGAN-GP's 10.
    n_critic:            critic steps per generator step (1; departure 5).
    perceptual_net:      "vgg19" (the paper's VGG) or "mobilenet" (offline alternative).
    perceptual_weights:  "imagenet", "none" or a weights file (:mod:`koala.ops.perceptual`).
    perceptual_layer:    the feature layer; None = the net's default (VGG19
                         ``block4_conv4``, MobileNet ``conv_pw_5_relu``).
    perceptual_size:     images are resized to this square before the net; 0 = no resize.
    perceptual_channels: the layer's channels; None = known from net and layer.
    seed:                seed of the generator's SeedGenerator (None = random).
    image_size:          the square the colorize tool fits images into (the training crop
                         size; 256 in the paper). The networks themselves take any side
                         that is a multiple of 2^(len(widths) - 1).
    """

    widths: tuple[int, ...] = (64, 128, 256, 512)
    noise_channels: int = 64
    noise_stddev: float = 0.1
    critic_widths: tuple[int, ...] = (64, 128, 256, 512)
    critic_norm: str = "layer"
    adversarial_weight: float = 0.1
    perceptual_weight: float = 100.0
    l1_weight: float = 10.0
    noise_feature_weight: float = 1.0
    gp_weight: float = 10.0
    n_critic: int = 1
    perceptual_net: str = "vgg19"
    perceptual_weights: str = "imagenet"
    perceptual_layer: str | None = None
    perceptual_size: int = 0
    perceptual_channels: int | None = None
    seed: int | None = None
    image_size: int = 256

    def __post_init__(self):
        # Lists arrive from a reloaded .keras file's JSON: store tuples, so configs compare.
        object.__setattr__(self, "widths", check_widths("widths", self.widths))
        wgan.check_config(self, weights=("adversarial_weight", "perceptual_weight",
                                          "l1_weight", "noise_feature_weight"))
        if self.perceptual_net not in PERCEPTUAL_NETS:
            raise ValueError(f"perceptual_net must be one of {PERCEPTUAL_NETS}, "
                             f"got {self.perceptual_net!r}")
        check_positive_int("noise_channels", self.noise_channels)
        step = 2 ** (len(self.widths) - 1)
        if not isinstance(self.image_size, int) or self.image_size < step \
                or self.image_size % step:
            raise ValueError(f"image_size must be a positive multiple of {step}, "
                             f"got {self.image_size!r}")
        if not isinstance(self.perceptual_size, int) or self.perceptual_size < 0:
            raise ValueError(f"perceptual_size must be a non-negative integer, "
                             f"got {self.perceptual_size!r}")

    @property
    def needs_perceptual(self) -> bool:
        """True when L_p or L_s is weighted, i.e. training needs the perceptual net."""
        return self.perceptual_weight > 0 or self.noise_feature_weight > 0

    @property
    def layer(self) -> str:
        if self.perceptual_layer:
            return self.perceptual_layer
        from koala.ops.perceptual import NETS

        return NETS[self.perceptual_net].default_layer

    @property
    def feature_channels(self) -> int:
        return self.perceptual_channels or feature_channels(self.perceptual_net, self.layer)

    @property
    def needs_projection(self) -> bool:
        """True when L_s needs the 1 x 1 conv from the latent to φ's channels."""
        return self.noise_feature_weight > 0 and self.feature_channels != self.widths[-1]


def default_optimizers(g_learning_rate: float = 1e-4, d_learning_rate: float = 2e-4):
    """The paper's optimizers: Adam(β = (0.5, 0.999)) at 1e-4 (G) and 2e-4 (D)."""
    return (keras.optimizers.Adam(g_learning_rate, beta_1=0.5, beta_2=0.999, name="g_adam"),
            keras.optimizers.Adam(d_learning_rate, beta_1=0.5, beta_2=0.999, name="d_adam"))


# ----------------------------------------------------------------------------------------
# The model


class _Untracked:
    """A box Keras does not look into (see :class:`koala.tasks.codec.model._Untracked`): the
    frozen perceptual net never enters the model's weights or its .keras file."""

    __slots__ = ("value",)

    def __init__(self, value=None):
        self.value = value


@keras.saving.register_keras_serializable(package="koala")
class ColorGAN(wgan.WGANGP):
    """Generator + PatchGAN critic, trained as a WGAN-GP with the losses of SPEC §4.

    ``model(l)`` or ``model({"l": l, ...})`` returns the generator's ab (fresh noise);
    :meth:`sample` is reproducible. ``model.generator`` (a :class:`ColorGenerator`) and
    ``model.critic`` (functional) can be used and saved on their own.

    Training (:class:`~koala.tasks.colorize.models.wgan.WGANGP`): ``compile(g_optimizer,
    d_optimizer)`` (defaults: :func:`default_optimizers`), then ``fit`` on ``({"l", ...}, ab)``
    batches (only l is used; a bare l works too); logs :data:`TERMS` (``loss`` = ``g_loss``).
    When L_p or L_s is weighted, attach the perceptual net first:
    ``model.set_perceptual(model.make_perceptual())`` (inside the distribution scope).
    """

    default_optimizers = staticmethod(default_optimizers)

    def __init__(self, name: str = "colorgan", **config):
        kwargs = {k: config.pop(k) for k in ("trainable", "dtype") if k in config}
        self.config = ColorGANConfig(**config)
        cfg = self.config
        super().__init__(name=name, terms=TERMS, n_critic=cfg.n_critic,
                         gp_weight=cfg.gp_weight, **kwargs)
        self.generator = ColorGenerator(cfg.widths, cfg.noise_channels, cfg.noise_stddev,
                                        seed=cfg.seed, name="generator")
        self.critic = critic_network(cfg.critic_widths, cfg.critic_norm, name="critic")
        self.noise_projection = None
        if cfg.needs_projection:
            self.noise_projection = pix2pix_conv(cfg.feature_channels, 1, "noise_projection")
            self.noise_projection.build((None, None, None, cfg.widths[-1]))
        self._perceptual = _Untracked()
        self.built = True

    # -- inference ---------------------------------------------------------------------

    def call(self, inputs, training=None):
        l = inputs["l"] if isinstance(inputs, dict) else inputs
        return self.generator(l, training=training)

    def sample(self, l, seed: int, samples: int = 1):
        """(samples, B, H, W, 2): see :meth:`ColorGenerator.sample`."""
        return self.generator.sample(l, seed, samples)

    def get_config(self):
        config = dataclasses.asdict(self.config)
        config["widths"] = list(config["widths"])
        config["critic_widths"] = list(config["critic_widths"])
        return {"name": self.name, "trainable": self.trainable, **config}

    # -- perceptual network ------------------------------------------------------------

    def make_perceptual(self) -> keras.Model:
        """A new frozen feature extractor as the config describes it (may raise
        :class:`koala.core.errors.WeightsError`). Call inside the distribution scope."""
        from koala.ops import perceptual

        cfg = self.config
        return perceptual.feature_extractor(cfg.perceptual_net, cfg.perceptual_weights,
                                            cfg.layer, cfg.perceptual_size)

    def set_perceptual(self, net: keras.Model | None) -> None:
        """Attaches a frozen feature extractor for L_p and L_s (None detaches it).

        Kept outside Keras' tracking (not a layer or weight of the model, never saved);
        a model loaded from disk has none until this is called.
        """
        if net is not None:
            channels = net.output.shape[-1]
            if self.config.noise_feature_weight > 0 and channels != self.config.feature_channels:
                raise KoalaError(f"{self.name}: the perceptual net gives {channels} channels, "
                                 f"the config expects {self.config.feature_channels} "
                                 f"(perceptual_channels)")
            net.trainable = False
        self._perceptual.value = net

    def get_perceptual(self) -> keras.Model | None:
        """The attached feature extractor, or None (a method: saving walks properties)."""
        return self._perceptual.value

    def _features(self, rgb):
        net = self.get_perceptual()
        if net is None:
            cfg = self.config
            raise KoalaError(
                f"{self.name}: the perceptual and noise-feature losses are weighted "
                f"(perceptual_weight={cfg.perceptual_weight}, noise_feature_weight="
                f"{cfg.noise_feature_weight}) but no perceptual network is attached. Call "
                f"model.set_perceptual(model.make_perceptual()) before training, or set both "
                f"weights to 0.")
        return tf.cast(net(rgb, training=False), tf.float32)

    # -- the WGAN-GP terms (wgan.WGANGP) -----------------------------------------------

    @property
    def generator_variables(self):
        """What the generator step trains: the generator and the L_s projection."""
        variables = list(self.generator.trainable_variables)
        if self.noise_projection is not None:
            variables += list(self.noise_projection.trainable_variables)
        return variables

    def generator_pass(self, inputs, seed, training):
        """``(ab, G_f(z))`` for l = ``inputs``, z ~ N(0, σ^2) drawn statelessly from ``seed``."""
        noise = tf.random.stateless_normal(self.generator.noise_shape(inputs), seed=seed,
                                           stddev=self.config.noise_stddev)
        return self.generator.generate(inputs, noise, training=training)

    def generator_terms(self, l, ab, noise, training=True):
        """``({"g_adv", "perceptual", "l1", "noise_feature", "g_loss"}, g_loss)``, float32.

        l (B, H, W, 1), ab (B, H, W, 2) the truth, noise (B, H/s, W/s, c_z).
        """
        fake, g_f = self.generator.generate(l, noise, training=training)
        return self.generator_loss(l, ab, fake, g_f, training)

    def generator_loss(self, l, ab, fake_ab, aux, training):
        """:meth:`generator_terms` of the generator's output fake_ab (B, H, W, 2) and
        ``aux`` = G_f(z) (B, H/s, W/s, widths[-1])."""
        cfg = self.config
        ab = tf.cast(ab, tf.float32)
        zero = tf.constant(0.0, tf.float32)
        terms = {"g_adv": -tf.reduce_mean(self.score(l, fake_ab, training)),
                 "perceptual": zero, "l1": _l1(fake_ab, ab), "noise_feature": zero}
        if cfg.needs_perceptual:
            batch = tf.shape(l)[0]
            features = self._features(tf.concat([_rgb(l, fake_ab), _rgb(l, ab)], axis=0))
            fake_features, real_features = features[:batch], tf.stop_gradient(features[batch:])
            if cfg.perceptual_weight > 0:
                terms["perceptual"] = _l1(fake_features, real_features)
            if cfg.noise_feature_weight > 0:
                g_f = tf.cast(aux, tf.float32)
                if self.noise_projection is not None:
                    g_f = tf.cast(self.noise_projection(g_f), tf.float32)
                target = real_features
                if real_features.shape[1:3] != g_f.shape[1:3] or None in g_f.shape[1:3]:
                    target = tf.image.resize(real_features, tf.shape(g_f)[1:3],
                                             method="bilinear", antialias=True)
                terms["noise_feature"] = _l1(g_f, target)
        g_loss = (cfg.adversarial_weight * terms["g_adv"]
                  + cfg.perceptual_weight * terms["perceptual"]
                  + cfg.l1_weight * terms["l1"]
                  + cfg.noise_feature_weight * terms["noise_feature"])
        terms["g_loss"] = g_loss
        return terms, g_loss


def colorgan(**kwargs) -> ColorGAN:
    """The paper-size ColorGAN (256 px); keyword arguments override :class:`ColorGANConfig`."""
    return ColorGAN(**kwargs)


def colorgan_small(**kwargs) -> ColorGAN:
    """A small ColorGAN for tests and CPU smoke runs (not for results): generator widths
    (16, 32, 64), c_z 8, critic (16, 32, 64); keyword arguments override any field."""
    small = {"widths": (16, 32, 64), "noise_channels": 8, "critic_widths": (16, 32, 64)}
    return ColorGAN(**{**small, **kwargs})
