"""The report formatting every evaluation task shares: strict JSON, Markdown tables, file names.

A task's report is a dict (``koala.tasks.<family>.evaluator``): ``per_image`` entries that map
each method (baseline first, then the models) to ``{metric: value}``, and ``mean``, the same per
method. Values are Python floats; a PSNR may be ``math.inf`` (identical images), an SSIM None
(image too small for its window). ``metrics.json`` writes inf as the string ``"inf"`` (JSON has
no Infinity) and None as ``null``; Markdown cells write ``inf`` and ``n/a``.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
GRID_PNG = "grid.png"

IMAGE_KEYS = frozenset({"name", "width", "height"})
"""Keys of every per-image entry, which a model name must not take."""

HEADERS = {"psnr": "PSNR", "ssim": "SSIM", "colorfulness": "M", "delta_e00": "ΔE00",
           "psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "psnr_rgb": "PSNR-RGB", "mae": "MAE"}
"""How the Markdown tables head a metric's column."""
DECIMALS = {"psnr": 2, "ssim": 4, "colorfulness": 2, "delta_e00": 2,
            "psnr_y": 2, "ssim_y": 4, "psnr_rgb": 2, "mae": 2}
"""Decimals a metric is printed with (others: 4)."""


def printable(text: str) -> str:
    """``text`` with the bytes of a non-UTF-8 file name (the surrogate escapes of
    ``os.fsdecode``) written as ``\\xe9`` escapes: always encodable, readable, and the same
    for the same bytes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _json_safe(value):
    """``value`` with non-finite floats made JSON-safe (+-inf -> "inf"/"-inf", NaN -> None)
    and every string :func:`printable`."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def to_json(report: dict) -> str:
    """The report as strict JSON text: an infinite PSNR as the string "inf", NaN as null."""
    return json.dumps(_json_safe(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def model_names(paths: Sequence[str | os.PathLike], *,
                reserved: Iterable[str] = IMAGE_KEYS) -> list[str]:
    """Table names for model files: the file stem, made unique.

    Stems that collide (or that a report key already uses, ``reserved``: a task passes its
    baseline's name and its per-image keys) get as many of their folders in front as it takes
    to tell them apart (``run1/model``, ``a/train/best`` vs ``b/train/best``); names still
    equal after that (the same file twice) get ``#2``, ``#3``.
    """
    reserved = frozenset(reserved)
    paths = [pathlib.Path(os.path.abspath(p)) for p in paths]
    stems = [p.stem for p in paths]

    def suffix(p: pathlib.Path, depth: int) -> str:
        return "/".join([*p.parent.parts[len(p.parent.parts) - depth :], p.stem])

    names = []
    for p in paths:
        if stems.count(p.stem) == 1 and p.stem not in reserved:
            names.append(p.stem)
            continue
        others = [q for q in paths if q.stem == p.stem and q != p]
        depth = 1
        while depth < len(p.parent.parts) and any(
                suffix(q, depth) == suffix(p, depth) for q in others):
            depth += 1
        names.append(suffix(p, depth))
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(printable(name if seen[name] == 1 else f"{name}#{seen[name]}"))
    return unique


def check_names(names: Iterable[str], reserved: Iterable[str]) -> None:
    """ValueError when a model's table name is one the report uses for its own keys."""
    clashes = sorted(set(names) & set(reserved))
    if clashes:
        raise ValueError(f"model names {clashes} are reserved; rename them (see model_names)")


def _cell(value, decimals: int) -> str:
    """A metric value for a Markdown cell: fixed decimals, "inf", or "n/a" for None."""
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{decimals}f}"


def cell(value, key: str) -> str:
    """:func:`_cell` with the decimals of metric ``key``."""
    return _cell(value, DECIMALS.get(key, 4))


def _escape(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Markdown table lines; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def per_image_table(report: dict, methods: Sequence[str], key: str, *,
                    extra: tuple[str, str] | None = None) -> list[str]:
    """Markdown table lines: one row per image, one column per method, metric ``key``;
    ``extra = (header, entry key)`` adds a last column read off each entry (colorize: the
    truth's colourfulness)."""
    header = ["image", *map(_escape, methods), *([extra[0]] if extra else [])]
    rows = [[_escape(e["name"]), *(cell(e[m][key], key) for m in methods),
             *([cell(e[extra[1]], key)] if extra else [])]
            for e in report["per_image"]]
    return _table(header, rows)


def markdown_mean_table(report: dict) -> str:
    """The report's ``mean`` as a Markdown table: one row per method (and ``truth``), one
    column per metric; cells a method has no value for are left empty. Works for any task whose
    ``mean`` maps method -> {metric: value}."""
    keys = list(dict.fromkeys(k for values in report["mean"].values() for k in values))
    header = ["method", *(HEADERS.get(k, k) for k in keys)]
    rows = [[_escape(method), *(cell(values[k], k) if k in values else "" for k in keys)]
            for method, values in report["mean"].items()]
    return "\n".join(_table(header, rows)) + "\n"


def model_lines(report: dict, baseline: str, variants: Mapping[str, str]) -> list[str]:
    """The list under a metrics.md title: each model's file, then what the baseline is."""
    models = report.get("models") or {}
    lines = [f"- `{_escape(name)}`: {models.get(name, 'in-memory model')}"
             for name in report["methods"][1:]]
    return [*lines, f"- `{baseline}`: {variants[baseline]}"]


def mean_section(report: dict, title: str = "Mean") -> list[str]:
    """A metrics.md section: ``## title`` and :func:`markdown_mean_table`."""
    return [f"## {title}", "", markdown_mean_table(report).rstrip("\n"), ""]


def _variants_and_skipped(variants: dict, skipped: list[dict]) -> list[str]:
    """The closing sections of metrics.md: the metric variants, then the skipped files."""
    lines = ["## Metric variants", "", *(f"- **{k}**: {v}" for k, v in variants.items())]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- `{_escape(s['path'])}`: {s['reason']}" for s in skipped]
    return lines


def document(lines: list[str], report: dict, variants: dict) -> str:
    """metrics.md text: ``lines``, then the metric variants and the skipped files."""
    return "\n".join([*lines, *_variants_and_skipped(variants, report["skipped"])]) + "\n"
