"""Grids and the pad geometry that inference uses to crop predictions back."""

import numpy as np
import pytest
from PIL import Image

from koala.ops import geometry, grid
from koala.ops.grid import fit_cell, make_grid


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


@pytest.mark.parametrize("shape", [(1, 5000, 3), (7, 1000, 3), (5000, 1, 3), (3, 3, 3)])
def test_cells_are_bounded_whatever_the_aspect_ratio(shape):
    # A 5000 x 1 strip used to become a 960 000 px wide cell (28.6 GiB in koala.evaluate).
    strip = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    grid = make_grid([[strip, strip[..., 0]]], height=64, gap=4)
    assert grid.shape[0] == 64 and grid.shape[1] <= 2 * 4 * 64 + 4
    cell = fit_cell(strip, 64)
    assert cell.shape[0] == 64 and cell.shape[1] <= 4 * 64 and cell.dtype == np.uint8
    if shape[1] > 4 * shape[0]:  # letterboxed: white above and below the shrunk strip
        assert (cell[0] == 255).all() and (cell[-1] == 255).all()


def test_shrink_cells_bounds_the_report_rows():
    from koala.core.evaluation import shrink_cells

    cells = shrink_cells([np.zeros((1, 5000, 3), np.uint8), np.zeros((40, 30, 3), np.uint8)], 96)
    assert [c.shape for c in cells] == [(96, 384, 3), (96, 72, 3)]
