"""User-guided colorization (issue 17): YUV and lαβ, Levin et al.'s scribble propagation,
hints that correct a model, Welsh et al.'s reference transfer, and koala.colorize --hints /
--reference."""

import numpy as np
import pytest
import skimage.color
from conftest import cli_main, smooth_image, write_image
from PIL import Image

from koala.core.errors import ImageError
from koala.ops import color, levin, welsh
from koala.tasks.colorize import user
from koala.tasks.colorize.inference import Colorizer, gray_baseline
from koala.tasks.colorize.models.fusion import fusion_small

H, W, EDGE = 48, 64, 32
BLUE, ORANGE = (40, 120, 200), (230, 140, 60)


def lab(rgb):
    return color.srgb_to_lab(np.asarray(rgb, np.float64) / 255.0).numpy()


# -- colour spaces ------------------------------------------------------------------------


def test_yuv_round_trip_matches_the_reference_formula():
    rgb = np.random.default_rng(0).random((6, 7, 3))
    yuv = color.rgb_to_yuv(rgb).numpy()
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    np.testing.assert_allclose(yuv[..., 0], y, atol=1e-12)
    np.testing.assert_allclose(yuv[..., 1], 0.492 * (b - y), atol=2e-4)  # U = 0.492 (B - Y)
    np.testing.assert_allclose(yuv[..., 2], 0.877 * (r - y), atol=2e-4)  # V = 0.877 (R - Y)
    np.testing.assert_allclose(yuv, skimage.color.rgb2yuv(rgb), atol=1e-12)
    np.testing.assert_allclose(color.yuv_to_rgb(yuv).numpy(), rgb, atol=1e-12)
    gray = color.rgb_to_yuv(np.full((2, 3), 0.4)).numpy()
    np.testing.assert_allclose(gray[:, 1:], 0.0, atol=1e-12)


def test_lalphabeta_round_trip_and_gray_axis():
    rgb = np.random.default_rng(1).random((5, 5, 3)) * 0.98 + 0.01
    lab_ = color.rgb_to_lalphabeta(rgb).numpy()
    np.testing.assert_allclose(color.lalphabeta_to_rgb(lab_).numpy(), rgb, atol=1e-9)
    gray = color.rgb_to_lalphabeta(np.full((4, 3), 0.5)).numpy()
    assert np.abs(gray[:, 1:]).max() < 2e-3  # gray sits on the l axis
    brighter = color.rgb_to_lalphabeta(np.full((1, 3), 0.8)).numpy()
    assert brighter[0, 0] > gray[0, 0]


# -- Levin et al. ---------------------------------------------------------------------------


def two_regions():
    """A dark and a bright flat region split by a vertical edge at x = EDGE, with one
    scribble in each (blue left, orange right)."""
    gray = np.full((H, W, 3), 90, np.uint8)
    gray[:, EDGE:] = 170
    hints = gray.copy()
    hints[20:24, 8:14] = BLUE
    hints[20:24, 48:54] = ORANGE
    return gray, hints


def scribble_ab(region_gray, rgb):
    """The a*b* of the region's Y with the scribble's U, V (what Levin's method gives)."""
    yuv = color.rgb_to_yuv(np.array(rgb) / 255.0).numpy()
    yuv[0] = region_gray / 255.0
    return lab(np.clip(color.yuv_to_rgb(yuv).numpy(), 0, 1) * 255)[1:]


def test_weights_are_normalised_and_stop_at_edges():
    gray, _ = two_regions()
    w = levin.weights(gray[..., 0] / 255.0)
    assert w.shape == (8, H, W)
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-12)
    assert w[0, 0, 0] == 0.0  # the (-1, -1) neighbour of the corner is outside
    # next to the edge, the neighbour across it gets almost nothing
    assert w[4, 10, EDGE - 1] < 1e-3 and w[3, 10, EDGE - 1] > 0.1


def test_scribbles_colour_each_region_and_keep_the_edge():
    gray, hints = two_regions()
    out = user.colorize_with_hints(gray, hints)
    assert out.shape == gray.shape and out.dtype == np.uint8
    ab = lab(out)[..., 1:]
    left, right = ab[:, :EDGE - 2], ab[:, EDGE + 2:]  # away from the edge
    err_left = np.abs(left - scribble_ab(90, BLUE)).mean()
    err_right = np.abs(right - scribble_ab(170, ORANGE)).mean()
    assert err_left < 2 and err_right < 2, (err_left, err_right)
    # the edge is kept: the columns on each side of it carry their own region's colour
    assert np.abs(ab[:, EDGE - 1] - scribble_ab(90, BLUE)).mean() < 3
    assert np.abs(ab[:, EDGE] - scribble_ab(170, ORANGE)).mean() < 3
    # the luminance is the input's (Y of YUV within rounding)
    y = color.rgb_to_yuv(out / 255.0).numpy()[..., 0] * 255
    assert np.abs(y - gray[..., 0]).max() <= 1.5


def test_propagate_keeps_fixed_values_and_the_cascade_is_close_to_exact():
    rng = np.random.default_rng(0)
    y = smooth_image(96, 128, seed=3)[..., 1] / 255.0
    fixed = np.zeros(y.shape, bool)
    values = np.zeros((*y.shape, 2))
    for _ in range(12):  # 12 scribbles of one random colour each
        r, c = rng.integers(0, 90), rng.integers(0, 110)
        fixed[r:r + 3, c:c + 15] = True
        values[r:r + 3, c:c + 15] = rng.uniform(-0.3, 0.3, 2)
    exact = levin.propagate(y, fixed, values)  # 12 288 px: one sparse LU
    np.testing.assert_allclose(exact[fixed], values[fixed], atol=1e-9)
    # each free pixel is the weighted mean of its neighbours (the free rows' residual is ~0)
    w = levin.weights(y)
    padded = np.pad(exact[..., 0], 1)
    means = sum(w[k] * padded[1 + dy:1 + dy + 96, 1 + dx:1 + dx + 128]
                for k, (dy, dx) in enumerate(levin._OFFSETS))
    assert np.abs(means - exact[..., 0])[~fixed].max() < 1e-9
    cascade = levin.propagate(y, fixed, values, direct_max=1024)  # 3 coarser levels
    np.testing.assert_allclose(cascade[fixed], values[fixed], atol=1e-9)
    error = np.abs(cascade - exact).mean()
    flat = np.abs(values[fixed].mean(0) - exact).mean()  # the mean scribble everywhere
    assert error < 0.02 and error < 0.25 * flat, (error, flat)


def test_propagate_rejects_bad_arguments():
    y = np.zeros((8, 8))
    with pytest.raises(ValueError, match="no fixed pixel"):
        levin.propagate(y, np.zeros((8, 8), bool), np.zeros((8, 8, 2)))
    with pytest.raises(ValueError, match="share"):
        levin.propagate(y, np.ones((8, 9), bool), np.zeros((8, 8, 2)))


# -- hints ----------------------------------------------------------------------------------


def test_hint_mask_errors_name_the_file():
    gray, hints = two_regions()
    mask = user.hint_mask(gray, hints)
    assert mask.sum() == 2 * 4 * 6
    with pytest.raises(ImageError, match=r"marks\.png: hints image is 64x40 but the gray "
                                         r"image is 64x48"):
        user.hint_mask(gray, hints[:40], name="marks.png")
    with pytest.raises(ImageError, match=r"marks\.png: no hint pixels"):
        user.hint_mask(gray, gray, name="marks.png")
    # a gray stroke or faint noise is not a hint
    noisy = gray.copy()
    noisy[0:5, 0:5] = 250
    noisy[6, 6] = (92, 90, 89)
    with pytest.raises(ImageError, match="no hint pixels"):
        user.hint_mask(gray, noisy)


@pytest.fixture(scope="module")
def tinted(mobilenet_none):
    """A model whose a*b* are constant (a zero last kernel and a bias)."""
    model = fusion_small(image_size=32, embedding_dim=1000, embedder="mobilenet",
                         embedder_weights="none")
    last = model.get_layer("dec_conv5")
    kernel, _ = last.get_weights()
    last.set_weights([np.zeros_like(kernel), np.array([0.2, -0.15], np.float32)])
    return Colorizer(model, mobilenet_none)


def colour_at(gray_level, a, b):
    """uint8 sRGB of the gray level's L* with chroma (a, b): a hint the gray can carry."""
    lightness = lab(np.full(3, gray_level, np.uint8))[0]
    rgb = color.lab_to_srgb(np.array([lightness, a, b])).numpy()
    return np.round(rgb * 255).astype(np.uint8)


def test_hints_correct_the_model_near_them_only(tinted):
    gray = np.full((H, 96, 3), 90, np.uint8)
    gray[:, 60:] = 170  # an edge at x = 60
    hints = gray.copy()
    hint = colour_at(90, -10, -35)
    hints[22:26, 10:16] = hint
    automatic = tinted.colorize(gray)
    out = user.colorize_with_hints(gray, hints, tinted)
    ab_auto, ab_out = lab(automatic)[..., 1:], lab(out)[..., 1:]
    distance = np.hypot(*np.meshgrid(np.arange(96) - np.clip(np.arange(96), 10, 15),
                                     np.arange(H) - np.clip(np.arange(H), 22, 25)))
    far = distance > 20
    assert far.sum() > 1000
    assert np.abs(ab_out - ab_auto)[far].max() <= 1.0  # the model's colour, within 1 unit
    hint_ab = lab(hint)[1:]
    at = distance == 0
    assert np.abs(ab_out[at] - hint_ab).max() < 1.5  # the hint's colour where it was drawn
    assert np.linalg.norm(ab_auto[at] - hint_ab, axis=-1).min() > 30  # a real correction
    ring = (distance > 0) & (distance <= 3)  # fading out towards `reach`, still mostly there
    moved = np.abs(ab_out[ring] - ab_auto[ring]).mean()
    assert moved > 0.5 * np.abs(hint_ab - ab_auto[at]).mean()
    # L* is the input's
    np.testing.assert_allclose(lab(out)[..., 0], lab(automatic)[..., 0], atol=1.0)
    # reach 0: no limit; a correction spreads until another hint (here one that keeps the
    # model's colour on the right of the edge) or an intensity edge holds it
    keep = tinted.predict_ab(gray)[0, 0] * 1.2
    hints[22:26, 80:86] = colour_at(170, *keep)
    free = user.colorize_with_hints(gray, hints, tinted, reach=0)
    ab_free = lab(free)[..., 1:]
    assert np.abs(ab_free[:, :56] - hint_ab).mean() < 3  # the whole left region
    assert np.abs(ab_free[:, 64:] - ab_auto[:, 64:]).mean() < 3  # the right one kept


# -- Welsh et al. ---------------------------------------------------------------------------


def textured_scene(seed=0):
    """Dark blue textured water under a bright smooth yellow sky: hue follows luminance and
    texture, as Welsh's matching needs."""
    rng = np.random.default_rng(seed)
    rgb = np.zeros((H, W, 3), np.float64)
    rgb[: H // 2] = (0.95, 0.85, 0.35)
    rgb[H // 2:] = (0.10, 0.25, 0.55)
    rgb[H // 2:] += rng.normal(0, 0.06, (H - H // 2, W, 1))
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


def test_reference_transfer_beats_gray_on_its_own_colour_version():
    truth = textured_scene()
    gray = gray_baseline(truth)
    out = user.colorize_from_reference(gray, truth)
    assert out.shape == truth.shape and out.dtype == np.uint8
    assert psnr(out, truth) > psnr(gray, truth) + 3, (psnr(out, truth), psnr(gray, truth))
    np.testing.assert_allclose(lab(out)[..., 0], lab(gray)[..., 0], atol=1.0)  # L* kept
    # deterministic for a seed; another seed draws other samples
    np.testing.assert_array_equal(out, user.colorize_from_reference(gray, truth))
    # a reference of another size works (the jittered samples come from it)
    small = np.asarray(Image.fromarray(truth).resize((40, 30)))
    assert psnr(user.colorize_from_reference(gray, small), truth) > psnr(gray, truth)


def test_jittered_samples_cover_the_reference():
    ys, xs = welsh._jittered(100, 200, 200, np.random.default_rng(0))
    assert 180 <= len(ys) <= 220
    assert ys.min() < 10 and ys.max() > 90 and xs.min() < 20 and xs.max() > 180


# -- the command line -----------------------------------------------------------------------


def test_cli_scribbles_reference_and_model(tmp_path, tinted):
    gray, hints = two_regions()
    write_image(tmp_path / "in" / "photo.png", gray)
    write_image(tmp_path / "marks" / "photo.png", hints)
    write_image(tmp_path / "ref.png", textured_scene())
    out = tmp_path / "out"

    assert cli_main("colorize", str(tmp_path / "in" / "photo.png"), "-o", str(out / "a"),
                    "--hints", str(tmp_path / "marks" / "photo.png"), "--grid",
                    "--noprogress") == 0
    result = np.asarray(Image.open(out / "a" / "photo_color.png"))
    np.testing.assert_array_equal(result, user.colorize_with_hints(gray, hints))
    grid = Image.open(out / "a" / "photo_color_grid.png")
    assert grid.width > 2 * W  # input | hints | output

    # a folder of hints, matched by stem
    assert cli_main("colorize", str(tmp_path / "in"), "-o", str(out / "b"),
                    "--hints", str(tmp_path / "marks"), "--noprogress") == 0
    assert (out / "b" / "photo_color.png").is_file()

    assert cli_main("colorize", str(tmp_path / "in"), "-o", str(out / "c"),
                    "--reference", str(tmp_path / "ref.png"), "--noprogress") == 0
    assert Image.open(out / "c" / "photo_color.png").size == (W, H)

    model = tmp_path / "tinted.keras"
    tinted.model.save(model)
    assert cli_main("colorize", str(tmp_path / "in"), "-o", str(out / "d"), "--model",
                    str(model), "--hints", str(tmp_path / "marks"), "--embedder_weights=none",
                    "--noprogress") == 0
    corrected = lab(np.asarray(Image.open(out / "d" / "photo_color.png")))
    automatic = lab(tinted.colorize(gray))
    # the scribble's hue where it was drawn, the model's far from it
    assert np.abs(corrected[21, 10, 1:] - automatic[21, 10, 1:]).max() > 20
    assert np.abs(corrected[21, 10, 1:] - scribble_ab(90, BLUE)).max() < 8
    np.testing.assert_allclose(corrected[45:, :, 1:], automatic[45:, :, 1:], atol=1.0)


def test_cli_errors(tmp_path, capsys):
    gray, hints = two_regions()
    write_image(tmp_path / "in" / "photo.png", gray)
    write_image(tmp_path / "in" / "other.png", gray)
    write_image(tmp_path / "marks" / "photo.png", hints)
    write_image(tmp_path / "bad.png", hints[:20])
    args = [str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--noprogress"]
    assert cli_main("colorize", *args, "--hints", str(tmp_path / "marks"),
                    "--reference", str(tmp_path / "bad.png")) == 2
    assert "give one" in capsys.readouterr().err
    assert cli_main("colorize", *args, "--hints", str(tmp_path / "nothere")) == 2
    assert "nothere: no such file or folder" in capsys.readouterr().err
    # one input has hints, the other does not: the good one is done, the other reported
    assert cli_main("colorize", *args, "--hints", str(tmp_path / "marks")) == 1
    captured = capsys.readouterr()
    assert "other.png: no --hints image named other.* in" in captured.err
    assert "colorized 1, failed 1" in captured.out
    assert (tmp_path / "out" / "photo_color.png").is_file()
    # a hints image of the wrong size is named
    assert cli_main("colorize", str(tmp_path / "in" / "photo.png"), "-o",
                    str(tmp_path / "out2"), "--hints", str(tmp_path / "bad.png"),
                    "--noprogress") == 1
    assert "bad.png: hints image is 64x20 but the gray image is 64x48" in \
        capsys.readouterr().err
