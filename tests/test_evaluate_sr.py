"""koala.tasks.sr.evaluator and koala.cli.evaluate --task=sr: the degradation is the training
pipeline's, the metrics follow the field's conventions (studio Y, border crop = scale), the
bicubic baseline is on every row, the report files, and the command line. Stub upscalers and
one tiny saved FSRCNN (x2)."""

import json
import math
import os

import numpy as np
import pytest
from conftest import smooth_image, write_image
from PIL import Image
from test_evaluate import linked_models, run_cli

from koala.cli import evaluate
from koala.core.errors import KoalaError
from koala.core.report import markdown_mean_table, to_json
from koala.data import build, pipelines
from koala.ops import metrics
from koala.ops.grid import GAP
from koala.tasks.sr import evaluator

SIZES = {"a.png": (40, 56), "b.png": (33, 48), "sub/c.png": (36, 36)}  # (H, W)


def reference_lr(hr, scale):
    """The training degradation, written out: round(255 * bicubic_downscale(HR / 255, s))."""
    x = hr.astype(np.float32) / np.float32(255)
    return np.round(pipelines.bicubic_downscale(x, scale).numpy() * np.float32(255)).astype(
        np.uint8)


def reference_bicubic(lr, scale):
    x = lr.astype(np.float32) / np.float32(255)
    return np.round(pipelines.bicubic_upscale(x, scale).numpy() * np.float32(255)).astype(
        np.uint8)


class BicubicStub:
    """An "identity to bicubic" upscaler: the bicubic upscale of its input. Records inputs."""

    def __init__(self, scale):
        self.scale = scale
        self.inputs = []

    def upscale(self, lr):
        self.inputs.append(np.array(lr))
        return reference_bicubic(lr, self.scale)


class PerfectStub:
    """Returns the high-res truth, looked up by the LR the test expects it to receive."""

    def __init__(self, scale, truths):
        self.scale = scale
        self._by_lr = {}
        for hr in truths:
            lr = reference_lr(hr, scale)
            self._by_lr[(lr.shape, lr.tobytes())] = hr

    def upscale(self, lr):
        return self._by_lr[(lr.shape, np.asarray(lr).tobytes())].copy()


class FixedStub:
    """Returns a given image whatever the input."""

    def __init__(self, scale, output):
        self.scale = scale
        self.output = output

    def upscale(self, lr):
        return self.output.copy()


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three small colour images (one in a subfolder, one not a multiple of 2) and a corrupt
    file."""
    root = tmp_path_factory.mktemp("photos")
    for i, (name, (h, w)) in enumerate(SIZES.items()):
        write_image(root / name, smooth_image(h, w, seed=i))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny random FSRCNN x2 (Y channel) saved as .keras."""
    from koala.tasks.sr.models import fsrcnn_small

    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    fsrcnn_small(scale=2).save(path)
    return path


def truths(photos, scale):
    return [evaluator.mod_crop(np.asarray(Image.open(photos / n).convert("RGB")), scale)
            for n in SIZES]


@pytest.fixture(scope="module")
def report(photos):
    paths = sorted(photos.rglob("*.png"))
    return evaluator.sr_report(
        {"same": BicubicStub(2), "perfect": PerfectStub(2, truths(photos, 2))}, paths,
        scale=2, root=photos)


def test_identity_to_bicubic_equals_the_baseline_and_perfect_is_inf(report):
    assert report["task"] == "sr" and report["scale"] == 2 and report["images"] == 3
    assert report["methods"] == ["bicubic", "same", "perfect"]
    assert [e["name"] for e in report["per_image"]] == ["a.png", "b.png", "sub/c.png"]
    assert [s["path"] for s in report["skipped"]] == ["broken.png"]
    for entry in report["per_image"]:
        assert set(entry["bicubic"]) == {"psnr_y", "ssim_y", "psnr_rgb"}
        assert entry["same"] == entry["bicubic"]  # exactly, every metric
        assert entry["perfect"]["psnr_y"] == entry["perfect"]["psnr_rgb"] == math.inf
        assert entry["perfect"]["ssim_y"] == pytest.approx(1.0)
        assert 15 < entry["bicubic"]["psnr_y"] < 60 and entry["bicubic"]["ssim_y"] < 1.0
    assert report["mean"]["same"] == report["mean"]["bicubic"]
    assert report["mean"]["bicubic"]["psnr_y"] == pytest.approx(
        np.mean([e["bicubic"]["psnr_y"] for e in report["per_image"]]), rel=1e-12)
    assert report["mean"]["perfect"]["psnr_y"] == math.inf

    table = markdown_mean_table(report)
    assert table.splitlines()[0] == "| method | PSNR-Y | SSIM-Y | PSNR-RGB |"
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ", 1)[1]
            for line in table.splitlines()[2:]}
    assert list(rows) == ["bicubic", "same", "perfect"]
    assert rows["same"] == rows["bicubic"] != rows["perfect"]
    assert rows["perfect"] == "inf | 1.0000 | inf |"


def test_metrics_are_the_field_convention(report, photos):
    entry = report["per_image"][0]
    hr = truths(photos, 2)[0]
    bicubic = reference_bicubic(reference_lr(hr, 2), 2)
    assert entry["bicubic"] == {"psnr_y": metrics.psnr_y(hr, bicubic, crop=2),
                                "ssim_y": metrics.ssim_y(hr, bicubic, crop=2),
                                "psnr_rgb": metrics.psnr(hr, bicubic, peak=255)}


def test_lr_is_the_training_degradation(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    write_image(tmp_path / "photos" / "x.png", hr)

    # What the model receives in the evaluation is round(255 * bicubic_downscale(HR/255, s)).
    stub = BicubicStub(2)
    evaluator.sr_report({"m": stub}, [tmp_path / "photos" / "x.png"], scale=2)
    (lr_eval,) = stub.inputs
    assert lr_eval.dtype == np.uint8 and lr_eval.shape == (12, 12, 3)
    np.testing.assert_array_equal(lr_eval, reference_lr(hr, 2))

    # The SR training pairs (pipelines.sr_dataset) on the same image give the same LR.
    cfg = build.BuildConfig(input_dir=str(tmp_path / "photos"), output_dir=str(tmp_path / "rec"),
                            image_size=24, groups=("rgb",), val_fraction=0.0, progress=False)
    assert build.build(cfg).ok
    ds = pipelines.sr_dataset(tmp_path / "rec", scale=2, patch_size=24, batch_size=1,
                              training=False, channels="rgb", upsample=False)
    lr_train, hr_train = next(iter(ds))
    np.testing.assert_array_equal(np.round(hr_train[0].numpy() * 255).astype(np.uint8), hr)
    lr_train = np.round(lr_train[0].numpy() * np.float32(255)).astype(np.uint8)
    np.testing.assert_array_equal(lr_eval, lr_train)

    # And the evaluation calls the pipeline's function (no copy of it).
    calls = []
    original = pipelines.bicubic_downscale

    def spy(x, scale):
        calls.append(scale)
        return original(x, scale)

    monkeypatch.setattr(pipelines, "bicubic_downscale", spy)
    np.testing.assert_array_equal(evaluator.degrade(hr, 2), lr_eval)
    assert calls == [2]


def test_y_metrics_crop_scale_pixels_of_border(tmp_path):
    hr = smooth_image(30, 36, seed=5)
    path = write_image(tmp_path / "x.png", hr)
    border = hr.copy()
    border[:3] = 255 - border[:3]  # only the 3 px (= scale) border differs
    border[:, -3:] = 0
    inside = hr.copy()
    inside[3, 3] = 255 - inside[3, 3]  # the first pixel inside the crop
    result = evaluator.sr_report({"border": FixedStub(3, border), "inside": FixedStub(3, inside)},
                                 [path], scale=3)
    entry = result["per_image"][0]
    assert entry["border"]["psnr_y"] == math.inf
    assert entry["border"]["ssim_y"] == pytest.approx(1.0)
    assert math.isfinite(entry["border"]["psnr_rgb"])  # RGB PSNR: the whole image
    assert math.isfinite(entry["inside"]["psnr_y"])


def test_mod_crop_and_small_images(tmp_path):
    image = smooth_image(31, 20, seed=1)
    assert evaluator.mod_crop(image, 3).shape == (30, 18, 3)
    np.testing.assert_array_equal(evaluator.mod_crop(image, 3), image[:30, :18])
    paths = [write_image(tmp_path / "odd.png", image),
             write_image(tmp_path / "narrow.png", smooth_image(16, 40, seed=3)),
             write_image(tmp_path / "tiny.png", smooth_image(6, 40, seed=2))]
    stub = BicubicStub(3)
    result = evaluator.sr_report({"m": stub}, paths, scale=3, root=tmp_path)
    odd, = result["per_image"]
    assert (odd["height"], odd["width"], odd["lr_height"], odd["lr_width"]) == (30, 18, 10, 6)
    assert [x.shape for x in stub.inputs] == [(10, 6, 3)]
    # SSIM-Y needs 11 px a side after the border crop: 24 x 12 has it, 9 x 33 hasn't, so
    # narrow.png is skipped with its reason, before any model runs on it.
    assert odd["m"]["ssim_y"] is not None
    assert result["mean"]["m"]["ssim_y"] == odd["m"]["ssim_y"]
    # 6 px <= 2 * 3: nothing left after the border crop.
    assert [s["path"] for s in result["skipped"]] == ["narrow.png", "tiny.png"]
    assert result["skipped"][0]["reason"] == (
        "too thin to score: 39x15 px, 9 px a side after the 3 px border crop; SSIM's window "
        "needs 11 px a side")
    assert "too small" in result["skipped"][1]["reason"]


def test_stub_errors(photos):
    paths = [photos / "a.png"]
    with pytest.raises(KoalaError, match="x3"):
        evaluator.sr_report({"m": BicubicStub(3)}, paths, scale=2)
    with pytest.raises(ValueError, match="reserved"):
        evaluator.sr_report({"bicubic": BicubicStub(2)}, paths, scale=2)
    with pytest.raises(ValueError, match="expected uint8"):
        evaluator.sr_report({"m": FixedStub(2, np.zeros((4, 4, 3), np.uint8))}, paths, scale=2)


def test_json_is_strict_with_inf_as_a_string(report):
    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    data = json.loads(to_json(report), parse_constant=refuse)
    assert data["per_image"][0]["perfect"]["psnr_y"] == "inf"
    assert data["mean"]["bicubic"] == report["mean"]["bicubic"]


def test_evaluate_sr_with_a_saved_model(photos, model_path, tmp_path):
    # The same model from two folders: two model columns with distinct names.
    paths = linked_models(model_path, tmp_path)
    out = tmp_path / "out"
    config = evaluator.SREvalConfig(models=tuple(paths), images=str(photos), scale=2,
                                    output_dir=str(out), crop_size=24, progress=False)
    result = evaluator.evaluate_sr(config)

    data = json.loads((out / "metrics.json").read_text())
    assert data["task"] == "sr" and data["scale"] == 2 and data["images"] == 3
    assert data["methods"] == ["bicubic", "run1/tiny", "run2/tiny"]
    assert data["models"] == {"run1/tiny": paths[0], "run2/tiny": paths[1]}
    assert set(data["metric_variants"]) >= {"psnr_y", "ssim_y", "psnr_rgb", "bicubic", "lr"}
    assert [s["path"] for s in data["skipped"]] == ["broken.png"]
    assert (data["per_image"][1]["height"], data["per_image"][1]["width"]) == (32, 48)
    assert data["mean"]["run1/tiny"] == data["mean"]["run2/tiny"]  # same weights
    assert data["mean"]["bicubic"]["psnr_y"] == pytest.approx(result["mean"]["bicubic"]["psnr_y"])
    assert all(math.isfinite(e["run1/tiny"]["psnr_y"]) for e in data["per_image"])

    markdown = (out / "metrics.md").read_text()
    assert "| method | PSNR-Y | SSIM-Y | PSNR-RGB |" in markdown
    assert markdown.count("| image | bicubic | run1/tiny | run2/tiny |") == 3
    for name in SIZES:  # one row per image in each of the three metric tables
        assert markdown.count(f"| {name} |") == 3
    assert "border crop" in markdown and "bicubic_downscale" in markdown

    # Rows = images; columns = bicubic + 2 models + HR; 24 px crops repeated x8 = 192 px.
    assert result["crop_display_height"] == 192
    grid = np.asarray(Image.open(out / "crops.png"))
    assert grid.shape == (3 * 192 + 2 * GAP, 4 * 192 + 3 * GAP, 3)
    # Nearest neighbour: the HR cell of the first row is the centred HR crop, 8x8 blocks.
    hr = truths(photos, 2)[0]
    top, left = (40 - 24) // 2, (56 - 24) // 2
    cell = grid[:192, 3 * (192 + GAP):3 * (192 + GAP) + 192]
    np.testing.assert_array_equal(cell[::8, ::8], hr[top:top + 24, left:left + 24])


def test_evaluate_sr_input_errors(photos, model_path, tmp_path):
    def config(models, images=photos, scale=2):
        return evaluator.SREvalConfig(models=models, images=str(images), scale=scale,
                                      output_dir=str(tmp_path / "out"), progress=False)

    with pytest.raises(KoalaError, match="upscales x2, but --scale is 3"):
        evaluator.evaluate_sr(config((str(model_path),), scale=3))
    with pytest.raises(KoalaError, match="model file not found"):
        evaluator.evaluate_sr(config((str(tmp_path / "nope.keras"),)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(evaluator.NoUsableImagesError):
        evaluator.evaluate_sr(config((str(model_path),), images=tmp_path / "empty"))
    with pytest.raises(ValueError, match="at least one model"):
        evaluator.SREvalConfig(models=(), images="x", scale=2)
    assert not (tmp_path / "out").exists()
    tasks = {"colorize", "sr", "codec"}
    assert set(evaluate.TASKS) == set(evaluate.TASK_FLAGS) == tasks


def test_sr_flags(capsys):
    from absl import flags

    fv = flags.FlagValues()
    evaluate.define_flags(fv)
    fv(["evaluate", "--task=sr", "--model=a/m.keras", "--images=photos", "--scale=3",
        "--crop_size=48"])
    assert evaluate.TASKS["sr"](fv)[1] == evaluator.SREvalConfig(
        models=("a/m.keras",), images="photos", scale=3,
        output_dir=os.path.join("runs", "eval", "sr"), crop_size=48)
    fv2 = flags.FlagValues()
    evaluate.define_flags(fv2)
    fv2(["evaluate", "--task=sr", "--model=a/m.keras", "--images=photos"])
    with pytest.raises(KoalaError, match="--scale is required"):
        evaluate.TASKS["sr"](fv2)
    # The same through main, in-process: a one-line error and status 2.
    assert evaluate.main(["evaluate", "--task=sr", "--model=a/m.keras", "--images=x"]) == 2
    assert capsys.readouterr().err == "error: --scale is required for --task=sr\n"
    assert evaluate.main(["evaluate", "--task=sr", "--model=a/m.keras", "--images=x",
                          "--scale=2", "--saturation=1.5"]) == 2
    assert capsys.readouterr().err == ("error: --saturation is a flag of --task=colorize, "
                                       "not of --task=sr\n")


def test_main_in_process(photos, model_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate.main(["evaluate", "--task=sr", f"--model={model_path}",
                          f"--images={photos}", "--scale=2", f"--output_dir={out}",
                          "--max_images=1", "--noprogress"]) == 0
    captured = capsys.readouterr()
    assert "| method | PSNR-Y | SSIM-Y | PSNR-RGB |" in captured.out
    assert f"crops: {out / 'crops.png'}" in captured.out
    assert (out / "flags.txt").read_text().splitlines() == [
        "--task=sr", f"--model={model_path}", f"--images={photos}", "--scale=2",
        f"--output_dir={out}", "--max_images=1", "--crop_size=96", "--progress=False"]
    # A model of another scale: a one-line error, status 2.
    assert evaluate.main(["evaluate", "--task=sr", f"--model={model_path}",
                          f"--images={photos}", "--scale=3", f"--output_dir={out}"]) == 2
    assert capsys.readouterr().err == "error: model 'tiny' upscales x2, but --scale is 3\n"


def test_cli_end_to_end(photos, model_path, tmp_path):
    """The one subprocess smoke test: ``python -m koala.evaluate`` as users run it."""
    out = tmp_path / "out"
    proc = run_cli("--task=sr", f"--model={model_path}", f"--images={photos}", "--scale=2",
                   f"--output_dir={out}", "--crop_size=16", "--noprogress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| method | PSNR-Y | SSIM-Y | PSNR-RGB |" in proc.stdout
    assert "| bicubic |" in proc.stdout and "| tiny |" in proc.stdout
    assert "skipped broken.png" in proc.stderr
    assert json.loads((out / "metrics.json").read_text())["images"] == 3
    assert (out / "metrics.md").exists() and (out / "crops.png").exists()
    assert "--scale=2" in (out / "flags.txt").read_text().splitlines()


def test_a_preset_name_is_evaluated_and_a_wrong_one_lists_the_names(photos, tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate.main(["evaluate", "--task=sr", "--model=fsrcnn_x2", f"--images={photos}",
                          "--scale=2", f"--output_dir={out}", "--max_images=1",
                          "--noprogress"]) == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["methods"] == ["bicubic", "fsrcnn_x2"]
    assert report["models"]["fsrcnn_x2"] == "fsrcnn_x2"
    assert evaluate.main(["evaluate", "--task=sr", "--model=fsrcnn_x9", f"--images={photos}",
                          "--scale=2", f"--output_dir={tmp_path / 'out2'}"]) == 2
    err = capsys.readouterr().err
    assert "fsrcnn_x9" in err and "fsrcnn_x2" in err and "fsrcnn_x3" in err
    assert not (tmp_path / "out2").exists()


def test_a_name_that_is_not_utf8_and_a_thin_strip(tmp_path, capsys):
    # The name used to crash the report (UnicodeEncodeError writing metrics.json).
    images = tmp_path / "imgs"
    images.mkdir()
    odd = os.path.join(os.fsencode(images), b"caf\xe9.png")
    Image.fromarray(smooth_image(40, 50)).save(os.fsdecode(odd))
    Image.fromarray(np.zeros((1, 300, 3), np.uint8)).save(images / "strip.png")
    out = tmp_path / "out"
    assert evaluate.main(["evaluate", "--task=sr", "--model=fsrcnn_x2", f"--images={images}",
                          "--scale=2", f"--output_dir={out}", "--noprogress"]) == 0
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert [e["name"] for e in report["per_image"]] == ["caf\\xe9.png"]
    assert report["skipped"][0]["path"] == "strip.png"
    assert "too small" in report["skipped"][0]["reason"]
    assert "caf\\xe9.png" in (out / "metrics.md").read_text(encoding="utf-8")
    assert not list(out.glob("*.tmp*")) and not list(out.glob(".tmp*"))
