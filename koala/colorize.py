r"""Colorizes grayscale (or desaturated colour) photos with a trained fusion colorizer.

  python -m koala.colorize INPUT... -o OUTDIR --model MODEL.keras \
      [--saturation=1.2] [--refine=none|guided --radius=40 --eps=1e-4] [--suffix=_color] \
      [--grid] [--embedder_weights=PATH] [--samples=1 --seed=0]

INPUTs are image files or folders (walked recursively, sub-folders kept under OUTDIR). Each
image becomes ``OUTDIR/<subfolders>/<stem><suffix>.png`` with exactly the input's size; with
``--grid`` also ``<stem><suffix>_grid.png`` (input | output, plus the original when the input
was colour). Colour inputs are desaturated first: only their lightness L* is used. Bad files
are reported on stderr and skipped; the exit status is 1 if any image failed, 2 when nothing
could be done (no model, no images).

Inference (SPEC §1): the network sees the image fitted into its S x S square (aspect kept,
white padding) and predicts a*b* there; the prediction is cropped back to the image's region,
upsampled bilinearly to the full resolution and joined with the full-resolution L*, so the
output keeps the input's size and sharpness (chroma is low-frequency; the eye takes detail
from L*). As in the report, a*b* are multiplied by a saturation factor, 1.2 by default,
because the regression towards the mean makes raw predictions dull.

Refinement (SPEC §5, Liang et al. 2016): ``--refine=guided`` passes the full-resolution a*b*
(after the upsampling, before the saturation factor; the filter is linear in a*b*, so the
order makes no difference) through a guided filter (:mod:`koala.guided`) whose guide is the
full-resolution lightness L*/100 in [0, 1], radius ``--radius`` pixels of the full-resolution
image and ``--eps`` (the paper's 40 and 1e-4). It removes blotches while the chroma keeps the
edges of L*. ``--refine=none`` (the default) leaves the prediction as it is.

A ColorGAN model (:mod:`koala.models.colorgan`) needs no embedder; its noise map makes
colourings differ: ``--samples=N`` writes ``<stem><suffix>_1.png ... _N.png``, file k drawn
from the noise seed ``(--seed, k - 1)``, so equal seeds give equal outputs (a single output is
file 1's colouring). A fusion model is deterministic and refuses ``--samples`` > 1.

Library use::

    colorizer = Colorizer.load("model.keras")        # builds the embedder once
    rgb = colorizer.colorize(images.load_image("old.jpg"))   # uint8 (H, W, 3)
"""

from __future__ import annotations

import functools
import math
import os
import pathlib
import sys

import numpy as np
import tensorflow as tf
from absl import app, flags

from koala import batch, color, geometry, guided, images, models
from koala import grid as grid_lib
from koala.embedder import Embedder
from koala.errors import KoalaError
from koala.models import colorgan, fusion, lal
from koala.models.colorgan import ColorGANConfig
from koala.models.fusion import FusionConfig

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_RADIUS",
    "DEFAULT_SATURATION",
    "REFINES",
    "Colorizer",
    "colorize",
    "define_flags",
    "gray_baseline",
    "main",
    "output_paths",
    "refine_ab",
    "run",
]

DEFAULT_SATURATION = 1.2
"""SPEC §1: the report multiplies the predicted a*b* by 1.2 (raw outputs looked dull)."""

REFINES = ("none", "guided")
"""Chroma refinements: none, or a guided filter with the lightness as guide (SPEC §5)."""
DEFAULT_RADIUS = 40
"""Guided-filter radius in full-resolution pixels (Liang et al. 2016: 40)."""
DEFAULT_EPS = 1e-4
"""Guided-filter ε for a guide in [0, 1] (Liang et al. 2016: 1e-4)."""

INFERENCE_FIT = "pad"
"""How the network's square is made at inference: always pad, so no part of the image is cut."""


def _as_rgb(image) -> np.ndarray:
    """A :class:`~koala.images.LoadedImage` or uint8 (H, W), (H, W, 1), (H, W, 3) array ->
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
            "(load files with koala.images.load_image, which composites alpha)"
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
      radius, eps: the guided filter's (:func:`koala.guided.guided_filter`).

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
      rgb: uint8 (H, W, 3) or (H, W) array, or a :class:`~koala.images.LoadedImage`.

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
      model: a :class:`koala.models.fusion.FusionColorizer` (anything with a
        :class:`~koala.models.fusion.FusionConfig` as ``.config`` that maps
        ``{"l": (B, S, S, 1) in [-1, 1], "embedding": (B, D)}`` to ab/128 (B, S, S, 2)), or a
        :class:`koala.models.colorgan.ColorGAN` (no embedder; its noise gives several
        colourings of one image, :meth:`colorize_samples`).
      embedder: the :class:`~koala.embedder.Embedder` to use. Default: the one recorded in
        ``model.config`` (name, weights, fit), built once per process and shared.
      embedder_weights: with ``embedder=None``, weights that replace the recorded ones
        (``"imagenet"``, ``"none"`` or a local file), e.g. where the recorded file is elsewhere.

    Raises:
      KoalaError: ``model`` is not a fusion colorizer, or the embedder's output size is not the
        model's ``embedding_dim``. :class:`~koala.errors.WeightsError` (a KoalaError) when the
        embedder's weights can't be loaded.
    """

    def __init__(self, model, embedder: Embedder | None = None, *,
                 embedder_weights: str | None = None):
        config = getattr(model, "config", None)
        if not isinstance(config, (FusionConfig, ColorGANConfig)):
            raise KoalaError(
                f"{type(model).__name__} is not a koala colorizer (no FusionConfig or "
                f"ColorGANConfig)"
            )
        self.model = model
        self.config = config
        self.image_size = size = config.image_size
        self.is_gan = isinstance(config, ColorGANConfig)
        if self.is_gan:  # L only: no embedder; noise from a seed (see _network_ab)
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

    def _call_model(self, l, embedding):
        return self.model({"l": l, "embedding": embedding}, training=False)

    @classmethod
    def load(cls, path, *, embedder_weights: str | None = None) -> Colorizer:
        """A colorizer from a saved ``.keras`` fusion model and the embedder it records.

        Raises:
          KoalaError: the file is missing, is not a loadable Keras model, or is not a koala
            fusion colorizer; WeightsError when the embedder's weights can't be loaded.
        """
        model = models.load(path, (fusion.FusionColorizer, colorgan.ColorGAN, lal.LalColorizer),
                            "a koala colorizer (fusion, Lal et al. or ColorGAN)")
        return cls(model, embedder_weights=embedder_weights)

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
        if self.is_gan and samples is None:
            samples, seed = 1, 0
        size = self.image_size
        square = geometry.fit_square(rgb, size, INFERENCE_FIT)  # (S, S, 3), white padding
        l = color.normalize_l(_lightness(square))[None]  # (1, S, S, 1) in [-1, 1]
        if samples is not None:
            return [color.denormalize_ab(ab[0]) for ab in self.model.sample(l, seed, samples)]
        embedding = self.embedder.embed(self.embedder.fit(rgb)[None])  # (1, D)
        return [color.denormalize_ab(self._forward(l, tf.constant(embedding)))[0]]

    def _predict(self, rgb, refine, radius, eps, samples, seed=0) -> list[np.ndarray]:
        """Full-resolution a*b* (H, W, 2) per prediction (see :meth:`predict_ab`)."""
        if refine not in REFINES:  # fail before running the network
            raise ValueError(f"refine must be one of {REFINES}, got {refine!r}")
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
                         saturation: float = DEFAULT_SATURATION, refine: str = "none",
                         radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS
                         ) -> list[np.ndarray]:
        """``samples`` different colourings of one image from a ColorGAN (its noise map gives
        the diversity, SPEC §4); sample k uses noise drawn from ``(seed, k)``, so equal seeds
        give equal outputs. Arguments as :meth:`colorize`.

        Raises:
          KoalaError: the model is not a ColorGAN (a fusion model has no noise to sample).
        """
        if not self.is_gan:
            raise KoalaError(f"{type(self.model).__name__} is deterministic: only a ColorGAN "
                             f"draws several colourings (samples={samples})")
        _check_saturation(saturation)
        rgb = _as_rgb(image)
        lightness = _lightness(rgb)
        return [_lab_to_uint8(lightness, tf.constant(ab) * saturation)
                for ab in self._predict(rgb, refine, radius, eps, samples, seed)]

    def colorize(self, image, *, saturation: float = DEFAULT_SATURATION, refine: str = "none",
                 radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> np.ndarray:
        """Colorizes one image at its own resolution.

        Args:
          image: uint8 (H, W, 3) or (H, W) array, or a LoadedImage; colour images are used
            through their lightness L* only (as if desaturated).
          saturation: factor on the predicted a*b* (>= 0; 0 gives :func:`gray_baseline`).
          refine: "none" or "guided" (SPEC §5), applied to the full-resolution a*b* before
            the saturation factor; see :meth:`predict_ab`.
          radius, eps: the guided filter's radius (full-resolution pixels) and ε.

        Returns:
          uint8 (H, W, 3) sRGB: the input's full-resolution L* with the predicted a*b*.
        """
        _check_saturation(saturation)
        rgb = _as_rgb(image)
        ab = self.predict_ab(rgb, refine=refine, radius=radius, eps=eps)
        return _lab_to_uint8(_lightness(rgb), tf.constant(ab) * saturation)


def _check_saturation(saturation: float) -> None:
    if not (math.isfinite(saturation) and saturation >= 0):
        raise ValueError(f"saturation must be finite and >= 0, got {saturation}")


def colorize(model, image, *, embedder: Embedder | None = None,
             saturation: float = DEFAULT_SATURATION, refine: str = "none",
             radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> np.ndarray:
    """Function form of :meth:`Colorizer.colorize`.

    Args:
      model: a :class:`Colorizer`, or a fusion colorizer Keras model (its recorded embedder is
        then built once per process, or ``embedder`` is used).
      image: uint8 (H, W, 3) or (H, W) array, or a LoadedImage.
      embedder: an :class:`~koala.embedder.Embedder` to use instead of the recorded one.
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


# --- Command line ------------------------------------------------------------------------

FLAGS = flags.FLAGS
_DEFINED_IN: list[flags.FlagValues] = []


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the command-line flags (once per FlagValues).

    Called by :func:`run`, not at import: :mod:`koala.evaluate` imports this module as a
    library and defines flags of its own (``--model``, ``--output_dir``, ...) that would
    otherwise clash.
    """
    if any(fv is flag_values for fv in _DEFINED_IN):
        return
    _DEFINED_IN.append(flag_values)
    fv = flag_values
    flags.DEFINE_string("output_dir", None, "Folder for the colorized PNGs (created).",
                        short_name="o", flag_values=fv)
    flags.DEFINE_string("model", None, "A fusion colorizer or ColorGAN saved as .keras by "
                        "koala.train.",
                        flag_values=fv)
    flags.DEFINE_float("saturation", DEFAULT_SATURATION,
                       "Factor on the predicted a*b* (SPEC §1: 1.2; 0 gives the gray input).",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_enum("refine", "none", list(REFINES),
                      "Chroma refinement: none, or guided (a guided filter on the full-resolution "
                      "a*b* with L* as guide; SPEC §5).", flag_values=fv)
    flags.DEFINE_integer("radius", DEFAULT_RADIUS, "Guided-filter radius in full-resolution "
                         "pixels (SPEC §5: 40).", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("eps", DEFAULT_EPS, "Guided-filter ε, guide L*/100 in [0, 1] "
                       "(SPEC §5: 1e-4).", flag_values=fv)
    flags.register_validator("eps", lambda e: math.isfinite(e) and e > 0, "--eps must be > 0",
                             flag_values=fv)
    flags.DEFINE_string("suffix", "_color", "Appended to each output's stem: <stem><suffix>.png.",
                        flag_values=fv)
    flags.DEFINE_integer("samples", 1, "ColorGAN: colourings per image (SPEC §4: its noise gives "
                         "diversity); N > 1 writes <stem><suffix>_1.png ... _N.png.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "ColorGAN: noise seed; sample k uses (seed, k), so equal "
                         "seeds give equal outputs.", flag_values=fv)
    flags.DEFINE_bool("grid", False, "Also write <stem><suffix>_grid.png: input | output "
                      "(| original, for colour inputs).", flag_values=fv)
    flags.DEFINE_string("embedder_weights", None,
                        "Override the embedder weights recorded in the model: imagenet, none "
                        "or a local weights file.", flag_values=fv)
    flags.DEFINE_integer("max_pixels", images.DEFAULT_MAX_PIXELS,
                         "Decompression-bomb limit: larger images fail.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)
    flags.register_validator("suffix", lambda s: "/" not in s and os.sep not in s,
                             "--suffix must not contain a path separator", flag_values=fv)


def output_paths(inputs, output_dir, suffix: str = "_color",
                 samples: int = 1) -> list[tuple[pathlib.Path, pathlib.Path]]:
    """``(input file, output PNG)`` pairs (:func:`koala.batch.output_paths`); the optional
    ``<stem><suffix>_grid.png`` beside each output, and with ``samples`` > 1 the
    ``<stem><suffix>_k.png`` files, are checked for clashes too."""
    extra = tuple(f"_{k}" for k in range(1, samples + 1)) if samples > 1 else ()
    return batch.output_paths(inputs, output_dir, suffix, companions=("_grid", *extra),
                              verb="colorize")


def _grid_row(loaded: images.LoadedImage, results: list[np.ndarray]) -> list[np.ndarray]:
    """input | output(s), or for colour inputs: desaturated input | output(s) | original."""
    if loaded.was_grayscale:
        return [loaded.rgb, *results]
    return [gray_baseline(loaded.rgb), *results, loaded.rgb]


def main(argv):
    inputs = argv[1:]
    if not inputs:
        print("error: give at least one input image or folder", file=sys.stderr)
        return 2
    try:
        pairs = output_paths(inputs, FLAGS.output_dir, FLAGS.suffix, FLAGS.samples)
    except KoalaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not pairs:
        print(f"error: {batch.no_images_message(inputs)}", file=sys.stderr)
        return 2
    try:
        colorizer = Colorizer.load(FLAGS.model, embedder_weights=FLAGS.embedder_weights)
        if FLAGS.samples > 1 and not colorizer.is_gan:
            raise KoalaError(f"--samples={FLAGS.samples}: {FLAGS.model} is a deterministic "
                             f"fusion colorizer; only a ColorGAN draws several colourings")
    except KoalaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    options = dict(saturation=FLAGS.saturation, refine=FLAGS.refine, radius=FLAGS.radius,
                   eps=FLAGS.eps)

    def handle(loaded, out):
        if colorizer.is_gan:  # reproducible: the noise comes from --seed
            results = colorizer.colorize_samples(loaded, FLAGS.samples, FLAGS.seed, **options)
        else:
            results = [colorizer.colorize(loaded, **options)]
        if len(results) == 1:
            grid_lib.save_png(out, results[0])
        else:
            for k, result in enumerate(results, start=1):
                grid_lib.save_png(out.with_name(f"{out.stem}_{k}.png"), result)
        if FLAGS.grid:
            height = min(loaded.height, 512)  # never upscale; cap huge inputs
            grid_lib.save_png(out.with_name(out.stem + "_grid.png"),
                              grid_lib.make_grid([_grid_row(loaded, results)], height=height))

    return batch.process_and_report(pairs, handle, desc="colorize", done_verb="colorized",
                                    output_dir=FLAGS.output_dir, max_pixels=FLAGS.max_pixels,
                                    progress=FLAGS.progress)


def run():
    define_flags()
    flags.mark_flags_as_required(["output_dir", "model"])
    app.run(main)


if __name__ == "__main__":
    run()
