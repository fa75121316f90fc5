"""koala.ops.colorbins (Zhang et al.'s ab bins, soft encoding, prior, rebalancing, annealed mean)
and koala.data.bin_prior (the prior of a record set, its .npz and its command line)."""

import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_photo_folder

from koala.core.errors import CorruptShardError, KoalaError, RecordsError
from koala.data import build, pipelines
from koala.data.bin_prior import PRIOR_FILE, PriorConfig, compute_prior, load_prior, save_prior
from koala.ops import color, colorbins
from koala.ops.colorbins import (
    ab_bins,
    annealed_mean,
    bin_counts,
    bin_prior,
    empirical_prior,
    rebalancing_weights,
    soft_encode,
)

REPO = pathlib.Path(__file__).resolve().parent.parent
E2 = np.exp(-2.0)  # exp(-d² / (2σ²)) for d = 10, σ = 5


def as_set(bins):
    return {(int(a), int(b)) for a, b in np.asarray(bins)}


def soft_encode_reference(ab, bins, k=5, sigma=5.0):
    """Brute force in float64: the k nearest bins (stable order), Gaussian weights, normalised."""
    flat = np.asarray(ab, np.float64).reshape(-1, 2)
    bins = np.asarray(bins, np.float64)
    out = np.zeros((len(flat), len(bins)))
    for n, x in enumerate(flat):
        d2 = ((bins - x) ** 2).sum(-1)
        near = np.argsort(d2, kind="stable")[:k]
        w = np.exp(-d2[near] / (2 * sigma**2))
        out[n, near] = w / w.sum()
    return out.reshape(*np.shape(ab)[:-1], len(bins))


# --- bins ----------------------------------------------------------------------------------


def test_bins_are_the_in_gamut_grid_points():
    bins = ab_bins()
    assert bins.dtype == np.float32 and bins.ndim == 2 and bins.shape[1] == 2
    # 262 with the nearest-grid-point rule; Zhang's published set has 313 (see colorbins).
    assert len(bins) == 262
    np.testing.assert_array_equal(bins % 10, 0)  # every centre on the grid of 10
    assert len(as_set(bins)) == len(bins)  # no duplicates
    order = np.lexsort((bins[:, 1], bins[:, 0]))
    np.testing.assert_array_equal(order, np.arange(len(bins)))  # sorted by a, then b
    s = as_set(bins)
    assert (0, 0) in s
    for outside in [(-110, 110), (100, 100), (-100, -100), (0, 120), (120, 0)]:
        assert outside not in s, outside
    # The bins of the sRGB primaries, secondaries, a gray and a skin tone.
    rgb = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1],
                    [0.5, 0.5, 0.5], [0.9, 0.7, 0.6]])
    ab = color.srgb_to_lab(rgb).numpy()[:, 1:]
    expected = {(int(a), int(b)) for a, b in np.round(ab / 10) * 10}
    assert {(80, 70), (-90, 80), (80, -110), (-20, 90), (-50, -10), (100, -60), (0, 0)} \
        <= expected <= s
    with pytest.raises(ValueError):
        bins[0, 0] = 1.0  # the cached array is read-only
    assert ab_bins() is bins  # cached


def test_every_srgb_colour_falls_in_a_bin():
    rng = np.random.default_rng(0)
    rgb = np.concatenate([rng.random((4000, 3)), rng.integers(0, 2, (500, 3)) * 1.0])
    ab = color.srgb_to_lab(rgb).numpy()[:, 1:]
    hit = {(int(a), int(b)) for a, b in np.round(ab / 10) * 10}
    assert hit <= as_set(ab_bins())


def test_adjacent_rule_and_other_grids():
    adjacent = ab_bins(rule="adjacent")
    assert len(adjacent) == 309 and as_set(ab_bins()) < as_set(adjacent)
    coarse = ab_bins(20)
    np.testing.assert_array_equal(coarse % 20, 0)
    assert (0, 0) in as_set(coarse) and 50 < len(coarse) < 100
    with pytest.raises(ValueError, match="rule"):
        ab_bins(rule="hull")
    with pytest.raises(ValueError, match="grid"):
        ab_bins(0)


# --- soft encoding -------------------------------------------------------------------------


def test_soft_encoding_of_a_bin_centre_by_hand():
    bins = ab_bins()
    enc = soft_encode(np.array([0.0, 0.0]), bins).numpy()
    assert enc.shape == (len(bins),) and enc.dtype == np.float32
    nz = np.flatnonzero(enc)
    assert len(nz) == 5
    assert as_set(bins[nz]) == {(0, 0), (10, 0), (-10, 0), (0, 10), (0, -10)}
    centre = np.flatnonzero((bins == 0).all(1))[0]
    np.testing.assert_allclose(enc[centre], 1 / (1 + 4 * E2), rtol=1e-6)
    for i in nz:
        if i != centre:
            np.testing.assert_allclose(enc[i], E2 / (1 + 4 * E2), rtol=1e-6)
    np.testing.assert_allclose(enc.sum(), 1.0, rtol=1e-6)


def test_soft_encoding_matches_the_reference_on_a_batch():
    bins = ab_bins()
    rng = np.random.default_rng(1)
    rgb = rng.random((2, 4, 4, 3))
    ab = color.srgb_to_lab(rgb).numpy()[..., 1:].astype(np.float32)  # (B, H, W, 2)
    ab[0, 0, 0] = (-128, 127)  # far outside the bins: still finite
    enc = soft_encode(ab, bins).numpy()
    assert enc.shape == (2, 4, 4, len(bins))
    assert np.all(np.isfinite(enc))
    np.testing.assert_array_equal((enc > 0).sum(-1), 5)
    np.testing.assert_allclose(enc.sum(-1), 1.0, rtol=1e-5)
    ref = soft_encode_reference(ab, bins)
    np.testing.assert_allclose(enc, ref, atol=1e-5)
    # k = 1: the one-hot nearest bin.
    one = soft_encode(ab, bins, k=1).numpy()
    np.testing.assert_array_equal(one.argmax(-1), ref.argmax(-1))
    np.testing.assert_array_equal(one.max(-1), 1.0)


def test_soft_encoding_inside_tf_data_and_tf_function():
    bins = ab_bins()
    ab = np.stack(np.meshgrid(np.linspace(-40, 40, 8), np.linspace(-60, 50, 8)), -1)
    ab = np.broadcast_to(ab, (3, 8, 8, 2)).astype(np.float32)
    eager = soft_encode(ab, bins).numpy()
    ds = tf.data.Dataset.from_tensor_slices(ab).map(lambda x: soft_encode(x, bins)).batch(3)
    np.testing.assert_allclose(next(iter(ds)).numpy(), eager, atol=1e-7)
    fn = tf.function(lambda x: soft_encode(x, bins),
                     input_signature=[tf.TensorSpec([None, None, None, 2], tf.float32)])
    np.testing.assert_allclose(fn(ab).numpy(), eager, atol=1e-7)


# --- counts, prior, rebalancing -----------------------------------------------------------


def test_counts_split_ties_and_prior_smoothing_by_hand():
    bins = np.array([[0, 0], [10, 0], [30, 0]], np.float32)
    ab = np.array([[0, 0], [1, -2], [5, 0], [12, 0], [100, 0]], np.float32)  # (5, 0): a tie
    counts = bin_counts([ab[:3], ab[3:]], bins)
    np.testing.assert_allclose(counts, [2.5, 1.5, 1.0])
    np.testing.assert_allclose(bin_prior(counts, bins, sigma=0), counts / 5)
    # p̃_i ∝ Σ_j p_j exp(-|c_i - c_j|² / 50): neighbours at 10, 20 and 30 weigh e^-2, e^-8, e^-18.
    p = counts / 5
    k = np.array([[1, E2, np.exp(-18)], [E2, 1, np.exp(-8)], [np.exp(-18), np.exp(-8), 1]])
    expected = k @ p / (k @ p).sum()
    np.testing.assert_allclose(bin_prior(counts, bins), expected, rtol=1e-12)
    np.testing.assert_allclose(empirical_prior([ab], bins), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="one per bin"):
        bin_prior(counts[:2], bins)
    with pytest.raises(ValueError, match="not all zero"):
        bin_prior(np.zeros(3), bins)


def test_rebalancing_weights():
    rng = np.random.default_rng(2)
    prior = rng.random(262) ** 4
    prior /= prior.sum()
    for lam in (0.0, 0.5, 0.9):
        w = rebalancing_weights(prior, lam)
        np.testing.assert_allclose(np.sum(prior * w), 1.0, atol=1e-6)
        assert np.all(w > 0)
    w = rebalancing_weights(prior)  # λ = 0.5: rarer bins weigh more (strictly, by rank)
    order = np.argsort(prior)
    assert np.all(np.diff(w[order]) < 0)
    np.testing.assert_allclose(w, 1 / (0.5 * prior + 0.5 / 262) / np.sum(prior / (0.5 * prior
                                                                                  + 0.5 / 262)))
    np.testing.assert_allclose(rebalancing_weights(prior, 1.0), 1.0, rtol=1e-12)  # uniform
    np.testing.assert_allclose(rebalancing_weights(prior, 0.0), 1 / (262 * prior), rtol=1e-9)
    with pytest.raises(ValueError, match="lam"):
        rebalancing_weights(prior, 1.5)
    with pytest.raises(ValueError, match="positive prior"):
        rebalancing_weights(np.array([0.5, 0.5, 0.0]), 0.0)


# --- annealed mean -------------------------------------------------------------------------


def test_annealed_mean():
    bins = ab_bins()
    q = len(bins)
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 3, 3, q)) * 2
    mode = logits.argmax(-1)[..., None]
    np.put_along_axis(logits, mode, np.take_along_axis(logits, mode, -1) + 1, -1)  # a clear mode
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    got = annealed_mean(probs.astype(np.float32), bins, temperature=1.0).numpy()
    assert got.shape == (2, 3, 3, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, probs @ bins, atol=1e-3)  # T = 1: the plain mean
    # T = 0.38 against the formula in float64.
    f = probs ** (1 / 0.38)
    f /= f.sum(-1, keepdims=True)
    np.testing.assert_allclose(annealed_mean(probs, bins).numpy(), f @ bins, atol=1e-9)
    # T -> 0: the mode.
    np.testing.assert_allclose(annealed_mean(probs, bins, temperature=0.01).numpy(),
                               bins[probs.argmax(-1)], atol=0.05)
    # One-hot: that bin's centre, for any T.
    onehot = np.zeros((4, q), np.float32)
    picks = [0, 17, 131, q - 1]
    onehot[np.arange(4), picks] = 1
    for t in (0.05, 0.38, 1.0, 5.0):
        np.testing.assert_allclose(annealed_mean(onehot, bins, temperature=t).numpy(),
                                   bins[picks], atol=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        annealed_mean(probs, bins, temperature=0.0)


# --- prior of a record set ------------------------------------------------------------------


@pytest.fixture(scope="module")
def records(tmp_path_factory, mobilenet_none):
    root = tmp_path_factory.mktemp("prior")
    make_photo_folder(root / "photos", n_good=6, with_bad=False)
    cfg = build.BuildConfig(input_dir=str(root / "photos"), output_dir=str(root / "records"),
                            image_size=16, groups=("color",), embedder="mobilenet",
                            embedder_weights="none", batch_size=4, val_fraction=0.5,
                            progress=False)
    result = build.build(cfg, embedder=mobilenet_none)
    assert result.ok and result.manifest["counts"] == {"train": 5, "val": 1}
    return root / "records"


def expected_counts(records_dir, skip_white=True):
    """Independent count: every train pixel, nearest bins by brute force, ties split."""
    ds = pipelines.colorization_dataset(str(records_dir), batch_size=64, training=False)
    inputs, ab = next(iter(ds))
    lightness = (inputs["l"].numpy()[..., 0] + 1) * 50
    ab = np.round(ab.numpy() * 128).reshape(-1, 2)
    white = ((lightness > 99.99) & (ab.reshape(*lightness.shape, 2) == 0).all(-1)).ravel()
    if skip_white:
        ab = ab[~white]
    bins = ab_bins().astype(np.float64)
    d2 = ((ab[:, None] - bins[None]) ** 2).sum(-1)
    near = d2 == d2.min(1, keepdims=True)
    return (near / near.sum(1, keepdims=True)).sum(0), int(white.sum())


def test_prior_of_records_save_and_load(records, tmp_path):
    prior = compute_prior(PriorConfig(str(records), progress=False))
    assert prior.examples == 5
    counts, white = expected_counts(records)
    assert white > 0  # the padding of the non-square photos
    assert prior.skipped_white == white and prior.pixels + white == 5 * 16 * 16
    np.testing.assert_allclose(prior.counts, counts)
    np.testing.assert_allclose(prior.counts.sum(), prior.pixels)
    np.testing.assert_allclose(prior.prior, bin_prior(counts, ab_bins()))
    np.testing.assert_allclose(np.sum(prior.prior * prior.weights), 1.0, atol=1e-9)
    np.testing.assert_array_equal(prior.bins, ab_bins())

    out = tmp_path / "sub" / PRIOR_FILE
    save_prior(out, prior)
    assert sorted(p.name for p in out.parent.iterdir()) == [PRIOR_FILE]  # no temporary left
    loaded = load_prior(out)
    for name in ("bins", "counts", "prior", "weights"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(prior, name))
    assert (loaded.lam, loaded.sigma, loaded.rule, loaded.examples) == (0.5, 5.0, "nearest", 5)

    with_white = compute_prior(PriorConfig(str(records), skip_white=False, max_examples=2,
                                           progress=False))
    assert with_white.examples == 2 and with_white.skipped_white == 0
    assert with_white.pixels == 2 * 16 * 16


def test_load_prior_errors(records, tmp_path):
    prior = compute_prior(PriorConfig(str(records), max_examples=1, progress=False))
    with pytest.raises(KoalaError, match="not found"):
        load_prior(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(KoalaError, match="unreadable prior file"):
        load_prior(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(KoalaError, match="not an ab prior file"):
        load_prior(tmp_path / "other.npz")
    shifted = type(prior)(**{**prior.__dict__, "bins": prior.bins + 1})
    save_prior(tmp_path / "shifted.npz", shifted)
    with pytest.raises(KoalaError, match="recompute the prior"):
        load_prior(tmp_path / "shifted.npz")


def test_missing_corrupt_and_colourless_records(records, tmp_path, mobilenet_none):
    with pytest.raises(RecordsError, match="no shards found"):
        compute_prior(PriorConfig(str(tmp_path / "nothing"), progress=False))
    broken = tmp_path / "broken"
    shutil.copytree(records, broken)
    for shard in broken.glob("train-*"):
        data = shard.read_bytes()
        shard.write_bytes(data[:100] + bytes(b ^ 0xFF for b in data[100:120]) + data[120:])
    with pytest.raises(CorruptShardError, match="train-"):
        compute_prior(PriorConfig(str(broken), progress=False))
    make_photo_folder(tmp_path / "photos", n_good=2, with_bad=False)
    cfg = build.BuildConfig(input_dir=str(tmp_path / "photos"), output_dir=str(tmp_path / "rgb"),
                            groups=("rgb",), val_fraction=0.0, progress=False)
    assert build.build(cfg).ok
    with pytest.raises(RecordsError, match="groups"):
        compute_prior(PriorConfig(str(tmp_path / "rgb"), progress=False))


@pytest.mark.slow
def test_cli_writes_the_prior_and_fails_in_one_line(records, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = tmp_path / "prior.npz"
    cmd = [sys.executable, str(REPO / "data_prep" / "bin_prior.py"), f"--records={records}",
           f"--output={out}", "--max_examples=3", "--noprogress"]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "ab prior: 3 images" in result.stdout and str(out) in result.stdout
    assert load_prior(out).examples == 3



def test_cli_missing_records_is_one_line_in_process(tmp_path, capsys):
    from koala.cli import bin_prior, common

    missing = tmp_path / "nope"
    try:
        status = bin_prior.main(["bin_prior", f"--records={missing}",
                                 f"--output={tmp_path / 'prior.npz'}"])
    except common.Exit as e:
        status = e.status
    assert status == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no shards found" in errors[0], err
    assert "Traceback" not in err


def test_module_constants_are_the_papers():
    assert (colorbins.GRID, colorbins.SOFT_NEIGHBOURS, colorbins.SIGMA) == (10.0, 5, 5.0)
    assert (colorbins.REBALANCE_LAMBDA, colorbins.ANNEAL_TEMPERATURE) == (0.5, 0.38)
