"""build_records --runner=beam: the Apache Beam pipeline (DirectRunner) against the local
driver on one folder of good and bad images; its manifest and shards through records.resolve,
verify and the training pipelines."""

import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_main, make_photo_folder

pytest.importorskip("apache_beam")  # in requirements.txt; an optional extra for users

from koala.data import features, pipelines, records  # noqa: E402

FLAGS = ("--embedder=mobilenet", "--embedder_weights=none", "--image_size=32",
         "--max_side=48", "--val_fraction=0.3", "--examples_per_shard=2", "--batch_size=3",
         "--noprogress")


def examples(folder):
    """{name: (split, parsed fields)} of every shard in ``folder``."""
    spec = features.feature_spec(("color", "rgb"))
    out = {}
    for shard in sorted(tf.io.gfile.glob(f"{folder}/*.tfrecord")):
        split = shard.rsplit("/", 1)[1].split("-")[0]
        for raw in tf.data.TFRecordDataset(shard):
            ex = tf.io.parse_single_example(raw, spec)
            name = ex[features.NAME].numpy().decode()
            assert name not in out, f"{name} written twice"
            out[name] = (split, ex)
    return out


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("beam")
    good, bad = make_photo_folder(root / "photos", n_good=7)
    assert cli_main("build_records", f"--input_dir={root / 'photos'}",
                    f"--output_dir={root / 'local'}", *FLAGS) == 0
    assert cli_main("build_records", f"--input_dir={root / 'photos'}",
                    f"--output_dir={root / 'beam'}", "--runner=beam", *FLAGS) == 0
    return root, good, bad


def test_beam_and_local_builds_hold_the_same_examples(two_builds):
    root, good, bad = two_builds
    local, beam = examples(root / "local"), examples(root / "beam")
    assert sorted(local) == sorted(beam) == sorted(good)
    for name, (split, ex) in local.items():
        beam_split, beam_ex = beam[name]
        assert beam_split == split
        for key in (features.L, features.AB):
            np.testing.assert_array_equal(
                (features.decode_l if key == features.L else features.decode_ab)(ex[key]),
                (features.decode_l if key == features.L else features.decode_ab)(beam_ex[key]))
        np.testing.assert_allclose(features.decode_embedding(ex[features.EMBEDDING]),
                                   features.decode_embedding(beam_ex[features.EMBEDDING]),
                                   rtol=1e-3, atol=1e-6)  # float16 storage
        assert ex[features.RGB].numpy() == beam_ex[features.RGB].numpy()
        for key in (features.SOURCE_HEIGHT, features.SOURCE_WIDTH, features.WAS_GRAYSCALE):
            assert ex[key].numpy() == beam_ex[key].numpy()


def test_the_beam_manifest_is_the_local_one_where_it_matters(two_builds):
    root, _, bad = two_builds
    local = json.loads((root / "local" / "manifest.json").read_text())
    beam = json.loads((root / "beam" / "manifest.json").read_text())
    assert beam["counts"] == local["counts"] and sum(beam["counts"].values()) == 7
    skips = sorted((s["path"], s["reason"]) for s in beam["skipped"])
    assert skips == sorted((s["path"], s["reason"]) for s in local["skipped"])
    assert [p for p, _ in skips] == bad
    assert [s["file"] for s in beam["shards"]] == [s["file"] for s in local["shards"]]
    assert beam["embedder"] == local["embedder"]
    assert beam["bytes_per_example"].keys() == local["bytes_per_example"].keys()
    assert beam["runner"]["name"] == "beam" and "runner" not in local


def test_the_beam_build_feeds_the_training_pipelines(two_builds):
    root, _, _ = two_builds
    rs = records.resolve(str(root / "beam"), split="train")
    records.verify(rs)  # sizes and sha256 as the manifest lists them
    assert rs.num_records == json.loads((root / "beam" / "manifest.json").read_text())[
        "counts"]["train"]
    assert rs.embedding_dim == 1000
    batch = next(iter(pipelines.colorization_dataset(str(root / "beam"), batch_size=2,
                                                     training=False)))
    inputs, target = batch
    assert inputs["l"].shape == (2, 32, 32, 1) and inputs["embedding"].shape == (2, 1000)
    assert target.shape == (2, 32, 32, 2)


def test_beam_refuses_what_belongs_to_the_local_runner(tmp_path, capsys):
    make_photo_folder(tmp_path / "photos", n_good=2, with_bad=False)
    for extra in ("--resume", "--num_workers=2"):
        assert cli_main("build_records", f"--input_dir={tmp_path / 'photos'}",
                        f"--output_dir={tmp_path / 'out'}", "--runner=beam", extra,
                        *FLAGS) == 2
        assert "--runner=local" in capsys.readouterr().err or extra == "--num_workers=2"
    assert cli_main("build_records", f"--input_dir={tmp_path / 'photos'}",
                    f"--output_dir={tmp_path / 'out'}", "--beam_options=--runner=Direct",
                    *FLAGS) == 2
    assert "--runner=beam" in capsys.readouterr().err


def test_beam_reads_photos_from_a_gfile_url(tmp_path):
    """Inputs behind a tf.io.gfile URL (TensorFlow's in-memory ram:// file system standing in
    for gs:// or hdfs://): listed, read and skipped as a local folder's."""
    good, bad = make_photo_folder(tmp_path / "photos", n_good=3)
    url = f"ram://koala-beam-{tmp_path.name}/photos"
    for rel in good + bad:
        tf.io.gfile.makedirs(f"{url}/{rel}".rsplit("/", 1)[0])
        tf.io.gfile.copy(str(tmp_path / "photos" / rel), f"{url}/{rel}")
    assert cli_main("build_records", f"--input_dir={url}", f"--output_dir={tmp_path / 'out'}",
                    "--runner=beam", *FLAGS) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sum(manifest["counts"].values()) == 3 and manifest["total_inputs"] == 6
    assert sorted(s["path"] for s in manifest["skipped"]) == bad
    assert sorted(examples(tmp_path / "out")) == sorted(good)
