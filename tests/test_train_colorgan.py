"""ColorGAN through koala.train (smoke flagfile) and koala.colorize --samples/--seed."""

import csv
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image
from test_train import REPO, _cli, log_epochs, records  # noqa: F401 (fixture)

from koala.core.errors import KoalaError
from koala.tasks.colorize import inference as colorize
from koala.tasks.colorize.models.colorgan import ColorGAN


@pytest.fixture(scope="module")
def trained(records, tmp_path_factory):  # noqa: F811
    workdir = tmp_path_factory.mktemp("colorgan") / "run"
    proc = _cli("--flagfile=experiments/smoke_colorgan.flags", f"--train_records={records}",
                f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_smoke_flagfile_trains_both_players_and_logs_every_term(trained):
    assert log_epochs(trained) == [0, 1]
    with open(trained / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for term in ("loss", "d_loss", "gp", "g_adv", "perceptual", "l1", "noise_feature",
                 "val_l1"):
        assert all(np.isfinite(float(r[term])) for r in rows), term
    # The critic runs at twice the generator's learning rate (SPEC §4: 2e-4 vs 1e-4).
    model = keras.saving.load_model(trained / "last.keras")
    assert isinstance(model, ColorGAN) and model.config.image_size == 32
    g = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    d = float(keras.ops.convert_to_numpy(model.d_optimizer.learning_rate))
    assert g == pytest.approx(1e-4) and d == pytest.approx(2e-4)
    assert float(keras.ops.convert_to_numpy(model.d_optimizer.iterations)) == 4


def test_samples_differ_by_seed_and_repeat_with_it(trained, tmp_path):
    gray = np.random.default_rng(0).integers(0, 255, (40, 52), dtype=np.uint8)
    colorizer = colorize.Colorizer.load(trained / "best.keras")
    # 4 smoke steps leave the chroma faint: amplify it so sample differences show in uint8.
    a = colorizer.colorize_samples(gray, 3, seed=7, saturation=100)
    b = colorizer.colorize_samples(gray, 3, seed=7, saturation=100)
    c = colorizer.colorize_samples(gray, 1, seed=8, saturation=100)
    assert len(a) == 3 and all(x.shape == (40, 52, 3) for x in a)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)  # equal seeds, equal outputs
    assert not np.array_equal(a[0], a[1])  # the noise gives different colourings
    assert not np.array_equal(a[0], c[0])
    # The CLI writes N files per image, reproducibly from --seed.
    Image.fromarray(gray).save(tmp_path / "in.png")
    cmd = [sys.executable, "-m", "koala.colorize", str(tmp_path / "in.png"), "-o",
           str(tmp_path / "out"), "--model", str(trained / "best.keras"), "--samples=3",
           "--seed=7", "--saturation=100", "--noprogress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for k in range(3):
        out = np.asarray(Image.open(tmp_path / "out" / f"in_color_{k + 1}.png"))
        np.testing.assert_array_equal(out, a[k])


def test_a_fusion_model_refuses_samples(tmp_path):
    from koala.tasks.colorize.models.fusion import fusion_small

    colorizer = colorize.Colorizer(fusion_small(image_size=32, embedder="mobilenet",
                                                embedder_weights="none"))
    with pytest.raises(KoalaError, match="only ColorGAN and PixColor"):
        colorizer.colorize_samples(np.zeros((8, 8), np.uint8), 2, seed=0)
