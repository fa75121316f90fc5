"""Super-resolution: SRCNN, FSRCNN and a RED-Net-style convolutional auto-encoder (SPEC §3).

Papers:

- **SRCNN**: C. Dong, C. C. Loy, K. He, X. Tang, "Learning a Deep Convolutional Network for
  Image Super-Resolution", ECCV 2014, and "Image Super-Resolution Using Deep Convolutional
  Networks", TPAMI 2016 (arXiv:1501.00092).
- **FSRCNN**: C. Dong, C. C. Loy, X. Tang, "Accelerating the Super-Resolution Convolutional
  Neural Network", ECCV 2016 (arXiv:1608.00367).
- **Auto-encoder**: X.-J. Mao, C. Shen, Y.-B. Yang, "Image Restoration Using Very Deep
  Convolutional Encoder-Decoder Networks with Symmetric Skip Connections" (RED-Net),
  NIPS 2016 (arXiv:1603.09056).

Source notes: ``seeds/srcnn_keras_ja.txt`` (a Keras SRCNN with 3 channels, "same" padding and
Keras' default initialisers, 20 099 parameters, plus an auto-encoder variant).

Every model takes images in [0, 1], channels last, of any spatial size, and returns a float32
image with the same channels. What it expects as input differs (``config.upsampled_input``)::

    SRCNN, SRAutoencoder  input  (B, H, W, C)    the low-res image, bicubic-upscaled x scale
                          output (B, H - 2b, W - 2b, C) with b = border(config) (0 unless
                                 SRCNN has padding="valid"), the restored high-res image
    FSRCNN                input  (B, h, w, C)    the low-res image itself
                          output (B, s*h, s*w, C), s = config.scale

C is 1 (the Y channel of YCbCr, as in the papers) or 3 (RGB, as in the seed). The last layer
with weights is named ``"output"`` in every model, so the trainer can find it (the SRCNN paper
trains it with a 10x smaller learning rate).

A k x k conv (or transposed conv) from c_in to c_out channels has k*k*c_in*c_out + c_out
parameters; a PReLU with one slope per channel has c_out. Layer tables (parameters of the
paper models, C = 1)::

    SRCNN 9-1-5 (padding "valid", on the paper's 33 x 33 training sub-images)
    layer     op                 output         params
    input     bicubic LR         33 x 33 x 1
    conv1     conv9/64 ReLU      25 x 25 x 64    5 248   (9*9*1*64 + 64)
    conv2     conv1/32 ReLU      25 x 25 x 32    2 080   (1*1*64*32 + 32)
    output    conv5/1 linear     21 x 21 x 1       801   (5*5*32*1 + 1)
    total 8 129; border 4 + 0 + 2 = 6 px per side.
    9-5-5: conv2 is conv5/32 (5*5*64*32 + 32 = 51 232), output 17 x 17, total 57 281.
    RGB 9-1-5 (the seed): 15 616 + 2 080 + 2 403 = 20 099.

    FSRCNN (d, s, m) = (56, 12, 4), x3, on an h x w low-res input
    layer     op                       output          params
    input     LR image                 h x w x 1
    feature   conv5/56 PReLU           h x w x 56      1 456 + 56    (5*5*1*56 + 56; slopes)
    shrink    conv1/12 PReLU           h x w x 12        684 + 12    (1*1*56*12 + 12)
    map1..4   conv3/12 PReLU, x4       h x w x 12   4 x (1 308 + 12) (3*3*12*12 + 12)
    expand    conv1/56 PReLU           h x w x 56        728 + 56    (1*1*12*56 + 56)
    output    deconv9/1, stride 3      3h x 3w x 1     4 537         (9*9*56*1 + 1)
    total 12 809 = 12 464 weights (the paper's "12.5 k") + 173 biases + 172 PReLU slopes.

    SRAutoencoder, depth 5, 64 filters (RED-Net's 10-layer net, plus an output conv)
    layer       op                          output         params
    input       bicubic LR                  H x W x 1
    enc_conv1   conv3/64 ReLU          e1   H x W x 64         640   (3*3*1*64 + 64)
    enc_conv2-5 conv3/64 ReLU          e2-5 H x W x 64   4 x 36 928   (3*3*64*64 + 64)
    dec_deconv1 deconv3/64, + e4, ReLU d1   H x W x 64      36 928
    dec_deconv2 deconv3/64 ReLU        d2   H x W x 64      36 928
    dec_deconv3 deconv3/64, + e2, ReLU d3   H x W x 64      36 928
    dec_deconv4 deconv3/64 ReLU        d4   H x W x 64      36 928
    dec_deconv5 deconv3/64 ReLU        d5   H x W x 64      36 928
    output      conv3/1 linear              H x W x 1          577   (3*3*64*1 + 1)
    global_residual  input + output         H x W x 1            0
    total 333 569 = 640 + 9 * 36 928 + 577.

    Skips: decoder layer j (1-based) receives encoder feature e_(depth - j) for odd j < depth,
    i.e. one skip every 2 layers, the innermost spanning [e_depth, d1]. The deconvolution is
    linear there, the sum is followed by ReLU (RED-Net's "sum, then ReLU").

Compute (:func:`multiply_adds_per_output_pixel`): a k x k conv from c_in to c_out costs
k*k*c_in*c_out multiply-adds per pixel of the grid it runs on, and so does a transposed conv
per *input* pixel (each input pixel scatters a k x k x c_out footprint for every input
channel). SRCNN and the auto-encoder run every layer on the high-res grid; FSRCNN runs every
layer, the deconvolution included, on the low-res grid, i.e. 1/s^2 of the high-res pixels::

    SRCNN 9-1-5 Y:  81*64 + 64*32 + 25*32             =  8 032 per HR pixel
    SRCNN 9-5-5 Y:  81*64 + 25*64*32 + 25*32          = 57 184
    FSRCNN x3 (56, 12, 4) Y:
        (25*56 + 56*12 + 4*9*12*12 + 12*56 + 81*56) / 9 = 12 464 / 9 ~ 1 385
    i.e. 5.8x fewer than SRCNN 9-1-5 and 41x fewer than 9-5-5 (the paper's "> 40x faster").

Borders are ignored there (a "valid" SRCNN runs its first layers on a slightly larger grid
than its output); biases, activations and additions are not counted.

Departures from the papers:

1. **Padding** (SRCNN): ``padding="valid"`` (the default) is the paper: no padding, the
   output is 2 * border(config) px smaller than the input (12 for 9-1-5, 16 for 9-5-5), and
   the trainer crops the target to match. ``padding="same"`` (the seed's choice) keeps the
   size with zero padding, which biases the outer ``border`` pixels towards black.
2. **Initialisation**. SRCNN: the paper's N(0, 0.001) kernels and zero biases
   (``init="paper"``, the default); ``init="glorot"`` is Keras' default (Glorot-uniform
   kernels), the seed's choice, which trains faster with Adam. FSRCNN, as the paper: the
   convolutions followed by PReLU get He/MSRA init (N(0, 2/fan_in), not truncated, as
   Caffe's ``msra`` filler), the deconvolution N(0, 0.001), biases zero; the PReLU slopes start
   at 0.25 (He et al. 2015 and Caffe's default; Keras' own default 0 would start as a ReLU).
   Auto-encoder: neither SPEC nor the seed records RED-Net's initialisation; the ReLU layers
   get the same He normal, the linear output conv Keras' Glorot-uniform.
3. **Learning rates per layer** (SRCNN: 1e-5 for the last layer, 1e-4 elsewhere) belong to
   the trainer, not the model: it finds the last layer by its name, ``"output"``.
4. **FSRCNN's deconvolution** uses Keras' ``padding="same"``, so the output is exactly
   scale x the input for every scale (the paper's Caffe deconvolution crops by its padding
   argument instead). For even scales an odd kernel centres each low-res pixel half a high-res
   pixel off its true centre; the 9 x 9 kernel learns the shift.
5. **The auto-encoder** follows RED-Net's symmetric conv / deconv stack (3x3, stride 1, no
   pooling, ReLU, skips every 2 layers) but ends in a linear conv3/C and adds the input to it
   (a global residual, as in VDSR and common RED-Net re-implementations): the network
   predicts the detail bicubic missed, and all-zero weights give the bicubic image back.
   RED-Net's last deconvolution produces the image directly.
6. **Output dtype**: the last layer (and the auto-encoder's residual sum) is float32, so the
   output is float32 under a mixed-precision policy too.
7. **Any input size** (``keras.Input((None, None, C))``): the papers train on fixed crops.
8. ``scale`` is structural for FSRCNN (the deconvolution's stride) but only metadata for
   SRCNN and the auto-encoder (the factor the model was trained for, read by the upscale
   tool); ``*_small`` constructors exist for tests and CPU smoke runs, not for results.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import keras

__all__ = [
    "AutoencoderConfig",
    "FSRCNN",
    "FSRCNNConfig",
    "SRAutoencoder",
    "SRCNN",
    "SRCNNConfig",
    "border",
    "build_fsrcnn",
    "build_sr_autoencoder",
    "build_srcnn",
    "fsrcnn",
    "fsrcnn_small",
    "multiply_adds_per_output_pixel",
    "parameter_count_from_table",
    "sr_autoencoder",
    "sr_autoencoder_small",
    "srcnn",
    "srcnn_955",
    "srcnn_small",
]

PADDINGS = ("valid", "same")
SRCNN_INITS = ("paper", "glorot")
PAPER_STDDEV = 0.001  # SRCNN kernels and FSRCNN's deconvolution: N(0, 0.001)
PRELU_SLOPE = 0.25  # initial PReLU slope (He et al. 2015; Caffe's default)
# FSRCNN's fixed kernel sizes: feature extraction, mapping, deconvolution (shrink/expand are 1).
FSRCNN_KERNELS = {"feature": 5, "map": 3, "deconv": 9}
AE_KERNEL = 3  # every auto-encoder conv and deconv is 3x3


def _positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _positive(config, *names):
    """ValueError unless each named field of ``config`` is a positive integer."""
    for name in names:
        _positive_int(name, getattr(config, name))


# ----------------------------------------------------------------------------------------
# Configs


@dataclasses.dataclass(frozen=True)
class SRCNNConfig:
    """Hyper-parameters of SRCNN (defaults = the paper's 9-1-5 on Y, no padding).

    channels: C, 1 for the Y channel (the paper), 3 for RGB (the seed).
    filters:  filters of every layer but the last, (n1, n2) = (64, 32) in the paper.
    kernels:  kernel size of every layer, odd: (9, 1, 5) "9-1-5"; (9, 5, 5) "9-5-5".
    padding:  "valid" (the paper; output smaller by 2 * border) or "same" (departure 1).
    init:     "paper" (kernels N(0, 0.001), zero biases) or "glorot" (Keras' defaults).
    scale:    the upscaling factor the model is trained for; metadata (departure 8).
    """

    channels: int = 1
    filters: tuple[int, ...] = (64, 32)
    kernels: tuple[int, ...] = (9, 1, 5)
    padding: str = "valid"
    init: str = "paper"
    scale: int = 3

    def __post_init__(self):
        # Lists arrive from a reloaded .keras file's JSON: store tuples, so configs compare.
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "kernels", tuple(self.kernels))
        _positive(self, "channels", "scale")
        for f in self.filters:
            _positive_int("filters", f)
        for k in self.kernels:
            _positive_int("kernels", k)
            if k % 2 == 0:
                raise ValueError(f"kernels must be odd, got {self.kernels}")
        if len(self.kernels) != len(self.filters) + 1:
            raise ValueError(
                f"need one kernel per layer: {len(self.filters)} filters and the output "
                f"layer take {len(self.filters) + 1} kernels, got {self.kernels}"
            )
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {self.padding!r}")
        if self.init not in SRCNN_INITS:
            raise ValueError(f"init must be one of {SRCNN_INITS}, got {self.init!r}")

    upsampled_input: ClassVar[bool] = True  # SRCNN takes the bicubic-upscaled low-res image

    @property
    def border(self) -> int:
        """Pixels lost on each side: sum of (k - 1) / 2 with "valid" padding, else 0."""
        return sum((k - 1) // 2 for k in self.kernels) if self.padding == "valid" else 0


@dataclasses.dataclass(frozen=True)
class FSRCNNConfig:
    """Hyper-parameters of FSRCNN (defaults = the paper's FSRCNN(56, 12, 4), x3, on Y).

    d:        feature dimension (filters of the first and the expanding conv).
    s:        shrunk dimension (filters of the shrinking and the mapping convs).
    m:        number of 3x3 mapping convs.
    scale:    upscaling factor, the deconvolution's stride (structural).
    channels: C, 1 for the Y channel (the paper), 3 for RGB.
    """

    d: int = 56
    s: int = 12
    m: int = 4
    scale: int = 3
    channels: int = 1

    def __post_init__(self):
        _positive(self, "d", "s", "scale", "channels")
        if not isinstance(self.m, int) or isinstance(self.m, bool) or self.m < 0:
            raise ValueError(f"m must be a non-negative integer, got {self.m!r}")

    upsampled_input: ClassVar[bool] = False  # FSRCNN takes the low-res image itself
    border: ClassVar[int] = 0  # every layer keeps (or multiplies) the size


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """Hyper-parameters of the convolutional auto-encoder (RED-Net style, departure 5).

    depth:    number of encoder convs, and of decoder deconvs (5 = RED-Net's 10 layers).
    filters:  filters of every conv and deconv but the output conv.
    channels: C, 1 for the Y channel, 3 for RGB.
    scale:    the upscaling factor the model is trained for; metadata (departure 8).
    """

    depth: int = 5
    filters: int = 64
    channels: int = 1
    scale: int = 3

    def __post_init__(self):
        _positive(self, "depth", "filters", "channels", "scale")

    upsampled_input: ClassVar[bool] = True  # it takes the bicubic-upscaled low-res image
    border: ClassVar[int] = 0  # every layer keeps the size

    def skips(self) -> dict[int, int]:
        """{decoder layer j: encoder layer i} for each skip, i = depth - j, j odd, i >= 1."""
        return {j: self.depth - j for j in range(1, self.depth, 2)}


SRConfig = SRCNNConfig | FSRCNNConfig | AutoencoderConfig


def _config_of(model_or_config) -> SRConfig:
    config = getattr(model_or_config, "config", model_or_config)
    if not isinstance(config, SRConfig):
        raise TypeError(f"expected an SR model or config, got {type(model_or_config).__name__}")
    return config


def border(model_or_config) -> int:
    """Pixels an SR model's output loses on each side relative to its (upsampled) input.

    SRCNN with "valid" padding: (f1 - 1)/2 + (f2 - 1)/2 + (f3 - 1)/2 (6 for 9-1-5, 8 for
    9-5-5); 0 for every other model. Crop the target by this much to compare.
    """
    return _config_of(model_or_config).border


# ----------------------------------------------------------------------------------------
# Graphs


def _srcnn_graph(config: SRCNNConfig):
    """(B, H, W, C) -> (B, H - 2b, W - 2b, C), b = config.border."""

    def kernel_init():
        # A fresh initializer per layer: one unseeded instance reused would repeat its values.
        if config.init == "paper":
            return keras.initializers.RandomNormal(stddev=PAPER_STDDEV)
        return "glorot_uniform"

    image = keras.Input((None, None, config.channels), name="image")
    x = image
    for i, (filters, kernel) in enumerate(zip(config.filters, config.kernels[:-1], strict=True),
                                          start=1):
        x = keras.layers.Conv2D(filters, kernel, padding=config.padding, activation="relu",
                                kernel_initializer=kernel_init(), name=f"conv{i}")(x)
    out = keras.layers.Conv2D(config.channels, config.kernels[-1], padding=config.padding,
                              kernel_initializer=kernel_init(), dtype="float32",
                              name="output")(x)
    return image, out


def _he_normal():
    # Caffe's "msra" filler: N(0, 2 / fan_in), not truncated (Keras' HeNormal truncates).
    return keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal")


def _fsrcnn_graph(config: FSRCNNConfig):
    """(B, h, w, C) -> (B, scale*h, scale*w, C)."""

    def conv_prelu(x, filters, kernel, name):
        x = keras.layers.Conv2D(filters, kernel, padding="same", kernel_initializer=_he_normal(),
                                name=name)(x)
        return keras.layers.PReLU(
            alpha_initializer=keras.initializers.Constant(PRELU_SLOPE),
            shared_axes=[1, 2],  # one slope per channel, as the paper
            name=f"{name}_prelu",
        )(x)

    image = keras.Input((None, None, config.channels), name="image")
    x = conv_prelu(image, config.d, FSRCNN_KERNELS["feature"], "feature")
    x = conv_prelu(x, config.s, 1, "shrink")
    for i in range(1, config.m + 1):
        x = conv_prelu(x, config.s, FSRCNN_KERNELS["map"], f"map{i}")
    x = conv_prelu(x, config.d, 1, "expand")
    out = keras.layers.Conv2DTranspose(
        config.channels, FSRCNN_KERNELS["deconv"], strides=config.scale, padding="same",
        kernel_initializer=keras.initializers.RandomNormal(stddev=PAPER_STDDEV),
        dtype="float32", name="output",
    )(x)
    return image, out


def _autoencoder_graph(config: AutoencoderConfig):
    """(B, H, W, C) -> (B, H, W, C): input + prediction."""
    image = keras.Input((None, None, config.channels), name="image")
    encoder = []  # e_1 .. e_depth
    x = image
    for i in range(1, config.depth + 1):
        x = keras.layers.Conv2D(config.filters, AE_KERNEL, padding="same", activation="relu",
                                kernel_initializer=_he_normal(), name=f"enc_conv{i}")(x)
        encoder.append(x)
    skips = config.skips()
    for j in range(1, config.depth + 1):
        # Where a skip arrives the deconvolution is linear: sum first, then ReLU.
        activation = None if j in skips else "relu"
        x = keras.layers.Conv2DTranspose(
            config.filters, AE_KERNEL, padding="same", activation=activation,
            kernel_initializer=_he_normal(), name=f"dec_deconv{j}",
        )(x)
        if j in skips:
            x = keras.layers.Add(name=f"skip{j}")([x, encoder[skips[j] - 1]])
            x = keras.layers.ReLU(name=f"skip{j}_relu")(x)
    residual = keras.layers.Conv2D(config.channels, AE_KERNEL, padding="same", dtype="float32",
                                   name="output")(x)
    out = keras.layers.Add(dtype="float32", name="global_residual")([image, residual])
    return image, out


# ----------------------------------------------------------------------------------------
# Models: functional keras.Model subclasses whose config is the dataclass.


class _SRModel(keras.Model):
    """Shared plumbing: build the graph from ``CONFIG(**config)``; get_config = the dataclass."""

    CONFIG: type
    GRAPH: staticmethod
    NAME: str  # the default model name

    def __init__(self, name=None, **config):
        name = name or self.NAME
        kwargs = {k: config.pop(k) for k in ("trainable", "dtype") if k in config}
        self.config = self.CONFIG(**config)
        inputs, outputs = self.GRAPH(self.config)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                **dataclasses.asdict(self.config)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="koala")
class SRCNN(_SRModel):
    """SRCNN: (B, H, W, C) bicubic-upscaled image in [0, 1] -> (B, H - 2b, W - 2b, C) float32.

    b = ``border(config)``; keyword arguments are :class:`SRCNNConfig` fields. A saved
    ``.keras`` file reloads with plain ``keras.saving.load_model`` once koala.registry is
    imported.
    """

    CONFIG = SRCNNConfig
    GRAPH = staticmethod(_srcnn_graph)
    NAME = "srcnn"


@keras.saving.register_keras_serializable(package="koala")
class FSRCNN(_SRModel):
    """FSRCNN: (B, h, w, C) low-res image in [0, 1] -> (B, s*h, s*w, C) float32, s = scale.

    Keyword arguments are :class:`FSRCNNConfig` fields.
    """

    CONFIG = FSRCNNConfig
    GRAPH = staticmethod(_fsrcnn_graph)
    NAME = "fsrcnn"


@keras.saving.register_keras_serializable(package="koala")
class SRAutoencoder(_SRModel):
    """Auto-encoder SR: (B, H, W, C) bicubic-upscaled image -> (B, H, W, C) float32.

    Output = input + the network's prediction. Keyword arguments are
    :class:`AutoencoderConfig` fields.
    """

    CONFIG = AutoencoderConfig
    GRAPH = staticmethod(_autoencoder_graph)
    NAME = "sr_autoencoder"


# ----------------------------------------------------------------------------------------
# Hand counts from the layer tables (not from Keras).


def _conv(k, c_in, c_out):
    """Parameters of a k x k conv or transposed conv: kernel plus bias."""
    return k * k * c_in * c_out + c_out


def parameter_count_from_table(config: SRConfig) -> int:
    """The model's parameter count, computed by hand from the layer tables.

    A k x k (transposed) conv from c_in to c_out channels has k*k*c_in*c_out + c_out
    parameters; a PReLU with one slope per channel has c_out.
    """
    if isinstance(config, SRCNNConfig):
        total, c_in = 0, config.channels
        for c_out, k in zip((*config.filters, config.channels), config.kernels, strict=True):
            total += _conv(k, c_in, c_out)
            c_in = c_out
        return total
    if isinstance(config, FSRCNNConfig):
        d, s, c = config.d, config.s, config.channels
        k = FSRCNN_KERNELS
        conv_prelu = (
            _conv(k["feature"], c, d) + d
            + _conv(1, d, s) + s
            + config.m * (_conv(k["map"], s, s) + s)
            + _conv(1, s, d) + d
        )
        return conv_prelu + _conv(k["deconv"], d, c)
    if isinstance(config, AutoencoderConfig):
        f, c = config.filters, config.channels
        encoder = _conv(AE_KERNEL, c, f) + (config.depth - 1) * _conv(AE_KERNEL, f, f)
        decoder = config.depth * _conv(AE_KERNEL, f, f)
        return encoder + decoder + _conv(AE_KERNEL, f, c)
    raise TypeError(f"expected an SR config, got {type(config).__name__}")


def multiply_adds_per_output_pixel(model_or_config) -> float:
    """Multiply-adds per high-res output pixel, from the layer table (see the docstring).

    A k x k conv costs k*k*c_in*c_out per pixel of its grid, a stride-s k x k transposed conv
    k*k*c_in*c_out per input pixel. SRCNN and the auto-encoder: the sum over layers (all on the
    high-res grid). FSRCNN: the same sum over its layers, all on the low-res grid, divided by
    scale**2. Borders, biases, activations and additions are ignored.
    """
    config = _config_of(model_or_config)
    if isinstance(config, SRCNNConfig):
        channels = (config.channels, *config.filters, config.channels)
        return float(sum(k * k * a * b for k, a, b in
                         zip(config.kernels, channels[:-1], channels[1:], strict=True)))
    if isinstance(config, FSRCNNConfig):
        d, s, c = config.d, config.s, config.channels
        k = FSRCNN_KERNELS
        per_lr_pixel = (k["feature"] ** 2 * c * d + d * s + config.m * k["map"] ** 2 * s * s
                        + s * d + k["deconv"] ** 2 * d * c)
        return per_lr_pixel / config.scale**2
    f, c, k2 = config.filters, config.channels, AE_KERNEL**2
    return float(k2 * (c * f + (2 * config.depth - 1) * f * f + f * c))


# ----------------------------------------------------------------------------------------
# Constructors


def build_srcnn(config: SRCNNConfig) -> SRCNN:
    """SRCNN for a config."""
    return SRCNN(**dataclasses.asdict(config))


def build_fsrcnn(config: FSRCNNConfig) -> FSRCNN:
    """FSRCNN for a config."""
    return FSRCNN(**dataclasses.asdict(config))


def build_sr_autoencoder(config: AutoencoderConfig) -> SRAutoencoder:
    """The auto-encoder for a config."""
    return SRAutoencoder(**dataclasses.asdict(config))


def srcnn(**kwargs) -> SRCNN:
    """The paper's SRCNN 9-1-5 on Y; keyword arguments override :class:`SRCNNConfig`.

    The seed's model is ``srcnn(channels=3, padding="same", init="glorot")``.
    """
    return build_srcnn(SRCNNConfig(**kwargs))


def srcnn_955(**kwargs) -> SRCNN:
    """The paper's best SRCNN, 9-5-5 (kernels (9, 5, 5)); keyword arguments override."""
    return build_srcnn(SRCNNConfig(**{"kernels": (9, 5, 5), **kwargs}))


def srcnn_small(**kwargs) -> SRCNN:
    """SRCNN 9-1-5 with filters (16, 8), for tests and smoke runs (not for results)."""
    return build_srcnn(SRCNNConfig(**{"filters": (16, 8), **kwargs}))


def fsrcnn(**kwargs) -> FSRCNN:
    """The paper's FSRCNN(56, 12, 4), x3, on Y; keyword arguments override."""
    return build_fsrcnn(FSRCNNConfig(**kwargs))


def fsrcnn_small(**kwargs) -> FSRCNN:
    """FSRCNN(16, 8, 2), for tests and smoke runs (not for results)."""
    return build_fsrcnn(FSRCNNConfig(**{"d": 16, "s": 8, "m": 2, **kwargs}))


def sr_autoencoder(**kwargs) -> SRAutoencoder:
    """The auto-encoder, depth 5 and 64 filters, on Y; keyword arguments override."""
    return build_sr_autoencoder(AutoencoderConfig(**kwargs))


def sr_autoencoder_small(**kwargs) -> SRAutoencoder:
    """The auto-encoder with depth 2 and 16 filters, for tests and smoke runs."""
    return build_sr_autoencoder(AutoencoderConfig(**{"depth": 2, "filters": 16, **kwargs}))
