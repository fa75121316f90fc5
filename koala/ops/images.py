"""The one image loader every koala entry point uses.

:func:`load_image` turns any reasonable image file into a fresh ``uint8`` ``(H, W, 3)`` sRGB
array: EXIF orientation applied, CMYK and non-sRGB ICC profiles converted to sRGB, alpha
composited onto white, 16/32-bit and float data scaled to 8 bits without clipping, grayscale
replicated to three channels, first frame of animations. Every way a file can be unusable
(empty, not an image, truncated, corrupt, too many pixels, unreadable) becomes one
:class:`~koala.core.errors.ImageError` naming the file and the reason, so hostile or broken
files never escape as Pillow, numpy or OS exceptions. EXIF orientation is applied by
:func:`PIL.ImageOps.exif_transpose`.

:func:`find_images` and :func:`is_image_file` pick image files out of a folder by extension.

Nothing here changes global state: Pillow's ``MAX_IMAGE_PIXELS`` and ``LOAD_TRUNCATED_IMAGES``
are left alone, and Pillow's warnings are only caught locally (and reported in
:attr:`LoadedImage.warnings`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import struct
import warnings

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from koala.core.errors import ImageError, KoalaError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "LoadedImage",
    "find_images",
    "is_image_file",
    "load_image",
]

DEFAULT_MAX_PIXELS = 178_956_970
"""Default pixel limit, the same as the point where Pillow raises ``DecompressionBombError``."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")
"""File extensions (lower case) that :func:`find_images` and :func:`is_image_file` accept
(an animated GIF or WebP gives its first frame)."""

Source = str | os.PathLike | bytes | bytearray | memoryview

# Everything Pillow (or numpy on Pillow's output) is known to raise on hostile input.
_DECODE_ERRORS = (
    OSError,  # includes UnidentifiedImageError
    SyntaxError,
    ValueError,
    struct.error,
    EOFError,
    Image.DecompressionBombError,
    TypeError,
    LookupError,  # IndexError, KeyError
    ArithmeticError,  # ZeroDivisionError, OverflowError
    MemoryError,
    NotImplementedError,
    ImageCms.PyCMSError,
)

# Pillow formats never opened: EPS decodes by running Ghostscript on the file.
_UNSAFE_FORMATS = frozenset({"EPS"})

_EXIF_ORIENTATION = 0x0112
# The orientations that need a turn: 2..8 (1 is upright; anything else is invalid).
_TURNED_ORIENTATIONS = range(2, 9)

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
# Modes whose "transparency" info (a colour key or palette alpha) makes them carry alpha.
_KEYED_ALPHA_MODES = frozenset({"L", "P", "RGB"})
# Modes whose colours an embedded RGB ICC profile describes.
_ICC_RGB_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "P", "PA"})
_PASSTHROUGH_FORMATS = frozenset({"JPEG", "PNG"})

_INT32_MIN = -(2**31)
_UINT32_SPAN = 2**32 - 1


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedImage:
    """An image decoded by :func:`load_image`.

    Attributes:
      rgb: fresh ``uint8`` array of shape ``(H, W, 3)``, C-contiguous, sRGB, EXIF orientation
        applied.
      was_grayscale: the source was grayscale (modes 1, L, LA, I, I;16*, F, or a palette whose
        used colours are all gray) or a colour image whose three channels are exactly equal.
      source_mode: the Pillow mode as opened, e.g. ``"CMYK"``, ``"I;16"``, ``"P"``.
      source_format: the Pillow format, e.g. ``"JPEG"``, ``"PNG"`` (``""`` if unknown).
      data: the raw file bytes as read.
      passthrough: ``data`` decodes with a plain JPEG/PNG decoder to exactly ``rgb`` (8-bit RGB
        JPEG or PNG, single frame, no alpha, no EXIF rotation, no ICC conversion), so the original
        bytes can be stored instead of re-encoding. Note that ``tf.io.decode_jpeg`` must then be
        called with ``dct_method="INTEGER_ACCURATE"``: TensorFlow's default (fast) IDCT differs
        from libjpeg's accurate one by a few levels.
      warnings: non-fatal notes, e.g. ``"ignored unreadable EXIF orientation (...)"``.
    """

    rgb: np.ndarray = dataclasses.field(repr=False)
    was_grayscale: bool
    source_mode: str
    source_format: str
    data: bytes = dataclasses.field(repr=False)
    passthrough: bool
    warnings: tuple[str, ...] = ()

    @property
    def height(self) -> int:
        """Rows of :attr:`rgb`."""
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        """Columns of :attr:`rgb`."""
        return int(self.rgb.shape[1])


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS`, in any letter case."""
    return pathlib.PurePath(os.fspath(path)).suffix.lower() in IMAGE_EXTENSIONS


def find_images(root: str | os.PathLike) -> list[pathlib.Path]:
    """Image files under ``root``, recursively, sorted by their relative posix path.

    Files and folders whose name starts with ``"."`` are skipped; symlinked folders are not
    followed. A ``root`` that is a file is returned as ``[root]`` whatever its extension.

    Raises:
      KoalaError: ``root`` does not exist (or is neither a file nor a folder).
    """
    root = pathlib.Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        reason = "not a file or folder" if root.exists() else "no such file or folder"
        raise KoalaError(f"{root}: {reason}")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            pathlib.Path(dirpath, f)
            for f in filenames
            if not f.startswith(".") and is_image_file(f)
        )
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def load_image(
    source: Source, *, max_pixels: int = DEFAULT_MAX_PIXELS, name: str | None = None
) -> LoadedImage:
    """Read and decode one image into an sRGB ``uint8`` ``(H, W, 3)`` array.

    Args:
      source: a path, or the file's bytes.
      max_pixels: refuse images with more than this many pixels (checked from the header,
        before decoding). Pillow's own decompression-bomb limit (2x ``Image.MAX_IMAGE_PIXELS``)
        still applies on top of it.
      name: what errors call the image; defaults to the path, or ``"<bytes>"`` for bytes.

    Raises:
      ImageError: the file can't be read, is empty, not an image, truncated, corrupt,
        zero-sized or over ``max_pixels``.
    """
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    display, data = _read_source(source, name)
    if not data:
        raise ImageError(display, "empty file")
    notes: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            loaded = _decode(data, display, max_pixels, notes)
        except ImageError:
            raise
        except _DECODE_ERRORS as exc:
            raise ImageError(display, _reason(exc)) from exc
    return dataclasses.replace(loaded, warnings=_warning_notes(caught) + loaded.warnings)


def _warning_notes(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    """Notes for the warnings Pillow gave while decoding (about the file, e.g. corrupt EXIF).

    ``DecompressionBombWarning`` is dropped (the pixel limit is checked separately); warnings that
    aren't ``UserWarning`` (deprecations and the like, about code rather than the file) are
    passed on to the caller's warning filters.
    """
    notes = []
    for caught_warning in caught:
        if issubclass(caught_warning.category, Image.DecompressionBombWarning):
            continue
        if not issubclass(caught_warning.category, UserWarning):
            warnings.warn_explicit(
                caught_warning.message,
                caught_warning.category,
                caught_warning.filename,
                caught_warning.lineno,
                source=caught_warning.source,
            )
            continue
        message = " ".join(str(caught_warning.message).split())
        if "exif" in message.lower():
            message = f"ignored unreadable EXIF data ({message})"
        notes.append(message)
    return tuple(dict.fromkeys(notes))


def _read_source(source: Source, name: str | None) -> tuple[str, bytes]:
    """The display name and the bytes of ``source``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return (name or "<bytes>"), bytes(source)
    path = os.fspath(source)
    display = name or str(path)
    try:
        with open(path, "rb") as f:
            return display, f.read()
    except OSError as exc:
        raise ImageError(display, f"cannot read file: {exc.strerror or exc}") from exc


def _reason(exc: BaseException) -> str:
    """A short human-readable reason for a decoding exception."""
    if isinstance(exc, Image.DecompressionBombError):
        return f"image too large, over the decompression-bomb limit ({exc})"
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode the image"
    message = str(exc)
    if isinstance(exc, EOFError) or "truncated" in message.lower():
        return "truncated image data"
    return f"corrupt image data ({type(exc).__name__}: {message})"


def _open_formats() -> list[str]:
    """The Pillow formats :func:`load_image` may open (all registered ones but unsafe ones)."""
    Image.init()
    return [f for f in Image.ID if f not in _UNSAFE_FORMATS]


def _decode(data: bytes, display: str, max_pixels: int, notes: list[str]) -> LoadedImage:
    """Decode ``data``; Pillow's exceptions propagate to :func:`load_image`."""
    with Image.open(io.BytesIO(data), formats=_open_formats()) as im:
        _check_size(im, display, max_pixels)
        im.load()  # full decode now, so truncated data fails here
        source_mode, source_format = im.mode, im.format or ""
        single_frame = getattr(im, "n_frames", 1) == 1
        icc = im.info.get("icc_profile")
        oriented = _apply_orientation(im, notes)
        has_alpha = _has_alpha(im)
        rgb, was_grayscale, icc_applied = _to_rgb(oriented, icc, notes)
    passthrough = (
        source_format in _PASSTHROUGH_FORMATS
        and source_mode == "RGB"
        and single_frame
        and oriented is im
        and not icc_applied
        and not has_alpha
        and _is_8bit_rgb_png_or_jpeg(data, source_format)
    )
    return LoadedImage(
        rgb=np.require(rgb, np.uint8, ["C_CONTIGUOUS", "WRITEABLE", "OWNDATA"]),
        was_grayscale=was_grayscale,
        source_mode=source_mode,
        source_format=source_format,
        data=data,
        passthrough=passthrough,
        warnings=tuple(notes),
    )


def _check_size(im: Image.Image, display: str, max_pixels: int) -> None:
    """Refuse zero-sized images and images over ``max_pixels``, from the header alone."""
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageError(display, f"zero-sized image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            display,
            f"image is {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,} pixels (max_pixels)",
        )


def _is_8bit_rgb_png_or_jpeg(data: bytes, source_format: str) -> bool:
    """False for PNGs that aren't 8-bit truecolour (Pillow reduces 16-bit RGB on its own)."""
    if source_format != "PNG":
        return True
    # IHDR always comes first: 8-byte signature, length, "IHDR", width, height, depth, type.
    return len(data) > 25 and data[12:16] == b"IHDR" and data[24] == 8 and data[25] == 2


def _apply_orientation(im: Image.Image, notes: list[str]) -> Image.Image:
    """``im`` turned upright by :func:`PIL.ImageOps.exif_transpose`; ``im`` itself if no turn
    is needed, or if the orientation is unreadable or invalid (then with a note)."""
    try:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
    except _DECODE_ERRORS as exc:
        notes.append(f"ignored unreadable EXIF orientation ({type(exc).__name__}: {exc})")
        return im
    if orientation == 1:
        return im
    if not isinstance(orientation, int) or orientation not in _TURNED_ORIENTATIONS:
        notes.append(f"ignored invalid EXIF orientation {orientation!r}")
        return im
    try:
        return ImageOps.exif_transpose(im)
    except Exception:
        # exif_transpose turns the pixels, then re-encodes the turned copy's other EXIF tags
        # without the orientation; a malformed tag can make that fail (struct.error, TypeError,
        # AttributeError with Pillow 13). The pixels are fine: turn a copy whose only metadata
        # is the orientation.
        bare = im.copy()
        bare.info.clear()
        bare.getexif()[_EXIF_ORIENTATION] = orientation
        return ImageOps.exif_transpose(bare)


def _has_alpha(im: Image.Image) -> bool:
    """Whether ``im`` has an alpha channel or a transparent colour / palette entry."""
    return im.mode in _ALPHA_MODES or (im.mode in _KEYED_ALPHA_MODES and "transparency" in im.info)


def _to_rgb(im: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[np.ndarray, bool, bool]:
    """``(rgb, was_grayscale, icc_applied)`` for a decoded, upright image."""
    mode = im.mode
    if _has_alpha(im):
        rgb = _composite_on_white(im)
    elif mode in _GRAY_MODES:
        gray = _gray_to_uint8(im)
        return np.repeat(gray[:, :, None], 3, axis=2), True, False
    elif mode == "CMYK":
        rgb, icc_applied = _cmyk_to_rgb(im, icc, notes)
        return rgb, _channels_equal(rgb), icc_applied
    else:
        rgb = np.asarray(im if mode == "RGB" else im.convert("RGB"))
    was_grayscale = mode in _GRAY_MODES or _channels_equal(rgb)
    # Only RGB profiles are applied; grayscale images' (gray) profiles are ignored.
    if icc and mode in _ICC_RGB_MODES and not _is_srgb(icc):
        converted = _icc_to_srgb(Image.fromarray(rgb), icc, notes)
        if converted is not None:
            return converted, was_grayscale, True
    return rgb, was_grayscale, False


def _channels_equal(rgb: np.ndarray) -> bool:
    """Whether the three channels of ``rgb`` are exactly equal."""
    red = rgb[..., 0]
    return bool(np.array_equal(red, rgb[..., 1]) and np.array_equal(red, rgb[..., 2]))


def _gray_to_uint8(im: Image.Image) -> np.ndarray:
    """An ``(H, W)`` uint8 array for a grayscale image of any depth, never clipping.

    16-bit data maps 0..65535 to 0..255 by ``round(v / 257)``; mode ``I`` holding values in
    0..65535 is treated as 16-bit, anything else maps the full int32 range linearly; ``F`` is
    taken as [0, 1] when its maximum is at most 1, else as [0, 255] (then clipped).
    """
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"))
    values = np.asarray(im).astype(np.float64)
    if mode == "F":
        finite = values[np.isfinite(values)]
        if finite.size and finite.max() <= 1.0:
            values = values * 255.0
        values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    elif mode == "I" and not (values.min() >= 0 and values.max() <= 65535):
        values = (values - _INT32_MIN) * (255.0 / _UINT32_SPAN)
    else:  # I;16* or 16-bit data in mode I
        values = values / 257.0
    return np.rint(np.clip(values, 0.0, 255.0)).astype(np.uint8)


def _composite_on_white(im: Image.Image) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 array of ``im`` alpha-composited onto white."""
    if im.mode in ("L", "LA", "La"):
        pixels = np.asarray(im.convert("LA")).astype(np.float64)
    else:
        pixels = np.asarray(im.convert("RGBA")).astype(np.float64)
    colour, alpha = pixels[..., :-1], pixels[..., -1:] / 255.0
    blended = np.rint(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    if blended.shape[-1] == 1:
        blended = np.repeat(blended, 3, axis=2)
    return blended


def _cmyk_to_rgb(im: Image.Image, icc: bytes | None, notes: list[str]) -> tuple[np.ndarray, bool]:
    """``(rgb, icc_applied)``: by the embedded ICC profile if usable, else Pillow's formula."""
    if icc:
        converted = _icc_to_srgb(im, icc, notes)
        if converted is not None:
            return converted, True
    return np.asarray(im.convert("RGB")), False


def _is_srgb(icc: bytes) -> bool:
    """Whether ``icc`` is an sRGB profile (by its description); False if it's unreadable."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return "sRGB" in (ImageCms.getProfileDescription(profile) or "")
    except _DECODE_ERRORS:
        return False  # _icc_to_srgb will fail on it and leave a note


def _icc_to_srgb(im: Image.Image, icc: bytes, notes: list[str]) -> np.ndarray | None:
    """``im`` converted from the ICC profile ``icc`` to sRGB; None (and a note) if unusable."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(
            im, profile, ImageCms.createProfile("sRGB"), outputMode="RGB"
        )
        return np.asarray(converted)
    except _DECODE_ERRORS as exc:
        notes.append(
            f"ignored unusable ICC profile, colours left unconverted ({type(exc).__name__}: {exc})"
        )
        return None
