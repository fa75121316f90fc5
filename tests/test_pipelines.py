"""tf.data pipelines: shapes and value ranges (eager and inside tf.data), stored precision,
augmentation, SR pairs, corrupt shards named, wrong field groups refused."""

import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_photo_folder
from PIL import Image
from skimage import color as skcolor

from koala.core.errors import CorruptShardError, RecordsError
from koala.data import build, features, pipelines, records
from koala.ops import geometry

SIZE = 32


@pytest.fixture(scope="module")
def record_dir(tmp_path_factory, mobilenet_none):
    root = tmp_path_factory.mktemp("pipes")
    make_photo_folder(root / "photos", n_good=6, with_bad=False)
    cfg = build.BuildConfig(input_dir=str(root / "photos"), output_dir=str(root / "records"),
                            image_size=SIZE, embedder="mobilenet", embedder_weights="none",
                            batch_size=4, examples_per_shard=2, val_fraction=0.0,
                            progress=False)
    assert build.build(cfg, embedder=mobilenet_none).ok
    return root


def first_parsed(record_dir, groups):
    (f, *_) = sorted((record_dir / "records").glob("train-*.tfrecord"))
    serialized = next(iter(tf.data.TFRecordDataset(str(f))))
    return features.parse(serialized, groups)


def test_colorization_batches_shapes_and_ranges(record_dir):
    ds = pipelines.colorization_dataset(record_dir / "records", batch_size=2, training=True,
                                        seed=1)
    spec_x, spec_y = ds.element_spec
    assert spec_x["l"].shape.as_list() == [None, SIZE, SIZE, 1]
    assert spec_x["embedding"].shape.as_list() == [None, 1000]
    assert spec_y.shape.as_list() == [None, SIZE, SIZE, 2]
    n = 0
    for x, ab in ds:
        assert x["l"].dtype == tf.float32 and ab.dtype == tf.float32
        assert -1.0 <= float(tf.reduce_min(x["l"])) and float(tf.reduce_max(x["l"])) <= 1.0
        assert float(tf.reduce_max(tf.abs(ab))) <= 1.0
        assert float(tf.reduce_max(tf.abs(ab))) > 0.05  # the photos are colourful
        np.testing.assert_allclose(tf.reduce_sum(x["embedding"], -1), 1.0, atol=5e-3)
        n += int(ab.shape[0])
    assert n == 6


def test_decode_eager_matches_inside_tf_data(record_dir):
    parsed = first_parsed(record_dir, ["color"])
    eager = pipelines.decode_color_example(parsed, embedding_dim=1000)
    ds = pipelines.colorization_dataset(record_dir / "records", batch_size=1, training=False)
    x, ab = next(iter(ds))
    np.testing.assert_array_equal(x["l"][0], eager["l"])
    np.testing.assert_array_equal(ab[0], eager["ab"])
    np.testing.assert_array_equal(x["embedding"][0], eager["embedding"])


def test_stored_precision_matches_the_documented_bounds(record_dir):
    parsed = first_parsed(record_dir, ["color"])
    name = parsed[features.NAME].numpy().decode()
    rgb = np.asarray(Image.open(record_dir / "photos" / name).convert("RGB"))
    truth = skcolor.rgb2lab(geometry.fit_square(rgb, SIZE, "pad") / 255.0)
    l = features.decode_l(parsed[features.L]).numpy()[..., 0]
    ab = features.decode_ab(parsed[features.AB]).numpy()
    assert np.abs(l - truth[..., 0]).max() <= 100 / 255 / 2 + 1e-3
    assert np.abs(ab - truth[..., 1:]).max() <= 0.5 + 1e-3


def test_padding_is_white(record_dir):
    # img00 is 48x64 (landscape): the top rows of the 32x32 square are white padding.
    parsed = None
    for s in tf.data.TFRecordDataset([str(p) for p in (record_dir / "records").glob("*")
                                      if p.suffix == ".tfrecord"]):
        ex = features.parse(s, ["color"])
        if ex[features.NAME].numpy() == b"img00.jpg":
            parsed = ex
    assert parsed is not None
    l = features.decode_l(parsed[features.L]).numpy()[..., 0]
    ab = features.decode_ab(parsed[features.AB]).numpy()
    assert np.all(np.abs(l[0] - 100) < 0.2) and np.all(np.abs(ab[0]) <= 1)


def test_crop_and_flip_augmentation(record_dir):
    ds = pipelines.colorization_dataset(record_dir / "records", batch_size=3, training=True,
                                        crop_size=24, seed=3)
    x, ab = next(iter(ds))
    assert x["l"].shape[1:] == (24, 24, 1) and ab.shape[1:] == (24, 24, 2)
    example = {"l": tf.reshape(tf.range(16, dtype=tf.float32), [4, 4, 1]),
               "ab": tf.zeros([4, 4, 2]), "embedding": tf.zeros([3])}
    flips = set()
    for _ in range(20):
        out = pipelines.augment_color(example, crop_size=None, training=True)
        flips.add(float(out["l"][0, 0, 0]))
    assert flips == {0.0, 3.0}  # identity or mirrored, nothing else
    centre = pipelines.augment_color(example, crop_size=2, training=False)
    np.testing.assert_array_equal(centre["l"][..., 0], [[5, 6], [9, 10]])


def test_rgb_patches(record_dir):
    ds = pipelines.rgb_dataset(record_dir / "records", patch_size=24, batch_size=2,
                               patches_per_image=2, seed=0)
    batches = list(ds)
    assert sum(int(b.shape[0]) for b in batches) == 12
    for b in batches:
        assert b.shape[1:] == (24, 24, 3) and b.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(b)) and float(tf.reduce_max(b)) <= 1.0


@pytest.mark.parametrize("channels,upsample", [("y", True), ("rgb", False)])
def test_sr_pairs(record_dir, channels, upsample):
    ds = pipelines.sr_dataset(record_dir / "records", scale=3, patch_size=25, batch_size=4,
                              channels=channels, upsample=upsample, patches_per_image=2, seed=0)
    lr, hr = next(iter(ds))
    c = 1 if channels == "y" else 3
    assert hr.shape[1:] == (24, 24, c)  # 25 rounded down to a multiple of 3
    assert lr.shape[1:] == ((24, 24, c) if upsample else (8, 8, c))
    if channels == "y":
        assert 16 / 255 - 1e-4 <= float(tf.reduce_min(hr)) <= float(tf.reduce_max(hr)) \
            <= 235 / 255 + 1e-4
    else:
        np.testing.assert_allclose(lr, pipelines.bicubic_downscale(hr, 3), atol=1e-6)


def test_sr_grid_patches_cover_the_image():
    image = tf.reshape(tf.range(10 * 10 * 3, dtype=tf.float32), [10, 10, 3])
    patches = pipelines.grid_patches(image, 4, 3)  # 3x3 positions
    assert patches.shape == (9, 4, 4, 3)
    np.testing.assert_array_equal(patches[4], image[3:7, 3:7])


def test_sr_random_grid_patches_are_grid_sub_images():
    image = tf.reshape(tf.range(11 * 17 * 3, dtype=tf.float32), [11, 17, 3])
    grid = pipelines.grid_patches(image, 5, 3).numpy()  # 3 x 5 positions
    tf.random.set_seed(1)
    drawn = pipelines.random_grid_patches(image, 5, 3, 200, seed=0).numpy()
    assert drawn.shape == (200, 5, 5, 3)
    # Every draw is one of the grid's sub-images, and 200 draws reach all 15 of them.
    index = [int(np.flatnonzero((grid == d).all(axis=(1, 2, 3)))[0]) for d in drawn]
    assert sorted(set(index)) == list(range(15))
    tf.random.set_seed(1)
    again = pipelines.random_grid_patches(image, 5, 3, 200, seed=0).numpy()
    np.testing.assert_array_equal(drawn, again)


def test_sr_training_with_a_stride_mixes_images(tmp_path):
    # Eight flat photos, each with thousands of grid positions. Streaming every grid patch
    # fills a batch from the 4 photos the interleave has open; sampling the grid per image
    # visit (one sub-image each here) gives a batch from all eight.
    src = tmp_path / "photos"
    src.mkdir()
    values = [20 + 25 * i for i in range(8)]
    for value in values:
        Image.new("RGB", (120, 96), (value, value, value)).save(src / f"p{value}.png")
    cfg = build.BuildConfig(input_dir=str(src), output_dir=str(tmp_path / "rec"),
                            groups=("rgb",), val_fraction=0.0, progress=False)
    assert build.build(cfg).ok
    ds = pipelines.sr_dataset(tmp_path / "rec", scale=3, patch_size=9, stride=1, batch_size=8,
                              patches_per_image=1, shuffle_buffer=8, seed=0, channels="rgb")
    _, hr = next(iter(ds))
    levels = np.round(hr.numpy().reshape(8, -1).mean(axis=1) * 255).astype(int)
    assert sorted(levels) == values


def test_bicubic_downscale_antialiases():
    stripes = tf.tile(tf.constant([[0.0], [1.0]]), [12, 12])[..., None]  # 24x12, period 2
    low = pipelines.bicubic_downscale(stripes[:, :12], 4)
    # Anti-aliased: the period-2 stripes average to grey instead of aliasing to 0 or 1.
    np.testing.assert_allclose(low, 0.5, atol=0.05)


def test_corrupt_shard_is_named(record_dir, tmp_path):
    copy = tmp_path / "records"
    shutil.copytree(record_dir / "records", copy)
    victim = sorted(copy.glob("train-*.tfrecord"))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match=victim.name):
        pipelines.colorization_dataset(copy, batch_size=2)
    # Without a manifest every record is read once: the CRC check names the file too.
    (copy / "manifest.json").unlink()
    with pytest.raises(CorruptShardError, match=victim.name):
        pipelines.colorization_dataset(copy, batch_size=2)
    victim.write_bytes(bytes(data[: len(data) // 3]))  # truncated
    with pytest.raises(CorruptShardError, match=victim.name):
        records.verify(records.resolve(copy))


def test_resolve_patterns_and_errors(record_dir, tmp_path):
    recs = records.resolve(str(record_dir / "records" / "train-*"))
    assert len(recs.files) == 3 and recs.manifest is not None and recs.num_records == 6
    assert recs.embedding_dim == 1000
    with pytest.raises(RecordsError, match="no shards"):
        records.resolve(tmp_path)
    with pytest.raises(RecordsError, match="no shards"):
        records.resolve(record_dir / "records", split="val")


def test_pipeline_refuses_missing_groups(tmp_path):
    photos = tmp_path / "photos"
    make_photo_folder(photos, n_good=2, with_bad=False)
    cfg = build.BuildConfig(input_dir=str(photos), output_dir=str(tmp_path / "rgb"),
                            groups=("rgb",), val_fraction=0.0, progress=False)
    assert build.build(cfg).ok
    with pytest.raises(RecordsError, match="groups"):
        pipelines.colorization_dataset(tmp_path / "rgb")
    assert pathlib.Path(tmp_path / "rgb" / "manifest.json").exists()


def test_stored_rgb_decodes_exactly_like_the_loader(tmp_path):
    from conftest import smooth_image, write_image

    from koala.ops.images import load_image

    photos = tmp_path / "photos"
    write_image(photos / "a.jpg", smooth_image(40, 56, 11), quality=85)
    write_image(photos / "b.png", smooth_image(30, 20, 12))
    cfg = build.BuildConfig(input_dir=str(photos), output_dir=str(tmp_path / "r"),
                            groups=("rgb",), val_fraction=0.0, progress=False)
    assert build.build(cfg).ok
    (f,) = (tmp_path / "r").glob("train-*")
    for s in tf.data.TFRecordDataset(str(f)):
        ex = features.parse(s, ["rgb"])
        name = ex[features.NAME].numpy().decode()
        np.testing.assert_array_equal(features.decode_rgb(ex[features.RGB]),
                                      load_image(photos / name).rgb)


# --- crops from the stored photo (--crops_from=rgb) -------------------------------------------


def test_rgb_crop_is_a_square_of_the_photo_in_lab():
    rng = np.random.default_rng(0)
    photo = rng.uniform(0, 1, (48, 64, 3)).astype(np.float32)
    l, ab = pipelines.rgb_crop_to_lab(tf.constant(photo), crop_size=48, min_fraction=1.0,
                                      seed=3)
    assert l.shape == (48, 48, 1) and ab.shape == (48, 48, 2)
    got = np.concatenate([l.numpy() * 50 + 50, ab.numpy() * 128], -1)
    # The side is the whole short side (min_fraction 1): one of the 17 offsets, maybe flipped.
    errors = []
    for offset in range(17):
        lab = skcolor.rgb2lab(photo[:, offset:offset + 48].astype(np.float64))
        errors += [np.abs(got - lab).max(), np.abs(got - lab[:, ::-1]).max()]
    assert min(errors) < 0.05


def test_rgb_crops_shrink_random_squares_and_vary(record_dir):
    ds = pipelines.colorization_dataset(record_dir / "records", batch_size=6, training=True,
                                        seed=1, crop_size=16, crops_from="rgb",
                                        min_crop_fraction=0.3, whole_image_fraction=0.0,
                                        repeat=True)
    batches = iter(ds)
    x, ab = next(batches)
    assert x["l"].shape == (6, 16, 16, 1) and ab.shape == (6, 16, 16, 2)
    assert float(tf.reduce_max(tf.abs(ab))) <= 1.0 and float(tf.reduce_max(tf.abs(x["l"]))) <= 1
    np.testing.assert_allclose(tf.reduce_sum(x["embedding"], -1), 1.0, atol=5e-3)
    # No white padding in a crop of the photo (the records' squares have some).
    assert float(tf.reduce_max(x["l"])) < 0.99
    x2, _ = next(batches)  # the next epoch: other squares of the same photos
    assert not np.allclose(np.sort(x["l"].numpy().ravel()), np.sort(x2["l"].numpy().ravel()))


def test_whole_image_examples_and_evaluation_are_the_record_resized(record_dir):
    kw = dict(batch_size=6, crop_size=16, crops_from="rgb")
    evaluation = pipelines.colorization_dataset(record_dir / "records", training=False, **kw)
    x, ab = next(iter(evaluation))
    parsed = first_parsed(record_dir, ["color"])
    ex = pipelines.decode_color_example(parsed, embedding_dim=1000)
    want = tf.image.resize(tf.concat([ex["l"], ex["ab"]], -1), [16, 16], "bilinear",
                           antialias=True)
    np.testing.assert_allclose(x["l"][0], want[..., :1], atol=1e-6)
    np.testing.assert_allclose(ab[0], want[..., 1:], atol=1e-6)
    # Training with whole_image_fraction=1: every example is a (maybe flipped) whole image.
    train = pipelines.colorization_dataset(record_dir / "records", training=True, seed=2,
                                           whole_image_fraction=1.0, **kw)
    tx, _ = next(iter(train))
    eval_l = [x["l"][i].numpy() for i in range(6)]
    for i in range(6):
        got = tx["l"][i].numpy()
        assert any(np.allclose(got, e, atol=1e-6) or np.allclose(got[:, ::-1], e, atol=1e-6)
                   for e in eval_l)


def test_rgb_crops_need_the_rgb_group_and_a_crop_size(record_dir, tmp_path, mobilenet_none):
    with pytest.raises(ValueError, match="crop_size"):
        pipelines.colorization_dataset(record_dir / "records", crops_from="rgb")
    with pytest.raises(ValueError, match="crops_from"):
        pipelines.colorization_dataset(record_dir / "records", crops_from="jpeg", crop_size=16)
    make_photo_folder(tmp_path / "photos", n_good=2, with_bad=False)
    cfg = build.BuildConfig(input_dir=str(tmp_path / "photos"), output_dir=str(tmp_path / "r"),
                            image_size=SIZE, embedder="mobilenet", embedder_weights="none",
                            groups=("color",), val_fraction=0.0, progress=False)
    assert build.build(cfg, embedder=mobilenet_none).ok
    with pytest.raises(RecordsError, match="rgb"):
        pipelines.colorization_dataset(tmp_path / "r", crops_from="rgb", crop_size=16)
