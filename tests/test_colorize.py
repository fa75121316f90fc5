"""koala.tasks.colorize.inference: full-resolution inference (exact sizes, L* kept, ab cropped from
the padded
square and upsampled), the gray baseline, saturation, loading, and the command line."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_main, smooth_image, write_image
from PIL import Image

from koala.cli.colorize import output_paths
from koala.core.errors import KoalaError
from koala.ops import color, geometry
from koala.ops import grid as grid_lib
from koala.ops.images import load_image
from koala.tasks.colorize.inference import (
    DEFAULT_EPS,
    DEFAULT_RADIUS,
    DEFAULT_SATURATION,
    Colorizer,
    colorize,
    gray_baseline,
    refine_ab,
)
from koala.tasks.colorize.models.fusion import FusionConfig, fusion_small

REPO = pathlib.Path(__file__).resolve().parent.parent
SIZE = 32
SMALL = dict(image_size=SIZE, embedding_dim=1000, embedder="mobilenet", embedder_weights="none")


def lab_of(rgb):
    return color.srgb_to_lab(rgb / 255.0).numpy()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A random-weight small fusion model and its .keras file."""
    model = fusion_small(**SMALL)
    path = tmp_path_factory.mktemp("model") / "fusion_small.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def colorizer(saved_model, mobilenet_none):
    return Colorizer(saved_model[0], mobilenet_none)


@pytest.fixture(scope="module")
def tinted(mobilenet_none):
    """A model whose output is known: a zero last kernel and a bias give a constant ab."""
    model = fusion_small(**SMALL)
    last = model.get_layer("dec_conv5")
    kernel, _ = last.get_weights()
    last.set_weights([np.zeros_like(kernel), np.array([0.2, -0.15], np.float32)])
    return Colorizer(model, mobilenet_none)


class PadProbe:
    """A stand-in model (same inputs and config) whose ab tells where it came from.

    a/128 = -0.5 on the white padding (L = 100, normalized 1), +0.5 elsewhere;
    b/128 = a ramp over the square's rows, (row - 15.5) / 31.
    """

    config = FusionConfig(**SMALL)

    def __call__(self, inputs, training=False):
        l = inputs["l"]
        a = tf.where(l >= 0.999, -0.5, 0.5)
        rows = (tf.range(SIZE, dtype=tf.float32) - (SIZE - 1) / 2) / (SIZE - 1)
        b = tf.broadcast_to(rows[None, :, None, None], tf.shape(l))
        return tf.concat([a, b], axis=-1)


class Blotchy:
    """A stand-in model whose ab is blotchy: +-0.3 (ab/128) in 4 x 4 blocks, whatever the L."""

    config = FusionConfig(**SMALL)

    def __call__(self, inputs, training=False):
        l = inputs["l"]
        idx = tf.range(SIZE) // 4
        checker = tf.cast((idx[:, None] + idx[None, :]) % 2, tf.float32) * 0.6 - 0.3
        ab = tf.stack([checker, -checker], axis=-1)[None]
        return tf.broadcast_to(ab, tf.concat([tf.shape(l)[:1], [SIZE, SIZE, 2]], 0))


def total_variation(ab):
    return np.abs(np.diff(ab, axis=0)).sum() + np.abs(np.diff(ab, axis=1)).sum()


@pytest.mark.parametrize("height,width", [(217, 301), (64, 17), (1, 1), (3, 200), (32, 32)])
def test_colorize_keeps_the_exact_size(colorizer, height, width):
    rgb = smooth_image(height, width, seed=height)
    out = colorizer.colorize(rgb)
    assert out.shape == (height, width, 3) and out.dtype == np.uint8
    assert colorizer.predict_ab(rgb).shape == (height, width, 2)
    np.testing.assert_array_equal(colorize(colorizer, rgb), out)  # function form


def test_function_form_with_a_keras_model(saved_model, colorizer, mobilenet_none):
    rgb = smooth_image(40, 50, seed=3)
    out = colorize(saved_model[0], rgb, embedder=mobilenet_none, saturation=1.0)
    np.testing.assert_array_equal(out, colorizer.colorize(rgb, saturation=1.0))


def test_loader_inputs_rgba_gray_and_16bit(tmp_path, colorizer):
    rgb = smooth_image(30, 45, seed=1)
    gray = rgb[..., 1]
    rgba = np.concatenate([rgb, np.full((30, 45, 1), 128, np.uint8)], axis=-1)
    paths = {
        "rgba": write_image(tmp_path / "rgba.png", rgba),
        "gray": write_image(tmp_path / "gray.png", gray),
    }
    paths["i16"] = tmp_path / "i16.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(paths["i16"])  # I;16
    for name, path in paths.items():
        loaded = load_image(path)
        out = colorizer.colorize(loaded)
        assert out.shape == (30, 45, 3), name
    # A 16-bit or 8-bit gray file, and the plain (H, W) array, colorize alike.
    expected = colorizer.colorize(gray)
    np.testing.assert_array_equal(colorizer.colorize(load_image(paths["gray"])), expected)
    np.testing.assert_array_equal(colorizer.colorize(load_image(paths["i16"])), expected)
    np.testing.assert_array_equal(colorizer.colorize(gray[..., None]), expected)


def test_output_keeps_the_input_lightness(tinted):
    rgb = smooth_image(48, 40, seed=2)
    out = tinted.colorize(rgb, saturation=1.0)
    # L* survives up to uint8 rounding, away from the light and dark ends where the
    # gamut clips the added chroma.
    lightness = lab_of(rgb)[..., 0]
    mid = (lightness > 20) & (lightness < 80)
    assert mid.mean() > 0.5
    np.testing.assert_allclose(lab_of(out)[..., 0][mid], lightness[mid], atol=1.0)


def test_gray_baseline_is_the_lightness_without_chroma():
    rgb = smooth_image(37, 23, seed=4)
    base = gray_baseline(rgb)
    assert base.shape == rgb.shape and base.dtype == np.uint8
    spread = base.astype(int).max(-1) - base.astype(int).min(-1)
    assert spread.max() <= 1
    np.testing.assert_allclose(lab_of(base)[..., 0], lab_of(rgb)[..., 0], atol=0.5)
    np.testing.assert_array_equal(gray_baseline(rgb[..., 0]), gray_baseline(rgb[..., :1]))


def test_saturation_zero_is_the_gray_baseline(tinted):
    rgb = smooth_image(40, 56, seed=5)
    out = tinted.colorize(rgb, saturation=0.0)
    assert np.abs(out.astype(int) - gray_baseline(rgb).astype(int)).max() <= 1


def test_colour_flows_and_saturation_scales_ab(tinted):
    rgb = smooth_image(40, 56, seed=6)
    gray = np.repeat(gray_baseline(rgb)[..., :1], 3, axis=-1)  # mid-tones, away from clipping
    ab = tinted.predict_ab(gray)
    expected = np.tanh([0.2, -0.15]) * 128  # the tinted model's constant output
    np.testing.assert_allclose(ab, np.broadcast_to(expected, ab.shape), atol=1e-3)
    assert DEFAULT_SATURATION == 1.2
    for saturation in (0.5, 1.0, DEFAULT_SATURATION):
        out = tinted.colorize(gray, saturation=saturation)
        assert np.abs(out.astype(int) - gray.astype(int)).max() > 10  # not gray
        got = lab_of(out)[..., 1:]
        mid = (lab_of(gray)[..., 0] > 30) & (lab_of(gray)[..., 0] < 80)
        assert mid.mean() > 0.5
        np.testing.assert_allclose(np.median(got[mid], axis=0), saturation * expected, atol=1.5)


def test_predict_ab_of_a_square_input_is_the_model_output(mobilenet_none):
    model = fusion_small(**SMALL)
    rgb = smooth_image(SIZE, SIZE, seed=7)  # already S x S: no padding, no resize
    l = color.normalize_l(color.srgb_to_lab(rgb / 255.0)[..., :1]).numpy()[None]
    inputs = {"l": l.astype(np.float32),
              "embedding": mobilenet_none.embed(mobilenet_none.fit(rgb)[None])}
    # Fresh random weights give a nearly flat ab; scale the (bias-free) last kernel so that
    # the prediction spans about +-0.4 and a mix-up could not hide under the tolerance.
    last = model.get_layer("dec_conv5")
    kernel, bias = last.get_weights()
    peak = np.abs(np.arctanh(model(inputs).numpy())).max()
    last.set_weights([kernel * (0.4 / peak), bias])
    expected = model(inputs).numpy()[0] * 128
    assert np.abs(expected).max() > 40 and expected.std() > 2
    got = Colorizer(model, mobilenet_none).predict_ab(rgb)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-2)


def test_ab_comes_from_the_content_region_only(mobilenet_none):
    probe = Colorizer(PadProbe(), mobilenet_none)
    height, width = 24, 96  # pad_box: top 12, 8 content rows of 32, scaled x3 back to 24
    top, left, nh, nw = geometry.pad_box(height, width, SIZE)
    assert (top, left, nh, nw) == (12, 0, 8, 32)
    rgb = smooth_image(height, width, seed=8)
    ab = probe.predict_ab(rgb)
    assert ab.shape == (height, width, 2) and ab.dtype == np.float32
    np.testing.assert_allclose(ab[..., 0], 64.0, atol=1e-4)  # no padding leaked in
    # b: rows top..top+nh of the ramp, bilinearly upsampled x3 (half-pixel centres).
    rows = np.arange(height)
    y = top + (rows + 0.5) * nh / height - 0.5
    inner = (y >= top) & (y <= top + nh - 1)
    expected = 128 * (y - (SIZE - 1) / 2) / (SIZE - 1)
    np.testing.assert_allclose(ab[inner, :, 1], np.broadcast_to(expected[inner, None],
                                                                (inner.sum(), width)), atol=1e-3)
    # A tall image uses the middle columns; every value still comes from the content.
    tall = probe.predict_ab(smooth_image(90, 20, seed=9))
    np.testing.assert_allclose(tall[..., 0], 64.0, atol=1e-4)


def test_guided_refinement_smooths_ab_and_keeps_the_size(mobilenet_none):
    blotchy = Colorizer(Blotchy(), mobilenet_none)
    rgb = smooth_image(48, 40, seed=12)
    raw = blotchy.predict_ab(rgb)
    assert DEFAULT_RADIUS == 40 and DEFAULT_EPS == 1e-4  # SPEC §5
    lightness = lab_of(rgb)[..., 0]
    for radius in (4, DEFAULT_RADIUS):
        refined = blotchy.predict_ab(rgb, refine="guided", radius=radius)
        assert refined.shape == (48, 40, 2) and refined.dtype == np.float32
        # Measured: TV drops from 8.4e4 to 1.5e4 (radius 4) and to 2.1e2 (radius 40).
        assert total_variation(refined) < 0.3 * total_variation(raw)
        np.testing.assert_allclose(refined, refine_ab(raw, lightness, radius=radius),
                                   atol=1e-3)
    np.testing.assert_array_equal(blotchy.predict_ab(rgb, refine="none"), raw)
    out = colorize(blotchy, rgb, refine="guided", radius=4, saturation=1.0)
    assert out.shape == (48, 40, 3) and out.dtype == np.uint8
    assert total_variation(lab_of(out)[..., 1:]) < 0.5 * total_variation(
        lab_of(blotchy.colorize(rgb, saturation=1.0))[..., 1:])
    with pytest.raises(ValueError, match="refine"):
        blotchy.colorize(rgb, refine="bilateral")


def test_load_round_trip(saved_model, colorizer):
    loaded = Colorizer.load(saved_model[1])
    assert loaded.config == saved_model[0].config and loaded.image_size == SIZE
    assert loaded.embedder.name == "mobilenet" and loaded.embedder.weights == "none"
    rgb = smooth_image(50, 70, seed=10)
    np.testing.assert_allclose(loaded.predict_ab(rgb), colorizer.predict_ab(rgb), atol=1e-3)


def test_load_and_construction_errors(tmp_path, mobilenet_none):
    with pytest.raises(KoalaError, match="not found"):
        Colorizer.load(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_text("not a zip")
    with pytest.raises(KoalaError, match="not a Keras model"):
        Colorizer.load(tmp_path / "junk.keras")
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save(tmp_path / "other.keras")
    with pytest.raises(KoalaError, match="not a koala colorizer"):
        Colorizer.load(tmp_path / "other.keras")
    with pytest.raises(KoalaError, match="not a koala colorizer"):
        Colorizer(other, mobilenet_none)
    with pytest.raises(KoalaError, match="1000-d embeddings but the model expects"):
        Colorizer(fusion_small(**{**SMALL, "embedding_dim": 16}), mobilenet_none)


def test_bad_arrays_and_saturation(colorizer):
    with pytest.raises(TypeError, match="uint8"):
        colorizer.colorize(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        colorizer.colorize(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="saturation"):
        colorizer.colorize(np.zeros((8, 8, 3), np.uint8), saturation=-0.1)


def test_model_predict_on_the_documented_inputs(saved_model):
    rng = np.random.default_rng(0)
    inputs = {"l": rng.uniform(-1, 1, (2, SIZE, SIZE, 1)).astype(np.float32),
              "embedding": rng.random((2, 1000)).astype(np.float32)}
    ab = saved_model[0].predict(inputs, verbose=0)
    assert ab.shape == (2, SIZE, SIZE, 2) and np.abs(ab).max() <= 1.0


def test_output_paths(tmp_path):
    src = tmp_path / "in"
    for rel in ("a.jpg", "sub/a.png", "sub/deeper/b.webp"):
        write_image(src / rel, smooth_image(8, 8))
    out = tmp_path / "out"
    pairs = output_paths([src, src / "a.jpg"], out, "_c")  # a.jpg named twice: once
    assert [(p.relative_to(src).as_posix(), o.relative_to(out).as_posix()) for p, o in pairs] \
        == [("a.jpg", "a_c.png"), ("sub/a.png", "sub/a_c.png"),
            ("sub/deeper/b.webp", "sub/deeper/b_c.png")]
    with pytest.raises(KoalaError, match="would both be written"):
        output_paths([src / "a.jpg", src / "sub" / "a.png"], out, "_c")
    with pytest.raises(KoalaError, match="would overwrite the input"):
        output_paths([src / "sub" / "a.png"], src / "sub", "")
    with pytest.raises(KoalaError, match="no such file"):
        output_paths([tmp_path / "nope"], out)


# --- Command line: main(argv) in-process (conftest.cli_main), one subprocess smoke test ------

def run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "koala.colorize", *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_folder_with_a_bad_file(tmp_path, saved_model):
    src = tmp_path / "photos"
    write_image(src / "colour.png", smooth_image(45, 70, seed=11))
    write_image(src / "sub" / "gray.jpg", smooth_image(40, 33, seed=12)[..., 0], quality=95)
    (src / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    result = run_cli(src, "-o", out, "--model", saved_model[1], "--grid", "--noprogress")
    assert result.returncode == 1, result.stderr
    assert "colorized 2, failed 1" in result.stdout
    assert str(src / "sub" / "broken.png") in result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["colour_color.png", "colour_color_grid.png",
                       "sub/gray_color.png", "sub/gray_color_grid.png"]
    assert load_image(out / "colour_color.png").rgb.shape == (45, 70, 3)
    assert load_image(out / "sub" / "gray_color.png").rgb.shape == (40, 33, 3)
    # Colour input: gray | output | original; gray input: input | output (cells at own size).
    gap = grid_lib.GAP
    assert load_image(out / "colour_color_grid.png").rgb.shape == (45, 3 * 70 + 2 * gap, 3)
    assert load_image(out / "sub" / "gray_color_grid.png").rgb.shape == (40, 2 * 33 + gap, 3)


@pytest.mark.slow
def test_cli_missing_model_is_a_one_line_error(tmp_path, capsys):
    write_image(tmp_path / "x.png", smooth_image(16, 16))
    missing = tmp_path / "missing.keras"
    assert cli_main("colorize", tmp_path / "x.png", "-o", tmp_path / "out", "--model", missing) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: model file not found: {missing}"]
    assert "Traceback" not in err and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_guided_refinement(tmp_path, saved_model, colorizer):
    rgb = smooth_image(36, 52, seed=13)
    write_image(tmp_path / "in.png", rgb)
    out = tmp_path / "out"
    assert cli_main("colorize", tmp_path / "in.png", "-o", out, "--model", saved_model[1],
                    "--refine=guided", "--radius=8", "--eps=1e-3", "--noprogress") == 0
    got = load_image(out / "in_color.png").rgb
    expected = colorizer.colorize(rgb, refine="guided", radius=8, eps=1e-3)
    assert got.shape == (36, 52, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
