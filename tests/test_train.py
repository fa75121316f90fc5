"""koala.cli.train: smoke training from records, resume after a kill, NaN stop, flags."""

import csv
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_main, lock_holder, make_photo_folder

from koala import registry
from koala.core import trainer as training
from koala.core.errors import KoalaError
from koala.data import build
from koala.tasks.colorize.models.fusion import FusionColorizer

REPO = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def records(tmp_path_factory, mobilenet_none):
    root = tmp_path_factory.mktemp("train")
    make_photo_folder(root / "photos", n_good=6, with_bad=False)
    cfg = build.BuildConfig(input_dir=str(root / "photos"), output_dir=str(root / "records"),
                            image_size=32, embedder="mobilenet", embedder_weights="none",
                            batch_size=4, val_fraction=0.5, progress=False)
    result = build.build(cfg, embedder=mobilenet_none)
    assert result.ok and result.manifest["counts"] == {"train": 5, "val": 1}  # hash split
    return str(root / "records")


def smoke(records, workdir, **kw):
    base = dict(workdir=str(workdir), train_records=records, model="fusion_small", epochs=2,
                steps_per_epoch=2, batch_size=2, lr_boundaries=(1,), shuffle_buffer=8,
                image_grid_count=2, mixed_precision="float32")
    base.update(kw)
    return registry.configs(**base)


def log_epochs(workdir):
    with open(os.path.join(workdir, "log.csv"), newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


class KillAt(keras.callbacks.Callback):
    """Raises at a given (epoch, batch), like a kill in the middle of an epoch."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt("simulated kill")


def test_two_steps_write_every_artifact(records, tmp_path):
    history = registry.train(*smoke(records, tmp_path / "run"), flags_text="--model=x\n")
    run = tmp_path / "run"
    assert history.epoch == [0, 1]
    assert np.all(np.isfinite(history.history["loss"]))
    for name in ("flags.txt", "run.json", "best.keras", "last.keras", "log.csv",
                 "checkpoints.json"):
        assert (run / name).exists(), name
    assert log_epochs(run) == [0, 1]
    with open(run / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["learning_rate"]) == pytest.approx(1e-3)
    assert float(rows[1]["learning_rate"]) == pytest.approx(1e-4)  # boundary at epoch 1
    assert "val_loss" in rows[0]
    model = keras.saving.load_model(run / "last.keras")
    assert isinstance(model, FusionColorizer)
    assert model.config.embedder == "mobilenet" and model.config.embedder_weights == "none"
    assert model.config.image_size == 32
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    tags = set()
    for event_file in events:
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(v.tag for v in event.summary.value)
    assert "gray | predicted | truth" in tags
    assert any("loss" in t for t in tags)
    assert not list(run.glob(".tmp-*"))


def test_resume_after_a_kill_mid_epoch(records, tmp_path):
    cfg = smoke(records, tmp_path / "run", epochs=4)
    with pytest.raises(KeyboardInterrupt):
        registry.train(*cfg, extra_callbacks=[KillAt(epoch=2, batch=0)])
    assert log_epochs(tmp_path / "run") == [0, 1]
    history = registry.train(*cfg)
    assert history.epoch == [2, 3], "resumed at the saved epoch, not from 0"
    assert log_epochs(tmp_path / "run") == [0, 1, 2, 3]
    backup = keras.saving.load_model(tmp_path / "run" / "last.keras")
    assert backup.optimizer.iterations.numpy() == 4 * 2  # optimizer state carried over
    # Re-running a finished run does nothing; raising --epochs continues it.
    assert registry.train(*cfg).epoch == []
    assert registry.train(*smoke(records, tmp_path / "run", epochs=5)).epoch == [4]
    assert log_epochs(tmp_path / "run") == [0, 1, 2, 3, 4]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_torn_backup_falls_back_to_the_one_before(records, tmp_path):
    cfg = smoke(records, tmp_path / "run", epochs=2)
    registry.train(*cfg)
    backup = tmp_path / "run" / "backup"
    assert json.loads((backup / "latest" / "training_metadata.json").read_text())["epoch"] == 2
    assert json.loads((backup / "previous" / "training_metadata.json").read_text())["epoch"] == 1
    _truncate(backup / "latest" / "latest.weights.h5")  # a kill during a plain overwrite
    (backup / ".tmp-99999").mkdir()  # a save a kill interrupted
    history = registry.train(*smoke(records, tmp_path / "run", epochs=3))
    assert history.epoch == [1, 2], "resumed from previous/ (epoch 1), not from 0"
    assert log_epochs(tmp_path / "run") == [0, 1, 2]
    assert sorted(p.name for p in backup.iterdir()) == ["latest", "previous"]


def test_a_kill_between_the_renames_resumes_from_the_previous_backup(records, tmp_path):
    cfg = smoke(records, tmp_path / "run", epochs=2)
    registry.train(*cfg)
    backup = tmp_path / "run" / "backup"
    (backup / "latest").rename(backup / ".tmp-12345")  # previous/ moved, latest/ not yet
    history = registry.train(*smoke(records, tmp_path / "run", epochs=3))
    assert history.epoch == [1, 2]


def test_a_backup_that_cannot_load_is_one_line_naming_the_file(records, tmp_path, capsys):
    cfg = smoke(records, tmp_path / "run", epochs=2)
    registry.train(*cfg)
    backup = tmp_path / "run" / "backup"
    for folder in ("latest", "previous"):
        _truncate(backup / folder / "latest.weights.h5")
    with pytest.raises(KoalaError, match=r"backup does not load .*latest/latest\.weights\.h5"
                                         r".*previous/latest\.weights\.h5.*delete"):
        registry.train(*smoke(records, tmp_path / "run", epochs=3))
    status = cli_main("train", "--model=fusion_small", f"--workdir={tmp_path / 'run'}",
                      f"--train_records={records}", "--epochs=3", "--steps_per_epoch=2",
                      "--batch_size=2", "--lr_boundaries=1", "--shuffle_buffer=8",
                      "--image_grid_count=2", "--mixed_precision=float32")
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the training backup does not load")


def test_nan_loss_stops_with_an_error_and_keeps_the_backup(records, tmp_path):
    class Poison(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:  # every weight (a NaN in one conv can vanish through a ReLU)
                for w in self.model.trainable_weights:
                    w.assign(tf.fill(w.shape, float("nan")))

    cfg = smoke(records, tmp_path / "run", epochs=3)
    with pytest.raises(RuntimeError, match="(?i)nan"):
        registry.train(*cfg, extra_callbacks=[Poison()])
    backup = tmp_path / "run" / "backup"
    assert backup.exists() and any(backup.rglob("*"))
    assert log_epochs(tmp_path / "run") == [0]


def test_workdir_with_other_settings_is_refused(records, tmp_path):
    registry.train(*smoke(records, tmp_path / "run", epochs=1))
    with pytest.raises(KoalaError, match="batch_size"):
        registry.train(*smoke(records, tmp_path / "run", epochs=1, batch_size=3))


def test_distributed_val_batch_splits_evenly():
    assert training.distributed_val_batch(8, 100, 2) == 8  # drop_remainder handles the rest
    assert training.distributed_val_batch(8, 5, 2) == 4  # smaller than a batch: 4 of 5
    assert training.distributed_val_batch(8, 3, 2) == 2
    assert training.distributed_val_batch(8, None, 2) == 8


def test_step_schedule_and_config_validation():
    lr = training.step_schedule(1e-3, (100, 150, 200, 300), 0.1)
    assert [lr(e) for e in (0, 99, 100, 149, 150, 299, 300, 399)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-6, 1e-7, 1e-7])
    with pytest.raises(ValueError, match="lr_boundaries"):
        registry.configs(workdir="w", train_records="r", lr_boundaries=(150, 100))
    with pytest.raises(ValueError, match="unknown model"):
        registry.configs(workdir="w", train_records="r", model="pix2pix")
    assert training.resolve_precision("auto") == "float32"  # no GPU here


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "koala.train", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)


def test_cli_flagfile_and_reproduction(records, tmp_path):
    workdir = tmp_path / "run"
    proc = _cli("--flagfile=experiments/smoke_fusion.flags", f"--train_records={records}",
                f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags_txt = (workdir / "flags.txt").read_text()
    assert "--model=fusion_small" in flags_txt and f"--workdir={workdir}" in flags_txt
    again = _cli(f"--flagfile={workdir / 'flags.txt'}")  # same run: nothing left to do
    assert again.returncode == 0, again.stderr[-3000:]
    assert "done: 0 epoch(s)" in again.stdout


def test_cli_rejects_bad_flags(tmp_path, capsys):
    assert cli_main("train", "--lr_boundaries=150,100", "--train_records=x",
                    f"--workdir={tmp_path}") == 2
    assert "--lr_boundaries" in capsys.readouterr().err
    assert cli_main("train", "--mixed_precision=fp8", "--train_records=x",
                    f"--workdir={tmp_path}") == 2
    assert "mixed_precision" in capsys.readouterr().err
    assert cli_main("train", f"--workdir={tmp_path}") == 2
    assert "train_records" in capsys.readouterr().err


def test_mirrored_strategy_on_two_logical_cpus(records, tmp_path):
    # Logical devices must be configured before TF initialises: a fresh process.
    code = f"""
import json, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from koala import registry
from koala.core import trainer as training
cfg = registry.configs(workdir={str(tmp_path / "run")!r}, train_records={records!r},
    model="fusion_small", epochs=1, steps_per_epoch=2, batch_size=4, distribute="mirrored",
    mixed_precision="float32", lr_boundaries=(1,), image_grid_count=0)
history = registry.train(*cfg)
run = json.load(open({str(tmp_path / "run" / "run.json")!r}))
print("RESULT", json.dumps({{"replicas": run["replicas"], "loss": history.history["loss"]}}))
"""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["replicas"] == 2
    assert np.isfinite(result["loss"][0])
    assert (tmp_path / "run" / "last.keras").exists()


@pytest.mark.parametrize("model_name,upsampled", [("srcnn_small", True),
                                                   ("fsrcnn_small", False)])
def test_sr_models_train_through_koala_train(records, tmp_path, model_name, upsampled):
    cfg = smoke(records, tmp_path / "run", model=model_name, optimizer="sgd",
                learning_rate=1e-3, last_layer_lr_scale=0.1, scale=3, patch_size=33,
                patches_per_image=2, batch_size=4)
    history = registry.train(*cfg)
    assert np.all(np.isfinite(history.history["loss"]))
    assert "val_loss" in history.history
    model = keras.saving.load_model(tmp_path / "run" / "last.keras")
    assert model.config.upsampled_input is upsampled and model.config.scale == 3
    assert model.optimizer.lr_multipliers == {"output": 0.1}
    # SRCNN (valid padding) predicts the centre of its input: 33 -> 21 px; FSRCNN 11 -> 33.
    side = 33 if upsampled else 11
    out = model(tf.zeros([1, side, side, 1]))
    assert out.shape[1] == (21 if upsampled else 33)


def test_cli_smoke_srcnn_flagfile(records, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    assert cli_main("train", "--flagfile=experiments/smoke_srcnn.flags",
                    f"--train_records={records}", f"--workdir={tmp_path / 'run'}") == 0
    assert log_epochs(tmp_path / "run") == [0, 1]
    model = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert type(model).__name__ == "SRCNN" and model.config.scale == 3


def test_cli_nan_in_the_first_epoch_says_there_is_no_backup(records, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(REPO)
    assert cli_main("train", "--flagfile=experiments/smoke_srcnn.flags",
                    f"--train_records={records}", f"--workdir={tmp_path / 'run'}",
                    "--learning_rate=1e30", "--epochs=1") == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: training stopped") and "no backup" in err, err


def _train_flags():
    """A fresh FlagValues with koala.cli.train's flags."""
    from absl import flags

    from koala.cli import train

    own = flags.FlagValues()
    train.define_flags(own)
    return own


@pytest.mark.parametrize("flagfile", sorted(p.name for p in (REPO / "experiments").glob("*.flags")))
def test_every_flagfile_parses_into_a_valid_config(flagfile, monkeypatch):
    # A misspelt flag or a value the trainer refuses fails here, not an hour into a run.
    from koala.cli import train

    monkeypatch.chdir(REPO)
    values = _train_flags()
    try:
        values(["koala.cli.train", f"--flagfile=experiments/{flagfile}"])
        config, family = train.config_from_flags(values)
    finally:
        values.unparse_flags()
    assert config.model in registry.MODELS
    assert isinstance(family, registry.lookup(config.model)[1].config_class)
    if not flagfile.startswith("smoke_"):  # smoke flagfiles take both on the command line
        assert config.workdir and config.train_records


def test_a_bad_flagfile_value_is_refused(tmp_path):
    from absl import flags

    bad = tmp_path / "bad.flags"
    bad.write_text("--model=fusion\n--crop_size=12\n")
    typo = tmp_path / "typo.flags"
    typo.write_text("--model=fusion\n--learning_rat=1e-3\n")
    values = _train_flags()
    try:
        with pytest.raises(flags.IllegalFlagValueError, match="crop_size must be a multiple"):
            values(["koala.cli.train", f"--flagfile={bad}"])
        values.unparse_flags()
        with pytest.raises(flags.UnrecognizedFlagError, match="learning_rat"):
            values(["koala.cli.train", f"--flagfile={typo}"])
    finally:
        values.unparse_flags()


class WeightsAtStart(keras.callbacks.Callback):
    """Keeps the model's weights as training begins (after every other callback's start)."""

    def on_train_begin(self, logs=None):
        self.weights = {layer.name: layer.get_weights() for layer in self.model.layers}


def test_init_from_starts_x2_from_an_x3_model_and_records_its_source(records, tmp_path):
    from koala.presets import sha256
    from koala.tasks.sr import models as sr

    source = tmp_path / "x3.keras"
    x3 = sr.fsrcnn_small(scale=3)
    x3.save(source)
    start = WeightsAtStart()
    run, cfg = smoke(records, tmp_path / "run", model="fsrcnn_small", scale=2, patch_size=16,
                     patches_per_image=2, batch_size=4, epochs=1, steps_per_epoch=1,
                     init_from=str(source))
    registry.train(run, cfg, extra_callbacks=[start])
    for layer in x3.layers:  # every layer, the deconvolution included, starts as x3's
        for got, want in zip(start.weights[layer.name], layer.get_weights(), strict=True):
            np.testing.assert_array_equal(got, want)
    import json

    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["init_from"] == {"path": str(source), "sha256": sha256(source)}
    assert info["config"]["init_from"] == str(source)
    assert keras.saving.load_model(tmp_path / "run" / "last.keras").config.scale == 2


def test_init_from_a_model_that_does_not_fit_names_the_layers(records, tmp_path):
    from koala.tasks.sr import models as sr

    source = tmp_path / "srcnn.keras"
    sr.srcnn_small().save(source)
    run, cfg = smoke(records, tmp_path / "run", model="fsrcnn_small", scale=3, patch_size=33,
                     patches_per_image=2, batch_size=4, init_from=str(source))
    with pytest.raises(KoalaError, match=r"feature is missing.*output has shapes"):
        registry.train(run, cfg)
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    run, cfg = smoke(records, tmp_path / "run2", model="fsrcnn_small", init_from=str(bad))
    with pytest.raises(KoalaError, match="not a Keras model"):
        registry.train(run, cfg)


def test_a_second_run_on_a_busy_workdir_is_refused_and_a_dead_ones_lock_taken_over(
        records, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with lock_holder(run) as holder:  # another process holding the workdir, as a run does
        with pytest.raises(KoalaError, match=rf"in use by another koala\.train run \(PID "
                                             rf"{holder.pid} on .*started"):
            registry.train(*smoke(records, run, epochs=1))
        assert not (run / "run.json").exists()  # refused before it wrote anything
        holder.kill()  # killed: its lock file stays, its lock does not
        holder.wait(timeout=30)
    assert (run / ".lock").exists()
    assert registry.train(*smoke(records, run, epochs=1)).epoch == [0]


def test_fusion_trains_on_crops_of_the_stored_photos(records, tmp_path):
    run, cfg = smoke(records, tmp_path / "run", crop_size=16, crops_from="rgb",
                     min_crop_fraction=0.5, whole_image_fraction=0.5)
    history = registry.train(run, cfg, flags_text="--model=x\n")
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.isfinite(history.history["val_loss"][-1])
    assert keras.saving.load_model(tmp_path / "run" / "best.keras").config.image_size == 16
