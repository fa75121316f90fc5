r"""Full-resolution colorization with a trained koala colorizer (fusion, Lal et al., ColorGAN).

The command line is :mod:`koala.cli.colorize`.

Inference (SPEC §1): the network sees the image fitted into its S x S square (aspect kept,
white padding) and predicts a*b* there; the prediction is cropped back to the image's region,
upsampled bilinearly to the full resolution and joined with the full-resolution L*, so the
output keeps the input's size and sharpness (chroma is low-frequency; the eye takes detail
from L*). As in the report, a*b* are multiplied by a saturation factor, 1.2 by default,
because the regression towards the mean makes raw predictions dull.

Refinement (SPEC §5, Liang et al. 2016): ``refine="guided"`` passes the full-resolution a*b*
(after the upsampling, before the saturation factor; the filter is linear in a*b*, so the
order makes no difference) through a guided filter (:mod:`koala.ops.guided`) whose guide is
the full-resolution lightness L*/100 in [0, 1], radius ``radius`` pixels of the
full-resolution image and ``eps`` (the paper's 40 and 1e-4). It removes blotches while the
chroma keeps the edges of L*.

Liang et al.'s VCNN (:mod:`koala.tasks.colorize.models.vcnn`) works in YUV on the image's
own resolution: 64×64 windows whose 56×56 centres tile the image predict U and V
(:func:`~koala.tasks.colorize.models.vcnn.colorize_uv`), refined by the guided filter with Y
as guide (its paper's pipeline, so ``refine`` defaults to "guided" for it), joined with Y.

A ColorGAN model (:mod:`koala.tasks.colorize.models.colorgan`) needs no embedder; its noise
map makes colourings differ (:meth:`Colorizer.colorize_samples`, sample k from the seed
``(seed, k)``). PixColor (:mod:`koala.tasks.colorize.models.pixcolor`) uses the embedder like a
fusion model and samples its 28×28 chroma from ``(seed, k)`` the same way, at
``temperature`` (its sampling temperature); its single :meth:`Colorizer.colorize` is sample 0
of seed 0. A fusion model is deterministic.

Library use::

    colorizer = Colorizer.load("model.keras")        # builds the embedder once
    rgb = colorizer.colorize(images.load_image("old.jpg"))   # uint8 (H, W, 3)
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

from koala.core import saving as models
from koala.core.errors import KoalaError
from koala.ops import color, geometry, guided, images
from koala.ops.embedder import Embedder
from koala.tasks.colorize.config import (  # noqa: F401  (re-exported)
    DEFAULT_EPS,
    DEFAULT_RADIUS,
    DEFAULT_SATURATION,
    INFERENCE_FIT,
    REFINES,
)
from koala.tasks.colorize.models import colorgan, fusion, lal, pixcolor, vcnn
from koala.tasks.colorize.models.colorgan import ColorGANConfig
from koala.tasks.colorize.models.fusion import FusionConfig

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_RADIUS",
    "DEFAULT_SATURATION",
    "REFINES",
    "Colorizer",
    "colorize",
    "gray_baseline",
    "refine_ab",
]


def _as_rgb(image) -> np.ndarray:
    """A :class:`~koala.ops.images.LoadedImage` or uint8 (H, W), (H, W, 1), (H, W, 3) array ->
    uint8 (H, W, 3) (grayscale replicated)."""
    if isinstance(image, images.LoadedImage):
        return image.rgb
    rgb = np.asarray(image)
    if rgb.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {rgb.dtype}")
    if rgb.ndim == 2:
        rgb = rgb[:, :, None]
    if rgb.ndim != 3 or rgb.shape[2] not in (1, 3):
        raise ValueError(
            f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {rgb.shape} "
            "(load files with koala.ops.images.load_image, which composites alpha)"
        )
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"empty image of shape {rgb.shape}")
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return rgb


def _lightness(rgb: np.ndarray) -> tf.Tensor:
    """uint8 (..., 3) sRGB -> float32 L* (..., 1) in [0, 100]."""
    return color.srgb_to_lab(tf.cast(rgb, tf.float32) / 255.0)[..., :1]


def _lab_to_uint8(lightness: tf.Tensor, ab: tf.Tensor) -> np.ndarray:
    """L* (H, W, 1) and a*b* (H, W, 2), float32 -> uint8 sRGB (H, W, 3), rounded."""
    rgb = color.lab_to_srgb(tf.concat([lightness, ab], axis=-1))  # clipped to [0, 1]
    return np.round(rgb.numpy() * 255.0).astype(np.uint8)


def refine_ab(ab: np.ndarray, lightness: np.ndarray, *, refine: str = "guided",
              radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Refines predicted a*b* (SPEC §5).

    Args:
      ab: float (H, W, 2) a*b* in Lab units.
      lightness: (H, W) or (H, W, 1) L* in [0, 100]; L*/100 is the guide.
      refine: one of :data:`REFINES`; "none" returns ``ab`` unchanged.
      radius, eps: the guided filter's (:func:`koala.ops.guided.guided_filter`).

    Returns:
      float32 (H, W, 2).
    """
    if refine not in REFINES:
        raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
    ab = np.asarray(ab, np.float32)
    if refine == "none":
        return ab
    guide = np.asarray(lightness, np.float64) / 100.0
    return guided.guided_filter(guide, ab, radius, eps).astype(np.float32)


def gray_baseline(rgb) -> np.ndarray:
    """The gray baseline (ab = 0): ``Lab(L*, 0, 0)`` of the input as uint8 sRGB.

    Args:
      rgb: uint8 (H, W, 3) or (H, W) array, or a :class:`~koala.ops.images.LoadedImage`.

    Returns:
      uint8 (H, W, 3), the input's lightness with no chroma (channels equal within 1 level).
    """
    lightness = _lightness(_as_rgb(rgb))
    return _lab_to_uint8(lightness, tf.zeros([*lightness.shape[:-1], 2], tf.float32))


@functools.lru_cache(maxsize=2)
def _default_embedder(name: str, weights: str, fit: str) -> Embedder:
    """One embedder per (name, weights, fit) per process: building one takes seconds."""
    return Embedder(name, weights, fit=fit)


class Colorizer:
    """A koala colorizer model plus, for a fusion model, the embedder that makes its
    "embedding" input.

    Args:
      model: a :class:`koala.tasks.colorize.models.fusion.FusionColorizer` (anything with a
        :class:`~koala.tasks.colorize.models.fusion.FusionConfig` as ``.config`` that maps
        ``{"l": (B, S, S, 1) in [-1, 1], "embedding": (B, D)}`` to ab/128 (B, S, S, 2)), or a
        :class:`koala.tasks.colorize.models.colorgan.ColorGAN` (no embedder; its noise gives several
        colourings of one image, :meth:`colorize_samples`).
      embedder: the :class:`~koala.ops.embedder.Embedder` to use. Default: the one recorded in
        ``model.config`` (name, weights, fit), built once per process and shared.
      embedder_weights: with ``embedder=None``, weights that replace the recorded ones
        (``"imagenet"``, ``"none"`` or a local file), e.g. where the recorded file is elsewhere.
      saturation: the default factor on the predicted a*b* of :meth:`colorize` (None: SPEC §1's
        1.2, or 1.0 for PixColor, whose samples are not pulled to the mean; a preset records
        its own, picked on held-out photos).
      temperature: the annealed-mean temperature of a classification head (Zhang et al.;
        None: the model's own); an error for a model without one.

    Raises:
      KoalaError: ``model`` is not a fusion colorizer, or the embedder's output size is not the
        model's ``embedding_dim``. :class:`~koala.core.errors.WeightsError` (a KoalaError) when the
        embedder's weights can't be loaded.
    """

    def __init__(self, model, embedder: Embedder | None = None, *,
                 embedder_weights: str | None = None, saturation: float | None = None,
                 temperature: float | None = None):
        config = getattr(model, "config", None)
        if not isinstance(config, (FusionConfig, ColorGANConfig, vcnn.VCNNConfig,
                                   pixcolor.PixColorConfig)):
            raise KoalaError(
                f"{type(model).__name__} is not a koala colorizer (no FusionConfig, "
                f"ColorGANConfig, VCNNConfig or PixColorConfig)"
            )
        self.model = model
        self.config = config
        # SPEC §1's 1.2 offsets a regression's pull to the mean; PixColor's samples have none.
        default = 1.0 if isinstance(config, pixcolor.PixColorConfig) else DEFAULT_SATURATION
        self.saturation = default if saturation is None else float(saturation)
        _check_saturation(self.saturation)
        self.is_pixcolor = isinstance(config, pixcolor.PixColorConfig)
        # PixColor's sampling temperature (None for the others, whose annealed-mean one lives
        # in the model).
        self.sampling_temperature = config.temperature if self.is_pixcolor else None
        if temperature is not None and self.is_pixcolor:
            if not temperature > 0:
                raise ValueError(f"temperature must be > 0, got {temperature}")
            self.sampling_temperature = float(temperature)
        elif temperature is not None:
            _set_temperature(model, temperature)
        self.image_size = size = config.image_size
        self.is_gan = isinstance(config, ColorGANConfig)
        self.is_vcnn = isinstance(config, vcnn.VCNNConfig)
        self.refine = "guided" if self.is_vcnn else "none"  # the VCNN paper always refines
        if self.is_gan or self.is_vcnn:  # no embedder (GAN: noise from a seed, _network_ab)
            self.embedder = None
            return
        if embedder is None:
            embedder = _default_embedder(
                config.embedder, embedder_weights or config.embedder_weights, config.embedder_fit
            )
        if embedder.dim != config.embedding_dim:
            raise KoalaError(
                f"embedder {embedder.name} gives {embedder.dim}-d embeddings but the model "
                f"expects embedding_dim={config.embedding_dim}"
            )
        self.embedder = embedder
        dim = config.embedding_dim
        # Fixed shapes (dynamic batch): one trace for every image, whatever its size.
        self._forward = tf.function(
            self._call_model,
            input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32),
                             tf.TensorSpec([None, dim], tf.float32)],
        )

    @property
    def temperature(self) -> float | None:
        """The classification head's annealed-mean temperature; None for other models."""
        if self.is_pixcolor:  # the sampling temperature
            return self.sampling_temperature
        layers = _annealed_means(self.model)
        return layers[0].temperature if layers else None

    @property
    def is_stochastic(self) -> bool:
        """Whether the model draws several different colourings (ColorGAN, PixColor)."""
        return self.is_gan or self.is_pixcolor

    def _call_model(self, l, embedding):
        return self.model({"l": l, "embedding": embedding}, training=False)

    @classmethod
    def load(cls, path, *, embedder_weights: str | None = None, saturation: float | None = None,
             temperature: float | None = None, refine: str | None = None) -> Colorizer:
        """A colorizer from a saved ``.keras`` colorizer or a preset name, and the embedder
        it records. A preset brings its own embedder weights file and default decoding
        (:func:`koala.presets.embedder_weights`, :func:`koala.presets.decoding`); the
        arguments, when given, win.

        Raises:
          KoalaError: the file is missing, is not a loadable Keras model, or is not a koala
            fusion colorizer; WeightsError when the embedder's weights can't be loaded.
        """
        from koala import presets

        model = models.load(path, (fusion.FusionColorizer, colorgan.ColorGAN, lal.LalColorizer,
                                   vcnn.VCNN, pixcolor.PixColor),
                            "a koala colorizer (fusion, Lal et al., ColorGAN, VCNN or PixColor)")
        decoding = presets.decoding(path)
        if saturation is None:
            saturation = decoding.get("saturation")
        if temperature is None and _has_temperature(model):
            temperature = decoding.get("temperature")
        colorizer = cls(model, embedder_weights=embedder_weights or presets.embedder_weights(path),
                        saturation=saturation, temperature=temperature)
        refine = refine or decoding.get("refine")
        if refine is not None:
            if refine not in REFINES:
                raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
            colorizer.refine = refine
        return colorizer

    def predict_ab(self, rgb, *, refine: str = "none", radius: int = DEFAULT_RADIUS,
                   eps: float = DEFAULT_EPS) -> np.ndarray:
        """Predicted a*b* at the input's full resolution.

        Args:
          rgb: uint8 (H, W, 3) or (H, W) array, or a LoadedImage. Only its L* is used.
          refine: "none", or "guided": a guided filter over the full-resolution a*b* with
            L*/100 as guide (:func:`refine_ab`).
          radius, eps: the guided filter's radius (full-resolution pixels) and ε.

        Returns:
          float32 (H, W, 2), a*b* in Lab units (ab/128 of the network times 128, so within
          [-128, 128]): the network's S x S prediction cropped to the image's region of the
          padded square and resized bilinearly to (H, W), then refined.
        """
        return self._predict(rgb, refine, radius, eps, None)[0]

    def _network_ab(self, rgb: np.ndarray, samples: int | None, seed: int | None):
        """The network's (S, S, 2) a*b* in Lab units for the image fitted into its square:
        one prediction, or ``samples`` ColorGAN samples drawn from ``seed``. A ColorGAN's
        single prediction is its sample from seed 0, so results are reproducible."""
        if self.is_stochastic and samples is None:
            samples, seed = 1, 0
        size = self.image_size
        square = geometry.fit_square(rgb, size, INFERENCE_FIT)  # (S, S, 3), white padding
        l = color.normalize_l(_lightness(square))[None]  # (1, S, S, 1) in [-1, 1]
        if self.is_gan:
            return [color.denormalize_ab(ab[0]) for ab in self.model.sample(l, seed, samples)]
        embedding = self.embedder.embed(self.embedder.fit(rgb)[None])  # (1, D)
        if self.is_pixcolor:
            inputs = {"l": l, "embedding": tf.constant(embedding, tf.float32)}
            drawn = self.model.sample(inputs, seed, samples, self.sampling_temperature)
            return [color.denormalize_ab(ab[0]) for ab in drawn]
        return [color.denormalize_ab(self._forward(l, tf.constant(embedding)))[0]]

    def _predict(self, rgb, refine, radius, eps, samples, seed=0) -> list[np.ndarray]:
        """Full-resolution a*b* (H, W, 2) per prediction (see :meth:`predict_ab`)."""
        if refine not in REFINES:  # fail before running the network
            raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
        if self.is_vcnn:
            raise KoalaError("a VCNN predicts U and V of YUV, not a*b*: use colorize()")
        rgb = _as_rgb(rgb)
        height, width = rgb.shape[:2]
        top, left, nh, nw = geometry.pad_box(height, width, self.image_size)
        out = []
        for ab in self._network_ab(rgb, samples, seed):
            ab = ab[top : top + nh, left : left + nw]  # the image's region only
            if (nh, nw) != (height, width):
                # antialias only matters when shrinking (images smaller than S).
                ab = tf.image.resize(ab, (height, width), method="bilinear", antialias=True)
            ab = ab.numpy().astype(np.float32)
            if refine != "none":
                ab = refine_ab(ab, _lightness(rgb).numpy(), refine=refine, radius=radius,
                               eps=eps)
            out.append(ab)
        return out

    def colorize_samples(self, image, samples: int, seed: int, *,
                         saturation: float | None = None, refine: str | None = None,
                         radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS
                         ) -> list[np.ndarray]:
        """``samples`` different colourings of one image from a ColorGAN (its noise map gives
        the diversity, SPEC §4) or PixColor (its PixelCNN's samples, SPEC §5); sample k uses
        noise drawn from ``(seed, k)``, so equal seeds give equal outputs. Arguments as
        :meth:`colorize`.

        Raises:
          KoalaError: the model is deterministic (a fusion model has no noise to sample).
        """
        if not self.is_stochastic:
            raise KoalaError(f"{type(self.model).__name__} is deterministic: only ColorGAN and "
                             f"PixColor draw several colourings (samples={samples})")
        saturation = self.saturation if saturation is None else saturation
        refine = self.refine if refine is None else refine
        _check_saturation(saturation)
        rgb = _as_rgb(image)
        lightness = _lightness(rgb)
        return [_lab_to_uint8(lightness, tf.constant(ab) * saturation)
                for ab in self._predict(rgb, refine, radius, eps, samples, seed)]

    def colorize(self, image, *, saturation: float | None = None, refine: str | None = None,
                 radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> np.ndarray:
        """Colorizes one image at its own resolution.

        Args:
          image: uint8 (H, W, 3) or (H, W) array, or a LoadedImage; colour images are used
            through their lightness L* only (as if desaturated).
          saturation: factor on the predicted a*b* (>= 0; 0 gives :func:`gray_baseline`;
            None: this colorizer's default, :attr:`saturation`).
          refine: "none" or "guided" (SPEC §5), applied to the full-resolution a*b* (a VCNN:
            U, V) before the saturation factor; see :meth:`predict_ab`. None: this
            colorizer's default, :attr:`refine` ("guided" for a VCNN, else "none").
          radius, eps: the guided filter's radius (full-resolution pixels) and ε.

        Returns:
          uint8 (H, W, 3) sRGB: the input's full-resolution L* with the predicted a*b*.
        """
        saturation = self.saturation if saturation is None else saturation
        refine = self.refine if refine is None else refine
        _check_saturation(saturation)
        rgb = _as_rgb(image)
        if self.is_vcnn:
            return self._colorize_yuv(rgb, saturation, refine, radius, eps)
        ab = self.predict_ab(rgb, refine=refine, radius=radius, eps=eps)
        return _lab_to_uint8(_lightness(rgb), tf.constant(ab) * saturation)

    def _colorize_yuv(self, rgb, saturation, refine, radius, eps) -> np.ndarray:
        """A VCNN's colorization of uint8 rgb: Y, windowed U and V, guided filter, back to RGB."""
        if refine not in REFINES:
            raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
        y = color.rgb_to_yuv(tf.cast(rgb, tf.float32) / 255.0)[..., 0].numpy()
        uv = vcnn.colorize_uv(self.model, y)
        if refine != "none":
            uv = guided.guided_filter(y, uv, radius, eps).astype(np.float32)
        out = color.yuv_to_rgb(np.concatenate([y[..., None], uv * saturation], -1)).numpy()
        return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def _annealed_means(model) -> list:
    """Every AnnealedMean layer of a model, nested models included."""
    found, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        if isinstance(layer, fusion.AnnealedMean):
            found.append(layer)
        stack.extend(getattr(layer, "layers", []))
    return found


def _has_temperature(model) -> bool:
    return isinstance(model, pixcolor.PixColor) or bool(_annealed_means(model))


def _set_temperature(model, temperature: float) -> None:
    """Sets the annealed-mean temperature of a classification head, before the first call
    traces it (the layer reads it when traced)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature}")
    layers = _annealed_means(model)
    if not layers:
        raise KoalaError(f"{model.name} has no classification head: a temperature applies "
                         f"only to a colorizer that predicts ab bins (--head=classification)")
    for layer in layers:
        layer.temperature = float(temperature)


def _check_saturation(saturation: float) -> None:
    if not (math.isfinite(saturation) and saturation >= 0):
        raise ValueError(f"saturation must be finite and >= 0, got {saturation}")


def colorize(model, image, *, embedder: Embedder | None = None,
             saturation: float | None = None, refine: str | None = None,
             radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Function form of :meth:`Colorizer.colorize`.

    Args:
      model: a :class:`Colorizer`, or a fusion colorizer Keras model (its recorded embedder is
        then built once per process, or ``embedder`` is used).
      image: uint8 (H, W, 3) or (H, W) array, or a LoadedImage.
      embedder: an :class:`~koala.ops.embedder.Embedder` to use instead of the recorded one.
      saturation: factor on the predicted a*b* (>= 0).
      refine: "none" or "guided" (a guided filter on a*b*, guide L*/100; SPEC §5).
      radius, eps: the guided filter's radius (full-resolution pixels; SPEC §5: 40) and ε
        (SPEC §5: 1e-4).

    Returns:
      uint8 (H, W, 3), the same height and width as ``image``.
    """
    if isinstance(model, Colorizer):
        colorizer = model if embedder is None else Colorizer(model.model, embedder)
    else:
        colorizer = Colorizer(model, embedder)
    return colorizer.colorize(image, saturation=saturation, refine=refine, radius=radius,
                              eps=eps)
