"""The embedder: grayscale preprocessing, batching, weights loading and its loud failures."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import smooth_image

from koala.core.errors import WeightsError
from koala.ops import color
from koala.ops.embedder import Embedder, build_classifier


def test_preprocess_sees_only_the_grayscale(mobilenet_none):
    rgb = smooth_image(224, 224, 0)
    lab = color.srgb_to_lab(rgb / 255.0)
    gray_rgb = np.round(color.gray_from_l(lab[..., :1]).numpy() * 255).astype(np.uint8)
    a = mobilenet_none.preprocess(tf.constant(rgb[None])).numpy()
    b = mobilenet_none.preprocess(tf.constant(gray_rgb[None])).numpy()
    assert a.shape == (1, 224, 224, 3) and -1.0 <= a.min() and a.max() <= 1.0
    np.testing.assert_array_equal(a[..., 0], a[..., 1])  # replicated
    np.testing.assert_array_equal(a[..., 1], a[..., 2])
    np.testing.assert_allclose(a, b, atol=0.02)  # colour and its gray look the same
    white = mobilenet_none.preprocess(tf.fill([1, 4, 4, 3], tf.constant(255, tf.uint8)))
    np.testing.assert_allclose(white, 1.0, atol=1e-4)


def test_fit_keeps_aspect_and_pads_white(mobilenet_none):
    square = mobilenet_none.fit(smooth_image(20, 80, 1))
    assert square.shape == (224, 224, 3)
    assert np.all(square[0] == 255) and np.all(square[-1] == 255)  # padded rows
    assert not np.all(square[112] == 255)


def test_embed_batches_match_single_images(mobilenet_none):
    squares = np.stack([mobilenet_none.fit(smooth_image(30, 40, i)) for i in range(5)])
    together = mobilenet_none.embed(squares)  # batch_size 4: one full batch, one short one
    assert together.shape == (5, 1000) and together.dtype == np.float32
    np.testing.assert_allclose(together.sum(-1), 1.0, atol=1e-4)
    alone = np.concatenate([mobilenet_none.embed(squares[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert mobilenet_none.embed(squares[:0]).shape == (0, 1000)
    assert not mobilenet_none.model.trainable and not mobilenet_none.model.trainable_weights


def test_local_weights_file_is_loaded(tmp_path, mobilenet_none):
    path = tmp_path / "mobilenet.weights.h5"
    mobilenet_none.model.save_weights(path)
    loaded = Embedder("mobilenet", str(path), batch_size=4)
    squares = np.stack([loaded.fit(smooth_image(30, 40, 7))])
    np.testing.assert_allclose(loaded.embed(squares), mobilenet_none.embed(squares), atol=1e-6)
    assert loaded.describe()["sha256"] and loaded.describe()["bytes"] == path.stat().st_size


def test_imagenet_failure_is_loud_and_names_alternatives(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", offline)
    with pytest.raises(WeightsError) as err:
        build_classifier("mobilenet", "imagenet")
    message = str(err.value)
    assert "never falls back" in message and "--embedder_weights=none" in message
    assert "PATH" in message and "KERAS_HOME" in message


def test_bad_weights_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        build_classifier("mobilenet", str(tmp_path / "missing.h5"))
    junk = tmp_path / "junk.weights.h5"
    junk.write_bytes(b"definitely not HDF5")
    with pytest.raises(WeightsError, match="could not load"):
        build_classifier("mobilenet", str(junk))
    with pytest.raises(ValueError, match="unknown embedder"):
        build_classifier("vgg", "none")


def test_random_weights_are_the_same_in_every_construction(mobilenet_none):
    # Records built with weights=none and inference in another process must agree.
    again = Embedder("mobilenet", "none", batch_size=4)
    squares = np.stack([again.fit(smooth_image(30, 40, 9))])
    np.testing.assert_array_equal(again.embed(squares), mobilenet_none.embed(squares))
