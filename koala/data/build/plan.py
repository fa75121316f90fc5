"""What a build is: its settings (:class:`BuildConfig`), which image goes to which split, part
and shard (:func:`plan_shards`), and the layout of its output folder, shared by the writer
(:mod:`koala.data.build.writer`) and the merge (:mod:`koala.data.build.merge`).

Names are relative posix paths as ``os.walk`` gives them: a name that is not valid UTF-8 holds
surrogate escapes (``os.fsdecode``). Hashes and listings use its bytes (:func:`name_bytes`);
records, manifests and messages carry it escaped (:func:`printable`), so no such name crashes
a build or a reader.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re

import tensorflow as tf

from koala.core.io import atomic_write_json
from koala.core.report import printable  # noqa: F401  (re-exported: the build's names)
from koala.data import features
from koala.ops import geometry
from koala.ops.images import DEFAULT_MAX_PIXELS

__all__ = [
    "ANY_SHARD_RE",
    "COMPRESSIONS",
    "CONTENT_FIELDS",
    "LABELS_FROM",
    "MANIFEST",
    "PART_MANIFEST_RE",
    "PART_TAG",
    "PART_TAG_RE",
    "RGB_CODECS",
    "SHARD_RE",
    "SPLITS",
    "STATE_DIR",
    "BuildConfig",
    "BuildResult",
    "ShardPlan",
    "file_sha256",
    "listing_digest",
    "part_of",
    "plan_shards",
    "split_of",
]

SPLITS = ("train", "val")
MANIFEST = "manifest.json"
STATE_DIR = ".build"
COMPRESSIONS = {"none": "", "gzip": "GZIP"}
RGB_CODECS = ("png", "jpeg")
SHARD_RE = re.compile(r"^(train|val)-\d{5}-of-\d{5}\.tfrecord(\.gz)?$")
# Distributed builds: the part tag ("w00001-of-00003") in shard, state-folder and manifest names.
PART_TAG = "w{index:05d}-of-{count:05d}"
PART_TAG_RE = re.compile(r"^w(\d{5})-of-(\d{5})$")
PART_MANIFEST_RE = re.compile(r"^manifest-(w\d{5}-of-\d{5})\.json$")
ANY_SHARD_RE = re.compile(
    r"^(train|val)-(?:(w\d{5}-of-\d{5})-)?\d{5}-of-\d{5}\.tfrecord(\.gz)?$")

# Config fields that change what is written; a resume with any of them changed is refused.
CONTENT_FIELDS = ("image_size", "fit", "max_side", "groups", "embedder", "embedder_weights",
                  "val_fraction", "examples_per_shard", "compression", "rgb_codec",
                  "jpeg_quality", "max_pixels", "labels_from")
LABELS_FROM = ("dirname",)
"""Where class labels come from: the image's top-level folder (ImageNet-style class folders)."""


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything a build needs. ``koala.cli.build_records`` maps its flags onto this."""

    input_dir: str
    output_dir: str
    image_size: int = 224
    fit: str = "pad"
    max_side: int = 1024
    groups: tuple = ("color", "rgb")
    embedder: str = "inception_resnet_v2"
    embedder_weights: str = "imagenet"
    val_fraction: float = 0.1
    examples_per_shard: int = 256
    compression: str = "none"
    rgb_codec: str = "png"
    jpeg_quality: int = 95
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 16
    num_threads: int = 2
    resume: bool = False
    overwrite: bool = False
    max_skipped_fraction: float = 0.5
    progress: bool = True
    num_workers: int = 1  # > 1: a distributed build, of which this is part worker_index
    worker_index: int = 0
    labels_from: str | None = None  # "dirname": the "label" group from class folders

    def __post_init__(self):
        groups = tuple(g for g in self.groups if g != "label")
        if self.labels_from is not None:
            groups += ("label",)
        object.__setattr__(self, "groups", features.check_groups(groups))
        checks = [
            (self.image_size >= 8, "image_size must be >= 8"),
            (self.fit in geometry.FITS, f"fit must be one of {geometry.FITS}"),
            (self.max_side >= 8, "max_side must be >= 8"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction must be in [0, 1)"),
            (self.examples_per_shard >= 1, "examples_per_shard must be >= 1"),
            (self.compression in COMPRESSIONS, f"compression must be one of {list(COMPRESSIONS)}"),
            (self.rgb_codec in RGB_CODECS, f"rgb_codec must be one of {RGB_CODECS}"),
            (1 <= self.jpeg_quality <= 100, "jpeg_quality must be in [1, 100]"),
            (self.batch_size >= 1 and self.num_threads >= 1, "batch_size, num_threads >= 1"),
            (0.0 <= self.max_skipped_fraction <= 1.0, "max_skipped_fraction must be in [0, 1]"),
            (not (self.resume and self.overwrite), "resume and overwrite exclude each other"),
            (self.num_workers >= 1, "num_workers must be >= 1"),
            (self.labels_from in (None, *LABELS_FROM),
             f"labels_from must be one of {LABELS_FROM} or None"),
            (0 <= self.worker_index < self.num_workers,
             f"worker_index must be in [0, num_workers={self.num_workers})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def as_dict(self) -> dict:
        """All fields, tuples as lists (what a manifest records)."""
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items()}

    def content(self) -> dict:
        return {k: v for k, v in self.as_dict().items() if k in CONTENT_FIELDS}

    @property
    def part(self) -> str:
        """This worker's part tag, "w00001-of-00003"; "" for a single build."""
        if self.num_workers == 1:
            return ""
        return PART_TAG.format(index=self.worker_index, count=self.num_workers)


@dataclasses.dataclass
class BuildResult:
    manifest: dict
    ok: bool
    message: str
    stage_seconds: dict


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    split: str
    index: int
    count: int
    names: tuple  # relative posix paths, in order
    part: str = ""  # the worker's part tag in a distributed build

    def filename(self, compression: str) -> str:
        suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
        part = f"{self.part}-" if self.part else ""
        return f"{self.split}-{part}{self.index:05d}-of-{self.count:05d}{suffix}"


def name_bytes(name: str) -> bytes:
    """The file system's bytes of a name (UTF-8 for a valid one, so its hashes never change)."""
    return name.encode("utf-8", "surrogateescape")


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


def split_of(name: str, val_fraction: float) -> str:
    """'train' or 'val', decided by a hash of the relative path (stable, order-free)."""
    return "val" if _hash64(name_bytes(name)) / 2.0**64 < val_fraction else "train"


def part_of(name: str, num_workers: int) -> int:
    """The worker (0 .. num_workers - 1) that builds ``name`` in a distributed build.

    A hash of the relative path, salted so that it is independent of :func:`split_of`: each
    part gets its share of both splits. Adding or removing images moves no other image.
    """
    return _hash64(b"part:" + name_bytes(name)) % num_workers


def listing_digest(names) -> str:
    """sha256 of the sorted relative paths: the parts of one build must all see the same."""
    return hashlib.sha256(b"\n".join(name_bytes(n) for n in sorted(names))).hexdigest()


def plan_shards(names, config: BuildConfig) -> list[ShardPlan]:
    """Assigns sorted names to splits, then to shards of ``examples_per_shard`` each."""
    by_split = {s: [] for s in SPLITS}
    for name in sorted(names):
        by_split[split_of(name, config.val_fraction)].append(name)
    plans = []
    for split in SPLITS:
        members = by_split[split]
        n = -(-len(members) // config.examples_per_shard)
        for i in range(n):
            chunk = members[i * config.examples_per_shard : (i + 1) * config.examples_per_shard]
            plans.append(ShardPlan(split, i, n, tuple(chunk), config.part))
    return plans


# --- the output folder (tf.io.gfile, so a bucket path works like a local one) ----------------


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: str, obj) -> None:
    """``obj`` as JSON, written atomically (:func:`koala.core.io.atomic_write_json`; a
    tf.io.gfile URL such as gs:// or ram:// through tf.io.gfile). ASCII-escaped: a non-UTF-8
    name in a state file is a lone surrogate, which JSON writes as ``\\udce9`` and reads back
    exactly."""
    atomic_write_json(path, obj, ensure_ascii=True)


def read_json(path: str) -> dict | None:
    """The JSON in ``path``; None when it is missing or torn."""
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    except (tf.errors.NotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def remove_if_present(path: str) -> bool:
    """Removes ``path``; False when it was not there (other workers may remove it too)."""
    try:
        tf.io.gfile.remove(path)
        return True
    except tf.errors.NotFoundError:
        return False


def listdir(folder: str) -> list[str]:
    """Entry names of ``folder`` (gfile marks sub-folders with a trailing "/"); [] if absent."""
    if not tf.io.gfile.isdir(folder):
        return []
    return [n.rstrip("/") for n in tf.io.gfile.listdir(folder)]


def part_tags(names, in_state) -> set[str]:
    """The part tags that a folder's entries (``names``) and state folder (``in_state``) show:
    of shards, part manifests and part state folders."""
    tags = {m.group(2) for n in names if (m := ANY_SHARD_RE.match(n)) and m.group(2)}
    tags |= {m.group(1) for n in names if (m := PART_MANIFEST_RE.match(n))}
    return tags | {n for n in in_state if PART_TAG_RE.match(n)}


def workers_of(tag: str) -> int:
    """The worker count in a part tag: 3 for "w00001-of-00003"."""
    return int(PART_TAG_RE.match(tag).group(2))


# --- the manifest ----------------------------------------------------------------------------


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def per_example(field_bytes: dict, examples: int, groups) -> dict:
    """Mean stored bytes per example, per field (and the colour fields together)."""
    n = max(1, examples)
    means = {k: round(v / n, 1) for k, v in sorted(field_bytes.items())}
    if "color" in groups:
        means["color_fields"] = round(
            sum(field_bytes.get(k, 0) for k in ("l_png", "ab_png", "embedding")) / n, 1)
    return means


def verdict(manifest: dict, max_skipped_fraction: float, where: str) -> tuple[bool, str]:
    """Whether a build (or part, or merge) succeeded, and the one line that says so."""
    total = manifest["total_inputs"]
    skipped = len(manifest["skipped"])
    written = sum(manifest["counts"].values())
    part = manifest.get("part")
    if part and total == 0:  # possible with few images and many workers; merge() judges
        return True, f"part {part['tag']}: no image of {part['input_files']} falls in it"
    if written == 0:
        return False, f"no usable image among {total} files in {where}"
    if skipped / total > max_skipped_fraction:
        return False, (f"{skipped} of {total} images skipped ({skipped / total:.0%}), more "
                       f"than --max_skipped_fraction={max_skipped_fraction}")
    return True, f"wrote {written} examples, skipped {skipped}"
