"""Side-by-side image grids (PNG): [input | output | truth] rows for tools, reports and
TensorBoard."""

from __future__ import annotations

import numpy as np
from PIL import Image

from koala.core.io import atomic_write
from koala.ops import geometry

GAP = 4  # pixels of white between cells


def make_grid(rows, *, height: int = 192, gap: int = GAP) -> np.ndarray:
    """Lays out rows of uint8 images (H, W, 3) or (H, W) into one uint8 (H, W, 3) grid.

    Every cell is resized to ``height`` (aspect kept); rows may have different lengths and
    widths; the canvas is white.
    """
    rendered = []
    for row in rows:
        cells = []
        for cell in row:
            cell = np.asarray(cell)
            if cell.ndim == 2 or cell.shape[-1] == 1:
                cell = np.repeat(cell.reshape(cell.shape[0], cell.shape[1], 1), 3, axis=-1)
            h, w = cell.shape[:2]
            cells.append(geometry.resize(cell.astype(np.uint8), height,
                                         max(1, round(w * height / h))))
        rendered.append(cells)
    width = max(sum(c.shape[1] for c in cells) + gap * (len(cells) - 1) for cells in rendered)
    canvas = np.full((len(rendered) * (height + gap) - gap, width, 3), 255, np.uint8)
    for r, cells in enumerate(rendered):
        x = 0
        for cell in cells:
            canvas[r * (height + gap) : r * (height + gap) + height, x : x + cell.shape[1]] = cell
            x += cell.shape[1] + gap
    return canvas


def save_png(path, image: np.ndarray) -> None:
    """Writes a uint8 image as PNG atomically (:func:`koala.core.io.atomic_write`)."""
    image = Image.fromarray(np.asarray(image, np.uint8))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"), fsync=False)
