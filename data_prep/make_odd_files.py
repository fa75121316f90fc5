r"""Writes a folder of 10 broken or odd image files, to check that a build copes with them.

  python data_prep/make_odd_files.py --output_dir=/tmp/odd

Broken (build_records must skip them, with a reason):
  empty.jpg, not_an_image.png (text), truncated.jpg, random_bytes.webp,
  bomb.png (a 50 000 x 50 000 header: over the decompression-bomb limit)
Odd but valid (build_records must keep them):
  cmyk.jpg, gray16.png (16-bit, values above 255), rgba.png (transparent areas),
  palette_transparent.png (P mode with a transparent index), ROTATED.JPG (EXIF orientation 6,
  upper-case extension)
"""

import io
import pathlib
import struct
import sys
import zlib

import numpy as np
from absl import app, flags
from PIL import Image

flags.DEFINE_string("output_dir", None, "Folder to write the 10 files into.", required=True)
FLAGS = flags.FLAGS

BROKEN = ("empty.jpg", "not_an_image.png", "truncated.jpg", "random_bytes.webp", "bomb.png")
ODD = ("cmyk.jpg", "gray16.png", "rgba.png", "palette_transparent.png", "ROTATED.JPG")


def _gradient(h, w):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1),
                     (x + y) * 255 // max(1, h + w - 2)], -1).astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_files(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rgb = _gradient(120, 160)
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, "JPEG", quality=90)
    (out / "empty.jpg").write_bytes(b"")
    (out / "not_an_image.png").write_text("this is a text file with an image extension\n")
    (out / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (out / "random_bytes.webp").write_bytes(np.random.default_rng(0).bytes(4096))
    ihdr = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    (out / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
                                   + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                                   + _png_chunk(b"IEND", b""))
    Image.fromarray(rgb).convert("CMYK").save(out / "cmyk.jpg", quality=90)
    gray16 = (_gradient(96, 128)[..., 0].astype(np.uint16) * 257)
    Image.fromarray(gray16).save(out / "gray16.png")
    rgba = np.dstack([rgb, np.where(np.arange(160)[None, :] < 80, 255, 0).repeat(120, 0)])
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(out / "rgba.png")
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(out / "palette_transparent.png", transparency=0)
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(out / "ROTATED.JPG", quality=90, exif=exif)


def main(argv):
    del argv
    write_files(pathlib.Path(FLAGS.output_dir))
    print(f"wrote {len(BROKEN)} broken files ({', '.join(BROKEN)}) and {len(ODD)} odd but "
          f"valid ones ({', '.join(ODD)}) to {FLAGS.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(app.run(main))
