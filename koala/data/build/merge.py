"""Merges the parts of a distributed build into one ``manifest.json``: :func:`merge`.

Each worker has written its part's shards (``train-w00001-of-00003-00000-of-00002.tfrecord``),
its state (``.build/w00001-of-00003/``) and, last, its part manifest
(``manifest-w00001-of-00003.json``: a finished part has one, a running or killed one has none).
The merge checks that all ``N`` parts are finished, consistent (same settings, same input
listing) and alone in the folder, and writes the one manifest over all shards, which
:func:`koala.data.records.resolve` reads like a single build's.
"""

from __future__ import annotations

import collections
import json
import os
import time

import tensorflow as tf

import koala
from koala.core.errors import RecordsError
from koala.data.build import plan as plan_lib
from koala.data.build.plan import (
    ANY_SHARD_RE,
    MANIFEST,
    PART_TAG,
    SPLITS,
    STATE_DIR,
    BuildResult,
    listdir,
    read_json,
    workers_of,
    write_json,
)

# Must agree between parts (besides their content config); their input listing must too.
_PART_CHECKS = ("schema_version", "input_files", "input_listing_sha256")
# Settings a merged manifest copies from its first part (the others are checked to agree).
_COPIED = ("input_dir", "groups", "image_size", "fit", "max_side",
           "compression")


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
    names = listdir(out)
    tags = plan_lib.part_tags(names, listdir(os.path.join(out, STATE_DIR)))
    worker_counts = sorted({workers_of(t) for t in tags})
    if not worker_counts and num_workers in (None, 1):
        manifest = read_json(os.path.join(out, MANIFEST))
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
    parts, problems = _finished_parts(out, names, tags, num_workers)
    problems += _mismatches(parts)
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
    manifest = _merged_manifest(ordered, flags, time.monotonic() - start)
    write_json(os.path.join(out, MANIFEST), manifest)
    ok, message = plan_lib.verdict(manifest, max_skipped_fraction, ordered[0]["input_dir"])
    if ok:
        message = (f"merged {num_workers} parts: {sum(manifest['counts'].values())} examples, "
                   f"{len(manifest['skipped'])} skipped")
    return BuildResult(manifest, ok, message, {})


def _finished_parts(out: str, names, tags, num_workers: int) -> tuple[dict, list]:
    """{worker index: part manifest} of the finished, intact parts, and the problems of the
    others (missing, unfinished, damaged)."""
    present = set(names)
    parts, problems = {}, []
    for i in range(num_workers):
        tag = PART_TAG.format(index=i, count=num_workers)
        part = read_json(os.path.join(out, f"manifest-{tag}.json"))
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
    return parts, problems


def _mismatches(parts: dict) -> list[str]:
    """Each part whose settings differ from those most parts agree with, with the difference."""
    keyed = {i: {**p["content"], **{k: p["part"].get(k, p.get(k)) for k in _PART_CHECKS}}
             for i, p in parts.items()}
    if not keyed:
        return []
    votes = collections.Counter(json.dumps(v, sort_keys=True) for v in keyed.values())
    reference = json.loads(votes.most_common(1)[0][0])
    problems = []
    for i, values in keyed.items():
        diff = {k for k in set(values) | set(reference) if values.get(k) != reference.get(k)}
        if diff:
            detail = ", ".join(f"{k}: {_describe(values.get(k))} vs "
                               f"{_describe(reference.get(k))}" for k in sorted(diff))
            problems.append(f"part {parts[i]['part']['tag']} built with other settings "
                            f"({detail})")
    return problems


def _merged_manifest(ordered: list[dict], flags: dict | None, seconds: float) -> dict:
    """The single build's manifest keys over all parts, plus ``num_workers`` and ``parts``."""
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
    return {
        "koala_version": koala.__version__,
        "schema_version": ref["schema_version"],
        "created": plan_lib.now(),
        **{k: ref[k] for k in _COPIED},
        "embedder": embedder,
        **({"classes": ref["classes"]} if "classes" in ref else {}),
        "counts": counts,
        "total_inputs": sum(p["total_inputs"] for p in ordered),
        "skipped": sorted((x for p in ordered for x in p["skipped"]), key=lambda x: x["path"]),
        "bytes_per_example": plan_lib.per_example(field_bytes, sum(counts.values()),
                                                  ref["groups"]),
        "precision": ref["precision"],
        "shards": shards,
        "elapsed_s": max(p["elapsed_s"] for p in ordered),
        "config": {k: v for k, v in ref["config"].items() if k not in drop},
        "flags": {k: v for k, v in ref["flags"].items() if k not in drop},
        "num_workers": len(ordered),
        "input_files": ref["part"]["input_files"],
        "input_listing_sha256": ref["part"]["input_listing_sha256"],
        "parts": [{"tag": p["part"]["tag"], "manifest": f"manifest-{p['part']['tag']}.json",
                   "created": p["created"], "koala_version": p["koala_version"],
                   "input_dir": p["input_dir"], "counts": p["counts"],
                   "total_inputs": p["total_inputs"], "skipped": len(p["skipped"]),
                   "shards": len(p["shards"]), "elapsed_s": p["elapsed_s"]} for p in ordered],
        "merge": {"seconds": round(seconds, 2), "flags": flags or {}},
    }
