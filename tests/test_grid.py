"""Grids and the pad geometry that inference uses to crop predictions back."""

import numpy as np
from PIL import Image

from koala.ops import geometry, grid


def test_pad_box_matches_fit_square():
    rgb = np.zeros((30, 80, 3), np.uint8)  # black content, white padding
    square = geometry.fit_square(rgb, 40, "pad")
    top, left, h, w = geometry.pad_box(30, 80, 40)
    assert (top, left, h, w) == (12, 0, 15, 40)  # (40 - 15) // 2 rows of padding above
    assert np.all(square[top : top + h, left : left + w] == 0)
    assert np.all(square[:top] == 255) and np.all(square[top + h :] == 255)


def test_make_grid_layout_and_save(tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)
    b = np.full((20, 20), 128, np.uint8)  # grayscale cell
    out = grid.make_grid([[a, b], [a]], height=10, gap=2)
    assert out.shape == (22, 20 + 2 + 10, 3)
    assert np.all(out[:10, :20] == 0) and np.all(out[:10, 22:] == 128)
    assert np.all(out[10:12] == 255) and np.all(out[12:, 20:] == 255)
    grid.save_png(tmp_path / "g.png", out)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")), out)
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]
