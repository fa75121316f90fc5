"""The Deep Koalarization fusion colorizer: shapes, parameter counts, the shared model checks
(config and .keras round trips, gradients, bfloat16), a 2-step fit and the dynamic fusion
tiling."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_checks import check_config_round_trip, check_gradients, check_precision, check_saving

from koala.tasks.colorize.models.fusion import (
    FusionConfig,
    FusionLayer,
    build_fusion,
    fusion,
    fusion_small,
    parameter_count_from_table,
)

EMBED = 16  # a short embedding keeps the small models fast; the paper's is 1000


def random_inputs(size, dim=EMBED, batch=2, seed=0):
    """Inputs as the pipeline yields them: L in [-1, 1], a softmax-like embedding."""
    rng = np.random.default_rng(seed)
    emb = rng.random((batch, dim)).astype(np.float32)
    return {
        "l": rng.uniform(-1, 1, (batch, size, size, 1)).astype(np.float32),
        "embedding": emb / emb.sum(-1, keepdims=True),
    }


@pytest.mark.parametrize("size", [32, 64])
def test_output_shape_and_range(size):
    model = fusion_small(image_size=size, embedding_dim=EMBED)
    assert model.name == "fusion"
    # Dict inputs, keyed as the pipeline yields them (Keras lists dict inputs sorted by key).
    assert {k: v.shape for k, v in model.input.items()} == {
        "l": (None, size, size, 1), "embedding": (None, EMBED)}
    assert sorted(t.name for t in model.inputs) == ["embedding", "l"]
    ab = model(random_inputs(size), training=False).numpy()
    assert ab.shape == (2, size, size, 2) and ab.dtype == np.float32
    assert np.all(np.abs(ab) <= 1.0)
    # The last upsampling follows the tanh: every 2x2 block holds one predicted ab value.
    np.testing.assert_array_equal(ab[:, 0::2, 0::2], ab[:, 1::2, 1::2])


def test_paper_parameter_counts():
    # The paper model (224 px, D = 1000), k*k*c_in*c_out + c_out per conv:
    #   encoder  3*3*1*64+64 = 640;  3*3*64*128+128 = 73 856;  3*3*128*128+128 = 147 584;
    #            3*3*128*256+256 = 295 168;  3*3*256*256+256 = 590 080;
    #            3*3*256*512+512 = 1 180 160;  3*3*512*512+512 = 2 359 808;
    #            3*3*512*256+256 = 1 179 904                              -> 5 827 200
    #   fusion   1*1*(256+1000)*256+256 = 321 792                         ->   321 792
    #   decoder  3*3*256*128+128 = 295 040;  3*3*128*64+64 = 73 792;  3*3*64*64+64 = 36 928;
    #            3*3*64*32+32 = 18 464;  3*3*32*2+2 = 578                 ->   424 802
    #   total 5 827 200 + 321 792 + 424 802 = 6 573 794
    # with BN (4*c each: 64, 128, 256 in the encoder, 128, 64 in the decoder):
    #   + 4*(64+128+256+128+64) = 2 560  -> 6 576 354, of which 2*640 = 1 280 non-trainable.
    expected = {False: 6_573_794, True: 6_576_354}
    for batch_norm, total in expected.items():
        config = FusionConfig(batch_norm=batch_norm)
        model = build_fusion(config)
        assert parameter_count_from_table(config) == total
        assert model.count_params() == total
        non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
        assert non_trainable == (1_280 if batch_norm else 0)
        keras.backend.clear_session()
    assert fusion().count_params() == 6_576_354  # batch_norm=True is the default


@pytest.mark.parametrize("batch_norm", [False, True])
def test_small_parameter_count_matches_table(batch_norm):
    config = FusionConfig(image_size=32, embedding_dim=EMBED, filters_scale=0.125,
                          batch_norm=batch_norm)
    assert build_fusion(config).count_params() == parameter_count_from_table(config)
    assert config.filters(512) == 64 and FusionConfig(filters_scale=0.001).filters(64) == 1


def test_config_validation():
    with pytest.raises(ValueError, match="multiple of 8"):
        FusionConfig(image_size=60)
    with pytest.raises(ValueError, match="filters_scale"):
        FusionConfig(filters_scale=0)


def test_config_and_keras_file_round_trips(tmp_path):
    model = fusion_small(image_size=32, embedding_dim=EMBED)
    inputs = random_inputs(32)
    check_config_round_trip(model, inputs)
    loaded = check_saving(model, inputs, tmp_path / "fusion.keras")
    assert isinstance(loaded.get_layer("fusion"), FusionLayer)  # registered: no custom_objects


def test_fusion_layer_config_round_trip():
    layer = FusionLayer(name="fusion", dtype="mixed_bfloat16")
    clone = FusionLayer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    revived = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(revived) is FusionLayer and revived.name == "fusion"
    assert keras.layers.serialize(layer)["registered_name"] == "koala>FusionLayer"


def test_every_trainable_weight_gets_a_gradient():
    model = fusion_small(image_size=32, embedding_dim=EMBED)
    inputs = random_inputs(32)
    target = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 2)).astype(np.float32)
    # The only frozen weights are BN moving statistics (2 per BN layer); they get none.
    frozen = model.non_trainable_weights
    assert len(frozen) == 2 * 5
    assert all("moving_" in w.path for w in frozen)
    check_gradients(model, lambda: tf.reduce_mean(
        keras.losses.mean_squared_error(target, model(inputs, training=True))))


def test_two_training_steps():
    model = fusion_small(image_size=32, embedding_dim=EMBED)
    n = 4
    inputs = random_inputs(32, batch=n)
    ab = np.random.default_rng(2).uniform(-1, 1, (n, 32, 32, 2)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, ab)).batch(2)  # 2 steps
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(dataset, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    assert model.optimizer.iterations.numpy() == 2
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights,
                                                                   strict=True)]
    assert all(changed)


def test_fusion_tiling_is_dynamic():
    model = fusion_small(image_size=48, embedding_dim=EMBED)
    layer = model.get_layer("fusion")
    assert model.get_layer("enc_conv8").output.shape[1:3] == (6, 6)  # 48 / 8
    rng = np.random.default_rng(3)
    features = rng.standard_normal((2, 6, 6, 32)).astype(np.float32)
    vector = rng.standard_normal((2, EMBED)).astype(np.float32)
    out = layer([features, vector]).numpy()
    assert out.shape == (2, 6, 6, 32 + EMBED)
    np.testing.assert_array_equal(out[..., :32], features)
    tiled = np.broadcast_to(vector[:, None, None], (2, 6, 6, EMBED))
    np.testing.assert_array_equal(out[..., 32:], tiled)  # every position holds the vector

    # The grid size is read at run time: a traced function with unknown h, w works too.
    @tf.function(input_signature=[tf.TensorSpec((None, None, None, 32)),
                                  tf.TensorSpec((None, EMBED))])
    def fuse(f, v):
        return layer([f, v])

    odd = fuse(features[:, :3, :5], vector).numpy()
    assert odd.shape == (2, 3, 5, 32 + EMBED)
    np.testing.assert_array_equal(odd[:, 2, 4, 32:], vector)


def test_bfloat16_computes_all_but_the_output_in_bfloat16():
    # The tanh and the last upsampling run in float32: the output is float32.
    _, ab = check_precision(lambda: fusion_small(image_size=32, embedding_dim=EMBED),
                            random_inputs(32), float32_layers=("ab_tanh", "ab"))
    assert ab.shape == (2, 32, 32, 2)
    assert np.all(np.abs(ab) <= 1.0)


def test_saved_model_remembers_its_embedder(tmp_path):
    from koala.tasks.colorize.models import fusion as fusion_lib

    model = fusion_lib.fusion_small(image_size=32, embedding_dim=16, embedder="mobilenet",
                                embedder_weights="/some/weights.h5", embedder_fit="crop")
    loaded = check_saving(model, random_inputs(32), tmp_path / "m.keras")
    assert isinstance(loaded, fusion_lib.FusionColorizer)
    assert loaded.config == model.config
    assert (loaded.config.embedder, loaded.config.embedder_weights, loaded.config.embedder_fit) \
        == ("mobilenet", "/some/weights.h5", "crop")


def test_plain_load_model_after_import_koala_registry(tmp_path):
    import subprocess
    import sys

    from koala.tasks.colorize.models import fusion as fusion_lib
    from koala.tasks.sr import models as sr

    path, sr_path = tmp_path / "m.keras", tmp_path / "sr.keras"
    fusion_lib.fusion_small(image_size=32, embedding_dim=16).save(path)
    sr.fsrcnn_small().save(sr_path)
    # koala.registry imports every family, which registers its layers (koala stays cheap).
    code = (f"import keras, koala.registry; m = keras.saving.load_model({str(path)!r}); "
            f"s = keras.saving.load_model({str(sr_path)!r}); "
            "print(type(m).__name__, m.config.image_size, type(s).__name__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": ""})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["FusionColorizer", "32", "FSRCNN"]
