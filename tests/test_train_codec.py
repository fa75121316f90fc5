"""koala.cli.train with the invertible grayscale codec: two stages, the optimizer reset at the
switch, resume into stage 2, the polynomial learning rate and the smoke flagfile."""

import csv
import time

import keras
import numpy as np
import pytest
from test_train import KillAt, _cli, log_epochs, records, smoke  # noqa: F401 (fixture)

from koala import registry
from koala.core import trainer as training
from koala.tasks.codec.model import InvertibleGrayscale


def codec_smoke(records, workdir, **kw):  # noqa: F811
    base = dict(model="codec_small", epochs=3, stage2_epoch=2, crop_size=32,
                patches_per_image=2, contrast_weight=0.0, lr_schedule="polynomial",
                learning_rate=2e-4, lr_end=2e-6)
    base.update(kw)
    return smoke(records, workdir, **base)


def read_log(workdir):
    with open(workdir / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_polynomial_schedule():
    lr = training.polynomial_schedule(2e-4, 2e-6, 120, 0.9)
    assert lr(0) == pytest.approx(2e-4)
    assert lr(120) == pytest.approx(2e-6)
    assert lr(60) == pytest.approx((2e-4 - 2e-6) * 0.5 ** 0.9 + 2e-6)
    assert lr(200) == pytest.approx(2e-6)  # past the end: stays at the floor
    with pytest.raises(ValueError, match="lr_end"):
        registry.configs(workdir="w", train_records="r", learning_rate=1e-4, lr_end=1e-3)


def test_two_stages_log_every_term_and_switch(records, tmp_path):  # noqa: F811
    history = registry.train(*codec_smoke(records, tmp_path / "run", structure_weight=0.1))
    rows = read_log(tmp_path / "run")
    assert [int(float(r["stage"])) for r in rows] == [1, 1, 2]
    for term in ("loss", "invertibility", "lightness", "contrast", "structure",
                 "quantization", "val_loss", "val_invertibility"):
        assert all(np.isfinite(float(r[term])) for r in rows), term
    # Polynomial decay over the 3 epochs.
    lrs = [float(r["learning_rate"]) for r in rows]
    assert lrs[0] == pytest.approx(2e-4) and lrs[0] > lrs[1] > lrs[2]
    # The optimizer got a fresh state at the switch: 2 steps since epoch 2 began.
    assert int(history.model.optimizer.iterations.numpy()) == 2
    model = keras.saving.load_model(tmp_path / "run" / "last.keras")
    assert isinstance(model, InvertibleGrayscale) and model.current_stage() == 2
    assert model.config.structure_weight == 0.1  # --structure_weight reaches the model
    out = model.predict(np.random.default_rng(0).random((1, 32, 32, 3), np.float32),
                        verbose=0)
    assert out["gray"].shape == (1, 32, 32, 1) and out["restored"].shape == (1, 32, 32, 3)


def test_resume_that_lands_in_stage_2(records, tmp_path):  # noqa: F811
    cfg = codec_smoke(records, tmp_path / "run", epochs=4)
    with pytest.raises(KeyboardInterrupt):  # killed during epoch 3 (stage 2 began at 2)
        registry.train(*cfg, extra_callbacks=[KillAt(epoch=3, batch=0)])
    assert log_epochs(tmp_path / "run") == [0, 1, 2]
    history = registry.train(*cfg)
    assert history.epoch == [3]
    rows = read_log(tmp_path / "run")
    assert [int(float(r["stage"])) for r in rows] == [1, 1, 2, 2]
    # No second reset on resume: 2 steps of epoch 2 plus 2 of epoch 3 since the switch.
    assert int(history.model.optimizer.iterations.numpy()) == 4


def test_cli_smoke_codec_flagfile_under_two_minutes(records, tmp_path):  # noqa: F811
    start = time.monotonic()
    proc = _cli("--flagfile=experiments/smoke_codec.flags", f"--train_records={records}",
                f"--workdir={tmp_path / 'run'}")
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert log_epochs(tmp_path / "run") == [0, 1, 2]
    rows = read_log(tmp_path / "run")
    assert float(rows[0]["contrast"]) > 0  # the (random) MobileNet contrast term is on
    assert elapsed < 120, f"smoke_codec took {elapsed:.0f} s"
