"""Builds sharded TFRecords from a folder of images (the library behind
``data_prep/build_records.py``).

Pipeline, per image: load (``koala.ops.images.load_image``: orientation, CMYK, alpha, 16-bit) ->
fit into the model square (``koala.ops.geometry``) -> Lab (``koala.ops.color``) quantised and
PNG-encoded (``koala.data.features``) -> embedding of the grayscale, computed in batches by
``koala.ops.embedder.Embedder`` -> the stored RGB, capped at ``max_side``.

Robustness:
  * A bad image is skipped and reported (path and reason, in the manifest), never fatal.
  * The train/val split of an image is a hash of its relative path: stable across re-runs and
    when images are added.
  * Shards are written under a temporary name, fsynced and renamed when complete, then a small
    per-shard state file records their checksum. ``resume=True`` keeps every finished shard
    whose inputs and settings are unchanged, and rebuilds the rest. No final shard is ever
    half-written.
  * ``manifest.json`` (written atomically, last) lists counts, shards with record counts and
    sha256, skipped files, the embedder and weights, all flags and the koala version.

Decoding runs in a thread pool (Pillow releases the GIL) while the main thread runs the
embedder, so the embedder, the expensive part, is rarely kept waiting.

Distributed builds (``num_workers > 1``): worker ``i`` of ``N`` builds the images whose
:func:`part_of` (a hash of the relative path, like the split) is ``i``, so each worker decides
alone, the parts are disjoint, their union is the single build's input, and adding images
moves no other image between parts. All workers write into the same ``output_dir`` (a local or
shared folder, or a ``tf.io.gfile`` URL such as ``gs://``), each touching only files tagged
with its part, ``w00001-of-00003``:

  * shards ``train-w00001-of-00003-00000-of-00002.tfrecord``: they match ``train-*`` like a
    single build's, so :func:`koala.data.records.resolve` reads the merged result unchanged;
  * state in ``.build/w00001-of-00003/``, and, written last, ``manifest-w00001-of-00003.json``
    (the part manifest: a finished part has one, a running or killed one has none).

:func:`merge` then checks that all ``N`` parts are finished, consistent (same settings, same
input listing) and alone in the folder, and writes the one ``manifest.json`` over all shards.
A worker's run deletes a merged ``manifest.json`` it would make stale; run the merge again.
With ``num_workers == 1`` (the default) a build is a single build, exactly as before.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import datetime
import hashlib
import io
import itertools
import json
import logging
import os
import re
import time

import numpy as np
import tensorflow as tf
from PIL import Image

import koala
from koala.core.errors import ImageError, RecordsError
from koala.core.progress import Progress
from koala.data import features
from koala.ops import color, geometry
from koala.ops.embedder import Embedder
from koala.ops.images import DEFAULT_MAX_PIXELS, find_images, load_image

log = logging.getLogger(__name__)

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
                  "jpeg_quality", "max_pixels")


@dataclasses.dataclass(frozen=True)
class BuildConfig:
    """Everything a build needs. ``data_prep/build_records.py`` maps its flags onto this."""

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

    def __post_init__(self):
        object.__setattr__(self, "groups", features.check_groups(self.groups))
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
            (0 <= self.worker_index < self.num_workers,
             f"worker_index must be in [0, num_workers={self.num_workers})"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def content(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items() if k in CONTENT_FIELDS}

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


def split_of(name: str, val_fraction: float) -> str:
    """'train' or 'val', decided by a hash of the relative path (stable, order-free)."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return "val" if h / 2.0**64 < val_fraction else "train"


def part_of(name: str, num_workers: int) -> int:
    """The worker (0 .. num_workers - 1) that builds ``name`` in a distributed build.

    A hash of the relative path, salted so that it is independent of :func:`split_of`: each
    part gets its share of both splits. Adding or removing images moves no other image.
    """
    h = int.from_bytes(hashlib.sha256(f"part:{name}".encode()).digest()[:8], "big")
    return h % num_workers


def listing_digest(names) -> str:
    """sha256 of the sorted relative paths: the parts of one build must all see the same."""
    return hashlib.sha256("\n".join(sorted(names)).encode("utf-8")).hexdigest()


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


# --- small file helpers (tf.io.gfile, so a bucket path works like a local one) --------------


def _atomic_write_text(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with tf.io.gfile.GFile(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: str) -> None:
    if "://" in path:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- per-image work (runs in worker threads) -------------------------------------------------


@dataclasses.dataclass
class Prepared:
    name: str
    height: int
    width: int
    was_grayscale: bool
    l_png: bytes | None = None
    ab_png: bytes | None = None
    embed_square: np.ndarray | None = None  # (embedder size, ..., 3) uint8
    rgb: bytes | None = None
    rgb_height: int = 0
    rgb_width: int = 0
    seconds: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Skipped:
    name: str
    reason: str


def _encode_rgb(rgb: np.ndarray, codec: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if codec == "png":
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=6)
    else:
        Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def prepare(path: str, name: str, config: BuildConfig, embed_size: int | None):
    """Loads and fits one image. Returns Prepared, or Skipped with the reason."""
    seconds = {}
    t = time.perf_counter()
    try:
        img = load_image(path, max_pixels=config.max_pixels)
    except ImageError as e:
        return Skipped(name, e.reason)
    except Exception as e:  # a loader bug must not end a build of thousands of images
        log.exception("unexpected error loading %s", path)
        return Skipped(name, f"unexpected error: {type(e).__name__}: {e}")
    seconds["decode"] = time.perf_counter() - t
    for w in img.warnings:
        log.warning("%s: %s", name, w)
    out = Prepared(name, img.height, img.width, img.was_grayscale, seconds=seconds)
    if "color" in config.groups:
        t = time.perf_counter()
        square = geometry.fit_square(img.rgb, config.image_size, config.fit)
        out.embed_square = geometry.fit_square(img.rgb, embed_size, config.fit)
        seconds["fit"] = time.perf_counter() - t
        t = time.perf_counter()
        l_png, ab_png = encode_color(square)
        out.l_png, out.ab_png = l_png.numpy(), ab_png.numpy()
        seconds["lab_png"] = time.perf_counter() - t
    if "rgb" in config.groups:
        t = time.perf_counter()
        if img.passthrough and max(img.height, img.width) <= config.max_side:
            out.rgb, (out.rgb_height, out.rgb_width) = img.data, img.rgb.shape[:2]
        else:
            capped = geometry.cap_long_side(img.rgb, config.max_side)
            out.rgb = _encode_rgb(capped, config.rgb_codec, config.jpeg_quality)
            out.rgb_height, out.rgb_width = capped.shape[:2]
        seconds["rgb_encode"] = time.perf_counter() - t
    return out


def _bounded_map(pool, fn, items, window):
    """Like ``pool.map`` (ordered) but with at most ``window`` items in flight (bounded RAM)."""
    it = iter(items)
    pending = collections.deque(pool.submit(fn, *x) for x in itertools.islice(it, window))
    while pending:
        result = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(fn, *nxt))
        yield result


@tf.function(reduce_retracing=True)
def encode_color(square):
    """uint8 (S, S, 3) sRGB -> (L PNG, ab PNG) bytes in the schema's encoding (features)."""
    lab = color.srgb_to_lab(tf.cast(square, tf.float32) / 255.0)
    l_q = tf.clip_by_value(tf.round(lab[..., :1] * features.L_LEVELS_PER_UNIT), 0, 255)
    ab_q = tf.clip_by_value(tf.round(lab[..., 1:]) + features.AB_OFFSET, 0, 255)
    level = features.PNG_COMPRESSION
    return (tf.io.encode_png(tf.cast(l_q, tf.uint8), compression=level),
            tf.io.encode_png(tf.cast(ab_q, tf.uint8), compression=level))


class _ShardWriter:
    """Writes one shard to a temporary name; ``commit`` fsyncs and renames it into place."""

    def __init__(self, output_dir: str, plan: ShardPlan, config: BuildConfig):
        self.plan = plan
        self.final = os.path.join(output_dir, plan.filename(config.compression))
        self.tmp = os.path.join(output_dir, f".{plan.filename(config.compression)}.tmp")
        options = tf.io.TFRecordOptions(compression_type=COMPRESSIONS[config.compression])
        self.writer = tf.io.TFRecordWriter(self.tmp, options)
        self.records = 0
        self.skipped = []
        self.bytes = collections.Counter()

    def write(self, serialized: bytes, sizes: dict) -> None:
        self.writer.write(serialized)
        self.records += 1
        self.bytes.update(sizes)

    def commit(self) -> dict:
        self.writer.close()
        _fsync(self.tmp)
        tf.io.gfile.rename(self.tmp, self.final, overwrite=True)
        return {
            "file": os.path.basename(self.final),
            "split": self.plan.split,
            "records": self.records,
            "bytes": tf.io.gfile.stat(self.final).length,
            "sha256": file_sha256(self.final),
            "names": list(self.plan.names),
            "skipped": self.skipped,
            "field_bytes": dict(self.bytes),
        }


class Builder:
    """One build, or one part of a distributed build. ``Builder(config, flags).run()``; see the
    module docstring."""

    def __init__(self, config: BuildConfig, flags: dict | None = None, embedder=None):
        self.config = config
        self.flags = flags or {}
        if embedder is not None and (embedder.name, embedder.weights, embedder.fit_mode) != (
                config.embedder, config.embedder_weights, config.fit):
            raise ValueError("the embedder passed in must match the config's embedder, "
                             "embedder_weights and fit, which the manifest records")
        self._embedder = embedder
        self.out = config.output_dir
        self.part = config.part
        if self.part:  # touch only this part's files: the other workers share the folder
            self.state_dir = os.path.join(self.out, STATE_DIR, self.part)
            self.manifest_path = os.path.join(self.out, f"manifest-{self.part}.json")
            self.own_shard_re = re.compile(
                rf"^(train|val)-{self.part}-\d{{5}}-of-\d{{5}}\.tfrecord(\.gz)?$")
        else:
            self.state_dir = os.path.join(self.out, STATE_DIR)
            self.manifest_path = os.path.join(self.out, MANIFEST)
            self.own_shard_re = SHARD_RE
        self.seconds = collections.Counter()

    # -- state ------------------------------------------------------------------------------

    def _state_path(self, plan: ShardPlan) -> str:
        return os.path.join(self.state_dir, plan.filename(self.config.compression) + ".json")

    def _content(self) -> dict:
        content = self.config.content()
        if self.part:
            content["num_workers"] = self.config.num_workers
        return content

    def _is_own_tmp(self, name: str) -> bool:
        if not (name.startswith(".") and name.endswith(".tmp")):
            return False
        return not self.part or bool(self.own_shard_re.match(name[1:-4]))

    def _prepare_output(self) -> None:
        foreign_parts = self._check_neighbours()
        has_build = (foreign_parts or tf.io.gfile.exists(self.state_dir)
                     or tf.io.gfile.exists(self.manifest_path))
        config_path = os.path.join(self.state_dir, "config.json")
        what = f"{self.out} (part {self.part})" if self.part else self.out
        if has_build and self.config.overwrite:
            self._remove_build()
        elif has_build and not self.config.resume:
            raise RecordsError(
                f"{what} already holds a build: pass --resume to continue it (finished "
                f"shards are kept) or --overwrite to replace it")
        elif has_build and tf.io.gfile.exists(config_path):
            with tf.io.gfile.GFile(config_path) as f:
                previous = json.load(f)
            changed = {k: (previous.get(k), v) for k, v in self._content().items()
                       if previous.get(k) != v}
            if changed:
                detail = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items())
                raise RecordsError(
                    f"cannot resume {what} with different settings ({detail}); "
                    f"use --overwrite to rebuild it")
        tf.io.gfile.makedirs(self.state_dir)
        _atomic_write_text(config_path, json.dumps(self._content(), indent=2))
        if self.part:
            # A part manifest exists only while its part is finished, and a merged manifest
            # would list this part's old shards: both go until this run ends / the next merge.
            _remove_if_present(self.manifest_path)
            merged = os.path.join(self.out, MANIFEST)
            if _remove_if_present(merged):
                log.warning("removed the merged %s, which this part's run makes stale: run "
                            "--merge again once all parts are finished", merged)
        for name in tf.io.gfile.listdir(self.out):  # leftovers of a killed run
            if self._is_own_tmp(name):
                tf.io.gfile.remove(os.path.join(self.out, name))

    def _check_neighbours(self) -> bool:
        """Refuses to mix a single build with parts, or parts of different worker counts.

        Returns whether a single build with --overwrite must remove a distributed one.
        """
        names = [n.rstrip("/") for n in tf.io.gfile.listdir(self.out)]
        state = os.path.join(self.out, STATE_DIR)
        in_state = ([n.rstrip("/") for n in tf.io.gfile.listdir(state)]
                    if tf.io.gfile.isdir(state) else [])
        tags = {m.group(2) for n in names if (m := ANY_SHARD_RE.match(n)) and m.group(2)}
        tags |= {m.group(1) for n in names if (m := PART_MANIFEST_RE.match(n))}
        tags |= {n for n in in_state if PART_TAG_RE.match(n)}
        if not self.part:
            if tags and not self.config.overwrite:
                raise RecordsError(
                    f"{self.out} holds parts of a distributed build ({', '.join(sorted(tags))})"
                    f": pass --overwrite to replace them with a single build, or use another "
                    f"--output_dir")
            return bool(tags)
        single = any(SHARD_RE.match(n) for n in names) or "config.json" in in_state
        if not single and MANIFEST in names:  # None: another worker has just removed it
            manifest = _read_json(os.path.join(self.out, MANIFEST))
            single = manifest is not None and "parts" not in manifest
        if single:
            raise RecordsError(
                f"{self.out} holds a single (non-distributed) build: build the parts into "
                f"another --output_dir, or delete that build first")
        others = sorted(t for t in tags
                        if int(PART_TAG_RE.match(t).group(2)) != self.config.num_workers)
        if others:
            raise RecordsError(
                f"{self.out} holds parts of a build with another --num_workers "
                f"({', '.join(others)}): use another --output_dir, or delete those parts first")
        return False

    def _remove_build(self) -> None:
        """Deletes this build's files: all of a single build's (parts too), or this part's."""
        for name in tf.io.gfile.listdir(self.out):
            if self.part:
                mine = (self.own_shard_re.match(name) or self._is_own_tmp(name)
                        or name == os.path.basename(self.manifest_path))
            else:
                mine = (ANY_SHARD_RE.match(name) or name == MANIFEST
                        or PART_MANIFEST_RE.match(name) or name.endswith(".tmp"))
            if mine:
                tf.io.gfile.remove(os.path.join(self.out, name))
        tf.io.gfile.rmtree(self.state_dir) if tf.io.gfile.exists(self.state_dir) else None

    def _finished(self, plan: ShardPlan) -> dict | None:
        """The state of a shard that a previous run completed with the same inputs, else None."""
        path = self._state_path(plan)
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path) as f:
            state = json.load(f)
        final = os.path.join(self.out, state["file"])
        if (state["names"] != list(plan.names) or not tf.io.gfile.exists(final)
                or tf.io.gfile.stat(final).length != state["bytes"]
                or file_sha256(final) != state["sha256"]):
            return None
        return state

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> BuildResult:
        cfg = self.config
        start = time.monotonic()
        if not tf.io.gfile.isdir(cfg.input_dir):
            raise RecordsError(f"input_dir {cfg.input_dir} is not a directory")
        tf.io.gfile.makedirs(self.out)
        self._prepare_output()
        found = {p.relative_to(cfg.input_dir).as_posix(): str(p)
                 for p in find_images(cfg.input_dir)}
        paths = found
        if self.part:
            paths = {name: path for name, path in found.items()
                     if part_of(name, cfg.num_workers) == cfg.worker_index}
            log.info("part %s: %d of %d images", self.part, len(paths), len(found))
        plans = plan_shards(paths, cfg)
        states = {}
        todo = []
        for plan in plans:
            state = self._finished(plan) if cfg.resume else None
            if state is not None:
                states[plan] = state
            else:
                todo.append(plan)
        if cfg.resume and states:
            log.info("resuming: %d of %d shards already complete", len(states), len(plans))
        embedder = None
        if "color" in cfg.groups and todo:
            embedder = self._embedder or Embedder(cfg.embedder, cfg.embedder_weights,
                                                  batch_size=cfg.batch_size, fit=cfg.fit)
        total = sum(len(p.names) for p in todo)
        label = f"build_records {self.part}" if self.part else "build_records"
        with Progress(total, label, "img", enabled=cfg.progress) as bar:
            for plan, state in self._write_shards(todo, paths, embedder, bar):
                states[plan] = state
        manifest = self._finalize(plans, states, embedder, time.monotonic() - start, found)
        ok, message = _verdict(manifest, cfg.max_skipped_fraction, cfg.input_dir)
        return BuildResult(manifest, ok, message, dict(self.seconds))

    def _write_shards(self, todo, paths, embedder, bar):
        cfg = self.config
        embed_size = embedder.input_size if embedder else None
        jobs = ((paths[name], name, cfg, embed_size) for plan in todo for name in plan.names)
        with concurrent.futures.ThreadPoolExecutor(cfg.num_threads) as pool:
            results = _bounded_map(pool, prepare, jobs, window=2 * cfg.batch_size)
            for plan in todo:
                writer = _ShardWriter(self.out, plan, cfg)
                remaining = len(plan.names)
                while remaining:
                    n = min(cfg.batch_size, remaining)
                    batch = [next(results) for _ in range(n)]
                    remaining -= n
                    self._write_batch(writer, batch, embedder)
                    bar.update(n)
                t = time.perf_counter()
                state = writer.commit()
                _atomic_write_text(self._state_path(plan), json.dumps(state))
                self.seconds["write"] += time.perf_counter() - t
                yield plan, state

    def _write_batch(self, writer: _ShardWriter, batch, embedder) -> None:
        good = [r for r in batch if isinstance(r, Prepared)]
        for r in batch:
            if isinstance(r, Skipped):
                log.warning("skipped %s: %s", r.name, r.reason)
                writer.skipped.append({"path": r.name, "reason": r.reason})
        for r in good:
            self.seconds.update(r.seconds)
        color_fields = [{} for _ in good]
        if good and embedder is not None:
            t = time.perf_counter()
            vectors = embedder.embed(np.stack([r.embed_square for r in good]))
            self.seconds["embed"] += time.perf_counter() - t
            for fields, r, v in zip(color_fields, good, vectors, strict=False):
                fields.update(l_png=r.l_png, ab_png=r.ab_png,
                              embedding=features.encode_embedding(v))
        t = time.perf_counter()
        for r, fields in zip(good, color_fields, strict=False):
            rgb = {}
            if r.rgb is not None:
                rgb = {"rgb": r.rgb, "rgb_height": r.rgb_height, "rgb_width": r.rgb_width}
            serialized = features.make_example(
                name=r.name, source_height=r.height, source_width=r.width,
                was_grayscale=r.was_grayscale, **fields, **rgb)
            sizes = {k: len(v) for k, v in fields.items()}
            if r.rgb is not None:
                sizes["rgb"] = len(r.rgb)
            sizes["example"] = len(serialized)
            writer.write(serialized, sizes)
        self.seconds["write"] += time.perf_counter() - t

    def _finalize(self, plans, states, embedder, elapsed, found) -> dict:
        cfg = self.config
        shards = [states[p] for p in plans]
        keep = {s["file"] for s in shards}
        for name in tf.io.gfile.listdir(self.out):  # shards of an earlier plan
            if self.own_shard_re.match(name) and name not in keep:
                tf.io.gfile.remove(os.path.join(self.out, name))
        for state_name in tf.io.gfile.listdir(self.state_dir):
            if state_name.endswith(".json") and state_name[:-5] not in keep \
                    and state_name != "config.json":
                tf.io.gfile.remove(os.path.join(self.state_dir, state_name))
        counts = {s: sum(x["records"] for x in shards if x["split"] == s) for s in SPLITS}
        field_bytes = collections.Counter()
        for s in shards:
            field_bytes.update(s["field_bytes"])
        if embedder is not None:
            embedder_info = embedder.describe()
        elif "color" in cfg.groups:
            embedder_info = {"name": cfg.embedder, "weights": cfg.embedder_weights}
        else:
            embedder_info = None
        manifest = {
            "koala_version": koala.__version__,
            "schema_version": features.SCHEMA_VERSION,
            "created": _now(),
            "input_dir": os.path.abspath(cfg.input_dir),
            "groups": list(cfg.groups),
            "image_size": cfg.image_size,
            "fit": cfg.fit,
            "max_side": cfg.max_side,
            "compression": cfg.compression,
            "embedder": embedder_info,
            "counts": counts,
            "total_inputs": sum(len(p.names) for p in plans),
            "skipped": [x for s in shards for x in s["skipped"]],
            "bytes_per_example": _per_example(field_bytes, sum(counts.values()), cfg.groups),
            "precision": {
                "l": "8-bit PNG of round(L*2.55): max round-trip error 0.196 L units",
                "ab": "8-bit 2-channel PNG of round(ab)+128: max round-trip error 0.5",
                "embedding": "float16: relative error <= 4.9e-4",
                "rgb": "source bytes when a plain RGB JPEG/PNG within max_side, else "
                       f"{cfg.rgb_codec.upper()}",
            },
            "shards": [{k: s[k] for k in ("file", "split", "records", "bytes", "sha256")}
                       for s in shards],
            "elapsed_s": round(elapsed, 2),
            "config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in dataclasses.asdict(cfg).items()},
            "flags": self.flags,
        }
        if self.part:  # what merge() checks and sums
            manifest["part"] = {"tag": self.part, "worker_index": cfg.worker_index,
                                "num_workers": cfg.num_workers, "input_files": len(found),
                                "input_listing_sha256": listing_digest(found)}
            manifest["content"] = self._content()
            manifest["field_bytes"] = dict(field_bytes)
        _atomic_write_text(self.manifest_path, json.dumps(manifest, indent=2))
        return manifest


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _remove_if_present(path: str) -> bool:
    """Removes ``path``; False when it was not there (other workers may remove it too)."""
    try:
        tf.io.gfile.remove(path)
        return True
    except tf.errors.NotFoundError:
        return False


def _read_json(path: str) -> dict | None:
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    except (tf.errors.NotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _per_example(field_bytes: dict, examples: int, groups) -> dict:
    """Mean stored bytes per example, per field (and the colour fields together)."""
    n = max(1, examples)
    per_example = {k: round(v / n, 1) for k, v in sorted(field_bytes.items())}
    if "color" in groups:
        per_example["color_fields"] = round(
            sum(field_bytes.get(k, 0) for k in ("l_png", "ab_png", "embedding")) / n, 1)
    return per_example


def _verdict(manifest: dict, max_skipped_fraction: float, where: str) -> tuple[bool, str]:
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


def build(config: BuildConfig, flags: dict | None = None, embedder=None) -> BuildResult:
    """Runs one build, or one part of a distributed one; see :class:`Builder`.

    ``embedder``: an already built :class:`koala.ops.embedder.Embedder` to reuse (tests,
    benchmarks); by default one is built from the config's embedder name and weights.
    """
    return Builder(config, flags, embedder).run()


# --- merging the parts of a distributed build -------------------------------------------------

# Must agree between parts (besides their content config); their input listing must too.
_PART_CHECKS = ("schema_version", "input_files", "input_listing_sha256")


def _describe(value) -> str:
    return value[:12] if isinstance(value, str) and len(value) == 64 else repr(value)


def merge(output_dir: str, num_workers: int | None = None, max_skipped_fraction: float = 0.5,
          flags: dict | None = None) -> BuildResult:
    """Writes ``output_dir/manifest.json`` over the parts of a distributed build.

    Checks that all ``num_workers`` parts (by default: the worker count the parts were built
    with) are finished (part manifest present, its shards present with their sizes), were
    built with the same settings from the same input listing, and that the folder holds no
    shard that no part lists (which a reader would pick up). Otherwise raises RecordsError
    naming every missing, unfinished or mismatched part. The merged manifest has the single
    build's keys (counts, total_inputs, skipped, shards with sha256, ...) plus ``num_workers``
    and ``parts``; ``elapsed_s`` is the slowest part's. A folder holding a finished single
    build has nothing to merge: its manifest is returned unchanged.
    """
    start = time.monotonic()
    out = output_dir
    if not tf.io.gfile.isdir(out):
        raise RecordsError(f"cannot merge: output_dir {out} is not a directory")
    names = [n.rstrip("/") for n in tf.io.gfile.listdir(out)]
    state = os.path.join(out, STATE_DIR)
    in_state = ([n.rstrip("/") for n in tf.io.gfile.listdir(state)]
                if tf.io.gfile.isdir(state) else [])
    tags = {m.group(1) for n in names if (m := PART_MANIFEST_RE.match(n))}
    tags |= {n for n in in_state if PART_TAG_RE.match(n)}
    tags |= {m.group(2) for n in names if (m := ANY_SHARD_RE.match(n)) and m.group(2)}
    worker_counts = sorted({int(PART_TAG_RE.match(t).group(2)) for t in tags})
    if not worker_counts and num_workers in (None, 1):
        manifest = _read_json(os.path.join(out, MANIFEST))
        if manifest is not None and "parts" not in manifest:
            return BuildResult(manifest, True, f"nothing to merge: {out} holds a single build",
                               {})
        raise RecordsError(f"cannot merge: no parts of a distributed build in {out}")
    if num_workers is None:
        if len(worker_counts) > 1:
            raise RecordsError(f"cannot merge: {out} holds parts of builds with "
                               f"{' and '.join(map(str, worker_counts))} workers; pass "
                               f"--num_workers")
        num_workers = worker_counts[0]
    if num_workers < 2:
        raise RecordsError(f"cannot merge: num_workers={num_workers} is not a distributed build")
    present = set(names)
    parts, problems = {}, []
    for i in range(num_workers):
        tag = PART_TAG.format(index=i, count=num_workers)
        part = _read_json(os.path.join(out, f"manifest-{tag}.json"))
        if part is None:
            if tag in tags:
                problems.append(f"part {tag} unfinished (running, killed or failed: rerun "
                                f"it with --resume)")
            else:
                problems.append(f"part {tag} missing")
            continue
        gone = [s["file"] for s in part["shards"] if s["file"] not in present
                or tf.io.gfile.stat(os.path.join(out, s["file"])).length != s["bytes"]]
        if gone:
            problems.append(f"part {tag} damaged ({len(gone)} shards missing or resized, e.g. "
                            f"{gone[0]}: rebuild it with --resume)")
            continue
        parts[i] = part
    # Settings: each part against the one most parts agree with.
    keyed = {i: {**p["content"], **{k: p["part"].get(k, p.get(k)) for k in _PART_CHECKS}}
             for i, p in parts.items()}
    if keyed:
        votes = collections.Counter(json.dumps(v, sort_keys=True) for v in keyed.values())
        reference = json.loads(votes.most_common(1)[0][0])
        for i, values in keyed.items():
            diff = {k for k in set(values) | set(reference) if values.get(k) != reference.get(k)}
            if diff:
                detail = ", ".join(f"{k}: {_describe(values.get(k))} vs "
                                   f"{_describe(reference.get(k))}" for k in sorted(diff))
                problems.append(f"part {parts[i]['part']['tag']} built with other settings "
                                f"({detail})")
    listed = {s["file"] for p in parts.values() for s in p["shards"]}
    expected = {PART_TAG.format(index=i, count=num_workers) for i in range(num_workers)}
    stray = sorted(n for n in names if (m := ANY_SHARD_RE.match(n)) and n not in listed
                   and (m.group(2) not in expected or int(m.group(2)[1:6]) in parts))
    if stray:
        problems.append(f"{len(stray)} shards no part lists (e.g. {stray[0]}; left by another "
                        f"build? delete them)")
    if problems:
        raise RecordsError(f"cannot merge {num_workers} parts in {out}: " + "; ".join(problems))

    ordered = [parts[i] for i in range(num_workers)]
    ref = ordered[0]
    split_rank = {s: k for k, s in enumerate(SPLITS)}
    shards = sorted((s for p in ordered for s in p["shards"]),
                    key=lambda s: (split_rank[s["split"]], s["file"]))
    counts = {s: sum(p["counts"][s] for p in ordered) for s in SPLITS}
    field_bytes = collections.Counter()
    for p in ordered:
        field_bytes.update(p["field_bytes"])
    # A resumed part with nothing left to embed records only the embedder's name and weights.
    embedder = max((p["embedder"] for p in ordered),
                   key=lambda e: len(e) if e else 0) if ref["embedder"] else None
    drop = ("worker_index",)
    manifest = {
        "koala_version": koala.__version__,
        "schema_version": ref["schema_version"],
        "created": _now(),
        "input_dir": ref["input_dir"],
        "groups": ref["groups"],
        "image_size": ref["image_size"],
        "fit": ref["fit"],
        "max_side": ref["max_side"],
        "compression": ref["compression"],
        "embedder": embedder,
        "counts": counts,
        "total_inputs": sum(p["total_inputs"] for p in ordered),
        "skipped": sorted((x for p in ordered for x in p["skipped"]), key=lambda x: x["path"]),
        "bytes_per_example": _per_example(field_bytes, sum(counts.values()), ref["groups"]),
        "precision": ref["precision"],
        "shards": shards,
        "elapsed_s": max(p["elapsed_s"] for p in ordered),
        "config": {k: v for k, v in ref["config"].items() if k not in drop},
        "flags": {k: v for k, v in ref["flags"].items() if k not in drop},
        "num_workers": num_workers,
        "input_files": ref["part"]["input_files"],
        "input_listing_sha256": ref["part"]["input_listing_sha256"],
        "parts": [{"tag": p["part"]["tag"], "manifest": f"manifest-{p['part']['tag']}.json",
                   "created": p["created"], "koala_version": p["koala_version"],
                   "input_dir": p["input_dir"], "counts": p["counts"],
                   "total_inputs": p["total_inputs"], "skipped": len(p["skipped"]),
                   "shards": len(p["shards"]), "elapsed_s": p["elapsed_s"]} for p in ordered],
        "merge": {"seconds": round(time.monotonic() - start, 2), "flags": flags or {}},
    }
    _atomic_write_text(os.path.join(out, MANIFEST), json.dumps(manifest, indent=2))
    ok, message = _verdict(manifest, max_skipped_fraction, ref["input_dir"])
    if ok:
        message = (f"merged {num_workers} parts: {sum(counts.values())} examples, "
                   f"{len(manifest['skipped'])} skipped")
    return BuildResult(manifest, ok, message, {})
