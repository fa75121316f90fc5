"""Checkpoints saved by koala before it was re-housed by task still load and predict.

tests/fixtures/legacy/ holds one tiny ``.keras`` file per family, written at commit 5222caf
by make_fixtures.py there, with a fixed input and the output that code predicted. The
registered names (``koala>FusionColorizer`` ...) are the contract: a file saved by an older
koala reloads with plain ``keras.saving.load_model`` and no ``custom_objects``.
"""

import pathlib

import keras
import numpy as np
import pytest

import koala.registry  # noqa: F401  (registers koala's layers, as a user does before load_model)

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "legacy"

EXPECTED_CLASS = {
    "fusion_regression": "FusionColorizer",
    "fusion_classification": "FusionColorizer",
    "lal": "LalColorizer",
    "colorgan": "ColorGAN",
    "srcnn": "SRCNN",
    "fsrcnn": "FSRCNN",
    "sr_autoencoder": "SRAutoencoder",
    "codec": "InvertibleGrayscale",
}


def _predict(name, model, inputs):
    if name == "colorgan":
        return model.sample(inputs["x"], seed=0)[0]
    if name == "codec":
        return model.decoder(model.encoder(inputs["x"], training=False), training=False)
    x = inputs["x"] if "x" in inputs else inputs
    return model(x, training=False)


@pytest.mark.parametrize("name", sorted(EXPECTED_CLASS))
def test_old_checkpoint_loads_and_predicts_the_same(name):
    model = keras.saving.load_model(FIXTURES / f"{name}.keras", compile=False)
    assert type(model).__name__ == EXPECTED_CLASS[name]
    assert type(model).__module__.startswith("koala.")
    data = np.load(FIXTURES / f"{name}.npz")
    inputs = {k[3:]: data[k] for k in data.files if k.startswith("in_")}
    out = np.asarray(_predict(name, model, inputs))
    assert out.shape == data["y"].shape
    np.testing.assert_allclose(out, data["y"], atol=1e-5, rtol=1e-5)
    assert np.std(out) > 0  # a real prediction, not a constant
