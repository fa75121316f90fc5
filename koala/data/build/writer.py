"""Writes one build, or one part of a distributed build: :func:`build` and its
:class:`Builder`.

Per image (in worker threads, :func:`prepare`): load (``koala.ops.images.load_image``:
orientation, CMYK, alpha, 16-bit) -> fit into the model square (``koala.ops.geometry``) -> Lab
(``koala.ops.color``) quantised and PNG-encoded (:func:`encode_color`, in the encoding of
``koala.data.features``) -> the stored RGB, capped at ``max_side``. The main thread embeds the
grayscale squares in batches (``koala.ops.embedder.Embedder``), so the embedder, the expensive
part, is rarely kept waiting, and writes the examples in plan order: shards are byte-identical
whatever the thread timing or process.

A shard is written under a temporary name unique to its process
(``.train-00000-of-00002.tfrecord.<pid>.tmp``), fsynced and renamed when complete; then its
state file (``.build/<shard>.json``: names, size, sha256, skipped files) is written.
``resume=True`` keeps every finished shard whose inputs and settings are unchanged and
rebuilds the rest. The manifest is written last.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
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
from koala.core.io import LOCK_FILE, exclusive, fsync_file
from koala.core.progress import Progress
from koala.data import features
from koala.data.build import plan as plan_lib
from koala.data.build.plan import (
    ANY_SHARD_RE,
    COMPRESSIONS,
    MANIFEST,
    PART_MANIFEST_RE,
    SHARD_RE,
    SPLITS,
    STATE_DIR,
    BuildConfig,
    BuildResult,
    ShardPlan,
    file_sha256,
    listdir,
    part_of,
    plan_shards,
    printable,
    read_json,
    remove_if_present,
    workers_of,
    write_json,
)
from koala.ops import color, geometry
from koala.ops.embedder import Embedder
from koala.ops.images import find_images, load_image

log = logging.getLogger(__name__)

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
    if config.labels_from and "/" not in name:
        return Skipped(name, "not inside a class folder (--labels_from=dirname labels each "
                             "image by its top-level folder)")
    seconds = {}
    t = time.perf_counter()
    try:
        if "://" in path:  # a bucket or cluster file system (the Beam driver's inputs)
            try:
                with tf.io.gfile.GFile(path, "rb") as f:
                    source = f.read()
            except tf.errors.OpError as e:
                return Skipped(name, f"cannot read file: {e.message}")
            img = load_image(source, max_pixels=config.max_pixels, name=path)
        else:
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


def color_fields_of(r: Prepared, vector) -> dict:
    """The colour group's fields of one prepared image and its embedding vector."""
    return {"l_png": r.l_png, "ab_png": r.ab_png,
            "embedding": features.encode_embedding(vector)}


def serialize(r: Prepared, fields: dict, classes: list | None) -> tuple[bytes, dict]:
    """One prepared image as a serialized ``tf.train.Example`` (:func:`features.make_example`)
    and the byte size of each field. ``fields``: its colour fields (:func:`color_fields_of`)
    or {}; ``classes``: the sorted class folders with ``--labels_from=dirname``, else None."""
    rgb = {}
    if r.rgb is not None:
        rgb = {"rgb": r.rgb, "rgb_height": r.rgb_height, "rgb_width": r.rgb_width}
    if classes is not None:
        rgb["label"] = classes.index(r.name.split("/")[0])
    serialized = features.make_example(
        name=printable(r.name), source_height=r.height, source_width=r.width,
        was_grayscale=r.was_grayscale, **fields, **rgb)
    sizes = {k: len(v) for k, v in fields.items()}
    if r.rgb is not None:
        sizes["rgb"] = len(r.rgb)
    sizes["example"] = len(serialized)
    return serialized, sizes


class _ShardWriter:
    """Writes one shard to a temporary name; ``commit`` fsyncs and renames it into place.

    Not ``koala.core.io.atomic_write``: the shard is written record by record over many
    batches through a ``TFRecordWriter`` (which also writes to gs://), and its fixed temporary
    name is what a resumed run finds and removes.
    """

    def __init__(self, output_dir: str, plan: ShardPlan, config: BuildConfig):
        self.plan = plan
        self.final = os.path.join(output_dir, plan.filename(config.compression))
        # Unique per process (.<shard>.<pid>.tmp): two builds never write one temporary file.
        self.tmp = os.path.join(output_dir,
                                f".{plan.filename(config.compression)}.{os.getpid()}.tmp")
        options = tf.io.TFRecordOptions(compression_type=COMPRESSIONS[config.compression])
        self.writer = tf.io.TFRecordWriter(self.tmp, options)
        self.records = 0
        self.skipped = []
        self.bytes = collections.Counter()

    def write(self, serialized: bytes, sizes: dict) -> None:
        self.writer.write(serialized)
        self.records += 1
        self.bytes.update(sizes)

    def abort(self) -> None:
        """Closes and removes the temporary file after a storage error (a full disk): the
        shard is redone by a resumed run, and no partial file is left behind."""
        try:
            self.writer.close()
        except (OSError, tf.errors.OpError):
            pass
        if tf.io.gfile.exists(self.tmp):
            tf.io.gfile.remove(self.tmp)

    def commit(self) -> dict:
        self.writer.close()
        fsync_file(self.tmp)
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


# --- the build -------------------------------------------------------------------------------


class Builder:
    """One build, or one part of a distributed build. ``Builder(config, flags).run()``; see the
    package docstring (:mod:`koala.data.build`)."""

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
        self.classes: list[str] = []  # --labels_from=dirname: the sorted class folders

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
        base = name[1:-4]
        head, _, pid = base.rpartition(".")
        if pid.isdigit():  # .<shard>.<pid>.tmp; older builds wrote .<shard>.tmp
            base = head
        return not self.part or bool(self.own_shard_re.match(base))

    def _prepare_output(self) -> None:
        foreign_parts = self._check_neighbours()
        # A state folder with only its config.json is a build that stopped before its first
        # shard: nothing to keep, so a plain re-run starts it again.
        started = [n for n in listdir(self.state_dir) if n != "config.json"]
        has_build = (foreign_parts or bool(started) or tf.io.gfile.exists(self.manifest_path))
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
        write_json(config_path, self._content())
        if self.part:
            # A part manifest exists only while its part is finished, and a merged manifest
            # would list this part's old shards: both go until this run ends / the next merge.
            remove_if_present(self.manifest_path)
            merged = os.path.join(self.out, MANIFEST)
            if remove_if_present(merged):
                log.warning("removed the merged %s, which this part's run makes stale: run "
                            "--merge again once all parts are finished", merged)
        for name in tf.io.gfile.listdir(self.out):  # leftovers of a killed run
            if self._is_own_tmp(name):
                tf.io.gfile.remove(os.path.join(self.out, name))

    def _check_neighbours(self) -> bool:
        """Refuses to mix a single build with parts, or parts of different worker counts.

        Returns whether a single build with --overwrite must remove a distributed one.
        """
        names = listdir(self.out)
        in_state = listdir(os.path.join(self.out, STATE_DIR))
        tags = plan_lib.part_tags(names, in_state)
        if not self.part:
            if tags and not self.config.overwrite:
                raise RecordsError(
                    f"{self.out} holds parts of a distributed build ({', '.join(sorted(tags))})"
                    f": pass --overwrite to replace them with a single build, or use another "
                    f"--output_dir")
            return bool(tags)
        single = any(SHARD_RE.match(n) for n in names) or "config.json" in in_state
        if not single and MANIFEST in names:  # None: another worker has just removed it
            manifest = read_json(os.path.join(self.out, MANIFEST))
            single = manifest is not None and "parts" not in manifest
        if single:
            raise RecordsError(
                f"{self.out} holds a single (non-distributed) build: build the parts into "
                f"another --output_dir, or delete that build first")
        others = sorted(t for t in tags if workers_of(t) != self.config.num_workers)
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
        state = read_json(self._state_path(plan))
        if state is None:
            return None
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
        try:
            tf.io.gfile.makedirs(self.out)
        except tf.errors.OpError as e:  # a file in the way, a read-only mount, no permission
            raise RecordsError(f"cannot create --output_dir {self.out}: {e.message}") from None
        # One build (or one part of a distributed build) at a time in an output folder.
        lock, who = ((f"{LOCK_FILE}-{self.part}", f"another build_records run of {self.part}")
                     if self.part else (LOCK_FILE, "another build_records run"))
        with exclusive(self.out, who, name=lock):
            return self._run(start)

    def _run(self, start: float) -> BuildResult:
        cfg = self.config
        self._prepare_output()
        found = {p.relative_to(cfg.input_dir).as_posix(): str(p)
                 for p in find_images(cfg.input_dir)}
        paths = found
        if cfg.labels_from:  # from the whole listing: every part numbers classes alike
            self.classes = sorted({name.split("/")[0] for name in found if "/" in name})
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
        ok, message = plan_lib.verdict(manifest, cfg.max_skipped_fraction, cfg.input_dir)
        return BuildResult(manifest, ok, message, dict(self.seconds))

    def _write_shards(self, todo, paths, embedder, bar):
        cfg = self.config
        embed_size = embedder.input_size if embedder else None
        jobs = ((paths[name], name, cfg, embed_size) for plan in todo for name in plan.names)
        with concurrent.futures.ThreadPoolExecutor(cfg.num_threads) as pool:
            results = _bounded_map(pool, prepare, jobs, window=2 * cfg.batch_size)
            for plan in todo:
                writer = _ShardWriter(self.out, plan, cfg)
                try:
                    remaining = len(plan.names)
                    while remaining:
                        n = min(cfg.batch_size, remaining)
                        batch = [next(results) for _ in range(n)]
                        remaining -= n
                        self._write_batch(writer, batch, embedder)
                        bar.update(n)
                    t = time.perf_counter()
                    state = writer.commit()
                except (OSError, tf.errors.OpError):  # a full disk, a lost mount
                    writer.abort()
                    raise
                write_json(self._state_path(plan), state)
                self.seconds["write"] += time.perf_counter() - t
                yield plan, state

    def _write_batch(self, writer: _ShardWriter, batch, embedder) -> None:
        good = [r for r in batch if isinstance(r, Prepared)]
        for r in batch:
            if isinstance(r, Skipped):
                log.warning("skipped %s: %s", printable(r.name), printable(r.reason))
                writer.skipped.append({"path": printable(r.name),
                                       "reason": printable(r.reason)})
        for r in good:
            self.seconds.update(r.seconds)
        color_fields = [{} for _ in good]
        if good and embedder is not None:
            t = time.perf_counter()
            vectors = embedder.embed(np.stack([r.embed_square for r in good]))
            self.seconds["embed"] += time.perf_counter() - t
            color_fields = [color_fields_of(r, v) for r, v in zip(good, vectors, strict=True)]
        t = time.perf_counter()
        for r, fields in zip(good, color_fields, strict=False):
            writer.write(*serialize(r, fields, self.classes if self.config.labels_from else None))
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
        if embedder is not None:
            embedder_info = embedder.describe()
        elif "color" in cfg.groups:
            embedder_info = {"name": cfg.embedder, "weights": cfg.embedder_weights}
        else:
            embedder_info = None
        field_bytes = collections.Counter()
        for s in shards:
            field_bytes.update(s["field_bytes"])
        manifest = make_manifest(cfg, shards, embedder_info, self.classes,
                                 total_inputs=sum(len(p.names) for p in plans),
                                 elapsed=elapsed, flags=self.flags, field_bytes=field_bytes)
        if self.part:  # what merge() checks and sums
            manifest["part"] = {"tag": self.part, "worker_index": cfg.worker_index,
                                "num_workers": cfg.num_workers, "input_files": len(found),
                                "input_listing_sha256": plan_lib.listing_digest(found)}
            manifest["content"] = self._content()
            manifest["field_bytes"] = dict(field_bytes)
        write_json(self.manifest_path, manifest)
        return manifest


def make_manifest(cfg: BuildConfig, shards: list[dict], embedder_info: dict | None,
                  classes: list, *, total_inputs: int, elapsed: float, flags: dict,
                  field_bytes: dict, skipped: list | None = None, **extra) -> dict:
    """The manifest of a finished build: ``shards`` are the shard states (file, split,
    records, bytes, sha256), in order; ``field_bytes`` the bytes of each field over all
    examples; ``skipped`` defaults to the states' own lists (the local driver keeps them per
    shard). Both drivers (this module's and :mod:`koala.data.build.beam`) write this."""
    counts = {s: sum(x["records"] for x in shards if x["split"] == s) for s in SPLITS}
    if skipped is None:
        skipped = [x for s in shards for x in s["skipped"]]
    return {
        "koala_version": koala.__version__,
        "schema_version": features.SCHEMA_VERSION,
        "created": plan_lib.now(),
        "input_dir": os.path.abspath(cfg.input_dir),
        "groups": list(cfg.groups),
        "image_size": cfg.image_size,
        "fit": cfg.fit,
        "max_side": cfg.max_side,
        "compression": cfg.compression,
        "embedder": embedder_info,
        **({"classes": list(classes)} if cfg.labels_from else {}),
        "counts": counts,
        "total_inputs": total_inputs,
        "skipped": skipped,
        "bytes_per_example": plan_lib.per_example(field_bytes, sum(counts.values()),
                                                  cfg.groups),
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
        "config": cfg.as_dict(),
        "flags": flags,
        **extra,
    }


def build(config: BuildConfig, flags: dict | None = None, embedder=None) -> BuildResult:
    """Runs one build, or one part of a distributed one; see :class:`Builder`.

    ``embedder``: an already built :class:`koala.ops.embedder.Embedder` to reuse (tests,
    benchmarks); by default one is built from the config's embedder name and weights.
    """
    return Builder(config, flags, embedder).run()
