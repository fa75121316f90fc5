"""Resizing images to a model's input geometry, the same way in training and inference.

SPEC §1 (the Koalarization report): resize so that max(H, W) equals the model size and pad to
a square with white — keep the aspect ratio, never stretch. ``fit="crop"`` is the
alternative: resize so that min(H, W) equals the size and take the centre square.

Resampling is Pillow's bicubic filter on 8-bit sRGB, which widens its kernel when shrinking
(it anti-aliases, as MATLAB's ``imresize`` does).

Tiles of a big image for a fully-convolutional model are :mod:`koala.core.tiling`'s.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

FITS = ("pad", "crop")
PAD_VALUE = 255  # white, as in the paper


def resize(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (height, width, C), bicubic with anti-aliasing."""
    if rgb.shape[:2] == (height, width):
        return rgb
    squeeze = rgb.ndim == 3 and rgb.shape[2] == 1
    im = Image.fromarray(rgb[..., 0] if squeeze else rgb)
    out = np.asarray(im.resize((width, height), Image.Resampling.BICUBIC))
    return out[..., None] if squeeze else out


def pad_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """Where an (height, width) image lands inside its ``fit="pad"`` square of ``size``:
    (top, left, content_height, content_width). Inference crops predictions back with it."""
    scale = size / max(height, width)
    nh, nw = max(1, round(height * scale)), max(1, round(width * scale))
    return (size - nh) // 2, (size - nw) // 2, nh, nw


def fit_square(rgb: np.ndarray, size: int, fit: str = "pad") -> np.ndarray:
    """Fits a uint8 (H, W, 3) image into a (size, size, 3) square.

    ``pad``: long side -> size, centred on white. ``crop``: short side -> size, centre crop.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    h, w = rgb.shape[:2]
    if fit == "pad":
        top, left, nh, nw = pad_box(h, w, size)
        out = np.full((size, size, rgb.shape[2]), PAD_VALUE, np.uint8)
        out[top : top + nh, left : left + nw] = resize(rgb, nh, nw)
        return out
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    big = resize(rgb, nh, nw)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(big[top : top + size, left : left + size])


def cap_long_side(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Shrinks a uint8 image so that max(H, W) <= max_side (aspect kept); smaller ones pass."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    return resize(rgb, max(1, round(h * scale)), max(1, round(w * scale)))
