"""koala.tasks.codec.evaluator and koala.cli.evaluate --task=codec: colour PSNR/SSIM after a
real 8-bit PNG round trip, the luma baseline, the grayscale against luma, the JPEG table and
plot, checked on pointwise stand-in models whose numbers can be worked out by hand; the files
and the command line on codec_small."""

import io
import json
import math
import os

import keras
import numpy as np
import pytest
from conftest import smooth_image, write_image
from PIL import Image
from test_evaluate import run_cli

from koala.cli import evaluate
from koala.core.errors import KoalaError
from koala.core.report import to_json
from koala.ops.grid import GAP
from koala.tasks.codec import evaluator
from koala.tasks.codec import model as codec_models

QUALITIES = (95, 90, 75, 50)
FLAT = (100, 50, 200)  # the colour of the flat test image


def pointwise(weights, bias=None):
    """A 1x1-conv model: channels in -> out by ``weights`` (C_in, C_out), plus ``bias``."""
    weights = np.asarray(weights, np.float32)
    x = keras.Input((None, None, weights.shape[0]))
    layer = keras.layers.Conv2D(weights.shape[1], 1, use_bias=bias is not None)
    y = layer(x)
    layer.set_weights([weights[None, None]] + ([np.asarray(bias, np.float32)]
                                               if bias is not None else []))
    return keras.Model(x, y)


GREEN = pointwise([[0.0], [1.0], [0.0]])  # encoder: the gray is the green channel
REPLICATE = pointwise([[1.0, 1.0, 1.0]])  # decoder: the gray copied to R, G and B


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_image(root / "a_flat.png", np.full((12, 16, 3), FLAT, np.uint8))
    write_image(root / "b_gray.png", smooth_image(24, 20, seed=1)[..., 0])
    write_image(root / "c_colour.png", smooth_image(32, 40, seed=2))
    (root / "d_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


@pytest.fixture(scope="module")
def report(photos):
    paths = sorted(p for p in photos.iterdir())
    return evaluator.codec_report(GREEN, REPLICATE, paths, root=photos)


def psnr(truth, output):
    mse = np.mean((truth.astype(np.float64) - output) ** 2)
    return 10 * math.log10(255**2 / mse)


def jpeg(gray, quality):
    """``gray`` after a JPEG file of that quality, written and read with PIL alone."""
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("L"))


def test_hand_checked_numbers(report, photos):
    assert report["task"] == "codec" and report["images"] == 3
    assert report["methods"] == ["luma", "luma_decoded", "codec", "jpeg95", "jpeg90", "jpeg75",
                                 "jpeg50"]
    assert [e["name"] for e in report["per_image"]] == ["a_flat.png", "b_gray.png",
                                                        "c_colour.png"]
    assert [s["path"] for s in report["skipped"]] == ["d_broken.png"]

    # Flat (100, 50, 200): G = 50, restored (50, 50, 50): MSE (50^2 + 0 + 150^2) / 3.
    flat = report["per_image"][0]
    assert flat["codec"]["psnr"] == pytest.approx(10 * math.log10(65025 / (25000 / 3)))
    assert flat["codec"]["psnr"] == pytest.approx(8.923, abs=1e-3)
    # luma = round(29.9 + 29.35 + 22.8) = 82: MSE (18^2 + 32^2 + 118^2) / 3.
    assert flat["luma"]["psnr"] == pytest.approx(10 * math.log10(65025 / (15272 / 3)))
    assert flat["luma_decoded"] == flat["luma"]  # the decoder copies the luma to R, G, B
    # The stored gray (50) against the luma (82): 32 levels everywhere.
    assert flat["gray_vs_luma"]["mae"] == 32.0
    assert flat["gray_vs_luma"]["psnr"] == pytest.approx(10 * math.log10(65025 / 32**2))
    assert flat["gray_vs_luma"]["ssim"] is not None

    # A gray photo: G = R = G = B, restored perfectly; luma is the gray itself.
    gray = report["per_image"][1]
    for method in ("luma", "luma_decoded", "codec"):
        assert gray[method] == {"psnr": math.inf, "ssim": pytest.approx(1.0)}
    assert gray["gray_vs_luma"]["psnr"] == math.inf and gray["gray_vs_luma"]["mae"] == 0.0

    # A colour photo: every number from its definition.
    truth = np.asarray(Image.open(photos / "c_colour.png"))
    green = truth[..., 1]
    luma = np.round(truth @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    colour = report["per_image"][2]
    assert colour["codec"]["psnr"] == pytest.approx(psnr(truth, np.dstack([green] * 3)))
    assert colour["luma"]["psnr"] == pytest.approx(psnr(truth, np.dstack([luma] * 3)))
    assert colour["gray_vs_luma"]["psnr"] == pytest.approx(psnr(luma, green))
    assert colour["gray_vs_luma"]["mae"] == pytest.approx(
        np.abs(green.astype(int) - luma).mean())
    for q in QUALITIES:
        stored = jpeg(green, q)
        assert colour[f"jpeg{q}"]["psnr"] == pytest.approx(psnr(truth, np.dstack([stored] * 3)))
    assert colour["jpeg50"]["psnr"] != colour["codec"]["psnr"]  # JPEG did change the gray

    # Means: over the three images (one inf PSNR makes the PSNR mean inf).
    assert report["mean"]["codec"]["psnr"] == math.inf
    ssims = [e["codec"]["ssim"] for e in report["per_image"]]
    assert report["mean"]["codec"]["ssim"] == pytest.approx(np.mean(ssims))
    assert report["mean"]["gray_vs_luma"]["mae"] == pytest.approx(
        np.mean([e["gray_vs_luma"]["mae"] for e in report["per_image"]]))


def test_a_decoder_that_ignores_the_gray(photos):
    constant = pointwise([[0.0, 0.0, 0.0]], bias=[0.2, 0.4, 0.6])  # (51, 102, 153) everywhere
    result = evaluator.codec_report(GREEN, constant, [photos / "a_flat.png"],
                                    jpeg_qualities=(50,))
    entry = result["per_image"][0]
    expected = 10 * math.log10(65025 / ((49**2 + 52**2 + 47**2) / 3))
    for method in ("luma_decoded", "codec", "jpeg50"):
        assert entry[method]["psnr"] == pytest.approx(expected)
    assert result["methods"] == ["luma", "luma_decoded", "codec", "jpeg50"]


def test_markdown_and_json(report):
    markdown = evaluator.codec_markdown(report)
    assert "| method | PSNR | SSIM |" in markdown
    for method in report["methods"]:
        assert f"| {method} |" in markdown
    assert "| storage | PSNR | SSIM | ΔPSNR vs PNG |" in markdown
    assert "| PNG (lossless) | inf |" in markdown
    for q in QUALITIES:
        assert f"| JPEG q{q} |" in markdown
    assert "| gray_vs_luma |" in markdown and "| image | PSNR | SSIM | MAE |" in markdown
    assert "`d_broken.png`" in markdown and "BT.601" in markdown
    data = json.loads(to_json(report))
    assert data["mean"]["codec"]["psnr"] == "inf"


def test_jpeg_plot_draws_points_and_references(report):
    plot = evaluator.jpeg_plot(report)
    assert plot.shape == (360, 560, 3) and plot.dtype == np.uint8
    blue = np.all(plot == (30, 80, 200), axis=-1)
    assert blue.sum() > 100  # the JPEG points and their line
    # Only finite PSNRs are drawn: a report whose every value is inf still gives a chart.
    flat = {**report, "mean": {k: {"psnr": math.inf, "ssim": 1.0} for k in report["mean"]}}
    assert evaluator.jpeg_plot(flat).shape == (360, 560, 3)


def test_config_and_flags(tmp_path):
    from absl import flags

    fv = flags.FlagValues()
    evaluate.define_flags(fv)
    fv(["evaluate", "--task=codec", "--model=c.keras", "--images=photos",
        "--jpeg_quality=80", "--jpeg_quality=40", "--tile=0"])
    assert evaluate.TASKS["codec"](fv)[1] == evaluator.CodecEvalConfig(
        model="c.keras", images="photos", output_dir=os.path.join("runs", "eval", "codec"),
        jpeg_qualities=(80, 40), tile=None)
    fv2 = flags.FlagValues()
    evaluate.define_flags(fv2)
    fv2(["evaluate", "--task=codec", "--model=a.keras", "--model=b.keras", "--images=x"])
    with pytest.raises(KoalaError, match="evaluates one model"):
        evaluate.TASKS["codec"](fv2)
    with pytest.raises(flags.IllegalFlagValueError):
        fv2(["evaluate", "--jpeg_quality=101"])
    with pytest.raises(ValueError, match="jpeg_qualities"):
        evaluator.CodecEvalConfig(model="m", images="x", jpeg_qualities=(90, 90))
    assert evaluator.CodecEvalConfig(model="m", images="x").jpeg_qualities == QUALITIES


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("model") / "small.keras"
    codec_models.codec_small().save(path)
    return path


def test_evaluate_codec_writes_every_file(photos, model_path, tmp_path):
    out = tmp_path / "out"
    config = evaluator.CodecEvalConfig(model=str(model_path), images=str(photos),
                                       output_dir=str(out), grid_height=24, tile=16,
                                       progress=False)
    result = evaluator.evaluate_codec(config)
    data = json.loads((out / "metrics.json").read_text())
    assert set(data) == {"task", "images_dir", "images", "model", "tile", "grid_height",
                         "methods", "jpeg_qualities", "metric_variants", "per_image", "mean",
                         "skipped"}
    assert data["model"] == str(model_path) and data["tile"] == 16 and data["images"] == 3
    assert data["jpeg_qualities"] == list(QUALITIES)
    assert set(data["metric_variants"]) >= {"psnr", "ssim", "mae", "luma", "luma_decoded",
                                            "codec", "jpegQ", "gray_vs_luma"}
    for entry in data["per_image"]:
        assert set(entry) == {"name", "width", "height", "gray_vs_luma", *data["methods"]}
        assert set(entry["gray_vs_luma"]) == {"psnr", "ssim", "mae"}
        for method in data["methods"]:
            assert set(entry[method]) == {"psnr", "ssim"}
    assert set(data["mean"]) == {"gray_vs_luma", *data["methods"]}
    # An untrained codec outputs mid-gray: finite numbers, luma baseline still as by hand.
    assert all(math.isfinite(e["codec"]["psnr"]) for e in data["per_image"])
    assert data["per_image"][0]["luma"]["psnr"] == pytest.approx(
        10 * math.log10(65025 / (15272 / 3)))
    assert data["mean"]["codec"]["psnr"] == pytest.approx(result["mean"]["codec"]["psnr"])
    assert [s["path"] for s in data["skipped"]] == ["d_broken.png"]

    markdown = (out / "metrics.md").read_text()
    assert "| PNG (lossless) |" in markdown and "| JPEG q50 |" in markdown
    assert str(model_path) in markdown
    # grid.png: 3 rows of [input | grayscale | restored], each cell 24 px high.
    grid = np.asarray(Image.open(out / "grid.png"))
    widths = [round(w * 24 / h) for h, w in ((12, 16), (24, 20), (32, 40))]
    assert grid.shape == (3 * 24 + 2 * GAP, 3 * max(widths) + 2 * GAP, 3)
    with Image.open(out / "jpeg_psnr.png") as im:
        assert im.size == (560, 360) and im.mode == "RGB"


def test_evaluate_codec_input_errors(photos, model_path, tmp_path):
    def config(model, images=photos):
        return evaluator.CodecEvalConfig(model=str(model), images=str(images),
                                         output_dir=str(tmp_path / "out"), progress=False)

    with pytest.raises(KoalaError, match="model file not found"):
        evaluator.evaluate_codec(config(tmp_path / "nope.keras"))
    keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(3, 1)]).save(
        tmp_path / "decoder.keras")
    with pytest.raises(KoalaError, match="holds a codec decoder alone"):
        evaluator.evaluate_codec(config(tmp_path / "decoder.keras"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(evaluator.NoUsableImagesError):
        evaluator.evaluate_codec(config(model_path, tmp_path / "empty"))
    assert not (tmp_path / "out").exists()


def test_main_in_process(photos, model_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate.main(["evaluate", "--task=codec", f"--model={model_path}",
                          f"--images={photos}", f"--output_dir={out}", "--max_images=1",
                          "--jpeg_quality=50", "--tile=0", "--noprogress"]) == 0
    stdout = capsys.readouterr().out
    assert f"JPEG plot: {out / 'jpeg_psnr.png'}" in stdout and "| jpeg50 |" in stdout
    assert json.loads((out / "metrics.json").read_text())["tile"] is None
    assert (out / "flags.txt").read_text().splitlines() == [
        "--task=codec", f"--model={model_path}", f"--images={photos}", f"--output_dir={out}",
        "--max_images=1", "--jpeg_quality=50", "--grid_height=160", "--tile=0",
        "--progress=False"]
    assert evaluate.main(["evaluate", "--task=codec", f"--model={model_path}",
                          f"--model={model_path}", f"--images={photos}"]) == 2
    assert "evaluates one model" in capsys.readouterr().err
    assert evaluate.main(["evaluate", "--task=codec", f"--model={model_path}",
                          f"--images={photos}", "--crop_size=8"]) == 2
    assert capsys.readouterr().err == ("error: --crop_size is a flag of --task=sr, not of "
                                       "--task=codec\n")


def test_cli_end_to_end(photos, model_path, tmp_path):
    """The one subprocess smoke test: ``python -m koala.evaluate`` as users run it."""
    out = tmp_path / "out"
    proc = run_cli("--task=codec", f"--model={model_path}", f"--images={photos}",
                   f"--output_dir={out}", "--max_images=2", "--jpeg_quality=90",
                   "--jpeg_quality=50", "--noprogress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| method | PSNR | SSIM | MAE |" in proc.stdout
    for row in ("| luma |", "| luma_decoded |", "| codec |", "| jpeg90 |", "| jpeg50 |",
                "| gray_vs_luma |"):
        assert row in proc.stdout
    assert "jpeg_psnr.png" in proc.stdout
    data = json.loads((out / "metrics.json").read_text())
    assert data["images"] == 2 and data["jpeg_qualities"] == [90, 50]
    for name in ("metrics.md", "grid.png", "jpeg_psnr.png"):
        assert (out / name).exists()
    flags_txt = (out / "flags.txt").read_text().splitlines()
    assert "--jpeg_quality=90" in flags_txt and "--jpeg_quality=50" in flags_txt
    assert "--task=codec" in flags_txt
