"""koala.tasks.sr.inference: exact output sizes, tiles that join up exactly, the pipeline
around the model (colour handling, bicubic input, SRCNN's reflect padding), bounded model
inputs, loading, CLI."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import smooth_image, write_image

from koala.cli.upscale import output_paths
from koala.core.errors import KoalaError
from koala.data import pipelines
from koala.ops import color
from koala.ops.images import load_image
from koala.tasks.sr import models as sr
from koala.tasks.sr.inference import (
    Upscaler,
    check_scale,
    default_overlap,
    default_tile,
    receptive_radius,
)

REPO = pathlib.Path(__file__).resolve().parent.parent


def tame(model, bias=0.5, stddev=0.05, seed=0):
    """Random output layer N(0, stddev) with a constant bias: outputs vary but stay mostly in
    [0, 1], so clipping can't hide a difference (SRCNN's paper init and FSRCNN's N(0, 0.001)
    deconvolution would give ~0 everywhere, the auto-encoder's He init saturates)."""
    out = model.get_layer("output")
    kernel, bias_now = out.get_weights()
    rng = np.random.default_rng(seed)
    out.set_weights([rng.normal(0, stddev, kernel.shape).astype(np.float32),
                     np.full_like(bias_now, bias)])
    return model


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    return {
        "srcnn_y": tame(sr.srcnn_small(init="glorot")),  # valid padding, border 6, x3
        "fsrcnn2_y": tame(sr.fsrcnn_small(scale=2)),
        "fsrcnn3_y": tame(sr.fsrcnn_small(scale=3)),
        "ae_rgb": tame(sr.sr_autoencoder_small(channels=3, scale=2), bias=0.0, stddev=0.01),
    }


def float_image(height, width, seed=0):
    return smooth_image(height, width, seed).astype(np.float32) / 255.0


def noisy_image(height, width, seed=0):
    """Smooth plus noise: every tile has detail, values within [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    x = 0.5 * float_image(height, width, seed) + 0.25 + rng.uniform(-0.15, 0.15,
                                                                   (height, width, 3))
    return x.astype(np.float32)


def test_receptive_radius_and_default_overlap():
    assert receptive_radius(sr.SRCNNConfig()) == 6 == sr.border(sr.SRCNNConfig())  # 4 + 0 + 2
    assert receptive_radius(sr.SRCNNConfig(kernels=(9, 5, 5))) == 8
    assert receptive_radius(sr.SRCNNConfig(padding="same")) == 6
    # FSRCNN x3: (2 + 4 + ceil(4/3) + 1) low-res px; x2 small (m = 2): 2 + 2 + 2 + 1.
    assert receptive_radius(sr.FSRCNNConfig()) == 9 * 3
    assert receptive_radius(sr.FSRCNNConfig(m=2, scale=2)) == 7 * 2
    assert receptive_radius(sr.AutoencoderConfig()) == 11  # 11 layers of 3x3
    assert [default_overlap(c) for c in (sr.SRCNNConfig(), sr.FSRCNNConfig(),
                                         sr.AutoencoderConfig(depth=2))] == [8, 32, 8]


def test_default_tile_is_512_px_of_the_working_grid(models):
    # SRCNN and the auto-encoder work on the high-res grid, FSRCNN on the low-res one.
    assert default_tile(sr.SRCNNConfig()) == 512 == Upscaler(models["srcnn_y"]).tile
    assert default_tile(sr.FSRCNNConfig(scale=4)) == 2048
    assert Upscaler(models["fsrcnn3_y"]).tile == 1536 and Upscaler(models["fsrcnn2_y"]).tile == 1024
    assert Upscaler(models["fsrcnn3_y"], tile=None).tile is None


@pytest.mark.parametrize("name", ["srcnn_y", "fsrcnn2_y", "fsrcnn3_y", "ae_rgb"])
@pytest.mark.parametrize("height,width", [(17, 5), (1, 1), (2, 9)])
def test_output_is_exactly_scale_times_the_input(models, name, height, width):
    upscaler = Upscaler(models[name], tile=8)
    s = upscaler.scale
    rgb = smooth_image(height, width, seed=3)
    out = upscaler.upscale(rgb)
    assert out.shape == (s * height, s * width, 3) and out.dtype == np.uint8
    out_float = upscaler.upscale_float(rgb / 255.0)
    assert out_float.shape == out.shape and out_float.dtype == np.float32
    assert 0.0 <= out_float.min() and out_float.max() <= 1.0
    np.testing.assert_array_equal(out, np.round(out_float * 255).astype(np.uint8))
    # Tiny images: the whole image at once gives the same (reflection past the side).
    np.testing.assert_allclose(Upscaler(models[name], tile=None).upscale_float(rgb / 255.0),
                               out_float, atol=1e-4)


def test_grayscale_arrays_are_replicated(models):
    upscaler = Upscaler(models["fsrcnn2_y"])
    gray = smooth_image(9, 7)[..., 0]
    np.testing.assert_array_equal(upscaler.upscale(gray),
                                  upscaler.upscale(np.repeat(gray[..., None], 3, axis=2)))
    with pytest.raises(TypeError, match="uint8"):
        upscaler.upscale(gray.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        upscaler.upscale_float(np.zeros((4, 4, 4), np.float32))


@pytest.mark.parametrize("name,overlap", [("srcnn_y", None), ("srcnn_y", 6),
                                          ("fsrcnn3_y", None), ("fsrcnn2_y", 14),
                                          ("ae_rgb", None)])
def test_tiled_equals_untiled(models, name, overlap):
    image = noisy_image(50, 70, seed=1)
    whole = Upscaler(models[name], tile=None).upscale_float(image)
    tiled = Upscaler(models[name], tile=32, overlap=overlap).upscale_float(image)
    # A meaningful comparison: the output has detail and is hardly ever clipped.
    assert whole.std() > 0.05
    assert np.mean((whole > 0.0) & (whole < 1.0)) > 0.8
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


def delta_srcnn(shift=False, **config):
    """An SRCNN whose layers copy channel c to channel c through a delta kernel (ReLU is
    harmless on inputs > 0): the output is the input, cropped by the border with "valid"
    padding. ``shift``: conv1's delta sits in its top-left corner instead of the centre, so
    output pixel (i, j) is input pixel (i - 4, j - 4) -- it reads the reflected border."""
    model = sr.srcnn_small(**config)
    for layer in ("conv1", "conv2", "output"):
        kernel, bias = model.get_layer(layer).get_weights()
        delta = np.zeros_like(kernel)
        at = 0 if shift and layer == "conv1" else kernel.shape[0] // 2
        for c in range(model.config.channels):
            delta[at, at, c, c] = 1.0
        model.get_layer(layer).set_weights([delta, np.zeros_like(bias)])
    return model


def zero_autoencoder(channels):
    """All weights zero: the global residual returns the input."""
    model = sr.sr_autoencoder_small(channels=channels, scale=3)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    return model


# Pointwise (1-1-1) identities have a receptive radius of 0, so overlap=0 is allowed: the model
# input is then exactly the tile, and any error in the bicubic windows shows at tile edges.
IDENTITIES = {
    "srcnn_915_y": (lambda: delta_srcnn(), None),
    "srcnn_111_y": (lambda: delta_srcnn(kernels=(1, 1, 1), padding="same"), 0),
    "srcnn_111_rgb": (lambda: delta_srcnn(kernels=(1, 1, 1), padding="same", channels=3), 0),
    "zero_ae_y": (lambda: zero_autoencoder(1), None),
    "zero_ae_rgb": (lambda: zero_autoencoder(3), None),
}


@pytest.mark.parametrize("name", sorted(IDENTITIES))
def test_an_identity_model_gives_the_bicubic_upscale(name):
    make, overlap = IDENTITIES[name]
    model = make()
    image = float_image(23, 19, seed=4)
    bicubic = pipelines.bicubic_upscale(image, 3).numpy()
    for tile in (16, None):
        out = Upscaler(model, tile=tile, overlap=overlap).upscale_float(image)
        np.testing.assert_allclose(out, bicubic, atol=1e-4)


def test_valid_srcnn_sees_the_reflected_border():
    """Output (i, j) = bicubic Y at (i - 4, j - 4), reflected at the top and left edges."""
    model = delta_srcnn(shift=True)
    image = 0.5 * float_image(23, 19, seed=7) + 0.25  # stays in gamut with a shifted Y
    y_up = pipelines.bicubic_upscale(pipelines.to_y(image), 3).numpy()[..., 0]
    expected = np.pad(y_up, ((4, 0), (4, 0)), mode="reflect")[:69, :57] * 255.0
    for tile in (16, None):
        y_out = color.rgb_to_ycbcr(Upscaler(model, tile=tile).upscale_float(image)).numpy()
        np.testing.assert_allclose(y_out[..., 0], expected, atol=1e-3)  # 1e-3 of 255 levels


@pytest.mark.parametrize("name", ["srcnn_y", "fsrcnn3_y"])
def test_y_model_keeps_a_gray_image_gray(models, name):
    gray = np.repeat(np.round(noisy_image(20, 30, seed=5)[..., :1] * 255).astype(np.uint8), 3,
                     axis=2)
    out = Upscaler(models[name], tile=32).upscale(gray).astype(int)
    assert np.abs(out[..., 0] - out[..., 1]).max() <= 1
    assert np.abs(out[..., 0] - out[..., 2]).max() <= 1
    assert out.std() > 1 and np.mean((out > 0) & (out < 255)) > 0.9  # detail, hardly clipped


def test_y_model_sets_y_and_keeps_the_bicubic_chroma():
    """FSRCNN with a zero deconvolution kernel and bias 0.5: Y = 127.5 everywhere; Cb and Cr
    must be the bicubic-upscaled input's (a desaturated image keeps the result in gamut)."""
    model = sr.fsrcnn_small(scale=3)
    kernel, bias = model.get_layer("output").get_weights()
    model.get_layer("output").set_weights([np.zeros_like(kernel), np.full_like(bias, 0.5)])
    image = 0.5 * float_image(25, 31, seed=6) + 0.25
    ycbcr_in = color.rgb_to_ycbcr(image).numpy() / 255.0
    chroma = pipelines.bicubic_upscale(ycbcr_in[..., 1:], 3).numpy() * 255.0
    for tile in (32, None):
        out = Upscaler(model, tile=tile).upscale_float(image)
        ycbcr = color.rgb_to_ycbcr(out).numpy()
        np.testing.assert_allclose(ycbcr[..., 0], 127.5, atol=1e-3)
        np.testing.assert_allclose(ycbcr[..., 1:] / 255.0, chroma / 255.0, atol=1e-4)


@pytest.mark.parametrize("name,tile,calls,max_side", [
    ("srcnn_y", 32, 12, 32 + 2 * 8),  # 120 x 90 output: 4 x 3 tiles, overlap 8
    ("fsrcnn2_y", 32, 6, 32 // 2 + 2 * 8),  # 80 x 60: 3 x 2 tiles, 16 low-res px + 8 per side
    ("fsrcnn3_y", 32, 12, 30 // 3 + 2 * 8),  # 120 x 90: tile rounded to 30 px, 4 x 3 tiles
])
@pytest.mark.parametrize("fast", [False, True])
def test_tiles_bound_what_the_model_sees(models, name, tile, calls, max_side, fast):
    upscaler = Upscaler(models[name], tile=tile, fast=fast)
    # The model's input window: (1, h, w, C) into the model, or (h, w, 3) RGB into FSRCNN's
    # fast path (one graph per window: colour, model, chroma).
    attr, axes = ("_window", slice(0, 2)) if upscaler.fast else ("_forward", slice(1, 3))
    assert upscaler.fast == (fast and name.startswith("fsrcnn"))
    seen = []
    forward = getattr(upscaler, attr)

    def spy(x):
        seen.append(x.shape[axes])
        return forward(x)

    setattr(upscaler, attr, spy)
    height, width = 40, 30
    out = upscaler.upscale(smooth_image(height, width))
    assert out.shape == (upscaler.scale * height, upscaler.scale * width, 3)
    assert len(seen) == calls
    assert max(max(shape) for shape in seen) <= max_side
    assert all(shape[0] * shape[1] <= max_side**2 for shape in seen)


def test_constructor_checks(models):
    with pytest.raises(ValueError, match="receptive radius 6"):
        Upscaler(models["srcnn_y"], overlap=5)
    with pytest.raises(ValueError, match="tile"):
        Upscaler(models["srcnn_y"], tile=0)
    assert Upscaler(models["fsrcnn3_y"], tile=32).tile == 30  # whole low-res pixels
    assert Upscaler(models["fsrcnn3_y"], tile=1).tile == 3
    assert Upscaler(models["fsrcnn3_y"]).input_margin == 8  # ceil(24 / 3) low-res px
    with pytest.raises(KoalaError, match="not a koala SR model"):
        Upscaler(keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(1, 3)]))


def test_load_and_check_scale(tmp_path, models):
    path = tmp_path / "fsrcnn.keras"
    models["fsrcnn2_y"].save(path)
    upscaler = Upscaler.load(path, tile=16)
    assert upscaler.scale == 2 and upscaler.tile == 16
    image = smooth_image(11, 13)
    np.testing.assert_array_equal(upscaler.upscale(image),
                                  Upscaler(models["fsrcnn2_y"]).upscale(image))
    check_scale(upscaler, None)
    check_scale(upscaler, 2)
    with pytest.raises(KoalaError, match="x2, not x3"):
        check_scale(upscaler, 3)
    with pytest.raises(KoalaError, match="model file not found"):
        Upscaler.load(tmp_path / "missing.keras")
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(KoalaError, match="not a Keras model"):
        Upscaler.load(tmp_path / "junk.keras")
    other = tmp_path / "other.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]).save(other)
    with pytest.raises(KoalaError, match="not a koala SR model"):
        Upscaler.load(other)


def test_output_paths(tmp_path):
    src = tmp_path / "in"
    write_image(src / "a.png", smooth_image(4, 4))
    write_image(src / "sub" / "b.jpg", smooth_image(4, 4))
    out = tmp_path / "out"
    pairs = output_paths([src, src / "a.png"], out, "_x3")
    assert [(p.relative_to(src).as_posix(), o.relative_to(out).as_posix()) for p, o in pairs] \
        == [("a.png", "a_x3.png"), ("sub/b.jpg", "sub/b_x3.png")]
    write_image(src / "sub" / "b.png", smooth_image(4, 4))
    with pytest.raises(KoalaError, match="would both be written"):
        output_paths([src], out, "_x3")
    with pytest.raises(KoalaError, match="would overwrite the input"):
        output_paths([src / "a.png"], src, "")


# --- Command line (subprocesses: each pays the TensorFlow import) --------------------------

def run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "koala.upscale", *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_folder_with_a_bad_file(tmp_path, models):
    model_path = tmp_path / "fsrcnn.keras"
    models["fsrcnn2_y"].save(model_path)
    src = tmp_path / "photos"
    write_image(src / "colour.png", smooth_image(45, 70, seed=11))
    write_image(src / "sub" / "gray.jpg", smooth_image(40, 33, seed=12)[..., 0], quality=95)
    (src / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    result = run_cli(src, "-o", out, "--model", model_path, "--scale", 2, "--tile", 32,
                     "--noprogress")
    assert result.returncode == 1, result.stderr
    assert "upscaled 2 x2, failed 1" in result.stdout
    assert str(src / "sub" / "broken.png") in result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["colour_x2.png", "sub/gray_x2.png"]
    colour = load_image(out / "colour_x2.png").rgb
    assert colour.shape == (90, 140, 3)
    assert load_image(out / "sub" / "gray_x2.png").rgb.shape == (80, 66, 3)
    expected = Upscaler(models["fsrcnn2_y"]).upscale(load_image(src / "colour.png").rgb)
    np.testing.assert_array_equal(colour, expected)


@pytest.mark.slow
def test_cli_missing_model_is_a_one_line_error(tmp_path):
    write_image(tmp_path / "x.png", smooth_image(16, 16))
    missing = tmp_path / "missing.keras"
    result = run_cli(tmp_path / "x.png", "-o", tmp_path / "out", "--model", missing)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: model file not found: {missing}"]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_a_missing_input_beside_good_ones_is_reported_and_the_rest_done(tmp_path, models,
                                                                        capsys):
    from conftest import cli_main

    from koala.core import batch

    write_image(tmp_path / "in" / "a.png", smooth_image(20, 24))
    gone = tmp_path / "gone.png"
    missing = []  # the same for colorize and codec, which pass it to batch.process too
    pairs = batch.output_paths([tmp_path / "in", gone], tmp_path / "o", "_x", missing=missing)
    assert [p.name for p, _ in pairs] == ["a.png"] and missing == [gone]
    model = tmp_path / "fsrcnn.keras"
    models["fsrcnn3_y"].save(model)
    status = cli_main("upscale", f"--model={model}", str(tmp_path / "in"), str(gone), "-o",
                      str(tmp_path / "out"), "--noprogress")
    captured = capsys.readouterr()
    assert status == 1  # one input failed, the others were done (it used to stop them all)
    assert f"{gone}: no such file or folder" in captured.err
    assert (tmp_path / "out" / "a_x3.png").exists()
    assert "upscaled 1 x3, failed 1" in captured.out
