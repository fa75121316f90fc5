"""koala.tasks.codec.inference: any image size in and out, 8-bit grayscale PNGs, tiles that
join up exactly, the receptive radius read off the layer graph, loading either half or the
whole model, export, and the command line (files and folders, bad files, the wrong half)."""

import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import cli_main, make_photo_folder, smooth_image, write_image
from PIL import Image

from koala.core.errors import KoalaError
from koala.ops.images import load_image
from koala.tasks.codec import inference as codec
from koala.tasks.codec import model as codec_models

REPO = pathlib.Path(__file__).resolve().parent.parent


def lively(model, seed=0, gains=(0.7, 0.9)):
    """Kernels N(0, (gain^2 / fan_in)) instead of the paper's N(0, 0.02), which gives an
    untrained codec a nearly constant output (std ~1e-5): now the encoder's and decoder's
    outputs vary (std ~0.24 and ~0.16 on noisy photos) without saturating, so a tiling error
    can't hide."""
    rng = np.random.default_rng(seed)
    for part, gain in zip((model.encoder, model.decoder), gains, strict=True):
        for layer in part.layers:
            if isinstance(layer, keras.layers.Conv2D):
                shape = tuple(layer.kernel.shape)
                fan_in = shape[0] * shape[1] * shape[2]
                layer.kernel.assign(rng.normal(0.0, gain * fan_in**-0.5, shape)
                                    .astype(np.float32))
    return model


@pytest.fixture(scope="module")
def small():
    keras.utils.set_random_seed(0)
    return lively(codec_models.codec_small())


def noisy(height, width, seed=0):
    """uint8 (H, W, 3): smooth colour plus noise, detail in every tile."""
    rng = np.random.default_rng(seed)
    base = smooth_image(height, width, seed).astype(np.int16)
    return np.clip(base + rng.integers(-40, 41, base.shape), 0, 255).astype(np.uint8)


# --- Receptive radius and defaults -----------------------------------------------------------


def test_receptive_radius_of_the_paper_and_small_models(small):
    paper = codec_models.codec()
    # Encoder, by hand: 5 full-res 3x3 layers (conv_in, 2 residual blocks) = 5; down1_a
    # (stride 2, one-sided: 2) = 7; down1_b at step 2 = 9; down2_a 2 steps of 2 = 13; down2_b +
    # 8 residual convs at step 4 = 49; up1 one step (4) = 53; 2 convs at step 2 = 57; up2 + 2
    # = 59; 2 + 4 + 1 full-res convs = 66. Decoder: 1 + 16 + 1 + conv1 = 18.
    assert codec.receptive_radius(paper.encoder) == 66
    assert codec.receptive_radius(paper.decoder) == 18
    assert codec.default_overlap(paper.encoder) == 72
    assert codec.default_overlap(paper.decoder) == 24
    # Small: residual blocks (1, 2, 1) and 3: 3 + 2 + 2 + 4 + 12 + 4 + 4 + 2 + 2 + 2 + 4 + 1 = 46.
    assert codec.receptive_radius(small.encoder) == 46
    assert codec.receptive_radius(small.decoder) == 8
    assert (codec.default_overlap(small.encoder), codec.default_overlap(small.decoder)) == (48, 8)


def test_receptive_radius_of_custom_blocks_and_unknown_layers():
    class Block(keras.layers.Layer):  # a residual block as one custom layer
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.a = keras.layers.Conv2D(2, 3, padding="same")
            self.b = keras.layers.Conv2D(2, 5, padding="same")

        def call(self, x):
            return x + self.b(self.a(x))

    x = keras.Input((None, None, 2))
    y = keras.layers.Conv2D(2, 3, strides=2, padding="same")(x)  # 2 (one-sided)
    y = Block()(y)  # (1 + 2) px at step 2 = 6
    y = keras.layers.UpSampling2D(2)(y)  # one step of 2
    assert codec.receptive_radius(keras.Model(x, y)) == 2 + 6 + 2
    z = keras.layers.Cropping2D(1)(x)  # not a layer it knows
    assert codec.receptive_radius(keras.Model(x, z)) is None
    with pytest.warns(UserWarning, match="Cropping2D"):  # a fallback, said out loud
        assert codec.default_overlap(keras.Model(x, z)) == codec.FALLBACK_OVERLAP


# --- Sizes, types, tiles -----------------------------------------------------------------------


@pytest.mark.parametrize("height,width", [(37, 53), (217, 301), (1, 1), (2, 7), (64, 48)])
def test_any_size_in_the_same_size_out(small, height, width):
    rgb = noisy(height, width, seed=height)
    gray = codec.encode(small.encoder, rgb, tile=64)
    assert gray.shape == (height, width) and gray.dtype == np.uint8
    restored = codec.decode(small.decoder, gray, tile=64)
    assert restored.shape == (height, width, 3) and restored.dtype == np.uint8
    # Grayscale input to the encoder is replicated; equal-channel RGB to the decoder is gray.
    np.testing.assert_array_equal(codec.encode(small.encoder, rgb[..., 1]),
                                  codec.encode(small.encoder, np.repeat(rgb[..., 1:2], 3, 2)))
    np.testing.assert_array_equal(codec.decode(small.decoder, np.repeat(gray[..., None], 3, 2)),
                                  restored)


def test_input_checks(small):
    with pytest.raises(TypeError, match="uint8"):
        codec.encode(small.encoder, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="luma"):
        codec.decode(small.decoder, noisy(8, 8))
    with pytest.raises(KoalaError, match="expected a codec decoder"):
        codec.decode(small.encoder, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="receptive radius 46"):
        codec.TiledPart(small.encoder, overlap=40)
    with pytest.raises(ValueError, match="tile"):
        codec.TiledPart(small.encoder, tile=0)
    part = codec.TiledPart(small.encoder, tile=30, overlap=47)
    assert (part.tile, part.overlap) == (28, 48)  # multiples of 4: the stride-2 grid


def test_tiled_equals_untiled(small):
    rgb01 = noisy(150, 131, seed=5) / 255.0
    whole = codec.TiledPart(small.encoder, tile=None)(rgb01)
    tiled = codec.TiledPart(small.encoder, tile=32)(rgb01)  # 5 x 5 tiles, overlap 48
    # A meaningful comparison: the gray varies and is hardly ever clipped.
    assert whole.std() > 0.1 and np.mean((whole > 0.01) & (whole < 0.99)) > 0.95
    assert np.abs(tiled - whole).max() <= 1e-4  # measured: 0.0 on CPU
    # Too little context does show (the check above can fail).
    short = codec.TiledPart(small.encoder, tile=32)
    short.overlap = 8
    assert np.abs(short(rgb01) - whole).max() > 1e-3  # measured: 4e-3
    # After rounding: equal but for float ties on a level boundary (at most 1 grey level).
    rgb = np.round(rgb01 * 255).astype(np.uint8)
    diff = np.abs(codec.encode(small.encoder, rgb, tile=32).astype(int)
                  - codec.encode(small.encoder, rgb, tile=None).astype(int))
    assert diff.max() <= 1 and np.mean(diff > 0) < 1e-3

    gray01 = codec.encode(small.encoder, rgb, tile=None) / 255.0
    whole = codec.TiledPart(small.decoder, tile=None)(gray01)
    tiled = codec.TiledPart(small.decoder, tile=16)(gray01)  # 10 x 9 tiles, overlap 8
    assert whole.std() > 0.1 and np.mean((whole > 0.01) & (whole < 0.99)) > 0.95
    assert np.abs(tiled - whole).max() <= 1e-4


def test_tiles_bound_what_the_model_sees(small):
    part = codec.TiledPart(small.encoder, tile=32)
    seen = []
    forward = part._forward

    def spy(x):
        seen.append(tuple(x.shape))
        return forward(x)

    part._forward = spy
    out = part(noisy(70, 100) / 255.0)  # padded to 72 x 100: 3 x 4 tiles
    assert out.shape == (70, 100, 1) and len(seen) == 12
    assert max(max(s[1:3]) for s in seen) <= 32 + 2 * 48
    assert all(s[1] % 4 == 0 and s[2] % 4 == 0 for s in seen)


def test_luma_and_round_trips():
    rgb = np.array([[[100, 50, 200], [255, 255, 255], [0, 0, 0], [10, 20, 30]]], np.uint8)
    # 0.299 R + 0.587 G + 0.114 B: 82.05, 255, 0, 18.15
    np.testing.assert_array_equal(codec.luma(rgb), [[82, 255, 0, 18]])
    gray = noisy(33, 47)[..., 0]
    np.testing.assert_array_equal(codec.round_trip(gray, "PNG"), gray)
    jpeg = codec.round_trip(gray, "JPEG", quality=50)
    assert jpeg.shape == gray.shape and jpeg.dtype == np.uint8
    assert 0 < np.abs(jpeg.astype(int) - gray).mean() < 30


# --- Loading, picking the half, export ------------------------------------------------------


def test_load_either_half_or_the_whole_model(tmp_path, small):
    whole = tmp_path / "codec.keras"
    small.save(whole)
    small.encoder.save(tmp_path / "enc.keras")
    small.decoder.save(tmp_path / "dec.keras")
    rgb = noisy(20, 28)
    expected = codec.encode(small.encoder, rgb)
    for path in (whole, tmp_path / "enc.keras"):
        np.testing.assert_array_equal(codec.encode(codec.load_part(path, "encoder"), rgb),
                                      expected)
    gray = expected
    for path in (whole, tmp_path / "dec.keras"):
        np.testing.assert_array_equal(codec.decode(codec.load_part(path, "decoder"), gray),
                                      codec.decode(small.decoder, gray))
    with pytest.raises(KoalaError, match=r"enc\.keras is a codec encoder \(3-channel input\); "
                                         r"decoding needs the decoder"):
        codec.load_part(tmp_path / "enc.keras", "decoder")
    with pytest.raises(KoalaError, match="is a codec decoder"):
        codec.load_part(tmp_path / "dec.keras", "encoder")
    other = tmp_path / "other.keras"
    keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3)]).save(other)
    with pytest.raises(KoalaError, match="mapping 3 channels to 2, not a codec half"):
        codec.load_part(other, "encoder")
    with pytest.raises(KoalaError, match="holds a codec encoder alone, not a whole"):
        codec.load_codec(tmp_path / "enc.keras")
    with pytest.raises(KoalaError, match="model file not found"):
        codec.load_part(tmp_path / "missing.keras", "encoder")


def test_export_writes_halves_that_reload_plainly(tmp_path, small):
    small.save(tmp_path / "codec.keras")
    written = codec.export(tmp_path / "codec.keras", tmp_path / "out")
    assert written == {"encoder": tmp_path / "out" / "encoder.keras",
                       "decoder": tmp_path / "out" / "decoder.keras"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["decoder.keras",
                                                                     "encoder.keras"]
    encoder = keras.saving.load_model(written["encoder"])
    decoder = keras.saving.load_model(written["decoder"])
    x = noisy(16, 24) / np.float32(255.0)
    np.testing.assert_allclose(encoder(x[None]), small.encoder(x[None]), atol=1e-6)
    g = x[None, ..., :1]
    np.testing.assert_allclose(decoder(g), small.decoder(g), atol=1e-6)


# --- Command line (subprocesses: each pays the TensorFlow import) ---------------------------


def run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "koala.codec", *map(str, args)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_encode_then_decode_a_folder_with_bad_files(tmp_path, small):
    model = tmp_path / "codec.keras"
    small.save(model)
    src = tmp_path / "photos"
    good, bad = make_photo_folder(src, n_good=3)
    out = tmp_path / "gray"
    result = run_cli("encode", src, "-o", out, "--model", model, "--tile", 32, "--noprogress")
    assert result.returncode == 1, result.stderr
    assert "encoded 3, failed 3" in result.stdout
    for name in bad:
        assert str(src / name) in result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(str(pathlib.PurePosixPath(g).with_suffix("")) + "_gray.png"
                             for g in good)
    for name in good:
        path = out / (str(pathlib.PurePosixPath(name).with_suffix("")) + "_gray.png")
        with Image.open(path) as im:
            assert im.mode == "L"
            stored = np.asarray(im)
        rgb = load_image(src / name).rgb
        assert stored.shape == rgb.shape[:2]
        np.testing.assert_array_equal(stored, codec.encode(small.encoder, rgb))

    # Decode: the encoded folder, a grayscale photo the encoder never made, a colour photo.
    write_image(out / "plain_gray.jpg", smooth_image(30, 45, seed=7)[..., 0], quality=90)
    write_image(out / "colour.png", smooth_image(21, 18, seed=8))
    restored = tmp_path / "restored"
    result = run_cli("decode", out, "-o", restored, "--model", model, "--suffix", "_rgb",
                     "--noprogress")
    assert result.returncode == 0, result.stderr
    assert "decoded 5, failed 0" in result.stdout
    assert f"{out / 'colour.png'}: note: a colour image; decoding its BT.601 luma" \
        in result.stderr
    with Image.open(restored / "plain_gray_rgb.png") as im:
        assert im.mode == "RGB" and im.size == (45, 30)
    first = str(pathlib.PurePosixPath(good[0]).with_suffix(""))
    np.testing.assert_array_equal(
        load_image(restored / f"{first}_gray_rgb.png").rgb,
        codec.decode(small.decoder, np.asarray(Image.open(out / f"{first}_gray.png"))))
    colour = load_image(out / "colour.png").rgb
    np.testing.assert_array_equal(load_image(restored / "colour_rgb.png").rgb,
                                  codec.decode(small.decoder, codec.luma(colour)))


@pytest.mark.slow
def test_cli_wrong_half_and_export(tmp_path, small, capsys):
    small.save(tmp_path / "codec.keras")
    small.encoder.save(tmp_path / "encoder_only.keras")
    write_image(tmp_path / "x.png", smooth_image(16, 16)[..., 0])
    assert cli_main("codec", "decode", tmp_path / "x.png", "-o", tmp_path / "out", "--model",
                    tmp_path / "encoder_only.keras") == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {tmp_path / 'encoder_only.keras'} is a codec encoder (3-channel "
                      "input); decoding needs the decoder (1-channel input) or a whole "
                      "InvertibleGrayscale model"]
    assert "Traceback" not in err and not (tmp_path / "out").exists()

    assert cli_main("codec", "export", "--model", tmp_path / "codec.keras", "-o",
                    tmp_path / "halves") == 0
    assert sorted(p.name for p in (tmp_path / "halves").iterdir()) == ["decoder.keras",
                                                                       "encoder.keras"]
    decoder = keras.saving.load_model(tmp_path / "halves" / "decoder.keras")
    gray = smooth_image(12, 20)[..., 0]
    np.testing.assert_array_equal(codec.decode(decoder, gray), codec.decode(small.decoder, gray))
    assert cli_main("codec", "shrink", tmp_path / "x.png", "-o", tmp_path / "o", "--model",
                    "m.keras") == 2
    assert "the first argument is the command" in capsys.readouterr().err
