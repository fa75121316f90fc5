"""Finding and checking shards: what a pipeline reads, and whether its bytes are intact.

TensorFlow reports a damaged TFRecord as ``DataLossError: corrupted record at 49796`` without
naming the file, and ``Dataset.ignore_errors()`` silently drops the rest of the shard. So
koala checks shards itself before reading them (:func:`verify`) and raises
:class:`koala.core.errors.CorruptShardError` naming the file: against the manifest's sha256 when
there is one, else by reading every record once.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os

import tensorflow as tf

from koala.core.errors import CorruptShardError, RecordsError
from koala.data.build.plan import MANIFEST, file_sha256


@dataclasses.dataclass(frozen=True)
class RecordSet:
    files: tuple  # shard paths, sorted
    compression: str  # "" or "GZIP"
    manifest: dict | None  # the manifest.json beside the shards, if any
    manifest_dir: str | None

    @property
    def groups(self) -> tuple:
        return tuple(self.manifest["groups"]) if self.manifest else ()

    @property
    def embedding_dim(self) -> int | None:
        emb = (self.manifest or {}).get("embedder") or {}
        return emb.get("dim")

    @property
    def num_records(self) -> int | None:
        """Record count from the manifest (None when unknown)."""
        if not self.manifest:
            return None
        by_file = {s["file"]: s["records"] for s in self.manifest["shards"]}
        names = [os.path.basename(f) for f in self.files]
        if not all(n in by_file for n in names):
            return None
        return sum(by_file[n] for n in names)


def _load_manifest(directory: str) -> dict | None:
    path = os.path.join(directory, MANIFEST)
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordsError(f"unreadable manifest {path}: {e}") from e


def resolve(source, split: str | None = "train") -> RecordSet:
    """Resolves what a pipeline should read.

    Args:
      source: a records directory (its ``{split}-*`` shards are read), a glob pattern, a
        single shard file, or a list of those.
      split: with a directory, which split to read ("train", "val"); None reads all shards.
    """
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    files, manifest, manifest_dir = [], None, None
    for src in map(str, sources):
        if tf.io.gfile.isdir(src):
            pattern = f"{split}-*.tfrecord*" if split else "*.tfrecord*"
            matched = tf.io.gfile.glob(os.path.join(src, pattern))
            manifest = manifest or _load_manifest(src)
            manifest_dir = manifest_dir or src
        else:
            matched = tf.io.gfile.glob(src)
            if len(matched) and manifest is None:
                manifest_dir = os.path.dirname(matched[0])
                manifest = _load_manifest(manifest_dir)
        if not matched:
            raise RecordsError(f"no shards found for {src!r}"
                               + (f" (split {split!r})" if split else ""))
        files.extend(f for f in matched if not os.path.basename(f).startswith("."))
    files = sorted(set(files))
    gz = [f.endswith(".gz") for f in files]
    if any(gz) and not all(gz):
        raise RecordsError("cannot mix GZIP and uncompressed shards in one pipeline")
    return RecordSet(tuple(files), "GZIP" if gz[0] else "", manifest, manifest_dir)


def _check_file(path: str, compression: str, expected: dict | None) -> str:
    """Returns the path when intact; raises CorruptShardError naming it otherwise."""
    if expected is not None:
        size = tf.io.gfile.stat(path).length
        if size != expected["bytes"]:
            raise CorruptShardError(path, f"{size} bytes, the manifest says {expected['bytes']}")
        if file_sha256(path) != expected["sha256"]:
            raise CorruptShardError(path, "sha256 differs from the manifest")
        return path
    try:
        for _ in tf.data.TFRecordDataset(path, compression_type=compression):
            pass
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise CorruptShardError(path, e.message.split("[Op:")[0].strip()) from None
    return path


def verify(records: RecordSet, threads: int = 4) -> None:
    """Checks every shard; raises CorruptShardError naming the first bad one.

    With a manifest: size and sha256 of each listed shard (a shard the manifest doesn't list
    is read in full). Without: every record is read once, which checks each record's CRC.
    """
    listed = {s["file"]: s for s in (records.manifest or {}).get("shards", [])}
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(_check_file, f, records.compression,
                               listed.get(os.path.basename(f))) for f in records.files]
        for fut in futures:
            fut.result()
