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
