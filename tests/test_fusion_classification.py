"""The fusion colorizer's classification head (SPEC §5, Zhang et al. 2016): graph shapes, the
class-rebalanced cross-entropy on hand-made cases, annealed-mean decoding, the shared model
checks (config and .keras round trips, gradients, bfloat16), mirrored-strategy parity, and
training through koala.cli.train with a bin prior."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_photo_folder
from model_checks import check_config_round_trip, check_gradients, check_precision, check_saving

from koala import registry
from koala.core import trainer as training
from koala.core.errors import KoalaError
from koala.data import bin_prior, build
from koala.ops import colorbins
from koala.tasks.colorize.models.fusion import (
    AnnealedMean,
    FusionColorizer,
    FusionConfig,
    fusion,
    fusion_small,
    parameter_count_from_table,
    rebalanced_cross_entropy,
)

REPO = pathlib.Path(__file__).resolve().parent.parent
EMBED = 16
BINS = colorbins.ab_bins()  # rule "nearest"
Q = len(BINS)
E2 = np.exp(-2.0)  # soft-encoding weight of a bin 10 away with σ = 5: exp(-10² / (2·5²))


def random_inputs(size, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.random((batch, EMBED)).astype(np.float32)
    return {"l": rng.uniform(-1, 1, (batch, size, size, 1)).astype(np.float32),
            "embedding": emb / emb.sum(-1, keepdims=True)}


def random_ab(size, batch=2, seed=1):
    return np.random.default_rng(seed).uniform(-0.6, 0.6, (batch, size, size, 2)).astype(
        np.float32)


def small(size=32, **kw):
    return fusion_small(image_size=size, embedding_dim=EMBED, head="classification", **kw)


def bin_index(a, b):
    (index,) = np.flatnonzero((BINS[:, 0] == a) & (BINS[:, 1] == b))
    return index


def soft_target_on_centre(a, b):
    """Z for a target exactly on the bin centre (a, b): the centre and its 4 axis neighbours
    (10 away; the diagonals are 14.1 away) get 1 and e^-2, normalised."""
    z = np.zeros(Q)
    z[bin_index(a, b)] = 1.0
    for da, db in ((10, 0), (-10, 0), (0, 10), (0, -10)):
        z[bin_index(a + da, b + db)] = E2
    return z / z.sum()


# --- graph ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64])
def test_graph_shapes_and_output_range(size):
    model = small(size)
    assert Q == 262
    assert model.get_layer("dec_logits").output.shape == (None, size // 2, size // 2, Q)
    assert model.get_layer("probs").output.shape == (None, size // 2, size // 2, Q)
    assert model.output.shape == (None, size, size, 2) and model.output.dtype == "float32"
    probs, ab = model.classify(random_inputs(size))
    assert probs.shape == (2, size // 2, size // 2, Q) and probs.dtype == tf.float32
    np.testing.assert_allclose(tf.reduce_sum(probs, -1).numpy(), 1.0, atol=1e-5)
    assert ab.shape == (2, size, size, 2)
    np.testing.assert_allclose(model.predict(random_inputs(size), verbose=0), ab.numpy(),
                               atol=1e-6)
    assert np.all(np.abs(ab.numpy()) <= 1.0)
    np.testing.assert_array_equal(ab.numpy()[:, 0::2, 0::2], ab.numpy()[:, 1::2, 1::2])


def test_parameter_counts():
    # Paper classification model: the regression model's 6 576 354 minus its 3x3 ab conv
    # (3*3*32*2+2 = 578) plus the 3x3 logits conv 3*3*32*262+262 = 75 718 -> 6 651 494.
    config = FusionConfig(head="classification")
    assert parameter_count_from_table(config) == 6_651_494
    assert fusion(head="classification").count_params() == 6_651_494
    keras.backend.clear_session()
    config = FusionConfig(image_size=32, embedding_dim=EMBED, filters_scale=0.125,
                          head="classification", bin_rule="adjacent")
    model = FusionColorizer(**{k: getattr(config, k) for k in config.__dataclass_fields__})
    assert model.get_layer("probs").output.shape[-1] == 309
    assert model.count_params() == parameter_count_from_table(config)


def test_regression_model_is_unchanged():
    model = fusion_small(image_size=32, embedding_dim=EMBED)
    names = [layer.name for layer in model.layers]
    assert names[-3:] == ["dec_conv5", "ab_tanh", "ab"] and "probs" not in names
    with pytest.raises(ValueError, match="regression head"):
        model.classify(random_inputs(32))
    # A config saved before the classification head existed still loads, as regression.
    old = {"name": "fusion", "trainable": True, "image_size": 32, "embedding_dim": EMBED,
           "filters_scale": 0.125, "batch_norm": True, "fusion_filters": 256,
           "embedder": "mobilenet", "embedder_weights": "none", "embedder_fit": "pad"}
    revived = FusionColorizer.from_config(old)
    assert revived.config.head == "regression" and revived.config.class_weights is None
    assert revived.count_params() == model.count_params()


def test_config_validation():
    with pytest.raises(ValueError, match="head"):
        FusionConfig(head="gan")
    with pytest.raises(ValueError, match="temperature"):
        FusionConfig(head="classification", temperature=0)
    with pytest.raises(ValueError, match="one weight per bin"):
        FusionConfig(head="classification", class_weights=(1.0, 2.0))
    with pytest.raises(ValueError, match="classification"):
        FusionConfig(class_weights=(1.0,) * Q)
    with pytest.raises(ValueError, match="bin_rule"):
        FusionConfig(head="classification", bin_rule="zhang")
    config = FusionConfig(head="classification", class_weights=[1] * Q)  # a JSON list
    assert config.class_weights == (1.0,) * Q


# --- decoding ---------------------------------------------------------------------------------


def test_annealed_mean_layer():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(Q) * 0.3, size=(2, 3, 3)).astype(np.float32)
    # T = 1: the plain mean of the distribution.
    plain = AnnealedMean(temperature=1.0)(probs).numpy()
    np.testing.assert_allclose(plain, probs @ BINS, atol=1e-3)
    # Small T: the mode. 0.3 on bin i, the rest spread evenly: (0.3 / 0.0027) ** 100 wins.
    peaked = np.full((4, Q), 0.7 / (Q - 1), np.float32)
    modes = [0, 17, 100, Q - 1]
    peaked[np.arange(4), modes] = 0.3
    cold = AnnealedMean(temperature=0.01)(peaked).numpy()
    np.testing.assert_allclose(cold, BINS[modes], atol=1e-3)
    layer = AnnealedMean(temperature=0.5, rule="adjacent", name="dec", dtype="float32")
    assert keras.layers.serialize(layer)["registered_name"] == "koala>AnnealedMean"
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert (clone.temperature, clone.rule, clone.name) == (0.5, "adjacent", "dec")
    assert not clone.weights  # the bins are rebuilt from the rule, not stored
    with pytest.raises(ValueError, match="262 bin probabilities"):
        AnnealedMean()(np.ones((1, 2, 2, 10), np.float32))


def test_decoding_chain_gives_normalised_bin_centres():
    # Logits that put (almost) all mass on one bin: the output is that bin / 128 everywhere,
    # the most extreme bin included, and stays in [-1, 1].
    model = small()
    conv = model.get_layer("dec_logits")
    for corner in (BINS[:, 1].argmin(), BINS[:, 0].argmax()):  # b = -110, a = 100
        bias = np.zeros(Q, np.float32)
        bias[corner] = 60.0
        conv.set_weights([np.zeros_like(conv.get_weights()[0]), bias])
        ab = model.predict(random_inputs(32), verbose=0)
        np.testing.assert_allclose(ab, np.broadcast_to(BINS[corner] / 128, ab.shape), atol=1e-5)
        assert np.all(np.abs(ab) <= 1.0)


# --- loss -------------------------------------------------------------------------------------


def test_cross_entropy_on_a_bin_centre():
    # Target (20, -30) everywhere, at 4x4: each 2x2 block averages (25, -30) and (15, -30) to
    # the bin centre, so the average pooling is tested too. Probabilities at 2x2.
    a, b = 20.0, -30.0
    ab = np.empty((1, 4, 4, 2), np.float32)
    ab[..., 1] = b / 128
    ab[..., 0] = (a + 5) / 128
    ab[:, :, 1::2, 0] = (a - 5) / 128
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(Q), size=(1, 2, 2)).astype(np.float32)
    z = soft_target_on_centre(a, b)
    ce = -(np.log(p.astype(np.float64) + 1e-8) * z).sum(-1)  # (1, 2, 2)
    loss = rebalanced_cross_entropy(p, ab, bins=BINS)
    assert loss.dtype == tf.float32
    np.testing.assert_allclose(float(loss), ce.mean(), rtol=1e-5)
    # Uniform probabilities: the cross-entropy is log Q (Z sums to 1).
    uniform = np.full((1, 2, 2, Q), 1.0 / Q, np.float32)
    np.testing.assert_allclose(float(rebalanced_cross_entropy(uniform, ab, bins=BINS)),
                               np.log(Q), rtol=1e-5)
    # Weight of the target's own bin: every pixel's term is multiplied by it.
    weights = rng.uniform(0.5, 3.0, Q)
    np.testing.assert_allclose(
        float(rebalanced_cross_entropy(p, ab, bins=BINS, class_weights=weights)),
        weights[bin_index(a, b)] * ce.mean(), rtol=1e-5)


def test_class_weights_pick_each_pixels_own_bin():
    # Left half on bin (0, 0), right half on bin (50, 40); weight 2 on (0, 0), 0.5 elsewhere.
    ab = np.zeros((1, 4, 4, 2), np.float32)
    ab[:, :, 2:] = np.array([50.0, 40.0]) / 128
    p = np.random.default_rng(1).dirichlet(np.ones(Q), size=(1, 2, 2)).astype(np.float32)
    ce = np.empty((2, 2))
    for col, centre in ((0, (0, 0)), (1, (50, 40))):
        ce[:, col] = -(np.log(p[0, :, col].astype(np.float64) + 1e-8)
                       * soft_target_on_centre(*centre)).sum(-1)
    weights = np.full(Q, 0.5)
    weights[bin_index(0, 0)] = 2.0
    expected = (2.0 * ce[:, 0].sum() + 0.5 * ce[:, 1].sum()) / 4
    np.testing.assert_allclose(
        float(rebalanced_cross_entropy(p, ab, bins=BINS, class_weights=weights)), expected,
        rtol=1e-5)
    # A model uses its config's weights: 3 everywhere triples the uniform-weight loss.
    model = small(class_weights=(3.0,) * Q)
    probs, _ = model.classify(random_inputs(32))
    ab = random_ab(32)
    np.testing.assert_allclose(
        float(model.classification_loss(probs, ab)),
        3 * float(rebalanced_cross_entropy(probs, ab, bins=BINS)), rtol=1e-5)


def test_evaluate_logs_the_loss_and_ab_mse():
    model = small(class_weights=tuple(np.random.default_rng(2).uniform(0.5, 2.0, Q)))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, ab = random_inputs(32), random_ab(32)
    logs = model.evaluate(x, ab, batch_size=2, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "ab_mse"}
    probs, pred = model.classify(x)
    np.testing.assert_allclose(logs["loss"], float(model.classification_loss(probs, ab)),
                               rtol=1e-5)
    np.testing.assert_allclose(logs["ab_mse"], np.mean((pred.numpy() - ab) ** 2), rtol=1e-5)


def test_every_trainable_weight_gets_a_gradient():
    model = small()
    x, ab = random_inputs(32), random_ab(32)
    assert all("moving_" in w.path for w in model.non_trainable_weights)  # they get none
    check_gradients(model, lambda: model.classification_loss(
        model.classify(x, training=True)[0], ab))


def test_fit_step_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.get_layer("dec_logits").compute_dtype == "float16"
        assert model.get_layer("probs").output.dtype == "float32"
        ds = tf.data.Dataset.from_tensor_slices((random_inputs(32), random_ab(32))).batch(2)
        before = [w.numpy().copy() for w in model.trainable_weights]
        history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
        assert model.optimizer.iterations.numpy() == 1
        assert np.isfinite(history.history["loss"][0]) and "ab_mse" in history.history
        assert all(not np.array_equal(b, w.numpy())
                   for b, w in zip(before, model.trainable_weights, strict=True))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bfloat16_computes_all_but_the_decoding_in_bfloat16():
    # From the softmax on, the bin distribution and its annealed mean are float32.
    model, ab = check_precision(small, random_inputs(32), float32_layers=(
        "probs", "ab_mean", "ab_norm", "ab_clip", "ab"))
    assert ab.shape == (2, 32, 32, 2) and np.all(np.abs(ab) <= 1.0)
    assert model.get_layer("dec_logits").compute_dtype == "bfloat16"


def test_config_and_keras_file_round_trips(tmp_path):
    weights = tuple(float(w) for w in np.random.default_rng(3).uniform(0.5, 2.0, Q))
    model = small(class_weights=weights, temperature=0.5)
    x = random_inputs(32)
    assert check_config_round_trip(model, x).config == model.config
    loaded = check_saving(model, x, tmp_path / "m.keras")
    assert loaded.config == model.config
    assert loaded.config.class_weights == weights and loaded.config.temperature == 0.5
    assert isinstance(loaded.get_layer("ab_mean"), AnnealedMean)
    assert len(loaded.weights) == len(model.weights)  # the classifier view is not saved twice
    probs, _ = loaded.classify(x)
    np.testing.assert_allclose(probs.numpy(), model.classify(x)[0].numpy(), atol=1e-6)


# --- distribution -----------------------------------------------------------------------------

PARITY = """
import json, numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from koala.core import distributed
from koala.tasks.colorize.models import fusion

rng = np.random.default_rng(0)
x = {"l": rng.uniform(-1, 1, (4, 32, 32, 1)).astype("float32"),
     "embedding": rng.random((4, 16)).astype("float32")}
ab = rng.uniform(-0.6, 0.6, (4, 32, 32, 2)).astype("float32")
kw = dict(image_size=32, embedding_dim=16, head="classification", batch_norm=False,
          class_weights=tuple(rng.uniform(0.5, 2.0, fusion.num_bins())))
data = tf.data.Dataset.from_tensor_slices((x, ab)).batch(4)
keras.utils.set_random_seed(0)
single = fusion.fusion_small(**kw)
initial = single.get_weights()
single.compile(optimizer=keras.optimizers.SGD(0.1))
loss = single.fit(data, epochs=1, verbose=0).history["loss"][0]
strategy = tf.distribute.MirroredStrategy()
with strategy.scope():
    mirrored = fusion.fusion_small(**kw)
    mirrored.set_weights(initial)
    mirrored.compile(optimizer=keras.optimizers.SGD(0.1))
history = distributed.fit(mirrored, strategy.experimental_distribute_dataset(data.repeat()),
                          strategy=strategy, epochs=1, steps_per_epoch=1, verbose=0)
pairs = list(zip(single.get_weights(), mirrored.get_weights(), initial))
print("RESULT", json.dumps({
    "replicas": strategy.num_replicas_in_sync, "loss": loss,
    "mirrored_loss": history.history["loss"][0],
    "diff": max(float(np.abs(s - m).max()) for s, m, _ in pairs),
    "moved": max(float(np.abs(s - i).max()) for s, _, i in pairs)}))
"""


def test_mirrored_step_matches_single_device(tmp_path):
    # 2 replicas x 2 examples through distributed.fit (strategy.run(model.train_step)) must
    # update the weights as one step on the 4 examples: the loss is divided by the replicas.
    proc = subprocess.run([sys.executable, "-c", PARITY], capture_output=True, text=True,
                          cwd=REPO, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["replicas"] == 2
    np.testing.assert_allclose(result["mirrored_loss"], result["loss"], rtol=1e-5)
    assert result["moved"] > 1e-4
    assert result["diff"] < 1e-3 * result["moved"], result


# --- the trainer ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def records(tmp_path_factory, mobilenet_none):
    """32 px records (5 train, 1 val) with their ab prior beside the shards."""
    root = tmp_path_factory.mktemp("cls")
    make_photo_folder(root / "photos", n_good=6, with_bad=False)
    cfg = build.BuildConfig(input_dir=str(root / "photos"), output_dir=str(root / "records"),
                            image_size=32, embedder="mobilenet", embedder_weights="none",
                            batch_size=4, val_fraction=0.5, progress=False)
    assert build.build(cfg, embedder=mobilenet_none).ok
    records = str(root / "records")
    prior = bin_prior.compute_prior(bin_prior.PriorConfig(records=records, progress=False))
    bin_prior.save_prior(os.path.join(records, bin_prior.PRIOR_FILE), prior)
    return records


def smoke(records, workdir, **kw):
    base = dict(workdir=str(workdir), train_records=records, model="fusion_small",
                head="classification", epochs=2, steps_per_epoch=2, batch_size=2,
                lr_boundaries=(1,), shuffle_buffer=8, image_grid_count=2,
                mixed_precision="float32")
    return registry.configs(**{**base, **kw})


def test_two_steps_through_koala_train(records, tmp_path):
    cfg = smoke(records, tmp_path / "run", rebalance_lambda=0.25)
    history = registry.train(*cfg)
    assert history.epoch == [0, 1]
    for key in ("loss", "ab_mse", "val_loss", "val_ab_mse"):
        assert np.all(np.isfinite(history.history[key])), key
    model = keras.saving.load_model(tmp_path / "run" / "last.keras")
    assert model.config.head == "classification" and model.config.temperature == 0.38
    prior = bin_prior.load_prior(os.path.join(records, bin_prior.PRIOR_FILE))
    expected = colorbins.rebalancing_weights(prior.prior, 0.25)
    np.testing.assert_allclose(model.config.class_weights, expected)
    assert model.config.bin_rule == prior.rule
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["ab_prior"] == os.path.join(records, bin_prior.PRIOR_FILE)
    assert run["parameters"] == parameter_count_from_table(model.config)
    # The workdir check: the same settings resume (nothing left), other ones are refused.
    assert registry.train(*cfg).epoch == []
    with pytest.raises(KoalaError, match="rebalance_lambda"):
        registry.train(*smoke(records, tmp_path / "run", rebalance_lambda=0.5))
    # A run.json written before these settings existed still resumes (its run had the
    # defaults): drop them and check again with the defaults.
    run["config"] = {k: v for k, v in run["config"].items()
                     if k not in ("head", "temperature", "ab_prior", "rebalance_lambda")}
    (tmp_path / "run" / "run.json").write_text(json.dumps(run))
    training._check_workdir(*smoke(records, tmp_path / "run", head="regression"))
    with pytest.raises(KoalaError, match="head"):
        training._check_workdir(*cfg)


def test_missing_prior_is_one_clear_error(records, tmp_path):
    bare = tmp_path / "records"
    shutil.copytree(records, bare, ignore=shutil.ignore_patterns(bin_prior.PRIOR_FILE))
    with pytest.raises(KoalaError) as info:
        registry.train(*smoke(str(bare), tmp_path / "run"))
    message = str(info.value)
    assert "\n" not in message
    assert f"python data_prep/bin_prior.py --records={bare}" in message
    assert os.path.join(str(bare), bin_prior.PRIOR_FILE) in message
    with pytest.raises(KoalaError, match="no ab prior at .*elsewhere.npz"):
        registry.train(*smoke(records, tmp_path / "run2", ab_prior=str(tmp_path / "elsewhere.npz")))
    # The classification head is a colorize setting: an SR model refuses it, naming both.
    with pytest.raises(ValueError, match="--head is a setting of the colorize family; "
                                         "--model=srcnn_small is of the sr family"):
        smoke(records, tmp_path / "run3", model="srcnn_small")


def test_cli_smoke_flagfile(records, tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "koala.train",
         "--flagfile=experiments/smoke_fusion_classification.flags",
         f"--train_records={records}", f"--workdir={workdir}", "--epochs=1"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags_txt = (workdir / "flags.txt").read_text()
    for line in ("--head=classification", "--rebalance_lambda=0.5", "--temperature=0.38"):
        assert line in flags_txt
    assert keras.saving.load_model(workdir / "best.keras").config.head == "classification"


def test_a_colorizer_decodes_at_another_temperature(tmp_path, mobilenet_none):
    from koala.tasks.colorize.inference import Colorizer

    model = fusion_small(image_size=32, embedding_dim=1000, head="classification",
                         embedder="mobilenet", embedder_weights="none")
    path = tmp_path / "m.keras"
    model.save(path)
    embedder = mobilenet_none
    image = np.random.default_rng(0).integers(0, 256, (40, 52, 3), np.uint8)
    default = Colorizer(keras.saving.load_model(path), embedder)
    assert default.temperature == pytest.approx(0.38)
    cold = Colorizer(keras.saving.load_model(path), embedder, temperature=0.1)
    mean = Colorizer(keras.saving.load_model(path), embedder, temperature=1.0)
    assert cold.temperature == 0.1
    chroma = [np.abs(c.predict_ab(image)).mean() for c in (cold, default, mean)]
    # A lower temperature moves the annealed mean towards the mode: away from the mean's
    # grey; the three decodings differ.
    assert chroma[0] != chroma[1] != chroma[2]
    regression = fusion_small(image_size=32, embedding_dim=1000, embedder="mobilenet",
                              embedder_weights="none")
    assert Colorizer(regression, embedder).temperature is None
    with pytest.raises(KoalaError, match="no classification head"):
        Colorizer(regression, embedder, temperature=0.5)
