"""Lal et al.'s colorizer through koala.train (smoke flagfile), koala.colorize, koala.evaluate."""

import csv
import subprocess
import sys

import numpy as np
import pytest
from test_train import REPO, _cli, log_epochs, records  # noqa: F401 (fixture)

from koala.tasks.colorize import inference as colorize
from koala.tasks.colorize.models.lal import LalColorizer


@pytest.fixture(scope="module")
def trained(records, tmp_path_factory):  # noqa: F811
    proc = subprocess.run([sys.executable, "data_prep/bin_prior.py", f"--records={records}",
                           "--noprogress"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    workdir = tmp_path_factory.mktemp("lal") / "run"
    proc = _cli("--flagfile=experiments/smoke_lal.flags", f"--train_records={records}",
                f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_smoke_flagfile_trains_and_the_model_colorizes(trained):
    assert log_epochs(trained) == [0, 1]
    with open(trained / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for term in ("loss", "class_ce", "g_adv", "d_loss", "gp", "ab_mse", "val_class_ce"):
        assert all(np.isfinite(float(r[term])) for r in rows), term
    colorizer = colorize.Colorizer.load(trained / "last.keras")
    assert isinstance(colorizer.model, LalColorizer)
    assert colorizer.model.config.class_weights is not None  # from the records' prior
    out = colorizer.colorize(np.zeros((20, 28), np.uint8) + 128)
    assert out.shape == (20, 28, 3)


def test_the_semantic_term_trains_through_koala_train(trained, records, tmp_path):  # noqa: F811
    # `trained` made the records' bin prior.
    proc = _cli("--flagfile=experiments/smoke_lal.flags", f"--train_records={records}",
                f"--workdir={tmp_path / 'run'}", "--semantic_weight=0.5", "--epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert np.isfinite(float(row["semantic_ce"])) and float(row["semantic_ce"]) > 0
    colorizer = colorize.Colorizer.load(tmp_path / "run" / "last.keras")
    assert colorizer.model.class_head is not None
    assert colorizer.colorize(np.zeros((20, 28), np.uint8) + 128).shape == (20, 28, 3)
    # Only Lal et al. has the term.
    proc = _cli("--flagfile=experiments/smoke_fusion.flags", f"--train_records={records}",
                f"--workdir={tmp_path / 'fusion'}", "--semantic_weight=0.5")
    assert proc.returncode != 0 and "applies to --model=lal" in proc.stderr


def test_class_labels_from_folders_train_the_semantic_term(tmp_path, mobilenet_none):
    from conftest import smooth_image, write_image

    from koala.data import build, features, pipelines

    photos = tmp_path / "photos"
    for k, cls in enumerate(["cat", "dog", "cat", "bird", "dog", "bird"]):
        write_image(photos / cls / f"p{k}.png", smooth_image(40, 48, seed=k))
    write_image(photos / "loose.png", smooth_image(40, 48, seed=9))  # in no class folder
    cfg = build.BuildConfig(input_dir=str(photos), output_dir=str(tmp_path / "records"),
                            image_size=32, embedder="mobilenet", embedder_weights="none",
                            labels_from="dirname", val_fraction=0.0, progress=False)
    result = build.build(cfg, embedder=mobilenet_none)
    assert result.ok
    manifest = result.manifest
    assert manifest["classes"] == ["bird", "cat", "dog"] and "label" in manifest["groups"]
    assert [s["path"] for s in manifest["skipped"]] == ["loose.png"]
    assert "class folder" in manifest["skipped"][0]["reason"]
    # The label field round-trips: the pipeline yields each image's folder index.
    import tensorflow as tf

    names = []
    for f in sorted((tmp_path / "records").glob("train-*.tfrecord")):
        for s in tf.data.TFRecordDataset(str(f)):
            parsed = features.parse(s, ["label"])
            names.append((parsed[features.NAME].numpy().decode(),
                          int(parsed[features.LABEL])))
    assert all(manifest["classes"][label] == name.split("/")[0] for name, label in names)
    ds = pipelines.colorization_dataset(tmp_path / "records", training=False, batch_size=6,
                                        labels=True)
    x, _ = next(iter(ds))
    assert x["label"].dtype == tf.int32
    assert sorted(x["label"].numpy().tolist()) == sorted(label for _, label in names)
    # Two training steps of Lal et al. with --class_targets=labels (K = 3 classes).
    proc = subprocess.run([sys.executable, "data_prep/bin_prior.py",
                           f"--records={tmp_path / 'records'}", "--noprogress"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _cli("--flagfile=experiments/smoke_lal.flags", f"--train_records={tmp_path / 'records'}",
                f"--workdir={tmp_path / 'run'}", "--semantic_weight=1",
                "--class_targets=labels", "--epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert np.isfinite(float(row["semantic_ce"]))
    model = colorize.Colorizer.load(tmp_path / "run" / "last.keras").model
    assert model.class_head.layers[-1].units == 3
