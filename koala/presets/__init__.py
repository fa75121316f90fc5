"""Presets: trained models shipped inside koala, loaded by name, checked on every load.

``koala/presets/`` holds each preset's ``.keras`` file and ``presets.json``, the index: per
preset its name, family (``sr``, ``colorize``, ``codec``), file, sha256, size, parameters,
scale (SR), whether it is its family's recommended default, how it was trained (data,
command, flagfile, wall time, hardware) and its metrics on ``corpus/val`` next to the
baseline. Every tool's ``--model`` takes a preset name or a path::

    from koala import presets
    model = presets.load("fsrcnn_x3")          # a keras.Model, checked against its sha256
    path = presets.resolve("fsrcnn_x3")        # the verified file, for any loader
    presets.default("sr", scale=2)             # "fsrcnn_x2"

A name that is not in the index is an error listing the names; a missing, truncated or
altered file is an error naming the preset and the problem, never a silent load. Nothing is
ever downloaded. ``python -m koala.presets`` lists them (:mod:`koala.cli.presets`).

This module imports no TensorFlow; :func:`load` imports :mod:`koala.registry` (every koala
layer) and Keras only when called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from koala.core.errors import KoalaError

__all__ = ["DIR", "INDEX", "Preset", "PresetError", "decoding", "default", "embedder_weights",
           "find", "index", "is_name", "load", "resolve", "sha256"]

DIR = Path(__file__).resolve().parent
INDEX = DIR / "presets.json"
FAMILIES = ("sr", "colorize", "codec")


class PresetError(KoalaError):
    """A preset name that isn't shipped, or a preset file that is missing or damaged."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """One entry of ``presets.json`` (``info`` holds the rest: training, metrics, ...)."""

    name: str
    family: str
    file: str
    sha256: str
    size: int
    parameters: int
    scale: int | None = None
    recommended: bool = False
    info: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def path(self, directory: Path = DIR) -> Path:
        return directory / self.file

    @classmethod
    def from_dict(cls, d: dict) -> Preset:
        fields = {f.name for f in dataclasses.fields(cls)} - {"info"}
        missing = {"name", "family", "file", "sha256", "size", "parameters"} - set(d)
        if missing:
            raise PresetError(f"presets.json: entry {d.get('name', '?')!r} lacks "
                              f"{', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in d.items() if k in fields},
                   info={k: v for k, v in d.items() if k not in fields})

    def as_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "info"}
        return {**d, **self.info}


def sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def index(path=INDEX) -> dict[str, Preset]:
    """name -> :class:`Preset`, in the index's order (empty if there is no index)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["presets"]
    except (ValueError, KeyError, TypeError) as e:
        raise PresetError(f"{path} is not a valid preset index ({e})") from e
    return {p.name: p for p in map(Preset.from_dict, entries)}


def is_name(name_or_path) -> bool:
    """Whether ``name_or_path`` is meant as a preset name: no path separator, no suffix, and
    no such file."""
    s = os.fspath(name_or_path)
    return (bool(s) and "/" not in s and os.sep not in s and "." not in s
            and not os.path.exists(s))


def find(name: str, *, family: str | None = None, index_path=INDEX) -> Preset:
    """The preset called ``name`` (of ``family`` if given), or a :class:`PresetError` that
    lists the available names."""
    presets = index(index_path)
    preset = presets.get(name)
    if preset is None or (family is not None and preset.family != family):
        raise _unknown(name, family, presets)
    return preset


def _unknown(name, family, presets) -> PresetError:
    names = [p.name for p in presets.values() if family is None or p.family == family]
    what = f"{family} preset" if family else "preset"
    if preset_of_other := presets.get(name):
        return PresetError(f"{name!r} is a {preset_of_other.family} preset, not a {what}; "
                           f"{family} presets: {', '.join(names) or 'none yet'}")
    return PresetError(f"no {what} called {name!r}; available: {', '.join(names) or 'none yet'}"
                       f" (or give the path of a .keras file)")


def _verify_file(name: str, path: Path, size: int, digest: str) -> Path:
    if not path.is_file():
        raise PresetError(f"preset {name}: its file {path} is missing (reinstall koala "
                          f"or restore it with git checkout)")
    actual = path.stat().st_size
    if actual != size:
        raise PresetError(f"preset {name}: {path} is {actual} bytes, expected "
                          f"{size} (truncated or replaced)")
    got = sha256(path)
    if got != digest:
        raise PresetError(f"preset {name}: {path} fails its sha256 check (altered or "
                          f"damaged: {got[:12]}... instead of {digest[:12]}...)")
    return path


def verify(preset: Preset, directory: Path = DIR) -> Path:
    """The preset's file, after checking it exists and matches its size and sha256."""
    return _verify_file(preset.name, preset.path(directory), preset.size, preset.sha256)


def _named(name_or_path, index_path) -> Preset | None:
    if not is_name(name_or_path):
        return None
    return find(os.fspath(name_or_path), index_path=index_path)


def embedder_weights(name_or_path, *, index_path=INDEX) -> str | None:
    """The embedder weights file shipped with a colorize preset (``embedder_weights`` in its
    entry: file, size, sha256, checked here), so the preset runs offline on a fresh copy;
    None for a path or a preset that ships none (the model's recorded weights apply)."""
    index_path = Path(index_path)
    preset = _named(name_or_path, index_path)
    entry = (preset.info.get("embedder_weights") if preset else None) or None
    if entry is None:
        return None
    path = index_path.parent / entry["file"]
    return os.fspath(_verify_file(preset.name, path, entry["size"], entry["sha256"]))


def decoding(name_or_path, *, index_path=INDEX) -> dict:
    """A colorize preset's default decoding (``{"saturation": s, "temperature": t, "refine":
    r}``, each optional, picked on held-out photos and recorded when it was added); {} for a
    path or a preset without."""
    preset = _named(name_or_path, Path(index_path))
    return dict(preset.info.get("decoding") or {}) if preset else {}


def resolve(name_or_path, *, family: str | None = None, index_path=INDEX) -> str:
    """A loadable file for a preset name (verified) or a path (returned as given)."""
    if not is_name(name_or_path):
        return os.fspath(name_or_path)
    index_path = Path(index_path)
    preset = find(os.fspath(name_or_path), family=family, index_path=index_path)
    return os.fspath(verify(preset, index_path.parent))


def default(family: str, *, scale: int | None = None, index_path=INDEX) -> str:
    """The name of ``family``'s recommended preset (for SR, the one of ``scale``).

    Raises:
      PresetError: none is shipped; the message lists what there is.
    """
    of_family = [p for p in index(index_path).values() if p.family == family]
    presets = [p for p in of_family if scale is None or p.scale == scale]
    chosen = [p for p in presets if p.recommended] or presets
    if not chosen:
        what = f"{family} preset" + (f" for x{scale}" if scale is not None else "")
        have = ", ".join(p.name for p in of_family)
        raise PresetError(f"koala ships no {what} yet ({family} presets: {have or 'none'}); "
                          f"give --model PATH to a trained .keras file")
    return chosen[0].name


def load(name_or_path, *, index_path=INDEX):
    """The ``keras.Model`` of a preset name (sha256-checked) or of a ``.keras`` path."""
    path = resolve(name_or_path, index_path=index_path)
    import keras

    import koala.registry  # noqa: F401  registers every koala layer for deserialisation
    from koala.core import saving

    return saving.load(path, (keras.Model,), "a Keras model")
