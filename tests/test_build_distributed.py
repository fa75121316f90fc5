"""Distributed record building: N workers each build a hash-chosen part into one folder, then
a merge writes one manifest. Checked against a single build of the same folder: the same
examples, counts and skipped files; parts disjoint, deterministic and independent of each
other; the merge refusing missing, unfinished, mismatched or mixed parts; the merged folder
read by the pipelines and verified; the CLI flags."""

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import make_photo_folder, smooth_image, write_image

from koala.core.errors import CorruptShardError, RecordsError
from koala.data import build, features, pipelines, records

REPO = pathlib.Path(__file__).resolve().parent.parent
WORKERS = 3


def config(tmp_path, out="dist", **kw):
    base = dict(input_dir=str(tmp_path / "photos"), output_dir=str(tmp_path / out),
                image_size=32, embedder="mobilenet", embedder_weights="none", batch_size=4,
                examples_per_shard=2, val_fraction=0.3, progress=False)
    base.update(kw)
    return build.BuildConfig(**base)


def build_parts(tmp_path, embedder=None, workers=WORKERS, indices=None, **kw):
    results = []
    for i in range(workers) if indices is None else indices:
        result = build.build(config(tmp_path, num_workers=workers, worker_index=i, **kw),
                             embedder=embedder)
        assert result.ok, result.message
        results.append(result)
    return results


def names_in(files):
    names = []
    for f in files:
        comp = "GZIP" if str(f).endswith(".gz") else ""
        for s in tf.data.TFRecordDataset(str(f), compression_type=comp):
            ex = tf.train.Example.FromString(s.numpy())
            names.append(ex.features.feature[features.NAME].bytes_list.value[0].decode())
    return sorted(names)


def examples_in(files):
    """{name: tf.train.Example}: compared field by field (protobuf does not promise the same
    serialized bytes for the same map in another process)."""
    out = {}
    for f in files:
        for s in tf.data.TFRecordDataset(str(f)):
            ex = tf.train.Example.FromString(s.numpy())
            out[ex.features.feature[features.NAME].bytes_list.value[0].decode()] = ex
    return out


def fingerprints(directory, skip=()):
    """{relative path: (sha256, mtime_ns)} of every file, but those whose name contains any
    of ``skip``."""
    out = {}
    for p in sorted(pathlib.Path(directory).rglob("*")):
        rel = p.relative_to(directory).as_posix()
        if p.is_file() and not any(s in rel for s in skip):
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    good, bad = make_photo_folder(root / "photos", n_good=12)
    return root, good, bad


@pytest.fixture(scope="module")
def single(photos, mobilenet_none):
    root, _, _ = photos
    result = build.build(config(root, out="single"), embedder=mobilenet_none)
    assert result.ok, result.message
    return result.manifest


def test_parts_and_merge_match_a_single_build(photos, single, mobilenet_none, tmp_path):
    root, good, bad = photos
    shutil.copytree(root / "photos", tmp_path / "photos")
    parts = build_parts(tmp_path, mobilenet_none)
    out = tmp_path / "dist"
    assert not (out / "manifest.json").exists(), "workers write part manifests only"

    # Each part holds exactly the images part_of() gives it, and the parts are disjoint.
    seen = []
    for i, result in enumerate(parts):
        tag = f"w{i:05d}-of-{WORKERS:05d}"
        assert (out / f"manifest-{tag}.json").exists()
        files = sorted(out.glob(f"*-{tag}-*.tfrecord"))
        assert sorted(s["file"] for s in result.manifest["shards"]) == [f.name for f in files]
        inputs = sorted(n for n in good + bad if build.part_of(n, WORKERS) == i)
        assert result.manifest["total_inputs"] == len(inputs)
        mine = names_in(files)
        assert mine == sorted(set(inputs) - set(bad))
        seen += mine
    assert sorted(seen) == good  # disjoint (no repeats) and complete

    merged = build.merge(str(out))
    m = merged.manifest
    assert merged.ok, merged.message
    assert json.loads((out / "manifest.json").read_text()) == m
    assert m["counts"] == single["counts"] and m["total_inputs"] == single["total_inputs"]
    assert m["num_workers"] == WORKERS and len(m["parts"]) == WORKERS
    assert [s["path"] for s in m["skipped"]] == bad  # each bad file once, with its reason
    assert ({s["path"]: s["reason"] for s in m["skipped"]}
            == {s["path"]: s["reason"] for s in single["skipped"]})
    assert names_in(out.glob("*.tfrecord")) == names_in((root / "single").glob("*.tfrecord"))
    assert {s["file"] for s in m["shards"]} == {f.name for f in out.glob("*.tfrecord")}
    assert m["embedder"]["dim"] == 1000 and m["groups"] == single["groups"]
    assert m["bytes_per_example"]["embedding"] == 2000

    # The merged folder reads like a single build: resolve, verify, both pipelines.
    for split in build.SPLITS:
        recs = records.resolve(out, split)
        assert recs.num_records == m["counts"][split] > 0
        records.verify(recs)
        ds = pipelines.colorization_dataset(out, split=split, batch_size=4, training=False)
        assert sum(int(ab.shape[0]) for _, ab in ds) == m["counts"][split]
    rgb = pipelines.rgb_dataset(out, patch_size=16, batch_size=4, training=False)
    assert sum(int(b.shape[0]) for b in rgb) == m["counts"]["train"]


def test_rebuilding_one_part_leaves_the_others_untouched(photos, mobilenet_none, tmp_path):
    root, _, _ = photos
    shutil.copytree(root / "photos", tmp_path / "photos")
    build_parts(tmp_path, mobilenet_none)
    out = tmp_path / "dist"
    assert build.merge(str(out)).ok
    others = fingerprints(out, skip=("w00001-of-00003", "manifest.json"))
    victim = sorted(out.glob("*-w00001-of-00003-*.tfrecord"))
    before = examples_in(victim)

    with pytest.raises(RecordsError, match="w00001-of-00003.*--resume"):
        build_parts(tmp_path, mobilenet_none, indices=[1])
    build_parts(tmp_path, mobilenet_none, indices=[1], overwrite=True)
    assert not (out / "manifest.json").exists(), "the stale merged manifest is removed"
    # Deterministic: the same examples (names and every field) in the same shard files.
    again = sorted(out.glob("*-w00001-of-00003-*.tfrecord"))
    assert [f.name for f in again] == [f.name for f in victim]
    assert examples_in(again) == before and before
    assert fingerprints(out, skip=("w00001-of-00003", "manifest.json")) == others
    assert build.merge(str(out)).ok

    # Deleting a part's files and building it again: the other parts still untouched.
    for p in out.glob("*w00002-of-00003*"):
        p.unlink()
    shutil.rmtree(out / ".build" / "w00002-of-00003")
    with pytest.raises(RecordsError, match="w00002-of-00003 missing"):
        build.merge(str(out))
    others = fingerprints(out, skip=("w00002-of-00003", "manifest.json"))
    build_parts(tmp_path, mobilenet_none, indices=[2])
    assert fingerprints(out, skip=("w00002-of-00003", "manifest.json")) == others
    # Resuming a finished part writes no shard again.
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")}
    build_parts(tmp_path, mobilenet_none, indices=[0], resume=True)
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tfrecord")} == stamps
    assert build.merge(str(out)).ok


def test_merge_refuses_missing_unfinished_and_mismatched_parts(photos, tmp_path):
    root, _, _ = photos
    shutil.copytree(root / "photos", tmp_path / "photos")
    rgb = dict(groups=("rgb",))
    build_parts(tmp_path, indices=[0, 2], **rgb)
    out = tmp_path / "dist"
    with pytest.raises(RecordsError, match=r"part w00001-of-00003 missing$"):
        build.merge(str(out))
    with pytest.raises(RecordsError, match="w00003-of-00004 missing"):
        build.merge(str(out), num_workers=4)  # "w00000-of-00004" etc. are missing too

    # A part with other settings (here max_side) is named with the difference.
    build_parts(tmp_path, indices=[1], max_side=40, **rgb)
    with pytest.raises(RecordsError, match=r"w00001-of-00003 built with other settings "
                                           r"\(max_side: 40 vs 1024\)"):
        build.merge(str(out))
    # ... and so is one that saw another input folder.
    write_image(tmp_path / "photos" / "late" / "extra.png", smooth_image(30, 30, 99))
    build_parts(tmp_path, indices=[1], overwrite=True, **rgb)
    with pytest.raises(RecordsError, match=r"w00001-of-00003 built with other settings "
                                           r"\(input_files: 16 vs 15"):
        build.merge(str(out))
    (tmp_path / "photos" / "late" / "extra.png").unlink()

    # A killed part (state, maybe shards, no part manifest) is unfinished.
    build_parts(tmp_path, indices=[1], overwrite=True, **rgb)
    (out / "manifest-w00001-of-00003.json").unlink()
    with pytest.raises(RecordsError, match="w00001-of-00003 unfinished"):
        build.merge(str(out))
    build_parts(tmp_path, indices=[1], resume=True, **rgb)
    assert build.merge(str(out)).ok

    # A shard that no part lists (here: a single build's) would be read: refused.
    stray = out / "train-00000-of-00001.tfrecord"
    shutil.copy(next(out.glob("train-w00000-*.tfrecord")), stray)
    with pytest.raises(RecordsError, match="shards no part lists.*train-00000-of-00001"):
        build.merge(str(out))
    stray.unlink()
    # A shard of a finished part that has gone is named.
    gone = next(out.glob("val-w00002-*.tfrecord"))
    gone.rename(tmp_path / gone.name)
    with pytest.raises(RecordsError, match=f"w00002-of-00003 damaged.*{gone.name}"):
        build.merge(str(out))
    (tmp_path / gone.name).rename(gone)
    assert build.merge(str(out)).ok


def test_single_builds_and_parts_do_not_mix(photos, tmp_path):
    root, _, _ = photos
    shutil.copytree(root / "photos", tmp_path / "photos")
    rgb = dict(groups=("rgb",))
    assert build.build(config(tmp_path, out="one", **rgb)).ok
    with pytest.raises(RecordsError, match="single"):
        build.build(config(tmp_path, out="one", num_workers=2, **rgb))
    assert build.merge(str(tmp_path / "one")).message.startswith("nothing to merge")

    build_parts(tmp_path, workers=2, **rgb)
    with pytest.raises(RecordsError, match="another --num_workers.*w00000-of-00002"):
        build.build(config(tmp_path, num_workers=3, **rgb))
    with pytest.raises(RecordsError, match="distributed build"):
        build.build(config(tmp_path, resume=True, **rgb))
    # A single build with --overwrite replaces the parts, all of them.
    result = build.build(config(tmp_path, overwrite=True, **rgb))
    assert result.ok and "parts" not in result.manifest
    # Only the parts' empty lock files stay (koala.core.io.exclusive: never removed, so two
    # processes can't lock two files of one name).
    assert {p.name for p in (tmp_path / "dist").glob("*w0000*")} <= {
        ".lock-w00000-of-00002", ".lock-w00001-of-00002", ".lock-w00000-of-00003"}
    assert not [p for p in (tmp_path / "dist").glob("*w0000*") if p.stat().st_size]
    assert not (tmp_path / "dist" / ".build" / "w00000-of-00002").exists()


def test_corrupt_shard_in_one_part_is_named(photos, tmp_path):
    root, _, _ = photos
    shutil.copytree(root / "photos", tmp_path / "photos")
    build_parts(tmp_path, groups=("rgb",), compression="gzip")
    out = tmp_path / "dist"
    assert build.merge(str(out)).ok
    records.verify(records.resolve(out, None))
    victim = sorted(out.glob("train-w00002-*.tfrecord.gz"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptShardError, match=victim.name):
        records.verify(records.resolve(out, None))
    with pytest.raises(CorruptShardError, match=victim.name):
        pipelines.rgb_dataset(out, patch_size=16, training=False)


def test_parts_through_tf_io_gfile(photos):
    """The output folder as a non-local tf.io.gfile URL (ram://: in-process, like gs://)."""
    root, good, _ = photos
    out = "ram://koala-dist-test/records"
    for i in range(2):
        cfg = dataclasses.replace(config(root, groups=("rgb",)), output_dir=out,
                                num_workers=2, worker_index=i)
        assert build.build(cfg).ok
    m = build.merge(out).manifest
    assert sum(m["counts"].values()) == len(good)
    recs = records.resolve(out, "train")
    records.verify(recs)
    assert recs.num_records == m["counts"]["train"]
    assert names_in(records.resolve(out, None).files) == good
    tf.io.gfile.rmtree("ram://koala-dist-test")


def test_part_of_is_a_stable_even_split_independent_of_the_split():
    names = [f"dir/img{i}.jpg" for i in range(3000)]
    parts = [build.part_of(n, 3) for n in names]
    assert parts == [build.part_of(n, 3) for n in names]
    assert all(900 < parts.count(i) < 1100 for i in range(3))
    val = [p for n, p in zip(names, parts, strict=True) if build.split_of(n, 0.1) == "val"]
    assert all(60 < val.count(i) < 140 for i in range(3))  # each part gets its share of val
    assert all(build.part_of(n, 1) == 0 for n in names)


def test_worker_flags_are_validated():
    with pytest.raises(ValueError, match="worker_index"):
        build.BuildConfig(input_dir="a", output_dir="b", num_workers=3, worker_index=3)
    with pytest.raises(ValueError, match="num_workers"):
        build.BuildConfig(input_dir="a", output_dir="b", num_workers=0)
    assert build.BuildConfig(input_dir="a", output_dir="b", num_workers=1).part == ""


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "koala.build_records", *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)


def test_cli_worker_and_merge(photos, tmp_path):
    root, good, bad = photos
    out = tmp_path / "out"
    common = [f"--input_dir={root / 'photos'}", f"--output_dir={out}", "--groups=rgb",
              "--examples_per_shard=2", "--val_fraction=0.3", "--noprogress"]
    # Two subprocesses (~5 s each); the flag validators were checked by hand (see the README).
    proc = _cli(*common, "--num_workers=2", "--worker_index=1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "part w00001-of-00002" in proc.stdout and "--merge" in proc.stdout
    part = json.loads((out / "manifest-w00001-of-00002.json").read_text())
    assert part["flags"]["num_workers"] == 2 and part["flags"]["worker_index"] == 1
    # Part 0 through the library (with the CLI's defaults), then the merge through the CLI.
    cfg = build.BuildConfig(input_dir=str(root / "photos"), output_dir=str(out),
                            groups=("rgb",), examples_per_shard=2, val_fraction=0.3,
                            progress=False, num_workers=2, worker_index=0)
    assert build.build(cfg).ok
    proc = _cli("--merge", f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "train=" in proc.stdout and "from 2 parts" in proc.stdout
    m = json.loads((out / "manifest.json").read_text())
    assert sum(m["counts"].values()) == len(good) and len(m["skipped"]) == len(bad)
