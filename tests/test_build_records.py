"""build_records end to end on tmp folders of good and bad files: counts, manifest, shards,
split stability, resume after a simulated kill, refusal to mix settings, the CLI."""

import dataclasses
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_main, lock_holder, make_photo_folder, smooth_image, write_image

from koala.core.errors import KoalaError, RecordsError
from koala.data import build, features

REPO = pathlib.Path(__file__).resolve().parent.parent


def config(tmp_path, **kw):
    base = dict(input_dir=str(tmp_path / "photos"), output_dir=str(tmp_path / "records"),
                image_size=32, embedder="mobilenet", embedder_weights="none", batch_size=4,
                examples_per_shard=2, val_fraction=0.3, progress=False)
    base.update(kw)
    return build.BuildConfig(**base)


def read_names(records_dir):
    names = []
    for f in sorted(tf.io.gfile.glob(os.path.join(records_dir, "*.tfrecord*"))):
        comp = "GZIP" if f.endswith(".gz") else ""
        for s in tf.data.TFRecordDataset(f, compression_type=comp):
            ex = tf.train.Example.FromString(s.numpy())
            names.append(ex.features.feature[features.NAME].bytes_list.value[0].decode())
    return sorted(names)


def test_build_counts_manifest_and_skips(tmp_path, mobilenet_none):
    good, bad = make_photo_folder(tmp_path / "photos")
    result = build.build(config(tmp_path), flags={"x": 1}, embedder=mobilenet_none)
    m = result.manifest
    assert result.ok, result.message
    assert m["counts"]["train"] + m["counts"]["val"] == len(good)
    assert sorted(s["path"] for s in m["skipped"]) == bad
    assert all(s["reason"] for s in m["skipped"])
    assert read_names(tmp_path / "records") == good
    assert m["embedder"]["name"] == "mobilenet" and m["embedder"]["weights"] == "none"
    assert m["embedder"]["dim"] == 1000 and m["flags"] == {"x": 1}
    assert m["koala_version"] and m["total_inputs"] == len(good) + len(bad)
    for shard in m["shards"]:
        path = tmp_path / "records" / shard["file"]
        assert path.stat().st_size == shard["bytes"]
        assert build.file_sha256(str(path)) == shard["sha256"]
        assert sum(1 for _ in tf.data.TFRecordDataset(str(path))) == shard["records"]
        assert shard["file"].startswith(shard["split"] + "-")
    per = m["bytes_per_example"]
    assert per["embedding"] == 2000  # 1000 float16
    assert 0 < per["color_fields"] < 10_000 and per["rgb"] > 0
    assert not list((tmp_path / "records").glob(".*.tmp"))


def test_split_is_stable_when_images_are_added(tmp_path, mobilenet_none):
    make_photo_folder(tmp_path / "photos", n_good=6, with_bad=False)
    first = build.build(config(tmp_path), embedder=mobilenet_none)
    split_before = {n: build.split_of(n, 0.3) for n in read_names(tmp_path / "records")}
    for i in range(5):
        write_image(tmp_path / "photos" / "added" / f"new{i}.png", smooth_image(40, 40, 100 + i))
    second = build.build(config(tmp_path, output_dir=str(tmp_path / "r2")),
                         embedder=mobilenet_none)
    assert sum(second.manifest["counts"].values()) == sum(first.manifest["counts"].values()) + 5
    val_names = set()
    for f in (tmp_path / "r2").glob("val-*.tfrecord"):
        for s in tf.data.TFRecordDataset(str(f)):
            ex = tf.train.Example.FromString(s.numpy())
            val_names.add(ex.features.feature[features.NAME].bytes_list.value[0].decode())
    for name, split in split_before.items():
        assert (name in val_names) == (split == "val")


def test_split_of_is_a_deterministic_fraction():
    names = [f"dir/img{i}.jpg" for i in range(2000)]
    val = [n for n in names if build.split_of(n, 0.1) == "val"]
    assert 150 < len(val) < 250
    assert val == [n for n in names if build.split_of(n, 0.1) == "val"]
    assert all(build.split_of(n, 0.0) == "train" for n in names)


def test_resume_after_a_kill_keeps_finished_shards(tmp_path, mobilenet_none, monkeypatch):
    make_photo_folder(tmp_path / "photos", n_good=6, with_bad=False)
    commits = []
    real_commit = build._ShardWriter.commit

    def commit_then_die(self):
        if len(commits) == 1:  # the second shard: killed while writing it
            raise KeyboardInterrupt("simulated kill")
        commits.append(self.final)
        return real_commit(self)

    monkeypatch.setattr(build._ShardWriter, "commit", commit_then_die)
    with pytest.raises(KeyboardInterrupt):
        build.build(config(tmp_path), embedder=mobilenet_none)
    monkeypatch.setattr(build._ShardWriter, "commit", real_commit)
    out = tmp_path / "records"
    finished = pathlib.Path(commits[0])
    assert finished.exists() and not (out / "manifest.json").exists()
    left = list(out.glob(".*.tmp"))
    assert left, "the killed shard is left under its temporary name"
    assert all(f".{os.getpid()}.tmp" in p.name for p in left)  # unique to its process
    (out / ".train-00000-of-00009.tfrecord.tmp").write_bytes(b"")  # an older koala's name
    stamp = finished.stat().st_mtime_ns

    with pytest.raises(RecordsError, match="--resume"):
        build.build(config(tmp_path), embedder=mobilenet_none)
    rebuilt = []
    monkeypatch.setattr(build._ShardWriter, "commit",
                        lambda self: rebuilt.append(self.final) or real_commit(self))
    result = build.build(config(tmp_path, resume=True), embedder=mobilenet_none)
    assert result.ok
    assert finished.stat().st_mtime_ns == stamp, "a finished shard was rewritten"
    assert str(finished) not in rebuilt and len(rebuilt) == len(result.manifest["shards"]) - 1
    assert not list(out.glob(".*.tmp"))
    assert len(read_names(out)) == 6
    # A second resume has nothing left to do.
    rebuilt.clear()
    assert build.build(config(tmp_path, resume=True), embedder=mobilenet_none).ok
    assert rebuilt == []


def test_resume_with_different_settings_is_refused(tmp_path, mobilenet_none):
    make_photo_folder(tmp_path / "photos", n_good=3, with_bad=False)
    build.build(config(tmp_path), embedder=mobilenet_none)
    with pytest.raises(RecordsError, match="image_size"):
        build.build(config(tmp_path, resume=True, image_size=48), embedder=mobilenet_none)
    result = build.build(config(tmp_path, overwrite=True, image_size=48), embedder=mobilenet_none)
    assert result.ok and result.manifest["image_size"] == 48


def test_exit_verdicts(tmp_path, mobilenet_none):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"junk")
    result = build.build(config(tmp_path), embedder=mobilenet_none)
    assert not result.ok and "no usable image" in result.message
    good, bad = make_photo_folder(tmp_path / "photos", n_good=2)
    result = build.build(config(tmp_path, overwrite=True, max_skipped_fraction=0.2),
                         embedder=mobilenet_none)
    assert not result.ok and "max_skipped_fraction" in result.message
    assert sum(result.manifest["counts"].values()) == 2  # the good ones are still written


def test_rgb_only_gzip_and_max_side(tmp_path):
    photos = tmp_path / "photos"
    write_image(photos / "big.png", smooth_image(60, 90, 1))
    write_image(photos / "small.jpg", smooth_image(20, 30, 2), quality=95)
    result = build.build(config(tmp_path, groups=("rgb",), compression="gzip", max_side=45,
                                val_fraction=0.0))
    assert result.ok and result.manifest["embedder"] is None
    files = sorted((tmp_path / "records").glob("*.tfrecord.gz"))
    assert files and all(f.name.startswith("train-") for f in files)
    sizes = {}
    for f in files:
        for s in tf.data.TFRecordDataset(str(f), compression_type="GZIP"):
            ex = features.parse(s, ["rgb"])
            assert features.L not in ex
            img = features.decode_rgb(ex[features.RGB]).numpy()
            sizes[ex[features.NAME].numpy().decode()] = img.shape
            assert img.shape[:2] == (ex[features.RGB_HEIGHT], ex[features.RGB_WIDTH])
    assert sizes == {"big.png": (30, 45, 3), "small.jpg": (20, 30, 3)}


def test_passthrough_keeps_the_source_jpeg_bytes(tmp_path):
    photos = tmp_path / "photos"
    write_image(photos / "a.jpg", smooth_image(40, 50, 3), quality=90)
    build.build(config(tmp_path, groups=("rgb",), val_fraction=0.0))
    (f,) = (tmp_path / "records").glob("train-*")
    ex = features.parse(next(iter(tf.data.TFRecordDataset(str(f)))), ["rgb"])
    assert ex[features.RGB].numpy() == (photos / "a.jpg").read_bytes()


def test_grayscale_source_is_flagged_and_colourless(tmp_path, mobilenet_none):
    photos = tmp_path / "photos"
    gray = smooth_image(40, 40, 5)[..., 0]
    write_image(photos / "g.png", gray)
    build.build(config(tmp_path, val_fraction=0.0), embedder=mobilenet_none)
    (f,) = (tmp_path / "records").glob("train-*")
    ex = features.parse(next(iter(tf.data.TFRecordDataset(str(f)))), ["color", "rgb"])
    assert int(ex[features.WAS_GRAYSCALE]) == 1
    ab = features.decode_ab(ex[features.AB]).numpy()
    assert np.abs(ab).max() <= 1.0  # neutral: only quantisation of the tiny Lab residue


def test_a_name_that_is_not_utf8_is_built_skipped_and_resumed(tmp_path):
    """Issue 19: a file name that is not valid UTF-8 (Latin-1 b"caf\\xe9") crashed the split
    hash. It is hashed by its bytes and recorded escaped; a UTF-8 name keeps its split."""
    photos = tmp_path / "photos"
    photos.mkdir()
    odd = os.fsdecode(b"caf\xe9.png")  # "caf\udce9.png", as os.walk gives it
    try:
        write_image(photos / odd, smooth_image(30, 40, 7))
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses a file name that is not UTF-8")
    (photos / os.fsdecode(b"bad\xff.jpg")).write_bytes(b"junk")
    write_image(photos / "plain.png", smooth_image(30, 40, 8))
    cfg = config(tmp_path, groups=("rgb",), val_fraction=0.0)
    result = build.build(cfg)
    assert result.ok, result.message
    assert read_names(tmp_path / "records") == ["caf\\xe9.png", "plain.png"]
    assert [s["path"] for s in result.manifest["skipped"]] == ["bad\\xff.jpg"]
    json.dumps(result.manifest, ensure_ascii=False).encode("utf-8")  # printable everywhere
    # Resuming reads the name back from the state files: nothing is rebuilt.
    shards = sorted((tmp_path / "records").glob("train-*"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    assert build.build(dataclasses.replace(cfg, resume=True)).ok
    assert [p.stat().st_mtime_ns for p in shards] == stamps
    assert build.split_of(odd, 0.5) in build.SPLITS and 0 <= build.part_of(odd, 3) < 3
    for name in ("plain.png", "dir/img1.jpg", "\u00e9t\u00e9.png"):  # the hash of before
        h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
        assert build.split_of(name, 0.5) == ("val" if h / 2.0**64 < 0.5 else "train")


def test_config_validation():
    with pytest.raises(ValueError, match="fit"):
        build.BuildConfig(input_dir="a", output_dir="b", fit="stretch")
    with pytest.raises(ValueError, match="group"):
        build.BuildConfig(input_dir="a", output_dir="b", groups=("colour",))
    with pytest.raises(ValueError, match="exclude"):
        build.BuildConfig(input_dir="a", output_dir="b", resume=True, overwrite=True)


def _cli(*args, cwd=REPO):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, str(REPO / "data_prep" / "build_records.py"), *args],
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_cli_end_to_end(tmp_path):
    good, bad = make_photo_folder(tmp_path / "photos", n_good=3)
    proc = _cli(f"--input_dir={tmp_path / 'photos'}", f"--output_dir={tmp_path / 'out'}",
                "--image_size=32", "--embedder=mobilenet", "--embedder_weights=none",
                "--noprogress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "embedder: mobilenet, weights: none" in proc.stdout
    assert "skipped=3" in proc.stdout and "bytes/example: colour fields" in proc.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["flags"]["embedder"] == "mobilenet"
    assert sum(manifest["counts"].values()) == 3
    # Running it again without --resume or --overwrite is refused with a one-line error.
    again = _cli(f"--input_dir={tmp_path / 'photos'}", f"--output_dir={tmp_path / 'out'}",
                 "--image_size=32", "--embedder=mobilenet", "--embedder_weights=none")
    assert again.returncode == 2 and "--resume" in again.stderr


def test_cli_rejects_bad_flags(tmp_path, capsys):
    assert cli_main("build_records", "--fit=stretch", f"--input_dir={tmp_path}",
                    f"--output_dir={tmp_path / 'o'}") == 2
    assert "--fit" in capsys.readouterr().err
    assert cli_main("build_records", f"--input_dir={tmp_path}") == 2
    assert "--output_dir is required" in capsys.readouterr().err


def test_broken_and_odd_files_from_make_odd_files(tmp_path, mobilenet_none):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_odd_files", REPO / "data_prep" / "make_odd_files.py")
    odd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(odd)
    odd.write_files(tmp_path / "photos")
    result = build.build(config(tmp_path, max_skipped_fraction=0.6), embedder=mobilenet_none)
    assert result.ok, result.message
    assert sorted(s["path"] for s in result.manifest["skipped"]) == sorted(odd.BROKEN)
    assert read_names(tmp_path / "records") == sorted(odd.ODD)
    reasons = {s["path"]: s["reason"] for s in result.manifest["skipped"]}
    assert "limit" in reasons["bomb.png"] and "truncated" in reasons["truncated.jpg"]


def test_a_build_into_a_busy_output_dir_is_refused_until_its_holder_dies(tmp_path):
    make_photo_folder(tmp_path / "photos", n_good=3, with_bad=False)
    out = tmp_path / "records"
    out.mkdir()
    with lock_holder(out) as holder:  # another process building into the same folder
        with pytest.raises(KoalaError, match=rf"in use by another build_records run \(PID "
                                             rf"{holder.pid} "):
            build.build(config(tmp_path, groups=("rgb",)))
        assert not (out / "manifest.json").exists() and not (out / ".build").exists()
        holder.kill()  # a crash: its lock dies with it
        holder.wait(timeout=30)
    assert build.build(config(tmp_path, groups=("rgb",))).ok


def test_a_build_killed_before_its_first_shard_is_started_again_by_a_plain_run(
        tmp_path, monkeypatch):
    make_photo_folder(tmp_path / "photos", n_good=3, with_bad=False)

    def killed(self):
        raise KeyboardInterrupt("simulated kill")

    real_commit = build._ShardWriter.commit
    monkeypatch.setattr(build._ShardWriter, "commit", killed)
    with pytest.raises(KeyboardInterrupt):
        build.build(config(tmp_path, groups=("rgb",)))
    assert (tmp_path / "records" / ".build" / "config.json").exists()
    monkeypatch.setattr(build._ShardWriter, "commit", real_commit)
    assert build.build(config(tmp_path, groups=("rgb",))).ok  # no "pass --resume"
