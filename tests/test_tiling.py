"""koala.core.tiling: the receptive radius read off the layer graph (it agrees with SR's hand
formula from the config, and bounds what an output pixel really depends on), unknown layers,
and the window planner and stitcher (1:1 and x s, alignment, edge padding for "valid")."""

import math
from fractions import Fraction

import keras
import numpy as np
import pytest
import tensorflow as tf

from koala.core import tiling
from koala.tasks.codec import model as codec_models
from koala.tasks.sr import models as sr

# --- Receptive radius ------------------------------------------------------------------------


def sr_config_formula(config) -> int:
    """SR's hand formula, by config (koala.tasks.sr.inference.receptive_radius before the
    graph reader served SR too), in high-res px."""
    if isinstance(config, sr.SRCNNConfig):  # "valid" or "same": (k - 1) / 2 per layer
        return sum((k - 1) // 2 for k in config.kernels)
    if isinstance(config, sr.AutoencoderConfig):  # 2 * depth + 1 layers of 3x3
        return (2 * config.depth + 1) * (sr.AE_KERNEL - 1) // 2
    k = sr.FSRCNN_KERNELS  # low-res px: conv5, m conv3s, the deconvolution; times the scale
    low_res = ((k["feature"] - 1) // 2 + config.m * (k["map"] - 1) // 2
               + math.ceil((k["deconv"] - 1) / 2 / config.scale) + 1)
    return low_res * config.scale


BUILDERS = {sr.SRCNNConfig: sr.build_srcnn, sr.FSRCNNConfig: sr.build_fsrcnn,
            sr.AutoencoderConfig: sr.build_sr_autoencoder}


@pytest.mark.parametrize("config,expected", [
    (sr.SRCNNConfig(), 6),  # 9-1-5, "valid": 4 + 0 + 2
    (sr.SRCNNConfig(kernels=(9, 5, 5)), 8),  # 4 + 2 + 2
    (sr.SRCNNConfig(padding="same"), 6),
    (sr.FSRCNNConfig(), 27),  # x3: (2 + 4 + ceil(4/3) + 1) low-res px
    (sr.FSRCNNConfig(scale=2), 18),  # (2 + 4 + 2 + 1) * 2
    (sr.FSRCNNConfig(m=2, scale=2), 14),
    (sr.FSRCNNConfig(scale=4), 32),  # (2 + 4 + 1 + 1) * 4
    (sr.AutoencoderConfig(), 11),  # 11 layers of 3x3
    (sr.AutoencoderConfig(depth=2), 5),
])
def test_graph_radius_equals_the_sr_config_formula(config, expected):
    model = BUILDERS[type(config)](config)
    assert tiling.receptive_radius(model) == sr_config_formula(config) == expected
    # FSRCNN's radius is in high-res px; the reach itself in low-res px, 1/s apart.
    reach = tiling.reach(model)
    assert reach.step == (1 if config.upsampled_input else Fraction(1, config.scale))


def test_round_overlap_check_tile_check_overlap():
    assert [tiling.round_overlap(r) for r in (0, 6, 8, 27, 66, 18)] == [8, 8, 8, 32, 72, 24]
    assert (tiling.check_tile(None, 4), tiling.check_tile(30, 4), tiling.check_tile(1, 3)) \
        == (None, 28, 3)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="tile"):
            tiling.check_tile(bad)
    assert tiling.check_overlap(47, 46, 4) == 48 and tiling.check_overlap(0, None) == 0
    with pytest.raises(ValueError, match="receptive radius 6 px, got 5"):
        tiling.check_overlap(5, 6)
    with pytest.raises(ValueError, match="radius 0"):
        tiling.check_overlap(-4, None)


def input_reach(model, x, output_px, step=1):
    """Max over the given output pixels of |input px with a non-zero gradient - the output
    pixel's input position (row // step for an x step upsampling)."""
    x = tf.constant(x)
    worst = 0
    for i, j in output_px:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(model(x)[0, i, j])
        rows, cols = np.nonzero(np.abs(tape.gradient(y, x).numpy()[0]).sum(-1))
        worst = max(worst, np.abs(rows - i // step).max(), np.abs(cols - j // step).max())
    return int(worst)


def test_the_radius_bounds_what_an_output_pixel_depends_on():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    # FSRCNN x3 on 24 x 24 low-res: output pixels in every phase of the stride.
    model = sr.fsrcnn_small(scale=3)
    x = rng.uniform(size=(1, 24, 24, 1)).astype(np.float32)
    tight = input_reach(model, x, [(36, 36), (37, 38), (38, 37)], step=3)
    assert tiling.reach(model).radius == 2 + 2 + 3  # conv5, 2 conv3s, deconv9 /3
    assert tight == 2 + 2 + 1  # the deconvolution's tight reach is 1 low-res px, not 3
    # Stride 1 everywhere: the bound is the true reach.
    model = sr.srcnn_small(init="glorot", padding="same")
    x = rng.uniform(size=(1, 40, 40, 1)).astype(np.float32)
    assert input_reach(model, x, [(20, 20)]) == tiling.receptive_radius(model) == 6
    small = codec_models.codec_small()
    x = rng.uniform(size=(1, 64, 64, 1)).astype(np.float32)
    assert input_reach(small.decoder, x, [(32, 32)]) == tiling.receptive_radius(small.decoder) == 8
    # The encoder (stride-2 steps, nearest upsampling, skips): measured 39 against 46.
    x = rng.uniform(size=(1, 128, 128, 3)).astype(np.float32)
    tight = input_reach(small.encoder, x, [(64, 64), (65, 66)])
    assert 39 <= tight <= tiling.receptive_radius(small.encoder) == 46


def test_strided_transposed_rule_bounds_the_true_reach():
    """Impulses through a 1-D Conv2DTranspose of ones: for every kernel k <= 11 and stride
    s <= 5 the reach the reader uses covers the true one (which is 0 to 2 px smaller)."""
    n = 64
    impulses = np.eye(n, dtype=np.float32).reshape(n, n, 1, 1)  # impulse i in batch item i
    for s in range(1, 6):
        for k in range(1, 12):
            layer = keras.layers.Conv2DTranspose(1, (k, 1), strides=(s, 1), padding="same",
                                                 use_bias=False, kernel_initializer="ones")
            hits = np.asarray(layer(impulses))[:, :, 0, 0] != 0  # (input i, output o)
            true = 0
            for o in range(2 * k + 2 * s, s * n - 2 * k - 2 * s):
                ins = np.nonzero(hits[:, o])[0]  # none where k < s leaves gaps
                if ins.size:
                    true = max(true, o // s - ins.min(), ins.max() - o // s)
            rule = tiling.reach(keras.Sequential([keras.Input((None, None, 1)), layer])).radius
            assert true <= rule, (k, s)
            if s == 1 and k % 2:
                assert true == rule == (k - 1) // 2


def test_layers_the_reader_does_not_know_raise_naming_them():
    x = keras.Input((None, None, 2))
    for layer, match in [
        (keras.layers.Cropping2D(1, name="crop"), "Cropping2D 'crop'"),
        (keras.layers.Conv2DTranspose(2, 3, strides=2, padding="valid", name="up"),
         "Conv2DTranspose 'up'.*padding='same'"),
    ]:
        with pytest.raises(tiling.UnknownLayerError, match=match):
            tiling.receptive_radius(keras.Model(x, layer(x)))

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(tiling.UnknownLayerError, match="no functional layer graph"):
        tiling.receptive_radius(Subclassed())
    # Known, with the reach of each interpolation; a nested model counts as its layers.
    up = keras.layers.UpSampling2D(2, interpolation="bicubic")(x)
    assert tiling.reach(keras.Model(x, up)) == tiling.Reach(3, Fraction(1, 2))
    inner = keras.Model(x, keras.layers.Conv2D(2, 5, padding="same")(x))
    outer = keras.Model(x, inner(keras.layers.Conv2D(2, 3, strides=2, padding="same")(x)))
    assert tiling.reach(outer) == tiling.Reach(2 + 2 * 2, 2)  # input px; 3 output px


# --- Windows -----------------------------------------------------------------------------------


def spans(windows):
    return [(w.start, w.stop, w.lo, w.hi, w.pad, w.origin) for w in windows]


def test_plan_one_to_one_scaled_and_padded():
    # 1:1 (the codec): context clipped at the edges; the tile sits at start - lo in the window.
    assert spans(tiling.plan(10, 4, 2)) == [(0, 4, 0, 6, (0, 0), 0), (4, 8, 2, 10, (0, 0), 2),
                                            (8, 10, 6, 10, (0, 0), 6)]
    assert spans(tiling.plan(10, None, 2)) == spans(tiling.plan(10, 16, 2)) \
        == [(0, 10, 0, 10, (0, 0), 0)]
    # x3 (FSRCNN): 7 low-res px, 21 output px in tiles of 9; windows in low-res px.
    assert spans(tiling.plan(7, 9, 1, scale=3)) == [(0, 9, 0, 4, (0, 0), 0),
                                                    (9, 18, 2, 7, (0, 0), 6),
                                                    (18, 21, 5, 7, (0, 0), 15)]
    # "valid" with border 2: padded at image edges only; the output starts border px in.
    assert spans(tiling.plan(12, 4, 2, border=2)) == [(0, 4, 0, 6, (2, 0), 0),
                                                      (4, 8, 2, 10, (0, 0), 4),
                                                      (8, 12, 6, 12, (0, 2), 8)]
    with pytest.raises(ValueError, match="multiples of 4"):
        tiling.plan(12, 6, 4, align=4)
    with pytest.raises(ValueError, match="tile of 6"):
        tiling.plan(12, 4, 2, scale=3, align=2)
    with pytest.raises(ValueError, match="empty"):
        tiling.plan(0, 4, 2)


def test_windows_cover_every_output_pixel_once_with_their_context():
    for size, tile, context, scale in [(50, 12, 5, 1), (37, 9, 4, 3), (8, 4, 0, 2)]:
        windows = tiling.plan(size, tile, context, scale=scale)
        covered = np.concatenate([np.arange(w.start, w.stop) for w in windows])
        np.testing.assert_array_equal(covered, np.arange(scale * size))
        for w in windows:
            assert max(0, w.start // scale - context) == w.lo < w.hi
            assert w.hi == min(size, -(-w.stop // scale) + context)


def blur_upsample(x, scale):
    """A toy model: 3x3 box sum with "valid" padding (border 1), then nearest x scale."""
    h, w = x.shape[0] - 2, x.shape[1] - 2
    box = sum(x[i:i + h, j:j + w] for i in range(3) for j in range(3))
    return np.repeat(np.repeat(box, scale, axis=0), scale, axis=1)


@pytest.mark.parametrize("scale,tile", [(1, 5), (2, 4), (3, 6), (2, None)])
def test_stitch_equals_the_whole_image(scale, tile):
    rng = np.random.default_rng(scale)
    x = rng.integers(0, 100, (23, 17, 2))
    whole = blur_upsample(np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="reflect"), scale)
    seen = []

    def run(rows, cols):
        part = tiling.take(x, rows, cols)
        seen.append(part.shape)
        return blur_upsample(part, scale)

    out = tiling.stitch(23, 17, run, np.zeros_like(whole), tile=tile, context=1, scale=scale,
                        border=1)
    np.testing.assert_array_equal(out, whole)
    if tile is not None:  # bounded windows: tile / scale + 2 context + 2 border at most
        assert len(seen) > 1 and max(max(s[:2]) for s in seen) <= tile // scale + 4
    halves = tiling.stitch(23, 17, run, np.zeros(whole.shape, np.float32), tile=tile,
                           context=1, scale=scale, border=1, convert=lambda t: t / 2)
    np.testing.assert_array_equal(halves, whole / 2)


def test_take_with_an_offset_and_compile_forward():
    x = np.arange(60.0).reshape(6, 10, 1)
    rows, cols = tiling.Window(0, 2, 0, 3, (1, 0)), tiling.Window(4, 6, 4, 7)
    np.testing.assert_array_equal(tiling.take(x, rows, cols)[..., 0],
                                  np.pad(x[0:3, 4:7, 0], ((1, 0), (0, 0)), mode="reflect"))
    np.testing.assert_array_equal(tiling.take(x[:, 2:], rows, cols, offset=(0, 2)),
                                  tiling.take(x, rows, cols))
    model = keras.Sequential([keras.Input((None, None, 1)), keras.layers.Conv2D(1, 1)])
    forward = tiling.compile_forward(model, 1)
    for shape in [(1, 5, 7, 1), (2, 9, 3, 1)]:  # one trace, any size
        x = np.ones(shape, np.float32)
        np.testing.assert_allclose(forward(x), model(x), atol=1e-6)
    assert forward.experimental_get_tracing_count() == 1
