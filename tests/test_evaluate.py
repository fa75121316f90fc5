"""koala.tasks.colorize.evaluator and koala.cli.evaluate --task=colorize: per-image and mean
metrics against the gray baseline, the report files, and the command line. A tiny random
fusion model; images built in tmp_path."""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import smooth_image, write_image
from PIL import Image

from koala.cli import evaluate
from koala.cli.common import Exit
from koala.core.errors import KoalaError
from koala.core.report import to_json
from koala.ops import metrics
from koala.ops.grid import GAP
from koala.tasks.colorize import evaluator
from koala.tasks.colorize.inference import Colorizer, gray_baseline
from koala.tasks.colorize.models.fusion import fusion_small

REPO = pathlib.Path(__file__).resolve().parent.parent
HEIGHT, WIDTH = 40, 56
NAMES = ["a.png", "b.jpg", "sub/c.png"]


class Perfect:
    """A colorizer stub that returns the truth itself."""

    def colorize(self, image, *, saturation):
        return np.array(image, np.uint8)


def linked_models(model_path, folder) -> list[str]:
    """The model file hard-linked as run1/<name> and run2/<name> under ``folder``."""
    paths = []
    for run in ("run1", "run2"):
        (folder / run).mkdir()
        os.link(model_path, folder / run / model_path.name)
        paths.append(str(folder / run / model_path.name))
    return paths


def run_cli(*args):
    """``python -m koala.evaluate ARGS`` in a subprocess, as users run it."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "koala.evaluate", *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three small colour images (one in a subfolder) and one corrupt file."""
    root = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(NAMES):
        kwargs = {"quality": 95} if name.endswith(".jpg") else {}
        write_image(root / name, smooth_image(HEIGHT, WIDTH, seed=i), **kwargs)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny fusion colorizer (random weights, random MobileNet embedder) saved as .keras."""
    model = fusion_small(image_size=32, embedding_dim=1000, embedder="mobilenet",
                         embedder_weights="none")
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def report(photos, model_path, mobilenet_none):
    """colorize_report for the tiny model and the perfect stub on the photo folder."""
    import keras

    colorizer = Colorizer(keras.saving.load_model(model_path), embedder=mobilenet_none)
    paths = sorted(photos.rglob("*.*"))
    return evaluator.colorize_report({"tiny": colorizer, "perfect": Perfect()}, paths,
                                     saturation=1.2, root=photos)


def test_model_names_are_stems_made_unique():
    assert evaluator.model_names(["runs/a/model.keras", "runs/b.keras"]) == ["model", "b"]
    assert evaluator.model_names(["a/m.keras", "b/m.keras"]) == ["a/m", "b/m"]
    assert evaluator.model_names(["a/m.keras", "a/m.keras"]) == ["a/m", "a/m#2"]
    assert evaluator.model_names(["r1/train/best.keras", "r2/train/best.keras"]) == [
        "r1/train/best", "r2/train/best"]
    here = pathlib.Path.cwd().name  # a bare file name is in the current folder
    assert evaluator.model_names(["m.keras", "m.keras"]) == [f"{here}/m", f"{here}/m#2"]
    # Names the report already uses for its own keys get the folder in front.
    assert evaluator.model_names(["x/gray.keras", "y/truth.keras"]) == ["x/gray", "y/truth"]


def test_report_has_every_image_with_the_baseline_and_both_models(report):
    assert report["task"] == "colorize" and report["images"] == 3
    assert report["methods"] == ["gray", "tiny", "perfect"]
    assert [e["name"] for e in report["per_image"]] == ["a.png", "b.jpg", "sub/c.png"]
    for entry in report["per_image"]:
        assert (entry["width"], entry["height"]) == (WIDTH, HEIGHT)
        assert entry["truth_colorfulness"] > 10  # the test images are colourful
        for method in report["methods"]:
            assert set(entry[method]) == {"psnr", "ssim", "colorfulness", "delta_e00"}
    assert [s["path"] for s in report["skipped"]] == ["broken.png"]
    assert report["skipped"][0]["reason"]
    assert set(report["mean"]) == {"gray", "tiny", "perfect", "truth"}


def test_gray_baseline_metrics_are_koala_metrics(report, photos):
    entry = report["per_image"][1]
    truth = np.asarray(Image.open(photos / entry["name"]).convert("RGB"))
    gray = gray_baseline(truth)
    assert entry["gray"] == {
        "psnr": metrics.psnr(truth, gray, peak=255),
        "ssim": metrics.ssim(truth, gray, data_range=255, channel_axis=-1),
        "colorfulness": metrics.colorfulness(gray),
        "delta_e00": metrics.mean_ciede2000(gray, truth),
    }
    assert entry["truth_colorfulness"] == metrics.colorfulness(truth)
    assert entry["gray"]["colorfulness"] < 1.0  # ab = 0: neutral up to 8-bit rounding


def test_perfect_colorizer_beats_the_baseline_on_every_image(report):
    for entry in report["per_image"]:
        perfect, gray = entry["perfect"], entry["gray"]
        assert perfect["psnr"] == math.inf
        assert perfect["delta_e00"] == 0.0
        assert perfect["ssim"] == pytest.approx(1.0)
        assert perfect["colorfulness"] == entry["truth_colorfulness"]
        assert gray["psnr"] < 40 and gray["delta_e00"] > 1 and gray["ssim"] < perfect["ssim"]
        assert math.isfinite(entry["tiny"]["psnr"]) and entry["tiny"]["delta_e00"] > 0


def test_mean_is_the_arithmetic_mean_over_images(report):
    for method, key in [("gray", "psnr"), ("tiny", "delta_e00"), ("tiny", "ssim")]:
        values = [e[method][key] for e in report["per_image"]]
        assert report["mean"][method][key] == pytest.approx(np.mean(values), rel=1e-12)
    assert report["mean"]["truth"]["colorfulness"] == pytest.approx(
        np.mean([e["truth_colorfulness"] for e in report["per_image"]]))
    assert report["mean"]["perfect"]["psnr"] == math.inf


def test_colourless_truth_is_reproduced_by_the_baseline(tmp_path):
    ramp = np.repeat(np.linspace(20, 235, 48).astype(np.uint8)[None, :, None], 32, axis=0)
    path = write_image(tmp_path / "gray.png", np.repeat(ramp, 3, axis=2))
    entry = evaluator.colorize_report({}, [path])["per_image"][0]
    assert entry["truth_colorfulness"] == 0.0
    assert entry["gray"]["psnr"] > 45  # L -> Lab(L, 0, 0) -> sRGB: off by rounding at most
    assert entry["gray"]["colorfulness"] < 0.5 and entry["gray"]["delta_e00"] < 0.5


def test_thin_images_are_skipped_with_their_reason_and_max_images_stops_early(tmp_path):
    thin = write_image(tmp_path / "thin.png", smooth_image(8, 30, seed=9))
    small = [write_image(tmp_path / f"s{i}.png", smooth_image(12, 30, seed=i)) for i in range(3)]
    result = evaluator.colorize_report({"perfect": Perfect()}, [thin, *small], max_images=2)
    assert result["images"] == 2
    assert result["skipped"] == [{"path": str(thin), "reason": "too thin to score: 30x8 px; "
                                  "SSIM's window needs 11 px a side"}]
    assert all(e[m]["ssim"] is not None for e in result["per_image"] for m in ("gray", "perfect"))
    assert math.isfinite(result["mean"]["gray"]["psnr"])
    with pytest.raises(ValueError, match="reserved"):
        evaluator.colorize_report({"gray": Perfect()}, small)


def test_json_writes_inf_as_a_string_and_is_strict(report):
    text = to_json(report)

    def refuse(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    data = json.loads(text, parse_constant=refuse)
    assert data["per_image"][0]["perfect"]["psnr"] == "inf"
    assert data["per_image"][0]["gray"]["psnr"] == report["per_image"][0]["gray"]["psnr"]


def test_evaluate_colorize_writes_json_markdown_and_grid(photos, model_path, tmp_path):
    # The same model twice (two folders): one table, two model columns, distinct names.
    paths = linked_models(model_path, tmp_path)
    out = tmp_path / "out"
    config = evaluator.ColorizeEvalConfig(models=tuple(paths), images=str(photos),
                                          output_dir=str(out), grid_height=30, progress=False)
    result = evaluator.evaluate_colorize(config)

    data = json.loads((out / "metrics.json").read_text())
    assert data["task"] == "colorize" and data["images"] == 3 and data["saturation"] == 1.2
    assert data["models"] == {"run1/tiny": paths[0], "run2/tiny": paths[1]}
    assert set(data["metric_variants"]) >= {"psnr", "ssim", "colorfulness", "delta_e00"}
    assert [s["path"] for s in data["skipped"]] == ["broken.png"]
    assert set(data["per_image"][0]) >= {"gray", "run1/tiny", "run2/tiny", "truth_colorfulness"}
    # The same weights give the same numbers in both columns.
    assert data["mean"]["run1/tiny"] == data["mean"]["run2/tiny"]
    assert data["mean"]["gray"]["psnr"] == pytest.approx(result["mean"]["gray"]["psnr"])

    markdown = (out / "metrics.md").read_text()
    assert "| image | gray | run1/tiny | run2/tiny |" in markdown
    assert "| image | gray | run1/tiny | run2/tiny | truth |" in markdown  # colourfulness
    for name in NAMES:  # one row per image in each of the four metric tables
        assert markdown.count(f"| {name} |") == 4

    # Rows = images, columns = gray + 2 models + truth, every cell 30 px high.
    grid = np.asarray(Image.open(out / "grid.png"))
    cell_width = round(WIDTH * 30 / HEIGHT)
    assert grid.shape == (3 * 30 + 2 * GAP, 4 * cell_width + 3 * GAP, 3)


def test_evaluate_colorize_input_errors(photos, model_path, tmp_path):
    def config(models, images):
        return evaluator.ColorizeEvalConfig(models=models, images=str(images),
                                            output_dir=str(tmp_path / "out"), progress=False)

    with pytest.raises(KoalaError, match="model file not found"):
        evaluator.evaluate_colorize(config((str(tmp_path / "nope.keras"),), photos))
    with pytest.raises(KoalaError, match="no such file or folder"):
        evaluator.evaluate_colorize(config((str(model_path),), tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(evaluator.NoUsableImagesError):
        evaluator.evaluate_colorize(config((str(model_path),), tmp_path / "empty"))
    with pytest.raises(ValueError, match="at least one model"):
        evaluator.ColorizeEvalConfig(models=(), images="x")
    assert not (tmp_path / "out").exists()
    tasks = {"colorize", "sr", "codec"}
    assert set(evaluate.TASKS) == set(evaluate.TASK_FLAGS) == tasks


def test_flags_are_defined_by_main_not_at_import():
    from absl import flags

    from koala.cli import common

    assert "grid_height" not in flags.FLAGS  # importing koala.cli.evaluate defined nothing
    argv = ["evaluate", "--task=colorize", "--model=a/m.keras", "--model=b/m.keras",
            "--images=photos", "--max_images=5"]
    for _ in range(2):  # a fresh FlagValues per call: the second parse sees no first one
        fv, rest = common.parse(argv, evaluate.define_flags, doc="",
                                required=("task", "model", "images"))
        assert rest == []
        _, config = evaluate.TASKS[fv.task](fv)
        assert config == evaluator.ColorizeEvalConfig(
            models=("a/m.keras", "b/m.keras"), images="photos",
            output_dir=os.path.join("runs", "eval", "colorize"), max_images=5)
    with pytest.raises(flags.IllegalFlagValueError):
        fv(["evaluate", "--task=codecs"])


def test_main_in_process_writes_the_effective_flags(photos, model_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate.main(["evaluate", "--task=colorize", f"--model={model_path}",
                          f"--images={photos}", f"--output_dir={out}", "--max_images=1",
                          "--grid_height=24", "--noprogress"]) == 0
    stdout = capsys.readouterr().out
    assert stdout.splitlines()[0] == "colorize: 1 images, 0 skipped; mean over images:"
    assert "| method | PSNR | SSIM | M | ΔE00 |" in stdout
    assert stdout.splitlines()[-1] == f"report: {out / 'metrics.md'}"
    # flags.txt is a flagfile of the run: the given flags and the defaults it ran with.
    lines = (out / "flags.txt").read_text().splitlines()
    assert lines == ["--task=colorize", f"--model={model_path}", f"--images={photos}",
                     f"--output_dir={out}", "--max_images=1",
                     "--grid_height=24", "--radius=40", "--eps=0.0001",
                     "--progress=False", "--samples=1", "--seed=0"]
    # A second run in the same process, from that flagfile, gives the same report.
    first = json.loads((out / "metrics.json").read_text())
    assert evaluate.main(["evaluate", f"--flagfile={out / 'flags.txt'}"]) == 0
    assert json.loads((out / "metrics.json").read_text()) == first


def test_main_exit_statuses(photos, model_path, tmp_path, capsys):
    def main(*args):
        return evaluate.main(["evaluate", "--task=colorize", *args])

    assert main(f"--model={model_path}", f"--images={photos}", "--scale=2") == 2
    assert capsys.readouterr().err == ("error: --scale is a flag of --task=sr, not of "
                                       "--task=colorize\n")
    assert main(f"--model={model_path}", f"--images={photos}", "--tile=0") == 2
    assert "--tile is a flag of --task=codec" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(f"--model={model_path}", f"--images={tmp_path / 'empty'}") == 1
    assert capsys.readouterr().err.startswith("error: no image files in")
    assert main(f"--model={model_path}", f"--images={photos}", "extra") == 2
    assert "unexpected arguments" in capsys.readouterr().err
    with pytest.raises(Exit) as e:  # common.run turns it into the exit status
        main(f"--images={photos}")
    assert e.value.status == 2 and "--model" in capsys.readouterr().err


def test_cli_end_to_end(photos, model_path, tmp_path):
    """The one subprocess smoke test: ``python -m koala.evaluate`` as users run it."""
    out = tmp_path / "out"
    proc = run_cli("--task=colorize", f"--model={model_path}", f"--images={photos}",
                   f"--output_dir={out}", "--max_images=2", "--grid_height=24", "--noprogress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| method | PSNR | SSIM | M | ΔE00 |" in proc.stdout
    assert "| gray |" in proc.stdout and "| tiny |" in proc.stdout
    assert json.loads((out / "metrics.json").read_text())["images"] == 2
    assert (out / "metrics.md").exists() and (out / "grid.png").exists()
    assert f"--model={model_path}" in (out / "flags.txt").read_text().splitlines()


def test_cli_missing_model_is_a_one_line_error(photos, tmp_path, capsys):
    status = evaluate.main(["evaluate", "--task=colorize", f"--model={tmp_path / 'nope.keras'}",
                            f"--images={photos}", f"--output_dir={tmp_path / 'out'}"])
    assert status == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: model file not found: {tmp_path / 'nope.keras'}"]
    assert "Traceback" not in stderr


def test_every_koala_colorizer_in_one_table_with_and_without_guided_refinement(
        photos, model_path, tmp_path):
    """A fusion model and a ColorGAN side by side, each raw and refined (SPEC §5), with the
    gray baseline: one table."""
    from koala.tasks.colorize.models.colorgan import colorgan_small

    gan_path = tmp_path / "gan.keras"
    colorgan_small(image_size=32).save(gan_path)
    out = tmp_path / "out"
    config = evaluator.ColorizeEvalConfig(
        models=(str(model_path), str(gan_path)), images=str(photos), output_dir=str(out),
        grid_height=20, progress=False, refine=("none", "guided"), radius=4)
    result = evaluator.evaluate_colorize(config)
    assert result["methods"] == ["gray", "tiny", "tiny+guided", "gan", "gan+guided"]
    data = json.loads((out / "metrics.json").read_text())
    assert data["refine"] == ["none", "guided"] and data["radius"] == 4
    # The refinement changes the outputs (the random model's chroma is blotchy).
    assert data["mean"]["tiny"]["delta_e00"] != data["mean"]["tiny+guided"]["delta_e00"]
    assert "| image | gray | tiny | tiny+guided | gan | gan+guided |" in (
        out / "metrics.md").read_text()
    with pytest.raises(ValueError, match="refine"):
        evaluator.ColorizeEvalConfig(models=("m",), images="x", refine=("blur",))


class HueClassifier:
    """A stand-in ImageNet classifier: classes 0..2 score the mean of channel R, G, B; class 3
    (gray) scores 1 when the channels are equal within 2 levels; classes 4..9 score little.
    So a colour image's top-1 class is its dominant channel; a gray one's is 3, followed by
    0..2."""

    def probabilities(self, rgb):
        means = np.asarray(rgb, np.float64).reshape(-1, 3).mean(0) / 255
        scores = np.array([*means, float(means.max() - means.min() < 2 / 255),
                           1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3])
        return scores / scores.sum()


class Swapped:
    """A colorizer stub that returns the truth with its channels reversed (BGR)."""

    def colorize(self, image, *, saturation):
        return np.array(image, np.uint8)[..., ::-1]


def test_semantic_check_top1_and_top5_against_the_colour_photo(photos):
    paths = sorted(p for p in photos.rglob("*.*") if p.name != "broken.png")
    result = evaluator.colorize_report({"perfect": Perfect(), "swapped": Swapped()}, paths,
                                       root=photos, classifier=HueClassifier())
    clf = HueClassifier()
    truths = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    labels = [int(np.argmax(clf.probabilities(t))) for t in truths]
    swapped = [int(np.argmax(clf.probabilities(t[..., ::-1]))) for t in truths]
    mean = result["mean"]
    assert mean["perfect"]["top1"] == 1.0 and mean["perfect"]["top5"] == 1.0
    assert mean["gray"]["top1"] == 0.0  # gray is class 3, a photo never is
    assert mean["gray"]["top5"] == 1.0  # ... and 0..2 follow it
    assert mean["swapped"]["top1"] == pytest.approx(
        np.mean([a == b for a, b in zip(labels, swapped, strict=True)]))
    assert mean["swapped"]["top5"] == 1.0
    assert set(result["metric_variants"]) >= {"top1", "top5"}
    markdown = evaluator.colorize_markdown(result)
    assert "Top-1 agreement with the colour photo's class" in markdown
    # no classifier: no semantic keys
    plain = evaluator.colorize_report({"perfect": Perfect()}, paths, root=photos)
    assert "top1" not in plain["mean"]["gray"] and "top1" not in plain["metric_variants"]


def test_semantic_check_through_the_command_line(photos, model_path, tmp_path):
    out = tmp_path / "sem"
    from conftest import cli_main

    assert cli_main("evaluate", "--task=colorize", "--model", str(model_path), "--images",
                    str(photos), "--output_dir", str(out), "--embedder_weights=none",
                    "--semantic_weights=none", "--noprogress") == 0
    data = json.loads((out / "metrics.json").read_text())
    assert data["semantic"]["name"] == "mobilenet"
    for method in ("gray", "tiny"):
        assert 0.0 <= data["mean"][method]["top1"] <= data["mean"][method]["top5"] <= 1.0
    assert "top5" in data["metric_variants"]
    # the colour photo classified as itself agrees with itself
    from koala.ops.embedder import Classifier

    clf = Classifier("mobilenet", "none")
    photo = np.asarray(Image.open(photos / "a.png").convert("RGB"))
    assert np.argmax(clf.probabilities(photo)) == np.argmax(clf.probabilities(photo.copy()))
    assert clf.probabilities(photo).shape == (1000,)
