"""The backend-portable models on Keras' JAX backend, in a subprocess with TensorFlow made
unimportable: SRCNN, FSRCNN (and its sub-pixel inference form), the SR auto-encoder and the
fusion colorizer's regression head build with the parameter counts they have under
TensorFlow, train 2 steps with plain compile/fit on NumPy arrays, and load the .keras files
saved under TensorFlow to predict what TensorFlow predicted (within 1e-4).

This is what benchmarks/gpu.py relies on where a GPU machine has JAX but no TensorFlow.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("jax")  # in requirements.txt

from koala.tasks.colorize.models import fusion  # noqa: E402
from koala.tasks.sr import models as sr  # noqa: E402

# name -> (builder module, builder name, kwargs, input shapes) ; built the same way under JAX.
MODELS = {
    "srcnn": ("sr", "srcnn_small", {"scale": 2}, {"x": (2, 24, 24, 1)}),
    "srcnn_955": ("sr", "srcnn_955", {"scale": 3}, {"x": (2, 20, 20, 1)}),
    "fsrcnn": ("sr", "fsrcnn_small", {"scale": 3}, {"x": (2, 11, 11, 1)}),
    "autoencoder": ("sr", "sr_autoencoder_small", {"scale": 2}, {"x": (2, 24, 24, 1)}),
    "fusion": ("fusion", "fusion_small", {"image_size": 32, "embedding_dim": 1000},
               {"l": (2, 32, 32, 1), "embedding": (2, 1000)}),
}

JAX_SCRIPT = r"""
import json, sys
sys.modules["tensorflow"] = None  # the GPU machine has no TensorFlow: prove none is needed
import keras
import numpy as np
assert keras.backend.backend() == "jax", keras.backend.backend()
from koala.tasks.colorize.models import fusion
from koala.tasks.sr import models as sr
from koala.tasks.sr.subpixel import fast_fsrcnn

spec, folder = json.loads(sys.argv[1]), sys.argv[2]
modules = {"sr": sr, "fusion": fusion}
report = {}
for name, (module, builder, kwargs, shapes) in spec.items():
    model = getattr(modules[module], builder)(**kwargs)
    rng = np.random.default_rng(0)
    inputs = {k: rng.random(s, dtype=np.float32) for k, s in shapes.items()}
    x = inputs["x"] if "x" in inputs else inputs
    shape = model.compute_output_shape(
        {k: v.shape for k, v in inputs.items()} if "x" not in inputs else inputs["x"].shape)
    target = rng.random(shape, dtype=np.float32)
    before = [np.array(w) for w in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    history = model.fit(x, target, batch_size=2, epochs=2, verbose=0)
    loaded = keras.saving.load_model(f"{folder}/{name}.keras")
    got = np.asarray(loaded.predict(x, verbose=0))
    want = np.load(f"{folder}/{name}.npy")
    moved = any(not np.allclose(a, np.array(b)) for a, b in zip(before, model.trainable_weights))
    entry = {"params": model.count_params(), "losses": history.history["loss"], "moved": moved,
             "max_diff": float(np.abs(got - want).max())}
    if name == "fsrcnn":
        fast = np.asarray(fast_fsrcnn(loaded).predict(x, verbose=0))
        entry["subpixel_diff"] = float(np.abs(fast - want).max())
    report[name] = entry
print(json.dumps(report))
"""


def test_the_portable_models_run_on_jax_without_tensorflow(tmp_path):
    expected = {}
    modules = {"sr": sr, "fusion": fusion}
    for name, (module, builder, kwargs, shapes) in MODELS.items():
        model = getattr(modules[module], builder)(**kwargs)
        rng = np.random.default_rng(0)
        inputs = {k: rng.random(s, dtype=np.float32) for k, s in shapes.items()}
        x = inputs["x"] if "x" in inputs else inputs
        np.save(tmp_path / f"{name}.npy", np.asarray(model.predict(x, verbose=0)))
        model.save(tmp_path / f"{name}.keras")
        expected[name] = model.count_params()
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", JAX_SCRIPT, json.dumps(MODELS), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(report) == sorted(MODELS)
    for name, entry in report.items():
        assert entry["params"] == expected[name], name
        assert len(entry["losses"]) == 2 and all(np.isfinite(entry["losses"])), name
        assert entry["moved"], f"{name}: 2 steps of fit changed no weight"
        assert entry["max_diff"] < 1e-4, (name, entry["max_diff"])
    assert report["fsrcnn"]["subpixel_diff"] < 1e-4
    # The paper-size parameter counts hold on JAX too (pinned from the layer tables).
    assert report["fusion"]["params"] == fusion.parameter_count_from_table(
        fusion.fusion_small(image_size=32).config)
