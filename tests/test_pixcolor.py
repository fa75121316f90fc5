"""PixColor (models/pixcolor.py): causality of the PixelCNN, sampling, the .keras round trip,
training through koala.train, koala.colorize --samples and koala.evaluate --samples."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_main, smooth_image, write_image
from PIL import Image
from test_train import _cli, log_epochs, records  # noqa: F401 (fixture)

from koala.ops import color
from koala.tasks.colorize import inference as colorize
from koala.tasks.colorize.models import pixcolor as pc


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(1)
    return pc.pixcolor_small(image_size=48, embedding_dim=8, pixel_layers=3, pixel_kernel=3)


def _inputs(batch=2, size=48, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"l": tf.constant(rng.uniform(-1, 1, (batch, size, size, 1)), tf.float32),
            "embedding": tf.constant(rng.uniform(0, 1, (batch, dim)), tf.float32)}


def _logit_change(model, bins, cond, row, col, channel):
    """Per raster position, the largest change of the Cr and Cb logits when the bin of
    ``channel`` at (row, col) changes."""
    cr, cb = model.pixelcnn([tf.constant(bins), cond])
    changed = bins.copy()
    changed[:, row, col, channel] = (changed[:, row, col, channel] + 3) % model.config.chroma_levels
    cr2, cb2 = model.pixelcnn([tf.constant(changed), cond])
    flat = [np.abs((b - a).numpy()).max(axis=(0, 3)).reshape(-1) for a, b in ((cr, cr2), (cb, cb2))]
    return flat


@pytest.mark.parametrize("row,col", [(0, 0), (2, 3), (3, 5), (5, 0)])
def test_the_pixelcnn_is_causal(model, row, col):
    s, k = model.config.grid, model.config.chroma_levels
    bins = np.random.default_rng(row * 7 + col).integers(0, k, (2, s, s, 2)).astype(np.int32)
    cond = model.condition(_inputs())
    i = row * s + col
    # Cb at pixel i: no logits at positions <= i change (Cr at i does not see Cb at i).
    d_cr, d_cb = _logit_change(model, bins, cond, row, col, channel=1)
    assert d_cr[: i + 1].max() == 0 and d_cb[: i + 1].max() == 0
    # Cr at pixel i: Cr's logits at <= i and Cb's before i unchanged; Cb at i sees it.
    d_cr, d_cb = _logit_change(model, bins, cond, row, col, channel=0)
    assert d_cr[: i + 1].max() == 0 and d_cb[:i].max(initial=0) == 0
    assert d_cb[i] > 0
    # Not vacuous: later pixels see pixel i (the next one in its row, the one below it).
    later = ([i + 1] if col + 1 < s else []) + ([i + s] if row + 1 < s else [])
    for j in later:
        assert d_cr[j] > 0 and d_cb[j] > 0


def test_the_stack_sees_the_whole_causal_past(model):
    # No blind spot: pixel (2, 4), above and to the right, reaches pixel (3, 3) through the
    # vertical stack (a single masked convolution stack misses that region).
    s = model.config.grid
    bins = np.zeros((2, s, s, 2), np.int32)
    cond = model.condition(_inputs())
    d_cr, _ = _logit_change(model, bins, cond, 2, 4, channel=0)
    assert d_cr[3 * s + 3] > 0


def test_cached_sampling_equals_the_plain_loop_and_seeds_reproduce(model):
    inputs = _inputs()
    fast = model.sample_bins(inputs, seed=5, samples=3).numpy()
    naive = model.sample_bins(inputs, seed=5, samples=3, naive=True).numpy()
    assert fast.shape == (3, 2, 6, 6, 2) and fast.dtype == np.int32
    np.testing.assert_array_equal(fast, naive)
    np.testing.assert_array_equal(fast, model.sample_bins(inputs, seed=5, samples=3).numpy())
    # Sample k depends on (seed, k) only, not on how many are drawn.
    np.testing.assert_array_equal(fast[:1], model.sample_bins(inputs, 5, 1).numpy())
    assert not np.array_equal(fast[0], fast[1])
    assert not np.array_equal(fast, model.sample_bins(inputs, seed=6, samples=3).numpy())
    # A low temperature concentrates the draws: samples agree more than at T = 1.
    cold = model.sample_bins(inputs, seed=5, samples=3, temperature=0.01).numpy()
    assert (cold[0] == cold[1]).mean() > (fast[0] == fast[1]).mean()


def test_chroma_bins_of_known_colours():
    # A pure gray image sits in the middle bins; saturated red has Cr high and Cb low.
    levels = 32
    for rgb, expect in (((0.5, 0.5, 0.5), (16, 16)), ((1.0, 0.0, 0.0), (31, 10))):
        image = tf.constant(rgb, tf.float32)[None, None, None] * tf.ones((1, 16, 16, 3))
        lab = color.srgb_to_lab(image)
        bins = pc.chroma_bins(color.normalize_l(lab[..., :1]), color.normalize_ab(lab[..., 1:]),
                              levels).numpy()
        assert bins.shape == (1, 2, 2, 2)
        assert tuple(bins[0, 0, 0]) == expect
    centres = pc.chroma_values(tf.constant([0, 31]), levels).numpy()
    np.testing.assert_allclose(centres, [-1 + 1 / 32, 1 - 1 / 32], atol=1e-6)


def test_keras_round_trip_gives_the_same_samples(model, tmp_path):
    path = tmp_path / "pixcolor.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, pc.PixColor) and loaded.config == model.config
    inputs = _inputs()
    np.testing.assert_allclose(loaded.sample(inputs, 2, 2).numpy(),
                               model.sample(inputs, 2, 2).numpy(), atol=1e-6)
    # Plain Keras: predict gives one colouring (sample 0 of seed 0) per image, ab/128.
    ab = loaded.predict({k: v.numpy() for k, v in inputs.items()}, batch_size=1, verbose=0)
    assert ab.shape == (2, 48, 48, 2) and np.abs(ab).max() <= 1
    np.testing.assert_allclose(ab, model.sample(inputs, 0, 1).numpy()[0], atol=1e-5)


@pytest.fixture(scope="module")
def trained(records, tmp_path_factory):  # noqa: F811
    workdir = tmp_path_factory.mktemp("pixcolor") / "run"
    proc = _cli("--flagfile=experiments/smoke_pixcolor.flags", f"--train_records={records}",
                f"--workdir={workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_two_training_steps_move_both_parts(trained):
    assert log_epochs(trained) == [0, 1]
    with open(trained / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for term in ("loss", "nll", "refine_mse", "val_nll", "val_refine_mse"):
        assert all(np.isfinite(float(r[term])) for r in rows), term
    saved = keras.saving.load_model(trained / "last.keras")
    assert saved.config.image_size == 32 and saved.config.grid == 4  # the records' size
    assert float(rows[0]["nll"]) > 0


def test_two_fit_steps_move_every_part():
    keras.utils.set_random_seed(2)
    m = pc.pixcolor_small(image_size=32, embedding_dim=8)
    m.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = {part: [w.numpy().copy() for w in getattr(m, part).trainable_weights]
              for part in ("cond_net", "pixelcnn", "refine_net")}
    ab = tf.constant(np.random.default_rng(0).uniform(-0.4, 0.4, (2, 32, 32, 2)), tf.float32)
    data = tf.data.Dataset.from_tensors((_inputs(size=32), ab)).repeat(2)
    history = m.fit(data, epochs=1, verbose=0).history
    assert np.isfinite(history["nll"][0]) and np.isfinite(history["refine_mse"][0])
    for part, weights in before.items():
        after = getattr(m, part).trainable_weights
        moved = [not np.array_equal(a, b.numpy()) for a, b in zip(weights, after, strict=True)]
        assert sum(moved) >= len(moved) // 2, part


def test_colorize_samples_from_the_command_line(trained, tmp_path):
    photo = tmp_path / "in" / "photo.png"
    photo.parent.mkdir()
    write_image(photo, smooth_image(37, 53, seed=3))
    args = [str(photo), "-o", str(tmp_path / "out"), "--model", str(trained / "last.keras"),
            "--samples", "4", "--seed", "0", "--embedder_weights=none"]
    assert cli_main("colorize", *args) == 0
    outs = [np.asarray(Image.open(tmp_path / "out" / f"photo_color_{k}.png"))
            for k in range(1, 5)]
    assert all(o.shape == (37, 53, 3) for o in outs)
    assert len({o.tobytes() for o in outs}) == 4  # four different colourings
    assert cli_main("colorize", *args[:2], str(tmp_path / "again"), *args[3:]) == 0
    again = [np.asarray(Image.open(tmp_path / "again" / f"photo_color_{k}.png"))
             for k in range(1, 5)]
    assert all(np.array_equal(a, b) for a, b in zip(outs, again, strict=True))


def test_colorize_is_the_seed_zero_sample(trained):
    colorizer = colorize.Colorizer.load(trained / "last.keras", embedder_weights="none")
    assert colorizer.is_stochastic and colorizer.is_pixcolor
    image = smooth_image(20, 30, seed=1)
    one = colorizer.colorize(image)
    assert one.shape == (20, 30, 3)
    np.testing.assert_array_equal(one, colorizer.colorize_samples(image, 2, 0)[0])


def test_evaluate_reports_samples_diversity_and_timing(trained, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        write_image(images / f"p{i}.png", smooth_image(40, 48, seed=i))
    from koala.tasks.colorize import evaluator

    report = evaluator.run(evaluator.ColorizeEvalConfig(
        models=(str(trained / "last.keras"),), images=str(images),
        output_dir=str(tmp_path / "eval"), embedder_weights="none", samples=3, seed=0,
        progress=False))
    (name,) = [m for m in report["methods"] if m != "gray"]
    mean = report["mean"][name]
    assert mean["diversity"] > 0 and mean["seconds_per_sample"] > 0
    assert mean["psnr_best"] >= mean["psnr"]
    assert report["mean"]["gray"]["diversity"] is None
    for entry in report["per_image"]:
        assert entry[name]["psnr_best"] >= entry[name]["psnr"]
    text = (tmp_path / "eval" / "metrics.md").read_text()
    assert "Diversity" in text and "Best-of-N" in text


def test_the_refinement_retrains_alone_from_a_run(trained, records, tmp_path):  # noqa: F811
    workdir = tmp_path / "refine"
    proc = _cli("--flagfile=experiments/smoke_pixcolor.flags", f"--train_records={records}",
                f"--workdir={workdir}", "--pixcolor_train=refine", "--epochs=1",
                f"--init_from={trained / 'last.keras'}", "--init_skip=refine_net")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(workdir / "log.csv", newline="") as f:
        row = next(csv.DictReader(f))
    assert "nll" not in row and np.isfinite(float(row["refine_mse"]))
    source = keras.saving.load_model(trained / "last.keras")
    result = keras.saving.load_model(workdir / "last.keras")
    for part in ("cond_net", "pixelcnn"):  # copied and frozen
        for a, b in zip(getattr(source, part).weights, getattr(result, part).weights,
                        strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    fresh = [not np.array_equal(a.numpy(), b.numpy()) for a, b in
             zip(source.refine_net.trainable_weights, result.refine_net.trainable_weights,
                 strict=True)]
    assert all(fresh)  # re-initialised and trained, not copied
    bad = _cli("--flagfile=experiments/smoke_pixcolor.flags", f"--train_records={records}",
               f"--workdir={tmp_path / 'bad'}", f"--init_from={trained / 'last.keras'}",
               "--init_skip=no_such_layer")
    assert bad.returncode != 0 and "no_such_layer" in bad.stderr


def test_a_version_1_refinement_still_loads():
    config = pc.pixcolor_small(image_size=32, embedding_dim=8).get_config()
    config.pop("refine_version")
    old = pc.PixColor.from_config(config)
    assert old.config.refine_version == 1
    names = {layer.name for layer in old.refine_net.layers}
    assert "skip" not in names and "dec_bn1" not in names
