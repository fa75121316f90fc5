r"""User-guided colorization: colour scribbles (Levin et al. 2004), a reference photo (Welsh et
al. 2002), and hints that correct an automatic colorizer.

**Hints.** A hints image is the gray image with colour drawn on it: RGB, the gray image's size;
every pixel whose chroma (U, V of :func:`koala.ops.color.rgb_to_yuv`) differs from the gray
input's (a colour input's gray version, whose chroma is 0) by more than ``threshold``
(Euclidean, in YUV units where U, V span about ±0.44 and ±0.62) is a hint, with that pixel's
colour. Elsewhere the hints image is ignored, so JPEG noise below the threshold and gray
strokes are not hints.

* :func:`colorize_with_hints` with no model: Levin's propagation in YUV, Y from the gray
  input, U and V fixed at the hints (:func:`koala.ops.levin.propagate`).
* With a model: the model's a*b* are the start; at each hint the correction
  ``δ = ab(hint) - ab(model)`` is fixed, and δ = 0 is fixed at every pixel farther than
  ``reach`` pixels from all hints; Levin's propagation spreads δ in between, so a correction
  fills its region (it stops at intensity edges) and fades out before ``reach``, and the rest of
  the image keeps the model's colour exactly. ``reach=0`` lifts the limit: every correction
  spreads over the whole image, as scribbles do.
* :func:`colorize_from_reference`: Welsh's transfer (:func:`koala.ops.welsh.transfer`).

Every result keeps the gray input's CIE L* (the reference transfer and the model path replace
the output's L* by the input's; the scribble path keeps Y exactly, as the paper).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from scipy import ndimage

from koala.core.errors import ImageError
from koala.ops import color, levin, welsh
from koala.tasks.colorize.config import (
    DEFAULT_HINT_REACH,
    DEFAULT_HINT_THRESHOLD,
    DEFAULT_REFERENCE_SAMPLES,
)
from koala.tasks.colorize.inference import (
    Colorizer,
    _as_rgb,
    _lab_to_uint8,
    _lightness,
    gray_baseline,
)

__all__ = ["colorize_from_reference", "colorize_with_hints", "hint_mask"]


def _rgb(image, name: str) -> np.ndarray:
    """uint8 (H, W, 3) from a LoadedImage or a uint8 (H, W[, 1 or 3]) array."""
    try:
        return _as_rgb(image)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: {e}") from None


def _gray(rgb: np.ndarray) -> tuple[tf.Tensor, np.ndarray]:
    """(L* (H, W, 1), the gray koala colours: :func:`gray_baseline`'s uint8 (H, W, 3)), from
    one Lab conversion."""
    lightness = _lightness(rgb)
    return lightness, _lab_to_uint8(lightness, tf.zeros([*lightness.shape[:-1], 2]))


def _yuv(rgb: np.ndarray) -> np.ndarray:
    return color.rgb_to_yuv(rgb.astype(np.float64) / 255.0).numpy()


def hint_mask(gray, hints, *, threshold: float = DEFAULT_HINT_THRESHOLD, name: str = "hints"
              ) -> np.ndarray:
    """The hint pixels: where the hints image's chroma differs from the gray input's (the
    input's lightness with no chroma, which is what koala colours: a colour input counts as
    its gray version).

    Args:
      gray, hints: uint8 images (LoadedImage or array) of the same height and width.
      threshold: the chroma distance (UV of YUV) above which a pixel is a hint.
      name: how the hints image is named in errors (its file name).

    Returns:
      bool (H, W).

    Raises:
      ImageError: the hints image's size differs from the gray image's, or it has no hint
        pixel.
    """
    return _mask(gray_baseline(_rgb(gray, "gray")), _rgb(hints, name), threshold, name)


def _mask(base: np.ndarray, hints: np.ndarray, threshold: float, name: str) -> np.ndarray:
    """:func:`hint_mask` of the gray koala colours (``gray_baseline`` of the input: its L*
    only; a colour input's own chroma would make every pixel of a hints image drawn on its
    gray copy a hint)."""
    if hints.shape[:2] != base.shape[:2]:
        raise ImageError(name, f"hints image is {hints.shape[1]}x{hints.shape[0]} but the "
                               f"gray image is {base.shape[1]}x{base.shape[0]}: draw the hints "
                               f"on a copy of the gray image")
    distance = np.linalg.norm(_yuv(hints)[..., 1:] - _yuv(base)[..., 1:], axis=-1)
    mask = distance > threshold
    if not mask.any():
        raise ImageError(name, f"no hint pixels: no pixel's chroma differs from the gray "
                               f"image's by more than {threshold:g} (max {distance.max():.3f}); "
                               f"draw in colour, or lower --hint_threshold")
    return mask


def colorize_with_hints(gray, hints, model=None, *, threshold: float = DEFAULT_HINT_THRESHOLD,
                        reach: int = DEFAULT_HINT_REACH, name: str = "hints", **model_options
                        ) -> np.ndarray:
    """Colours ``gray`` from the colour drawn in ``hints``, alone or correcting a model.

    Args:
      gray: uint8 (H, W[, 3]) array or LoadedImage; colour inputs are used through their
        lightness only.
      hints: the same image with colour drawn on it (see the module docstring).
      model: None (scribbles only, Levin et al.), or a koala colorizer (a
        :class:`~koala.tasks.colorize.inference.Colorizer`, a colorizer Keras model or a
        ``.keras`` path / preset name) whose result the hints correct.
      threshold: the chroma distance that makes a pixel a hint (:func:`hint_mask`).
      reach: with a model, pixels farther than this from every hint keep the model's a*b*
        exactly; 0 = no limit.
      name: the hints' name in errors.
      model_options: passed to the model's ``predict_ab`` (``refine``, ``radius``, ``eps``)
        and ``saturation`` (the factor on the model's a*b*; default: the colorizer's own).

    Returns:
      uint8 (H, W, 3) sRGB.

    Raises:
      ImageError: a hints image of the wrong size or with no hint pixel.
    """
    rgb, marks = _rgb(gray, "gray"), _rgb(hints, name)
    lightness, base = _gray(rgb)  # once: the mask, Y and (with a model) L* come from it
    mask = _mask(base, marks, threshold, name)
    y = base[..., 0].astype(np.float64) / 255.0
    if model is None:
        if model_options:
            raise TypeError(f"{sorted(model_options)} need a model")
        uv = levin.propagate(y, mask, _yuv(marks)[..., 1:])
        out = color.yuv_to_rgb(np.concatenate([y[..., None], uv], -1)).numpy()
        return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)
    if reach < 0:
        raise ValueError(f"reach must be >= 0, got {reach}")
    colorizer = model if isinstance(model, Colorizer) else (
        Colorizer.load(model) if isinstance(model, str) else Colorizer(model))
    saturation = model_options.pop("saturation", None)
    saturation = colorizer.saturation if saturation is None else saturation
    if model_options.get("refine") is None:
        model_options["refine"] = colorizer.refine
    ab = colorizer.predict_ab(rgb, **model_options).astype(np.float64) * saturation
    hint_ab = color.srgb_to_lab(tf.constant(marks, tf.float32) / 255.0)[..., 1:].numpy()
    fixed, delta = mask, np.where(mask[..., None], hint_ab - ab, 0.0)
    if reach:
        far = ndimage.distance_transform_edt(~mask) > reach
        fixed = mask | far
    ab = ab + levin.propagate(y, fixed, delta)
    return _lab_to_uint8(lightness, tf.constant(ab, tf.float32))


def colorize_from_reference(gray, reference, *, samples: int = DEFAULT_REFERENCE_SAMPLES,
                            seed: int = 0) -> np.ndarray:
    """Colours ``gray`` with the colours of ``reference`` (Welsh et al. 2002;
    :func:`koala.ops.welsh.transfer`), keeping the input's L*.

    Args:
      gray: uint8 (H, W[, 3]) array or LoadedImage (used through its lightness).
      reference: a colour photo, uint8 array or LoadedImage, of any size.
      samples, seed: the number of jittered reference samples (about 200) and their seed.

    Returns:
      uint8 (H, W, 3) sRGB.
    """
    rgb, ref = _rgb(gray, "gray"), _rgb(reference, "reference")
    lightness, base = _gray(rgb)
    out = welsh.transfer(base[..., 0] / 255.0, ref.astype(np.float64) / 255.0, samples=samples,
                         seed=seed)
    ab = color.srgb_to_lab(tf.constant(out, tf.float32))[..., 1:]
    return _lab_to_uint8(lightness, ab)
