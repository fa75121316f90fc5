"""Liang et al.'s patch-wise colorizer (koala.tasks.colorize.models.vcnn): sizes, the log loss
on binned U/V, the loss schedule, the window tiling, whole-image colorization, training."""

import csv

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_train import _cli, records  # noqa: F401 (fixture)

from koala.tasks.colorize.inference import Colorizer
from koala.tasks.colorize.models import vcnn as V


def test_parameter_counts_match_the_docstring_table():
    assert V.vcnn().count_params() == 454_592
    assert V.vcnn().u_net.count_params() == 227_296
    small = V.vcnn_small()
    assert small.config.uv_bins == 8 and small.count_params() < 40_000
    out = small(tf.zeros((3, 64, 64, 1)))
    assert out.shape == (3, 56, 56, 2)
    assert float(tf.reduce_max(tf.abs(out[..., 0]))) <= V.U_MAX
    for bad in ({"uv_bins": 1}, {"filters_scale": 0}, {"alternate_every": 0}):
        with pytest.raises(ValueError):
            V.vcnn_small(**bad)


def test_soft_bins_keep_the_value_and_the_log_loss_is_the_cross_entropy():
    centres = V.bin_centres(8, V.U_MAX)
    values = tf.constant([-0.5, -0.2, 0.0, 0.1234, 0.3, 0.5])
    t = V.soft_bins(values, centres)
    np.testing.assert_allclose(tf.reduce_sum(t, -1), 1.0, atol=1e-6)
    inside = np.clip(values.numpy(), centres[0], centres[-1])  # clamped at the ends
    np.testing.assert_allclose(tf.reduce_sum(t * centres, -1), inside, atol=1e-6)
    assert np.count_nonzero(t.numpy()[3]) == 2  # split between two neighbouring bins
    # The model's log loss on a uniform prediction: -Σ t log(1/K) = log K for any target.
    model = V.vcnn_small()
    for net in (model.u_net, model.v_net):
        logits = net.get_layer("logits")
        logits.set_weights([np.zeros_like(w) for w in logits.get_weights()])
    y = tf.random.uniform((2, 64, 64, 1))
    uv = tf.random.uniform((2, 56, 56, 2), -0.3, 0.3)
    terms = model.losses_of(y, uv)
    assert float(terms["log_loss"]) == pytest.approx(np.log(8), rel=1e-5)
    # ... and its expectation is 0 for both channels, so the MSE is the mean of uv².
    assert float(terms["mse"]) == pytest.approx(float(tf.reduce_mean(uv ** 2)), rel=1e-5)


def test_mse_first_then_the_losses_alternate():
    model = V.vcnn_small(mse_steps=3, alternate_every=2)
    schedule = [bool(model.uses_log_loss(step)) for step in range(9)]
    assert schedule == [False, False, False, True, True, False, False, True, True]


@pytest.mark.parametrize("length", [1, 55, 56, 57, 112, 217, 301])
def test_window_centres_cover_every_pixel_exactly_once(length):
    origins = V.tile_origins(length)
    covered = np.zeros(origins[-1] + V.CENTRE, int)
    for o in origins:
        covered[o:o + V.CENTRE] += 1
    assert np.all(covered == 1) and covered.size >= length
    assert covered.size - length < V.CENTRE  # no window beyond the last needed


class _CentreEcho:
    """A stand-in VCNN that 'predicts' U = V = the Y at each output pixel: tiling errors
    (a shifted or doubled window) show up as a mismatch with the input."""

    def __call__(self, patches, training=False):
        b = V.BORDER
        centre = patches[:, b:-b, b:-b]
        return tf.concat([centre, -centre], -1)


def test_tiling_puts_each_windows_centre_where_it_came_from():
    y = np.random.default_rng(0).random((217, 301)).astype(np.float32)
    uv = V.colorize_uv(_CentreEcho(), y, batch_size=5)
    assert uv.shape == (217, 301, 2)
    np.testing.assert_array_equal(uv[..., 0], y)
    np.testing.assert_array_equal(uv[..., 1], -y)


def test_an_odd_size_photo_colorizes_to_its_exact_size(tmp_path):
    model = V.vcnn_small()
    model.save(tmp_path / "v.keras")
    colorizer = Colorizer.load(tmp_path / "v.keras")
    assert colorizer.is_vcnn and colorizer.refine == "guided"
    rgb = np.random.default_rng(1).integers(0, 256, (301, 217, 3), np.uint8)
    out = colorizer.colorize(rgb)
    assert out.shape == (301, 217, 3) and out.dtype == np.uint8
    # Y is kept: the output's luma is the input's (up to rounding and gamut clipping).
    y_in = rgb @ np.array([0.299, 0.587, 0.114])
    y_out = out @ np.array([0.299, 0.587, 0.114])
    assert np.median(np.abs(y_in - y_out)) <= 1.0
    raw = colorizer.colorize(rgb, refine="none", saturation=0.0)
    assert np.abs(raw.astype(int) - np.round(y_in)[..., None]).max() <= 1  # gray


def test_two_steps_through_koala_train_then_the_colorize_tool(records, tmp_path):  # noqa: F811
    proc = _cli("--flagfile=experiments/smoke_vcnn.flags", f"--train_records={records}",
                f"--workdir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "run" / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for key in ("loss", "mse", "log_loss", "val_loss", "val_mse"):
        assert all(np.isfinite(float(r[key])) for r in rows), key
    model = keras.saving.load_model(tmp_path / "run" / "best.keras")
    assert isinstance(model, V.VCNN) and model.config.mse_steps == 1
