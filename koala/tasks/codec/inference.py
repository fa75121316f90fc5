r"""Hides a colour photo in an ordinary-looking 8-bit grayscale PNG and restores the colour from
it, with a trained Invertible Grayscale model (Xia, Liu, Wong 2018; SPEC §2,
:mod:`koala.tasks.codec.model`).

The command line is :mod:`koala.cli.codec`.

A model file is a whole :class:`~koala.tasks.codec.model.InvertibleGrayscale` ``.keras`` file (its
``.encoder`` or ``.decoder`` is used) or one half saved on its own (``model.encoder.save(path)``,
or ``export``). The half is
recognised by its channels: an encoder maps (B, H, W, 3) to
(B, H, W, 1), a decoder (B, H, W, 1) to (B, H, W, 3); the wrong half is a one-line error.

Geometry. Both halves take sides that are multiples of 4 (the encoder downsamples twice by 2).
An image of any size is reflect-padded at the bottom and right to the next multiple of 4, run,
and cropped back. Outputs are clipped to [0, 1] and rounded to 8 bits (the grayscale is what gets
stored, so the decoder only ever sees 8-bit levels, as the paper's quantization loss intends).

Tiles (:mod:`koala.core.tiling`, the tiler SR uses too). A big image runs as ``tile`` x ``tile``
output tiles, each computed from a window with ``overlap`` px of context per side (clipped at
the image edges), so activations stay bounded: an untiled 2000 x 1500 encoder run keeps several
64-channel full-resolution activations of 0.77 GB each. Tile sides and starts, the overlap and
the padded image are all multiples of 4, so every window starts on the stride-2 grid of the
whole image and sees exactly the same convolutions ("same" padding of a stride-2 convolution on
an even side pads only at the end). The overlap defaults to the model's receptive radius
(:func:`receptive_radius`, read off the layer graph) rounded up to a multiple of 8: for the
paper encoder 66 px (5 full-resolution 3x3 layers, the stride-2 steps, 9 3x3 layers at 1/4
resolution worth 4 px each, the way back up) -> 72 px; for the paper decoder 18 px -> 24 px.
With that context the stitched output equals the whole image run at once up to float rounding
(tests: within 1e-4 before rounding, so at most 1 grey level after it, on the rare pixels that
sit on a rounding boundary; measured on CPU: identical, for codec_small and for the paper model
with weights scaled up so that outputs vary). A model with a layer the graph reader does not
know gets :data:`FALLBACK_OVERLAP`, with a warning that names the layer; pass ``overlap`` to
choose it yourself.

Memory, measured once by hand: peak RSS of the whole CLI process (``/usr/bin/time -v python -m
koala.codec encode|decode IMAGE -o DIR --model paper.keras``), untrained paper model
``koala.tasks.codec.model.codec()`` (6.7 M + 0.74 M parameters), TF 2.21 on 2 shared CPU cores::

    image         command   tile 512 (default)   tile 768   tile 1024   untiled (--tile=0)
    2000 x 1500   encode    1.42 GiB, 45 s       2.07 GiB   2.54 GiB    4.95 GiB
    2000 x 1500   decode    1.51 GiB, 33 s                              6.01 GiB
    301 x 217     encode    0.70 GiB, 5 s
    301 x 217     decode    0.72 GiB, 4 s

About 0.7 GiB of that is TensorFlow and the model; the 512 px default keeps a 2000 x 1500 round
trip near 1.5 GiB, well under 4 GB (an untiled one would not fit).

Library use::

    encoder = load_part("codec.keras", "encoder")
    gray = encode(encoder, images.load_image("photo.jpg").rgb)     # uint8 (H, W)
    rgb = decode(load_part("codec.keras", "decoder"), gray)        # uint8 (H, W, 3)
"""

from __future__ import annotations

import functools
import io
import os
import pathlib
import warnings

import keras
import numpy as np
from PIL import Image

from koala.core import saving as models
from koala.core import tiling
from koala.core.errors import KoalaError
from koala.ops import color, images
from koala.tasks.codec import model as _model  # noqa: F401  (registers InvertibleGrayscale)

__all__ = [
    "ALIGN",
    "DEFAULT_TILE",
    "FALLBACK_OVERLAP",
    "PARTS",
    "TiledPart",
    "decode",
    "default_overlap",
    "encode",
    "export",
    "load_codec",
    "load_part",
    "luma",
    "receptive_radius",
    "round_trip",
    "select_part",
]

ALIGN = 4
"""Sides, tile origins and overlaps are multiples of this: the encoder downsamples by 2 twice."""

DEFAULT_TILE = 512
"""Output tile side in px: a paper-model CLI run on a 2000 x 1500 photo peaks at ~1.5 GiB RSS
(encode 1.42, decode 1.51; untiled 4.95 and 6.01; table in the module docstring)."""

FALLBACK_OVERLAP = 128
"""Context per tile side for a model whose receptive radius can't be read off its layers: about
twice the paper encoder's 66 px."""

PARTS = {"encoder": (3, 1), "decoder": (1, 3)}
"""Each half of the codec by name: (input channels, output channels)."""


# --- Receptive radius and overlap --------------------------------------------------------------


def receptive_radius(model) -> int | None:
    """Px of input context on each side that one output pixel of ``model`` can depend on, read
    off its layer graph (:func:`koala.core.tiling.receptive_radius`). The paper encoder
    (SPEC §2): 66; the decoder: 18. None when a layer is not one the reader knows (or
    ``model`` has no graph)."""
    try:
        return tiling.receptive_radius(model)
    except tiling.UnknownLayerError:
        return None


def default_overlap(model) -> int:
    """:func:`receptive_radius` rounded up to a multiple of 8, or :data:`FALLBACK_OVERLAP`
    with a warning naming the layer the reader does not know."""
    try:
        return tiling.round_overlap(tiling.receptive_radius(model))
    except tiling.UnknownLayerError as e:
        warnings.warn(f"{e}; tiling with overlap={FALLBACK_OVERLAP} px (FALLBACK_OVERLAP), "
                      "which may not cover it: pass overlap= to choose", stacklevel=2)
        return FALLBACK_OVERLAP


# --- Running one half on tiles -----------------------------------------------------------------


def _channels(model) -> tuple[int, int] | None:
    """(input channels, output channels) of a single-input image model, else None."""
    try:
        (inp,), (out,) = model.inputs, model.outputs
    except (AttributeError, TypeError, ValueError):
        return None
    if len(inp.shape) != 4 or len(out.shape) != 4:
        return None
    return inp.shape[-1], out.shape[-1]


class TiledPart:
    """One half of the codec (encoder or decoder) run on tiles of an image of any size.

    Args:
      model: a functional Keras model mapping (B, H, W, C_in) in [0, 1] to (B, H, W, C_out),
        H and W multiples of 4 (``InvertibleGrayscale.encoder`` or ``.decoder``).
      tile: output tile side in px, rounded down to a multiple of 4 (at least 4); None runs the
        whole image at once (memory grows with the image).
      overlap: px of context per tile side, at least :func:`receptive_radius`, rounded up to a
        multiple of 4; default :func:`default_overlap`.

    Raises:
      KoalaError: ``model`` is not a single-input image model.
      ValueError: ``tile`` < 1, or ``overlap`` under the receptive radius (tiles would not join
        up exactly).
    """

    def __init__(self, model, *, tile: int | None = DEFAULT_TILE, overlap: int | None = None):
        channels = _channels(model)
        if channels is None:
            raise KoalaError(f"{type(model).__name__} is not a functional image model "
                             "(one (B, H, W, C) input and output)")
        self.model = model
        self.channels_in, self.channels_out = channels
        self.tile = tiling.check_tile(tile, ALIGN)
        self.radius = receptive_radius(model)
        self.overlap = tiling.check_overlap(default_overlap(model) if overlap is None else overlap,
                                            self.radius, ALIGN)
        self._forward = tiling.compile_forward(model, self.channels_in)

    def __call__(self, x01) -> np.ndarray:
        """float (H, W, C_in) (or (H, W) for one channel) in [0, 1] -> float32 (H, W, C_out),
        clipped to [0, 1], not rounded."""
        x = np.asarray(x01, np.float32)
        if x.ndim == 2:
            x = x[..., None]
        if x.ndim != 3 or x.shape[2] != self.channels_in or 0 in x.shape:
            raise ValueError(f"expected an (H, W, {self.channels_in}) image, got {x.shape}")
        height, width = x.shape[:2]
        ph, pw = -height % ALIGN, -width % ALIGN
        if ph or pw:  # numpy reflects again for pads longer than a tiny side
            x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        out = np.empty((*x.shape[:2], self.channels_out), np.float32)

        def run(rows, cols):  # the model's output for one window
            return self._forward(tiling.take(x, rows, cols)[None])[0].numpy()

        tiling.stitch(*x.shape[:2], run, out, tile=self.tile, context=self.overlap, align=ALIGN)
        return np.clip(out[:height, :width], 0.0, 1.0)


@functools.lru_cache(maxsize=4)
def _cached_part(model, tile, overlap) -> TiledPart:
    """One traced TiledPart per (model, tile, overlap) for repeated function calls."""
    return TiledPart(model, tile=tile, overlap=overlap)


def _part(model, name: str, tile, overlap) -> TiledPart:
    part = model if isinstance(model, TiledPart) else _cached_part(model, tile, overlap)
    if (part.channels_in, part.channels_out) != PARTS[name]:
        raise KoalaError(f"expected a codec {name} ({PARTS[name][0]} channels -> "
                         f"{PARTS[name][1]}), got a model with {part.channels_in} -> "
                         f"{part.channels_out}")
    return part


def _to_uint8(x01: np.ndarray) -> np.ndarray:
    return np.round(x01 * np.float32(255.0)).astype(np.uint8)


def encode(encoder, rgb, *, tile: int | None = DEFAULT_TILE,
           overlap: int | None = None) -> np.ndarray:
    """The grayscale that hides ``rgb``'s colour.

    Args:
      encoder: the codec's encoder (a Keras model, (B, H, W, 3) -> (B, H, W, 1) in [0, 1]) or
        a :class:`TiledPart` of it (then ``tile`` and ``overlap`` are its own).
      rgb: uint8 (H, W, 3) sRGB, any size; (H, W) or (H, W, 1) grayscale is replicated; or a
        :class:`~koala.ops.images.LoadedImage`.
      tile, overlap: see :class:`TiledPart`.

    Returns:
      uint8 (H, W), the grayscale rounded to 8 bits (what gets stored).
    """
    part = _part(encoder, "encoder", tile, overlap)
    rgb = rgb.rgb if isinstance(rgb, images.LoadedImage) else _uint8_image(rgb)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    if rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) or grayscale image, got {rgb.shape}")
    return _to_uint8(part(rgb.astype(np.float32) / np.float32(255.0))[..., 0])


def decode(decoder, gray, *, tile: int | None = DEFAULT_TILE,
           overlap: int | None = None) -> np.ndarray:
    """The colour image restored from a grayscale.

    Args:
      decoder: the codec's decoder ((B, H, W, 1) -> (B, H, W, 3) in [0, 1]) or a
        :class:`TiledPart` of it.
      gray: uint8 (H, W) or (H, W, 1), any size; (H, W, 3) with equal channels is taken as
        gray (convert other colour images with :func:`luma` first).
      tile, overlap: see :class:`TiledPart`.

    Returns:
      uint8 (H, W, 3) sRGB.
    """
    part = _part(decoder, "decoder", tile, overlap)
    gray = _uint8_image(gray)
    if gray.shape[2] == 3 and (gray == gray[..., :1]).all():
        gray = gray[..., :1]
    if gray.shape[2] != 1:
        raise ValueError(f"expected a grayscale (H, W) image, got {gray.shape}; reduce colour "
                         "images to gray with koala.tasks.codec.inference.luma first")
    return _to_uint8(part(gray.astype(np.float32) / np.float32(255.0)))


def _uint8_image(array) -> np.ndarray:
    """A uint8 (H, W, C) view of a uint8 (H, W) or (H, W, C) array."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {array.shape}")
    return array


def luma(rgb) -> np.ndarray:
    """uint8 (H, W, 3) sRGB -> uint8 (H, W) BT.601 luma ``0.299 R + 0.587 G + 0.114 B``
    (:func:`koala.ops.color.rgb_to_luma` in float64, rounded half to even): the plain grayscale."""
    rgb = _uint8_image(rgb)
    y = color.rgb_to_luma(rgb.astype(np.float64)).numpy()[..., 0]
    return np.clip(np.round(y), 0, 255).astype(np.uint8)


def round_trip(gray: np.ndarray, fmt: str = "PNG", *, quality: int | None = None) -> np.ndarray:
    """uint8 (H, W) -> the same image after writing it as an 8-bit grayscale file in memory
    (PIL, ``fmt`` "PNG" or "JPEG" with ``quality``) and reading it back with
    :func:`koala.ops.images.load_image`. PNG gives the image back unchanged."""
    buffer = io.BytesIO()
    options = {} if quality is None else {"quality": int(quality)}
    Image.fromarray(_uint8_image(gray)[..., 0]).save(buffer, format=fmt, **options)
    return images.load_image(buffer.getvalue(), name=f"<{fmt}>").rgb[..., 0]


# --- Loading and exporting ---------------------------------------------------------------------


def _is_whole(model) -> bool:
    return all(isinstance(getattr(model, p, None), keras.Model) for p in PARTS)


def select_part(model, part: str, *, source: str | None = None) -> keras.Model:
    """``model.encoder`` / ``model.decoder`` of a whole codec, or ``model`` itself when it is
    that half on its own.

    Raises:
      KoalaError: ``model`` is the other half, or neither a codec nor a half of one (the
        message names ``source``, e.g. the file).
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {sorted(PARTS)}, got {part!r}")
    source = source or f"the {type(model).__name__}"
    if _is_whole(model):
        model, source = getattr(model, part), f"{source} (its .{part})"
    channels = _channels(model)
    if channels == PARTS[part]:
        return model
    (other,) = set(PARTS) - {part}
    verb = {"encoder": "encoding", "decoder": "decoding"}[part]
    wanted = (f"{verb} needs the {part} ({PARTS[part][0]}-channel input) or a whole "
              "InvertibleGrayscale model")
    if channels == PARTS[other]:
        raise KoalaError(f"{source} is a codec {other} ({channels[0]}-channel input); {wanted}")
    shape = "" if channels is None else f" mapping {channels[0]} channels to {channels[1]}"
    raise KoalaError(f"{source} holds a {type(model).__name__}{shape}, not a codec half; "
                     f"{wanted}")


def load_part(path, part: str) -> keras.Model:
    """The ``part`` ("encoder" or "decoder") from a saved ``.keras`` file holding a whole
    InvertibleGrayscale model or that half alone.

    Raises:
      KoalaError: the file is missing or not a Keras model, or holds the wrong half.
    """
    model = models.load(path, (keras.Model,), "an InvertibleGrayscale codec or one half of one")
    return select_part(model, part, source=os.fspath(path))


def load_codec(path) -> tuple[keras.Model, keras.Model]:
    """(encoder, decoder) of a saved ``.keras`` file holding a whole InvertibleGrayscale.

    Raises:
      KoalaError: the file is missing, not a Keras model, or not a whole codec (e.g. one half).
    """
    model = models.load(path, (keras.Model,), "an InvertibleGrayscale codec or one half of one")
    if not _is_whole(model):
        channels = _channels(model)
        what = next((f"a codec {p} alone" for p, c in PARTS.items() if c == channels),
                    f"a {type(model).__name__}")
        raise KoalaError(f"{os.fspath(path)} holds {what}, not a whole InvertibleGrayscale "
                         "model (with .encoder and .decoder)")
    source = os.fspath(path)
    return select_part(model, "encoder", source=source), select_part(model, "decoder",
                                                                      source=source)


def export(path, output_dir) -> dict[str, pathlib.Path]:
    """Writes ``output_dir/encoder.keras`` and ``decoder.keras`` from a whole codec file: two
    functional models that reload with plain ``keras.saving.load_model``.

    Returns:
      {"encoder": path, "decoder": path}.

    Raises:
      KoalaError: the file is missing, not a Keras model, or not a whole codec.
    """
    halves = dict(zip(PARTS, load_codec(path), strict=True))
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, model in halves.items():
        written[part] = output_dir / f"{part}.keras"
        models.save(model, written[part])
    return written
