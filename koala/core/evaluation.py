"""The one evaluation loop behind every ``koala.evaluate`` task (big_vision's evaluators are
the model: the generic part once, each task its own module with one ``run(config)``).

A task (``koala.tasks.<family>.evaluator``) gives a function that scores one image; this module
does the rest, the same for every task:

* :func:`score_images`: iterates the readable images with a progress bar, lists unreadable
  ones (and those the task skips with :class:`Skip`) as ``{"path", "reason"}`` and stops after
  ``max_images`` scored ones; a task's ``*_report`` function is built on it.
* :func:`evaluate`: checks the inputs (model files exist, the images folder lists at least one
  image), loads the models, runs the task's report, requires one evaluated image at least
  (:class:`NoUsableImagesError`), and writes ``metrics.json``, ``metrics.md`` and the PNGs
  atomically (:func:`koala.core.io.atomic_write`, :func:`koala.ops.grid.save_png`).

It knows no task by name.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from koala import presets
from koala.core import report as fmt
from koala.core.errors import ImageError, KoalaError
from koala.core.io import atomic_write
from koala.core.progress import Progress
from koala.ops import images, metrics
from koala.ops.grid import fit_cell, save_png

SSIM_MIN_SIDE = 11
"""SSIM's Gaussian window is 11x11 (koala.ops.metrics): smaller images have no SSIM."""

ImageCallback = Callable[[str, list[np.ndarray]], None]
"""Called once per evaluated image with its name and the uint8 cells of its grid row."""


class NoUsableImagesError(KoalaError):
    """No image of the evaluation set could be evaluated (the CLI exits 1)."""


class Skip(Exception):
    """Raised by a task's scoring function: list this image as skipped, with ``reason``."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def check_scorable(height: int, width: int, *, crop: int = 0) -> None:
    """Raises :class:`Skip` for an image too thin for SSIM's 11 x 11 window once ``crop`` px
    of border go from each side: its scores would not be comparable with the others' (as
    build_records skips images too small to use)."""
    side = min(height, width) - 2 * crop
    if side < SSIM_MIN_SIDE:
        after = f", {side} px a side after the {crop} px border crop" if crop else ""
        raise Skip(f"too thin to score: {width}x{height} px{after}; SSIM's window needs "
                   f"{SSIM_MIN_SIDE} px a side")


def display_name(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    """``path`` relative to ``root`` (posix), or as given when it isn't under ``root``; the
    bytes of a non-UTF-8 name as ``\\xe9`` escapes (:func:`koala.core.report.printable`),
    so every report can write it."""
    path = pathlib.Path(path)
    if root is not None:
        try:
            return fmt.printable(path.relative_to(root).as_posix())
        except ValueError:
            pass
    return fmt.printable(str(path))


def model_source(name_or_path: str) -> str:
    """How a report names where a model came from: a preset's name as given, a file's absolute
    path."""
    return name_or_path if presets.is_name(name_or_path) else os.path.abspath(name_or_path)


def find_inputs(model_files: Iterable[str], images_dir: str) -> list[pathlib.Path]:
    """Checks that every model file exists (a preset name: that it is shipped and intact),
    then lists the images to evaluate.

    Raises:
      KoalaError: a model file or the images folder is missing; a preset name is unknown
        (the message lists the names) or its file is damaged.
      NoUsableImagesError: the folder holds no image file.
    """
    for path in model_files:
        if presets.is_name(path):
            presets.find(path)  # the loader checks its file's sha256
        elif not os.path.isfile(path):
            raise KoalaError(f"model file not found: {path}")
    paths = images.find_images(images_dir)  # KoalaError when the folder is missing
    if not paths:
        raise NoUsableImagesError(f"no image files in {images_dir}")
    return paths


def score_images(paths: Iterable[str | os.PathLike],
                 score: Callable[[str, np.ndarray], dict], *,
                 root: str | os.PathLike | None = None, max_images: int | None = None,
                 progress: bool = False) -> tuple[list[dict], list[dict]]:
    """The loop: ``score(name, rgb)`` for each readable image, in order.

    ``rgb`` is the uint8 (H, W, 3) image (``koala.ops.images.load_image``), ``name`` its path
    relative to ``root`` (posix; as given when ``root`` is None). ``score`` returns the image's
    per-image entry, or raises :class:`Skip`. Unreadable files are skipped too, and the loop
    goes on; it stops once ``max_images`` entries are scored. The progress bar on stderr ticks
    once per path, scored or skipped.

    Returns:
      ``(per_image, skipped)``: the entries, and ``{"path", "reason"}`` per skipped file.
    """
    paths = list(paths)
    per_image: list[dict] = []
    skipped: list[dict] = []
    with Progress(len(paths), "evaluate", enabled=progress) as bar:
        for path in paths:
            if max_images is not None and len(per_image) >= max_images:
                break
            name = display_name(path, root)
            try:
                rgb = images.load_image(path, name=name).rgb
                per_image.append(score(name, rgb))
            except (ImageError, Skip) as e:  # unreadable, or unusable for this task
                skipped.append({"path": name, "reason": e.reason})
            bar.update()
    return per_image, skipped


def mean(values: Iterable[float | None]) -> float | None:
    """Arithmetic mean of the values that aren't None; None if there are none."""
    present = [v for v in values if v is not None]
    return float(sum(present) / len(present)) if present else None


def means(per_image: Sequence[dict], methods: Iterable[str],
          keys: Sequence[str]) -> dict[str, dict]:
    """``{method: {key: mean over the images of entry[method][key]}}``."""
    return {m: {k: mean(e[m][k] for e in per_image) for k in keys} for m in methods}


def psnr_ssim(truth: np.ndarray, output: np.ndarray) -> dict:
    """PSNR (peak 255) and SSIM (data range 255) of a uint8 (H, W, 3) output against the truth,
    SSIM the mean over channels; for (H, W) images, of the one channel. SSIM is None when a
    side is under 11 px (its Gaussian window doesn't fit)."""
    fits = min(truth.shape[:2]) >= SSIM_MIN_SIDE
    channel_axis = -1 if truth.ndim == 3 else None
    return {
        "psnr": metrics.psnr(truth, output, peak=255.0),
        "ssim": (metrics.ssim(truth, output, data_range=255.0, channel_axis=channel_axis)
                 if fits else None),
    }


def shrink_cells(cells: list[np.ndarray], height: int) -> list[np.ndarray]:
    """A grid row's cells resized to ``height`` (aspect kept, at most
    :data:`koala.ops.grid.MAX_ASPECT` times as wide), so a grid never holds full-size copies
    of every image, and an extreme strip never makes a huge cell."""
    return [fit_cell(c, height) for c in cells]


def require_images(result: dict, images_dir) -> None:
    """NoUsableImagesError, with the first reasons, when no image was evaluated."""
    if result["images"]:
        return
    reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in result["skipped"][:3])
    more = "; ..." if len(result["skipped"]) > 3 else ""
    raise NoUsableImagesError(f"no usable image in {images_dir} ({len(result['skipped'])} "
                              f"skipped: {reasons}{more})")


def with_run_keys(result: dict, images_dir, **run_keys) -> dict:
    """A task's report as metrics.json holds it: ``task``, ``images_dir``, ``images``, then
    ``run_keys`` (the models, settings), then the rest of ``result``."""
    head = {"task": result["task"], "images_dir": os.path.abspath(images_dir),
            "images": result["images"], **run_keys}
    return {**head, **{k: v for k, v in result.items() if k not in head}}


def write_outputs(output_dir: str, report: dict, markdown: str,
                  pngs: dict[str, np.ndarray]) -> None:
    """Writes metrics.json, metrics.md and the named PNGs into ``output_dir`` (created)."""
    os.makedirs(output_dir, exist_ok=True)
    atomic_write(os.path.join(output_dir, fmt.METRICS_JSON), fmt.to_json(report))
    atomic_write(os.path.join(output_dir, fmt.METRICS_MD), markdown)
    for name, image in pngs.items():
        save_png(os.path.join(output_dir, name), image)


def evaluate(
    *,
    model_files: Sequence[str],
    images_dir: str,
    output_dir: str,
    load: Callable[[], Any],
    report: Callable[..., dict],
    row: Callable[[list[np.ndarray]], list[np.ndarray]],
    outputs: Callable[[dict, list], tuple[str, dict[str, np.ndarray]]],
    run_keys: dict,
) -> dict:
    """One evaluation run, the same for every task; returns the report as metrics.json holds it
    (before JSON conversion).

    Args:
      model_files: the model files, checked to exist before anything is loaded.
      images_dir: a folder of images (walked recursively) or one image file.
      output_dir: where metrics.json, metrics.md and the PNGs go (created).
      load: ``() -> models``, called once the inputs are checked.
      report: ``(models, paths, root=..., on_image=...) -> report``: the task's ``*_report``
        with its settings bound; ``on_image(name, cells)`` is called per evaluated image.
      row: what a grid keeps of each image's cells (shrunk, cropped ...).
      outputs: ``(report, rows) -> (metrics.md text, {PNG file name: uint8 image})``.
      run_keys: added to the report after ``task``, ``images_dir`` and ``images``.

    Raises:
      KoalaError: a model file or the images folder is missing, or a model doesn't load.
      NoUsableImagesError: no image could be evaluated (nothing is written then).
    """
    paths = find_inputs(model_files, images_dir)
    models = load()
    rows: list[list[np.ndarray]] = []
    root = images_dir if os.path.isdir(images_dir) else None
    result = report(models, paths, root=root, on_image=lambda _name, cells: rows.append(
        row(cells)))  # shrink each row now: a grid never holds full-size images
    require_images(result, images_dir)
    full = with_run_keys(result, images_dir, **run_keys)
    markdown, pngs = outputs(full, rows)
    write_outputs(output_dir, full, markdown, pngs)
    return full
