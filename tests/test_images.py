"""Tests for koala.ops.images: every fixture is a tiny image built in tmp_path, offline."""

import io
import itertools
import pathlib
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from koala.core.errors import ImageError, KoalaError
from koala.ops import images
from koala.ops.images import LoadedImage, find_images, is_image_file, load_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def _save(path: pathlib.Path, im: Image.Image, **kwargs) -> pathlib.Path:
    im.save(path, **kwargs)
    return path


def _from_array(array, mode=None) -> Image.Image:
    im = Image.fromarray(np.asarray(array))
    return im if mode is None else im.convert(mode)


def _pattern(height=16, width=32) -> np.ndarray:
    """A colourful RGB array with an 8x8 red block in the top-left corner."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 2] = 200
    rgb[..., 1] = np.arange(width, dtype=np.uint8)[None, :] * 4
    rgb[:8, :8] = RED
    return rgb


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _assert_rgb_array(rgb: np.ndarray, height: int, width: int) -> None:
    assert rgb.dtype == np.uint8
    assert rgb.shape == (height, width, 3)
    assert rgb.flags.c_contiguous and rgb.flags.writeable and rgb.flags.owndata


def _with_exif(im: Image.Image, orientation: int) -> Image.Exif:
    exif = im.getexif()
    exif[0x0112] = orientation
    return exif


# --- hand-made ICC profiles (ICC v2, Lab PCS, one 2-point lut8 A2B0 table) -------------------

_LAB_WHITE, _LAB_BLACK = (100, 0, 0), (0, 0, 0)
_LAB_RED, _LAB_BLUE = (54, 81, 70), (30, 68, -112)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _lut8(n_in: int, corner_lab) -> bytes:
    clut = b""
    for corner in itertools.product((0, 1), repeat=n_in):
        lightness, a, b = corner_lab(corner)
        clut += bytes([round(lightness * 255 / 100), a + 128, b + 128])
    identity_table = bytes(range(256))
    matrix = b"".join(_s15(1.0 if i % 4 == 0 else 0.0) for i in range(9))
    return (
        b"mft1" + bytes(4) + bytes([n_in, 3, 2, 0]) + matrix
        + identity_table * n_in + clut + identity_table * 3
    )  # fmt: skip


def _icc_profile(space: str, corner_lab, description: str) -> bytes:
    """A minimal ICC profile mapping device corners to the Lab colours ``corner_lab`` gives."""
    ascii_desc = description.encode("ascii") + b"\0"
    d50 = _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    tags = [
        (b"desc", b"desc" + bytes(4) + struct.pack(">I", len(ascii_desc)) + ascii_desc + bytes(78)),
        (b"cprt", b"text" + bytes(4) + b"none\0"),
        (b"wtpt", b"XYZ " + bytes(4) + d50),
        (b"A2B0", _lut8(len(space.strip()), corner_lab)),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table = body = b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    device_class = b"prtr" if space == "CMYK" else b"mntr"
    header = (
        struct.pack(">I", offset + len(body)) + bytes(4) + struct.pack(">I", 0x02100000)
        + device_class + space.encode() + b"Lab " + bytes(12) + b"acsp" + bytes(28)
        + d50 + bytes(48)
    )  # fmt: skip
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def _cmyk_profile_cyan_is_red() -> bytes:
    """CMYK profile: no ink is white, pure cyan ink is *red*, everything else black."""

    def lab(corner):
        if not any(corner):
            return _LAB_WHITE
        return _LAB_RED if corner == (1, 0, 0, 0) else _LAB_BLACK

    return _icc_profile("CMYK", lab, "Koala test CMYK")


def _rgb_profile_red_is_blue() -> bytes:
    """A non-sRGB RGB profile: white stays white, pure red is *blue*, everything else black."""

    def lab(corner):
        if all(corner):
            return _LAB_WHITE
        return _LAB_BLUE if corner == (1, 0, 0) else _LAB_BLACK

    return _icc_profile("RGB ", lab, "Koala test RGB")


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --- constants and LoadedImage ----------------------------------------------------------------


def test_constants():
    assert images.DEFAULT_MAX_PIXELS == 178_956_970
    assert images.IMAGE_EXTENSIONS == (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp",
                                       ".gif")
    assert all(ext == ext.lower() for ext in images.IMAGE_EXTENSIONS)


def test_loaded_image_fields(tmp_path):
    path = _save(tmp_path / "a.png", _from_array(_pattern(8, 12)))
    loaded = load_image(path)
    assert isinstance(loaded, LoadedImage)
    assert (loaded.height, loaded.width) == (8, 12)
    assert loaded.source_mode == "RGB" and loaded.source_format == "PNG"
    assert loaded.data == path.read_bytes()
    assert loaded.warnings == ()
    np.testing.assert_array_equal(loaded.rgb, _pattern(8, 12))
    with pytest.raises(AttributeError):
        loaded.passthrough = False  # frozen
    assert "rgb=" not in repr(loaded)  # no megabyte reprs


# --- EXIF orientation ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_6_rotates_clockwise(tmp_path, suffix):
    source = _pattern(16, 32)
    im = _from_array(source)
    path = _save(tmp_path / f"rot{suffix}", im, exif=_with_exif(im, 6), quality=95)
    loaded = load_image(path)
    assert loaded.rgb.shape == (32, 16, 3)
    # The red top-left block is now in the top-right corner.
    np.testing.assert_allclose(loaded.rgb[3, 12], RED, atol=40)
    assert abs(int(loaded.rgb[3, 3, 2]) - 200) < 40  # blue-ish background
    assert loaded.passthrough is False
    if suffix == ".png":
        np.testing.assert_array_equal(loaded.rgb, np.rot90(source, k=-1))


@pytest.mark.parametrize(
    "orientation, transform",
    [
        (2, np.fliplr),
        (3, lambda a: np.rot90(a, 2)),
        (4, np.flipud),
        (5, lambda a: a.transpose(1, 0, 2)),
        (6, lambda a: np.rot90(a, -1)),
        (7, lambda a: a.transpose(1, 0, 2)[::-1, ::-1]),
        (8, lambda a: np.rot90(a, 1)),
    ],
)
def test_every_exif_orientation(tmp_path, orientation, transform):
    source = _pattern(16, 32)
    im = _from_array(source)
    path = _save(tmp_path / "o.png", im, exif=_with_exif(im, orientation))
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.rgb, transform(source))
    assert loaded.passthrough is False


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_orientation_1_is_passthrough(tmp_path, suffix):
    im = _from_array(_pattern(16, 32))
    path = _save(tmp_path / f"up{suffix}", im, exif=_with_exif(im, 1))
    loaded = load_image(path)
    assert loaded.rgb.shape == (16, 32, 3)
    assert loaded.passthrough is True
    assert loaded.warnings == ()


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_passthrough_bytes_decode_to_rgb(tmp_path, suffix):
    """The passthrough contract, checked with TensorFlow's own decoders."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    path = _save(tmp_path / f"p{suffix}", _from_array(rng.integers(0, 256, (24, 40, 3), np.uint8)))
    loaded = load_image(path)
    assert loaded.passthrough is True
    if suffix == ".jpg":
        decoded = tf.io.decode_jpeg(loaded.data, channels=3, dct_method="INTEGER_ACCURATE")
    else:
        decoded = tf.io.decode_png(loaded.data, channels=3)
    np.testing.assert_array_equal(decoded.numpy(), loaded.rgb)


def test_corrupt_exif_is_a_warning(tmp_path):
    # An EXIF block whose first IFD entry is cut short: Pillow can't read any tag from it.
    exif = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12"
    path = _save(tmp_path / "bad_exif.jpg", _from_array(_pattern(16, 32)), exif=exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing leaks out as a Python warning
        loaded = load_image(path)
    assert loaded.rgb.shape == (16, 32, 3)
    assert any("EXIF" in note for note in loaded.warnings)


def test_unreadable_exif_is_a_warning(tmp_path, monkeypatch):
    path = _save(tmp_path / "a.jpg", _from_array(_pattern(16, 32)))

    def broken_getexif(self):
        raise SyntaxError("not a TIFF file")

    monkeypatch.setattr(Image.Image, "getexif", broken_getexif)
    loaded = load_image(path)
    assert loaded.rgb.shape == (16, 32, 3)
    assert loaded.warnings == (
        "ignored unreadable EXIF orientation (SyntaxError: not a TIFF file)",
    )


def test_orientation_applied_when_other_exif_tags_cannot_be_rewritten(tmp_path):
    # IFD0: ImageWidth (0x0100) stored as the ASCII string "Maker", Orientation (0x0112) = 6.
    # ImageOps.exif_transpose turns the pixels, then fails re-encoding ImageWidth as an
    # integer (struct.error); the image must still load, turned.
    ifd = struct.pack(">H", 2)
    ifd += struct.pack(">HHI4s", 0x0100, 2, 6, struct.pack(">I", 8 + 2 + 24 + 4))
    ifd += struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + struct.pack(">I", 0)
    exif = b"Exif\x00\x00MM\x00\x2a" + struct.pack(">I", 8) + ifd + b"Maker\x00"
    source = _pattern(16, 32)
    path = _save(tmp_path / "odd_tag.png", _from_array(source), exif=exif)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_image(path)
    np.testing.assert_array_equal(loaded.rgb, np.rot90(source, k=-1))
    assert loaded.passthrough is False
    assert loaded.warnings == ()


def test_invalid_exif_orientation_is_a_warning(tmp_path):
    im = _from_array(_pattern(16, 32))
    path = _save(tmp_path / "nine.png", im, exif=_with_exif(im, 9))
    loaded = load_image(path)
    assert loaded.rgb.shape == (16, 32, 3)
    assert any("orientation 9" in note for note in loaded.warnings)


# --- colour management --------------------------------------------------------------------------


def test_cmyk_jpeg_without_profile_uses_pillow_conversion(tmp_path):
    cmyk = Image.new("CMYK", (16, 16), (0, 120, 200, 30))
    cmyk.paste((200, 0, 0, 0), (0, 0, 8, 16))
    path = _save(tmp_path / "cmyk.jpg", cmyk, quality=95)
    loaded = load_image(path)
    assert loaded.source_mode == "CMYK"
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(loaded.rgb, expected)
    assert loaded.passthrough is False and loaded.was_grayscale is False
    assert loaded.warnings == ()


@pytest.mark.parametrize("suffix", [".tif", ".jpg"])
def test_cmyk_with_icc_profile_converts_through_it(tmp_path, suffix):
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    cmyk.paste((255, 0, 0, 0), (8, 0, 16, 16))  # right half: pure cyan ink
    path = _save(tmp_path / f"cmyk{suffix}", cmyk, icc_profile=_cmyk_profile_cyan_is_red())
    loaded = load_image(path)
    assert loaded.warnings == ()
    np.testing.assert_allclose(loaded.rgb[8, 2], WHITE, atol=12)
    # The profile says this ink prints red; Pillow's naive formula would give cyan.
    np.testing.assert_allclose(loaded.rgb[8, 13], RED, atol=40)
    assert loaded.passthrough is False


def test_cmyk_with_broken_icc_profile_warns_and_falls_back(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (255, 0, 0, 0))
    path = _save(tmp_path / "cmyk.tif", cmyk, icc_profile=b"not a profile" * 20)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.rgb[0, 0], (0, 255, 255))  # Pillow's formula
    assert len(loaded.warnings) == 1 and "ICC" in loaded.warnings[0]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_rgb_with_non_srgb_profile_is_converted(tmp_path, suffix):
    rgb = np.full((16, 16, 3), 255, np.uint8)
    rgb[:, 8:] = RED
    path = _save(
        tmp_path / f"wide{suffix}", _from_array(rgb), icc_profile=_rgb_profile_red_is_blue()
    )
    loaded = load_image(path)
    assert loaded.warnings == ()
    np.testing.assert_allclose(loaded.rgb[8, 2], WHITE, atol=12)
    np.testing.assert_allclose(loaded.rgb[8, 13], BLUE, atol=40)
    assert loaded.passthrough is False


def test_rgb_with_srgb_profile_is_untouched(tmp_path):
    source = _pattern(16, 32)
    path = _save(tmp_path / "srgb.png", _from_array(source), icc_profile=_srgb_profile())
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.rgb, source)
    assert loaded.passthrough is True
    assert loaded.warnings == ()


def test_rgb_with_garbage_icc_profile_warns(tmp_path):
    source = _pattern(16, 32)
    path = _save(tmp_path / "junk.png", _from_array(source), icc_profile=b"\x00garbage" * 40)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.rgb, source)
    assert len(loaded.warnings) == 1 and "ICC" in loaded.warnings[0]


# --- alpha ----------------------------------------------------------------------------------------

_ALPHAS = np.array([[0, 255, 128, 0]], np.uint8)


def _blend(colour, alpha):
    return np.rint(np.asarray(colour) * alpha / 255 + 255 * (1 - alpha / 255))


def _rgba_image() -> tuple[Image.Image, np.ndarray]:
    colours = np.array([[RED, GREEN, BLUE, (10, 20, 30)]], np.uint8)
    return _from_array(np.dstack([colours, _ALPHAS])), colours


@pytest.mark.parametrize("suffix", [".png", ".webp", ".tif"])
def test_rgba_composited_on_white(tmp_path, suffix):
    im, _ = _rgba_image()
    path = _save(tmp_path / f"a{suffix}", im, lossless=True)
    loaded = load_image(path)
    rgb = loaded.rgb[0].astype(int)
    np.testing.assert_array_equal(rgb[0], WHITE)  # fully transparent
    np.testing.assert_array_equal(rgb[1], GREEN)  # opaque
    np.testing.assert_allclose(rgb[2], _blend(BLUE, 128), atol=1)  # half transparent
    np.testing.assert_array_equal(rgb[3], WHITE)
    assert loaded.passthrough is False


def test_la_composited_on_white(tmp_path):
    gray = np.array([[0, 0, 0, 200]], np.uint8)
    path = _save(tmp_path / "la.png", _from_array(np.dstack([gray, _ALPHAS]), "LA"))
    loaded = load_image(path)
    assert loaded.source_mode == "LA" and loaded.was_grayscale
    np.testing.assert_allclose(loaded.rgb[0, :, 0], [255, 0, _blend(0, 128), 255], atol=1)
    assert np.array_equal(loaded.rgb[..., 0], loaded.rgb[..., 2])


def _palette_image() -> Image.Image:
    im = Image.new("P", (4, 1))
    im.putpalette([*RED, *GREEN, *BLUE, 10, 20, 30])
    im.putdata([0, 1, 2, 3])
    return im


def test_palette_with_transparency_composited_on_white(tmp_path):
    path = _save(tmp_path / "p.png", _palette_image(), transparency=bytes([0, 255, 128, 255]))
    loaded = load_image(path)
    assert loaded.source_mode == "P"
    np.testing.assert_array_equal(loaded.rgb[0, 0], WHITE)
    np.testing.assert_array_equal(loaded.rgb[0, 1], GREEN)
    np.testing.assert_allclose(loaded.rgb[0, 2], _blend(BLUE, 128), atol=1)
    np.testing.assert_array_equal(loaded.rgb[0, 3], (10, 20, 30))
    assert loaded.was_grayscale is False


def test_palette_without_transparency(tmp_path):
    loaded = load_image(_save(tmp_path / "p.png", _palette_image()))
    np.testing.assert_array_equal(loaded.rgb[0], [RED, GREEN, BLUE, (10, 20, 30)])
    assert loaded.was_grayscale is False and loaded.passthrough is False


def test_gray_palette_is_grayscale(tmp_path):
    im = Image.new("P", (4, 1))
    im.putpalette([0, 0, 0, 90, 90, 90, 255, 255, 255])
    im.putdata([0, 1, 2, 1])
    loaded = load_image(_save(tmp_path / "gray.gif", im))
    assert loaded.was_grayscale is True
    np.testing.assert_array_equal(loaded.rgb[0, :, 1], [0, 90, 255, 90])


def test_pa_composited_on_white(tmp_path):
    im = _palette_image().convert("PA")
    im.putalpha(_from_array(_ALPHAS))
    path = _save(tmp_path / "pa.tif", im)
    loaded = load_image(path)
    assert loaded.source_mode == "PA"
    np.testing.assert_array_equal(loaded.rgb[0, 0], WHITE)
    np.testing.assert_array_equal(loaded.rgb[0, 1], GREEN)
    np.testing.assert_allclose(loaded.rgb[0, 2], _blend(BLUE, 128), atol=1)


def test_rgb_colour_key_transparency(tmp_path):
    rgb = np.array([[RED, GREEN]], np.uint8)
    path = _save(tmp_path / "key.png", _from_array(rgb), transparency=RED)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.rgb[0], [WHITE, GREEN])
    assert loaded.passthrough is False  # a plain decoder would keep the red


def test_gray_colour_key_transparency(tmp_path):
    gray = np.array([[10, 20]], np.uint8)
    path = _save(tmp_path / "key.png", _from_array(gray), transparency=10)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.rgb[0], [WHITE, (20, 20, 20)])
    assert loaded.was_grayscale is True


# --- bit depths and grayscale ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_scaled_without_clipping(tmp_path, suffix):
    values = np.array([[0, 257 * 100, 65535, 1000, 128]], np.uint16)
    path = _save(tmp_path / f"deep{suffix}", _from_array(values))
    loaded = load_image(path)
    assert loaded.source_mode.startswith("I;16")
    assert loaded.was_grayscale is True
    np.testing.assert_array_equal(loaded.rgb[0, :, 0], [0, 100, 255, 4, 0])
    np.testing.assert_array_equal(loaded.rgb[..., 0], loaded.rgb[..., 1])
    np.testing.assert_array_equal(loaded.rgb[..., 0], loaded.rgb[..., 2])


def test_16bit_big_endian_tiff(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 1000]], np.uint16)
    im = Image.frombytes("I;16B", (4, 1), values.astype(">u2").tobytes())
    loaded = load_image(_save(tmp_path / "be.tif", im))
    np.testing.assert_array_equal(loaded.rgb[0, :, 0], [0, 100, 255, 4])


def test_32bit_int_full_range(tmp_path):
    values = np.array([[-(2**31), -5, 0, 70000, 2**31 - 1]], np.int32)
    loaded = load_image(_save(tmp_path / "i32.tif", _from_array(values)))
    assert loaded.source_mode == "I" and loaded.was_grayscale
    row = loaded.rgb[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0)  # monotone
    assert row[2] in (127, 128)


def test_32bit_int_holding_16bit_data(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 300]], np.int32)
    loaded = load_image(_save(tmp_path / "i16in32.tif", _from_array(values)))
    assert loaded.source_mode == "I"
    np.testing.assert_array_equal(loaded.rgb[0, :, 0], [0, 100, 255, 1])


@pytest.mark.parametrize(
    "values, expected",
    [
        ([0.0, 0.5, 1.0, 0.2], [0, 128, 255, 51]),  # [0, 1] data
        ([0.0, 100.0, 300.0, -7.0], [0, 100, 255, 0]),  # [0, 255] data, clipped
        ([np.nan, np.inf, 0.5, 1.0], [0, 255, 128, 255]),  # non-finite values
    ],
)
def test_float_images(tmp_path, values, expected):
    path = _save(tmp_path / "f.tif", _from_array(np.array([values], np.float32)))
    loaded = load_image(path)
    assert loaded.source_mode == "F" and loaded.was_grayscale
    np.testing.assert_array_equal(loaded.rgb[0, :, 0], expected)


def test_grayscale_l(tmp_path):
    gray = np.arange(0, 256, 16, dtype=np.uint8).reshape(2, 8)
    loaded = load_image(_save(tmp_path / "l.png", _from_array(gray)))
    assert loaded.was_grayscale is True and loaded.passthrough is False
    for channel in range(3):
        np.testing.assert_array_equal(loaded.rgb[..., channel], gray)


def test_bilevel(tmp_path):
    im = Image.new("1", (8, 4), 0)
    im.putpixel((3, 1), 1)
    loaded = load_image(_save(tmp_path / "b.png", im))
    assert loaded.source_mode == "1" and loaded.was_grayscale
    assert loaded.rgb[1, 3].tolist() == [255, 255, 255]
    assert int(loaded.rgb.sum()) == 3 * 255


def test_rgb_with_equal_channels_is_grayscale(tmp_path):
    gray = np.arange(32, dtype=np.uint8).reshape(4, 8) * 8
    loaded = load_image(_save(tmp_path / "g.png", _from_array(np.dstack([gray] * 3))))
    assert loaded.source_mode == "RGB"
    assert loaded.was_grayscale is True and loaded.passthrough is True


def test_colourful_rgb_is_not_grayscale(tmp_path):
    loaded = load_image(_save(tmp_path / "c.png", _from_array(_pattern(8, 8))))
    assert loaded.was_grayscale is False


def test_16bit_rgb_png_is_not_passthrough(tmp_path):
    # Pillow writes no 16-bit RGB; build a 2x1 48-bit PNG by hand.
    raw = b"\x00" + np.array([[65535, 0, 0], [0, 32896, 65535]], ">u2").tobytes()
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )
    loaded = load_image(png)
    assert loaded.rgb.shape == (1, 2, 3)
    np.testing.assert_allclose(loaded.rgb[0], [RED, (0, 128, 255)], atol=1)
    assert loaded.passthrough is False


# --- frames, modes ------------------------------------------------------------------------------


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, GREEN, BLUE)]
    path = _save(tmp_path / "anim.gif", frames[0], save_all=True, append_images=frames[1:])
    assert Image.open(path).n_frames == 3
    loaded = load_image(path)
    assert loaded.source_format == "GIF"
    np.testing.assert_array_equal(loaded.rgb, np.full((8, 8, 3), RED, np.uint8))


def test_animated_webp_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in (GREEN, BLUE)]
    path = tmp_path / "anim.webp"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True)
    loaded = load_image(path)
    np.testing.assert_array_equal(loaded.rgb, np.full((8, 8, 3), GREEN, np.uint8))


def test_multipage_tiff_first_page(tmp_path):
    pages = [Image.new("L", (8, 8), value) for value in (30, 60)]
    path = _save(tmp_path / "pages.tif", pages[0], save_all=True, append_images=pages[1:])
    assert np.all(load_image(path).rgb == 30)


def _mode_image(mode: str) -> Image.Image:
    base = _from_array(_pattern(12, 20))
    gray = np.asarray(base.convert("L"))
    if mode == "I;16":
        return _from_array(gray.astype(np.uint16) * 257)
    if mode == "I":
        return _from_array(((gray.astype(np.int64) - 128) << 24).astype(np.int32))  # full range
    if mode == "F":
        return _from_array(gray.astype(np.float32) / 255)
    return base.convert(mode)


@pytest.mark.parametrize(
    "mode, suffix",
    [
        ("1", ".png"),
        ("L", ".jpg"),
        ("LA", ".png"),
        ("P", ".png"),
        ("P", ".gif"),
        ("PA", ".tif"),
        ("RGB", ".bmp"),
        ("RGBA", ".png"),
        ("CMYK", ".jpg"),
        ("CMYK", ".tif"),
        ("I;16", ".png"),
        ("I", ".tif"),
        ("F", ".tif"),
        ("YCbCr", ".jpg"),
        ("YCbCr", ".tif"),
        ("LAB", ".tif"),
        ("RGB", ".webp"),
    ],
)
def test_every_mode_gives_uint8_rgb(tmp_path, mode, suffix):
    # Pillow 12.3 (pinned for Gradio and Beam) can't read back its own *uncompressed* YCbCr
    # TIFF ("truncated"); a compressed one is still a YCbCr TIFF and reads.
    kwargs = {"compression": "tiff_lzw"} if (mode, suffix) == ("YCbCr", ".tif") else {}
    path = _save(tmp_path / f"m{suffix}", _mode_image(mode), **kwargs)
    loaded = load_image(path)
    _assert_rgb_array(loaded.rgb, 12, 20)
    assert loaded.height == 12 and loaded.width == 20
    assert loaded.source_format == Image.open(path).format
    assert loaded.rgb.std() > 0  # not a blank image


def test_rgb_is_a_fresh_array(tmp_path):
    path = _save(tmp_path / "a.png", _from_array(_pattern(8, 8)))
    first = load_image(path)
    first.rgb[:] = 0
    assert load_image(path).rgb.any()


# --- pixel limit --------------------------------------------------------------------------------


def test_pixel_limit(tmp_path):
    path = _save(tmp_path / "big.png", Image.new("RGB", (100, 100)))
    with pytest.raises(ImageError) as info:
        load_image(path, max_pixels=5000)
    assert "limit" in info.value.reason and "5,000" in info.value.reason
    assert info.value.path == str(path)
    assert load_image(path).rgb.shape == (100, 100, 3)
    assert load_image(path, max_pixels=10_000).rgb.shape == (100, 100, 3)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"")
        + _png_chunk(b"IEND", b"")
    )


def test_pixel_limit_checked_before_decoding_without_warnings():
    # 10000x10000 is over Pillow's warning threshold: no DecompressionBombWarning may escape.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="limit"):
            load_image(_png_header_only(10_000, 10_000), max_pixels=5000)


def test_pillow_decompression_bomb_error_becomes_image_error():
    with pytest.raises(ImageError, match="limit") as info:
        load_image(_png_header_only(50_000, 50_000), max_pixels=10**12, name="bomb.png")
    assert info.value.path == "bomb.png"


def test_max_pixels_must_be_positive(tmp_path):
    with pytest.raises(ValueError):
        load_image(b"whatever", max_pixels=0)


# --- bad files ----------------------------------------------------------------------------------


def _valid_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(1)
    _from_array(rng.integers(0, 256, (48, 48, 3), np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


def _bad_file(tmp_path: pathlib.Path, kind: str) -> tuple[pathlib.Path, str]:
    """A broken input of the given kind and a word its reason must contain."""
    if kind == "empty":
        path, word = tmp_path / "empty.jpg", "empty"
        path.write_bytes(b"")
    elif kind == "text":
        path, word = tmp_path / "notes.jpg", "not a recognised image"
        path.write_text("this is not a JPEG\n" * 10)
    elif kind == "random":
        path, word = tmp_path / "noise.png", "not a recognised image"
        path.write_bytes(np.random.default_rng(2).integers(0, 256, 500, np.uint8).tobytes())
    elif kind == "truncated_jpeg":
        data, path, word = _valid_bytes("JPEG"), tmp_path / "cut.jpg", "truncated"
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated_png":
        data, path, word = _valid_bytes("PNG"), tmp_path / "cut.png", "truncated"
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt_png":
        data, path, word = bytearray(_valid_bytes("PNG")), tmp_path / "flipped.png", ""
        data[60:90] = bytes(30)  # inside the first IDAT: bad CRC / zlib data
        path.write_bytes(bytes(data))
    elif kind == "directory":
        path, word = tmp_path / "folder.png", "cannot read"
        path.mkdir()
    elif kind == "missing":
        path, word = tmp_path / "nowhere.jpg", "No such file"
    return path, word


@pytest.mark.parametrize(
    "kind",
    [
        "empty",
        "text",
        "random",
        "truncated_jpeg",
        "truncated_png",
        "corrupt_png",
        "directory",
        "missing",
    ],
)
def test_bad_files_raise_image_error(tmp_path, kind):
    path, word = _bad_file(tmp_path, kind)
    with pytest.raises(ImageError) as info:
        load_image(path)
    err = info.value
    assert isinstance(err, KoalaError)
    assert err.path == str(path)
    assert err.reason and word in err.reason
    assert path.name in str(err)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_bad_path_given_as_str(tmp_path):
    path, _ = _bad_file(tmp_path, "truncated_jpeg")
    with pytest.raises(ImageError, match="truncated image data"):
        load_image(str(path))


def test_zero_sized_image(tmp_path, monkeypatch):
    path = _save(tmp_path / "a.png", Image.new("RGB", (4, 4)))
    monkeypatch.setattr(Image, "open", lambda fp, formats=None: Image.new("RGB", (0, 5)))
    with pytest.raises(ImageError, match="zero-sized"):
        load_image(path)


def test_eps_is_never_opened():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n"
    with pytest.raises(ImageError, match="not a recognised image format"):
        load_image(eps, name="evil.eps")


# --- bytes input --------------------------------------------------------------------------------


def test_bytes_input(tmp_path):
    data = _valid_bytes("PNG")
    loaded = load_image(data, name="photo.png")
    assert loaded.rgb.shape == (48, 48, 3) and loaded.data == data
    assert loaded.passthrough is True
    np.testing.assert_array_equal(loaded.rgb, load_image(bytearray(data)).rgb)


def test_bytes_input_errors_use_the_name():
    with pytest.raises(ImageError) as info:
        load_image(b"definitely not an image", name="upload-7.jpg")
    assert info.value.path == "upload-7.jpg" and "upload-7.jpg" in str(info.value)
    with pytest.raises(ImageError) as info:
        load_image(b"")
    assert info.value.path == "<bytes>" and info.value.reason == "empty file"


# --- finding files ------------------------------------------------------------------------------


def test_is_image_file():
    assert is_image_file("a/b/photo.JPG") and is_image_file(pathlib.Path("x.Tiff"))
    assert is_image_file("x.webp") and is_image_file("x.jpeg")
    assert (
        not is_image_file("notes.txt") and not is_image_file("jpg") and is_image_file("x.GIF")
    )


def test_find_images(tmp_path):
    names = [
        "b.JPG",
        "a.png",
        "sub/c.Png",
        "sub/deeper/d.TIFF",
        "sub/e.webp",
        "sub/f.Jpeg",
        "z.bmp",
        "notes.txt",
        "sub/readme.md",
        ".hidden.jpg",
        "sub/.also_hidden.png",
        ".git/inside.png",
        "sub/.cache/inside.jpg",
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = find_images(tmp_path)
    assert all(isinstance(p, pathlib.Path) for p in found)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "a.png",
        "b.JPG",
        "sub/c.Png",
        "sub/deeper/d.TIFF",
        "sub/e.webp",
        "sub/f.Jpeg",
        "z.bmp",
    ]
    assert find_images(str(tmp_path)) == found


def test_find_images_on_a_file_and_a_missing_root(tmp_path):
    path = tmp_path / "one.jpg"
    path.write_bytes(b"x")
    assert find_images(path) == [path]
    missing = tmp_path / "missing"
    with pytest.raises(KoalaError, match="missing"):
        find_images(missing)
