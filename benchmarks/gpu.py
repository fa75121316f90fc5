r"""koala's models on Keras' JAX backend, without TensorFlow: training and inference rates next
to the device's measured bf16 matmul peak. Written for a GPU machine that has JAX but no
TensorFlow (the TensorFlow wheel is too large to bring there); it runs on a CPU too, and says
where it ran.

  python benchmarks/gpu.py [--batch=64] [--steps=5] [--sr_batch=128] [--matmul=8192]

What it prints (one table), on NumPy data of the records' shapes:

  matmul peak     bf16 and float32 (n x n) @ (n x n), jitted, best of 10: TFLOP/s
  fusion train    the paper-size fusion colorizer (regression head, 224 px, MobileNet's
                  1000-d embedding), plain compile/fit with Adam and MSE, images/s, float32 and
                  mixed_bfloat16, --batch images a step
  srcnn / fsrcnn  SRCNN 9-5-5 and FSRCNN(56, 12, 4) x3 on 33 px patches (the papers'), training
                  images/s at --sr_batch
  fusion infer    ms per 224 px image at batch 1 and 32 (predict_on_batch after a warm-up;
                  the seed's claim: under 50 ms per image on a GPU)

Each rate also as a fraction of its FLOP floor: a training step costs ~3x the forward
multiply-adds x 2 FLOPs (forward, and the two backward products), an inference 1x; the floor
is that many FLOPs at the measured matmul peak (the faster of bf16 and float32: bf16 on a
GPU's tensor cores; on a CPU XLA's bf16 matmul can be the slower). Mixed precision is
bfloat16 (``mixed_bfloat16``).

On the GPU machine (no network, no TensorFlow; JAX with CUDA installed): bring this checkout
and wheels of Keras and the few packages it needs that JAX lacks, made on a networked machine
for the target's Python (3.11 here) and platform::

  pip download keras==3.15.1 absl-py rich namex h5py optree -d wheels \
      --python-version 3.11 --only-binary=:all: --platform manylinux2014_x86_64
  # on the GPU machine, from the checkout:
  pip install --no-index --find-links wheels keras absl-py
  KERAS_BACKEND=jax python benchmarks/gpu.py

The device session's limits (koala's device tool: 10 minutes a command, 15 minutes a session,
start-up included) fit one run with the defaults: about 2 minutes on an H100/H200, most of it
XLA compilation. Nothing here imports TensorFlow: koala's portable models
(:mod:`koala.tasks.sr.models`, :mod:`koala.tasks.colorize.models.fusion`'s regression head)
use Keras layers and ``keras.ops`` only (tests/test_jax_backend.py checks it on the CPU).
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # koala from the checkout

# isort: split

import numpy as np
from absl import app, flags

flags.DEFINE_integer("batch", 64, "Fusion training batch (images per step).")
flags.DEFINE_integer("sr_batch", 128, "SRCNN/FSRCNN training batch (33 px patches).")
flags.DEFINE_integer("steps", 5, "Timed steps per measurement (after one warm-up step).")
flags.DEFINE_integer("matmul", 8192, "Side of the bf16 matmul that measures the peak.")
FLAGS = flags.FLAGS


def conv_macs(model) -> int:
    """Multiply-adds of one forward pass of a fixed-size ``model`` for one example: every
    Conv2D (and Dense) layer's output pixels x kernel area x input channels x filters."""
    import keras

    total = 0
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            kh, kw = layer.kernel_size
            total += h * w * kh * kw * layer.input.shape[-1] * c_out
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return int(total)


def matmul_peak(n: int, dtype: str = "bfloat16") -> float:
    """Measured matmul FLOP/s in ``dtype`` (best of 10 jitted n x n products)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), getattr(jnp, dtype))
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(10):
        start = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def train_rate(build, inputs, target, batch: int, steps: int) -> float:
    """Training images/s of plain compile/fit (Adam, MSE): one warm-up step, then ``steps``."""
    import keras

    model = build()
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    x = inputs(batch)
    y = target(batch)
    model.train_on_batch(x, y)  # compiles
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    np.asarray(model.trainable_weights[0])  # wait for the device
    return steps * batch / (time.perf_counter() - start)


def infer_ms(model, x, repeats: int) -> float:
    model.predict_on_batch(x)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.asarray(model.predict_on_batch(x))
        best = min(best, time.perf_counter() - start)
    return 1000 * best / len(next(iter(x.values())) if isinstance(x, dict) else x)


def main(argv):
    del argv
    import jax
    import keras

    from koala.tasks.colorize.models import fusion
    from koala.tasks.sr import models as sr

    if sys.modules.get("tensorflow") is not None:
        print("note: TensorFlow was imported (not needed here)")
    device = jax.devices()[0]
    print(f"device: {device.platform} {getattr(device, 'device_kind', '')} x{len(jax.devices())};"
          f" jax {jax.__version__}, keras {keras.__version__} ({keras.backend.backend()})")
    bf16, f32 = matmul_peak(FLAGS.matmul), matmul_peak(FLAGS.matmul, "float32")
    # The floor uses the faster of the two: on a GPU bf16 (tensor cores); on a CPU without
    # bf16 matmul units XLA's bf16 can be the slower one.
    peak = max(bf16, f32)
    rng = np.random.default_rng(0)

    def fusion_inputs(b):
        return {"l": rng.random((b, 224, 224, 1), np.float32) * 2 - 1,
                "embedding": rng.random((b, 1000), np.float32)}

    rows = [("matmul bf16", f"{bf16 / 1e12:.2f} TFLOP/s", "", ""),
            ("matmul float32", f"{f32 / 1e12:.2f} TFLOP/s", "", "")]
    fusion_macs = conv_macs(fusion.fusion(embedding_dim=1000))
    for policy in ("float32", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        rate = train_rate(lambda: fusion.fusion(embedding_dim=1000), fusion_inputs,
                          lambda b: rng.random((b, 224, 224, 2), np.float32) * 2 - 1,
                          FLAGS.batch, FLAGS.steps)
        floor = peak / (6 * fusion_macs)
        rows.append((f"fusion train 224 px, {policy}", f"{rate:.1f} img/s",
                     f"{floor:.0f} img/s", f"{rate / floor:.1%}"))
    keras.mixed_precision.set_global_policy("float32")
    for name, build, shape_in in (
            ("srcnn 9-5-5 train 33 px", lambda: sr.srcnn_955(scale=3), (33, 33, 1)),
            ("fsrcnn x3 train 33 px", lambda: sr.fsrcnn(scale=3), (11, 11, 1))):
        probe = build()
        shape_out = tuple(probe.compute_output_shape((1, *shape_in))[1:])  # SRCNN: "valid"
        macs = sr.multiply_adds_per_output_pixel(probe) * shape_out[0] * shape_out[1]
        rate = train_rate(build, lambda b, s=shape_in: rng.random((b, *s), np.float32),
                          lambda b, s=shape_out: rng.random((b, *s), np.float32),
                          FLAGS.sr_batch, FLAGS.steps)
        floor = peak / (6 * macs)
        rows.append((name, f"{rate:.0f} img/s", f"{floor:.0f} img/s", f"{rate / floor:.1%}"))
    model = fusion.fusion(embedding_dim=1000)
    for batch in (1, 32):
        ms = infer_ms(model, fusion_inputs(batch), repeats=FLAGS.steps)
        floor_ms = 1000 * 2 * fusion_macs / peak
        rows.append((f"fusion infer 224 px, batch {batch}", f"{ms:.1f} ms/img",
                     f"{floor_ms:.2f} ms/img", f"{floor_ms / ms:.1%}"))
    print(f"\nfusion forward: {fusion_macs / 1e9:.2f} G multiply-adds per 224 px image; "
          f"batches: fusion {FLAGS.batch}, SR {FLAGS.sr_batch}; {FLAGS.steps} timed steps\n")
    print("| measurement | rate | FLOP floor (at the matmul peak) | of the floor |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    app.run(main)
