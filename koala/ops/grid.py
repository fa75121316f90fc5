"""Side-by-side image grids (PNG): [input | output | truth] rows for tools, reports and
TensorBoard."""

from __future__ import annotations

import numpy as np
from PIL import Image

from koala.core.io import atomic_write
from koala.ops import geometry

GAP = 4  # pixels of white between cells
MAX_ASPECT = 4
"""A cell is at most this many times as wide as it is high: wider images (a 5000 x 1 strip)
are shrunk to fit that box and letterboxed on white, so a grid's size is bounded whatever
the images' shapes."""


def fit_cell(cell, height: int, *, max_aspect: float = MAX_ASPECT) -> np.ndarray:
    """A uint8 image resized to ``height`` px (aspect kept), or, when that would be more than
    ``max_aspect * height`` px wide, shrunk to fit ``height`` x ``max_aspect * height`` and
    centred on white. Never larger than that box; the side only shrinks by resizing, never
    through a full-size intermediate."""
    cell = np.asarray(cell)
    h, w = cell.shape[:2]
    width = max(1, round(w * height / h))
    box = max(1, round(max_aspect * height))
    if width <= box:
        return geometry.resize(cell, height, width)
    inner = max(1, round(h * box / w))  # the letterboxed height
    out = np.full((height, box) + cell.shape[2:], 255, np.uint8)
    top = (height - inner) // 2
    out[top:top + inner] = geometry.resize(cell, inner, box)
    return out


def make_grid(rows, *, height: int = 192, gap: int = GAP) -> np.ndarray:
    """Lays out rows of uint8 images (H, W, 3) or (H, W) into one uint8 (H, W, 3) grid.

    Every cell is resized to ``height`` (aspect kept, at most :data:`MAX_ASPECT` times as wide,
    :func:`fit_cell`); rows may have different lengths and widths; the canvas is white.
    """
    rendered = []
    for row in rows:
        cells = []
        for cell in row:
            cell = np.asarray(cell)
            if cell.ndim == 2 or cell.shape[-1] == 1:
                cell = np.repeat(cell.reshape(cell.shape[0], cell.shape[1], 1), 3, axis=-1)
            cells.append(fit_cell(cell.astype(np.uint8), height))
        rendered.append(cells)
    width = max(sum(c.shape[1] for c in cells) + gap * (len(cells) - 1) for cells in rendered)
    canvas = np.full((len(rendered) * (height + gap) - gap, width, 3), 255, np.uint8)
    for r, cells in enumerate(rendered):
        x = 0
        for cell in cells:
            canvas[r * (height + gap) : r * (height + gap) + height, x : x + cell.shape[1]] = cell
            x += cell.shape[1] + gap
    return canvas


PNG_COMPRESS_LEVEL = 3
"""zlib level of every PNG koala writes. A 6000 x 4500 upscaled photo: 2.7 s and 31.8 MB at
3, against 8.9 s and 28.5 MB at Pillow's default 6 (1.5 s and 34.8 MB at 1) on the 2-core
CPU, where the model itself takes 2.3 s."""


def save_png(path, image: np.ndarray) -> None:
    """Writes a uint8 image as PNG atomically (:func:`koala.core.io.atomic_write`)."""
    image = Image.fromarray(np.asarray(image, np.uint8))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG",
                                              compress_level=PNG_COMPRESS_LEVEL), fsync=False)
