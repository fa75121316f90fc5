r"""koala's one evaluation tool: models against their baseline on a folder of images.

  python -m koala.evaluate --task=colorize --model=A.keras [--model=B.keras ...] \
      --images=DIR [--output_dir=runs/eval/colorize] [--max_images=N] [--saturation=1.2] \
      [--embedder_weights=W] [--grid_height=160]
  python -m koala.evaluate --task=sr --model=A.keras [--model=B.keras ...] --images=DIR \
      --scale=N [--output_dir=runs/eval/sr] [--max_images=N] [--crop_size=96]
  python -m koala.evaluate --task=codec --model=CODEC.keras --images=DIR \
      [--output_dir=runs/eval/codec] [--max_images=N] [--jpeg_quality=95 ...] [--tile=512]

Tasks are looked up by name in :data:`TASKS`, an explicit dict of functions that take a frozen
config dataclass and return a JSON-ready report dict: ``colorize``, ``sr`` and ``codec``.

``--task=colorize`` (SPEC §1, §6) colorizes every image's grayscale version with each
``--model`` and compares the result with the original colour image (the truth), next to the
"gray" baseline (``Lab(L, 0, 0)``, ab = 0) that every colorizer must beat. Per image and method:
PSNR and SSIM on RGB, the prediction's colourfulness, mean CIEDE2000 against the truth; their
arithmetic means over the images. It writes, in ``--output_dir``:

  ``metrics.json``  the report: per-image and mean metrics, the metric variants, the models,
                    skipped files. An infinite PSNR (identical images) is written as the string
                    ``"inf"`` (JSON has no Infinity); an undefined SSIM (image under 11 px on a
                    side) as ``null``.
  ``metrics.md``    one Markdown table per metric (one row per image, the gray baseline in the
                    first column of every row, then each model) and a table of the means.
  ``grid.png``      one row per image: [gray | model 1 | model 2 ... | truth].
  ``flags.txt``     the command line's flags (``--flagfile=OUT/flags.txt`` re-runs it).

``--task=sr`` (SPEC §3, §6) super-resolves a low-res version of every image with each
``--model`` (a saved SR model, run through :class:`koala.tasks.sr.inference.Upscaler`) and compares the
result with the image itself (the high-res truth, "HR"), next to the bicubic baseline that
every SR model must beat. Per image: HR = the image, mod-cropped (bottom and right) to a
multiple of ``--scale``; LR = ``koala.data.pipelines.bicubic_downscale`` of HR, the very
degradation the SR trainer uses (bicubic with anti-aliasing), rounded to 8 bits like a real
low-res image; bicubic baseline = ``pipelines.bicubic_upscale(LR)``, rounded to 8 bits; each
model's output = ``upscaler.upscale(LR)``. Per image and method, against HR: PSNR and SSIM on
the BT.601 studio Y channel with ``scale`` pixels cropped from every border (the field's
convention, float64; ``koala.ops.metrics.psnr_y`` / ``ssim_y``) and PSNR on RGB over the whole
image; their arithmetic means. Every model's ``scale`` must equal ``--scale``. It writes, in
``--output_dir``:

  ``metrics.json``  the report (as for colorize; methods ``bicubic``, then the models).
  ``metrics.md``    a table of the means (rows bicubic, then each model) and one table per
                    metric (one row per image, bicubic first on every row), the variants.
  ``crops.png``     one row per image: [bicubic | model 1 | ... | HR], the same centred
                    ``--crop_size`` x ``--crop_size`` HR-pixel crop of each, enlarged by
                    pixel repetition (nearest neighbour) to about 192 px so pixels show.
  ``flags.txt``     as for colorize.

``--task=codec`` (SPEC §2, §6) runs one whole Invertible Grayscale model (a ``.keras`` file of
:class:`koala.tasks.codec.model.InvertibleGrayscale`, through :mod:`koala.tasks.codec.inference`) on every image.
The grayscale G is rounded to 8 bits, written as a PNG with PIL and read back (a real round
trip), then decoded. Per image and on average: colour PSNR and SSIM on RGB of the restored
image against the input (method ``codec``); next to it the baseline ``luma`` (the input's
BT.601 luma as a gray image: what a plain grayscale gives, no colour) and ``luma_decoded``
(that luma fed to the decoder); PSNR, SSIM and mean absolute difference of G against the
uint8 luma (``gray_vs_luma``; the paper lets G stray up to 70 levels to hide colour); and the
JPEG robustness: G stored as JPEG at each ``--jpeg_quality`` (95, 90, 75, 50), decoded, colour
PSNR/SSIM (methods ``jpeg95`` ...). It writes ``metrics.json``, ``metrics.md`` (the mean
tables, the JPEG table with the PNG result as reference, per-image tables), ``grid.png``
(one row per image: [input | grayscale | restored]), ``jpeg_psnr.png`` (mean colour PSNR
against JPEG quality, PNG and luma as reference lines, drawn with PIL) and ``flags.txt``.

Unreadable images are skipped and listed in the report; they never stop the run. Exit status:
0 on success, 2 for unusable inputs (a missing model file or images folder, a model that doesn't
load, for sr: a missing ``--scale`` or a model of another scale, for codec: more than one
``--model`` or a model that isn't a whole codec), 1 when no image could be evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import numpy as np
from absl import app, flags
from PIL import Image, ImageDraw, ImageFont

from koala.core.errors import ImageError, KoalaError
from koala.core.progress import Progress
from koala.data import pipelines
from koala.ops import geometry, images, metrics
from koala.ops.grid import make_grid, save_png
from koala.tasks.codec import inference as codec_lib
from koala.tasks.colorize.inference import (
    DEFAULT_EPS,
    DEFAULT_RADIUS,
    DEFAULT_SATURATION,
    REFINES,
    Colorizer,
    gray_baseline,
)

__all__ = [
    "BICUBIC",
    "GRAY",
    "TASKS",
    "CodecEvalConfig",
    "ColorizeEvalConfig",
    "NoUsableImagesError",
    "SREvalConfig",
    "bicubic_baseline",
    "codec_markdown",
    "codec_report",
    "colorize_markdown",
    "colorize_report",
    "define_flags",
    "degrade",
    "evaluate_codec",
    "evaluate_colorize",
    "evaluate_sr",
    "markdown_mean_table",
    "mod_crop",
    "jpeg_plot",
    "model_names",
    "run",
    "sr_markdown",
    "sr_report",
    "to_json",
]

GRAY = "gray"  # name of the ab = 0 baseline in reports
TRUTH = "truth"
METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
GRID_PNG = "grid.png"

# Keys of a per-image entry (and of "mean") that a model name must not take.
_RESERVED_NAMES = frozenset({"name", "width", "height", "truth_colorfulness", GRAY, TRUTH})

# SSIM's Gaussian window is 11x11 (koala.ops.metrics): smaller images have no SSIM.
_SSIM_MIN_SIDE = 11

# Metric keys in report order, with how the Markdown tables print them.
_METRICS = ("psnr", "ssim", "colorfulness", "delta_e00")
_TITLES = {
    "psnr": "PSNR (dB, higher is better)",
    "ssim": "SSIM (higher is better)",
    "colorfulness": "Colourfulness M (truth's in the last column)",
    "delta_e00": "Mean ΔE00 (lower is better)",
}
_HEADERS = {"psnr": "PSNR", "ssim": "SSIM", "colorfulness": "M", "delta_e00": "ΔE00",
            "psnr_y": "PSNR-Y", "ssim_y": "SSIM-Y", "psnr_rgb": "PSNR-RGB", "mae": "MAE"}
_DECIMALS = {"psnr": 2, "ssim": 4, "colorfulness": 2, "delta_e00": 2,
             "psnr_y": 2, "ssim_y": 4, "psnr_rgb": 2, "mae": 2}

METRIC_VARIANTS = {
    "psnr": "PSNR = 10 log10(255^2 / MSE) over all RGB pixels and channels (0..255, peak 255); "
            "identical images give inf, written as the string \"inf\" in metrics.json",
    "ssim": "SSIM (Wang et al. 2004) of each RGB channel, Gaussian window 11x11 sigma 1.5, "
            "K1 0.01, K2 0.03, data range 255, population moments, 5 px border excluded; mean "
            "of the three channels; null for images under 11 px on a side",
    "colorfulness": "Hasler & Süsstrunk (2003) M = sqrt(std_rg^2 + std_yb^2) + "
                    "0.3 sqrt(mean_rg^2 + mean_yb^2) of the method's output on 0..255 RGB "
                    "(truth_colorfulness: of the ground truth)",
    "delta_e00": "CIEDE2000 (kL = kC = kH = 1) between output and truth, sRGB -> CIE Lab "
                 "(D65, 2 deg), mean over pixels",
    "gray": "the gray baseline: Lab(L_truth, 0, 0) -> sRGB (ab = 0)",
    "mean": "arithmetic mean over the evaluated images (SSIM: over the images that have one); "
            "a single inf PSNR makes the mean inf",
}


class NoUsableImagesError(KoalaError):
    """No image of the evaluation set could be read (the CLI exits 1)."""


class SupportsColorize(Protocol):
    """What :func:`colorize_report` needs of a model: :class:`koala.tasks.colorize.inference.Colorizer` or a
    stub with the same ``colorize`` method."""

    def colorize(self, image: np.ndarray, *, saturation: float) -> np.ndarray: ...


# Called once per evaluated image with its name and the uint8 (H, W, 3) cells of its grid
# row: [gray, model 1, ..., truth].
ImageCallback = Callable[[str, list[np.ndarray]], None]


# ---------------------------------------------------------------------------------------------
# Task "colorize".


@dataclasses.dataclass(frozen=True)
class ColorizeEvalConfig:
    """What :func:`evaluate_colorize` evaluates and where the results go.

    models:           saved colorizers (``.keras`` files), at least one.
    images:           a folder of images (walked recursively, ``koala.ops.images.find_images``)
                      or one image file.
    output_dir:       where metrics.json, metrics.md and grid.png go (created if needed).
    max_images:       stop after this many evaluated images (None: all of them).
    saturation:       the chroma factor the colorizers apply (SPEC §1: the report's 1.2).
    embedder_weights: overrides the embedder weights recorded in the models (None: keep).
    grid_height:      height in pixels of every cell of grid.png.
    progress:         show a progress bar over the images on stderr.
    refine:           the chroma refinements to report for every model: "none" (the raw
                      prediction) and/or "guided" (SPEC §5's guided filter, a row
                      "<model>+guided"), with ``radius`` and ``eps``.
    """

    models: tuple[str, ...]
    images: str
    output_dir: str = os.path.join("runs", "eval", "colorize")
    max_images: int | None = None
    saturation: float = DEFAULT_SATURATION
    embedder_weights: str | None = None
    grid_height: int = 160
    progress: bool = True
    refine: tuple[str, ...] = ("none",)
    radius: int = DEFAULT_RADIUS
    eps: float = DEFAULT_EPS

    def __post_init__(self):
        if not self.models:
            raise ValueError("at least one model is needed")
        object.__setattr__(self, "refine", tuple(dict.fromkeys(self.refine)))
        if not self.refine or not set(self.refine) <= set(REFINES):
            raise ValueError(f"refine must be a non-empty subset of {REFINES}, "
                             f"got {self.refine}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        if not self.saturation >= 0:
            raise ValueError(f"saturation must be >= 0, got {self.saturation}")
        if self.grid_height < 1:
            raise ValueError(f"grid_height must be >= 1, got {self.grid_height}")


def model_names(paths: Sequence[str | os.PathLike], *,
                reserved: Iterable[str] = _RESERVED_NAMES) -> list[str]:
    """Table names for model files: the file stem, made unique.

    Stems that collide (or that a report key already uses, like ``gray``; ``reserved``, by
    default the colorize report's keys) get as many of their folders in front as it takes to
    tell them apart (``run1/model``, ``a/train/best`` vs ``b/train/best``); names still equal
    after that (the same file twice) get ``#2``, ``#3``.
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
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def _psnr_ssim(truth: np.ndarray, output: np.ndarray) -> dict:
    """PSNR (peak 255) and SSIM (data range 255) of a uint8 (H, W, 3) output against the truth,
    SSIM the mean over channels; for (H, W) images, of the one channel. SSIM is None when a
    side is under 11 px (its Gaussian window doesn't fit)."""
    fits = min(truth.shape[:2]) >= _SSIM_MIN_SIDE
    channel_axis = -1 if truth.ndim == 3 else None
    return {
        "psnr": metrics.psnr(truth, output, peak=255.0),
        "ssim": (metrics.ssim(truth, output, data_range=255.0, channel_axis=channel_axis)
                 if fits else None),
    }


def _method_metrics(truth: np.ndarray, output: np.ndarray) -> dict:
    """PSNR, SSIM, colourfulness and mean ΔE00 of one uint8 (H, W, 3) output against the truth.

    SSIM is None when a side is under 11 px (its Gaussian window doesn't fit).
    """
    return {
        **_psnr_ssim(truth, output),
        "colorfulness": metrics.colorfulness(output),
        "delta_e00": metrics.mean_ciede2000(output, truth),
    }


def _mean(values: Iterable[float | None]) -> float | None:
    """Arithmetic mean of the values that aren't None; None if there are none."""
    present = [v for v in values if v is not None]
    return float(sum(present) / len(present)) if present else None


def _shrink_cells(cells: list[np.ndarray], height: int) -> list[np.ndarray]:
    """A grid row's cells resized to ``height`` (aspect kept), so a grid never holds
    full-size copies of every image."""
    return [geometry.resize(c, height, max(1, round(c.shape[1] * height / c.shape[0])))
            for c in cells]


def _require_images(result: dict, images_dir) -> None:
    """NoUsableImagesError, with the first reasons, when no image was evaluated."""
    if result["images"]:
        return
    reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in result["skipped"][:3])
    more = "; ..." if len(result["skipped"]) > 3 else ""
    raise NoUsableImagesError(f"no usable image in {images_dir} ({len(result['skipped'])} "
                              f"skipped: {reasons}{more})")


def _with_run_keys(result: dict, images_dir, **run_keys) -> dict:
    """A task's report as metrics.json holds it: ``task``, ``images_dir``, ``images``, then
    ``run_keys`` (the models, settings), then the rest of ``result``."""
    head = {"task": result["task"], "images_dir": os.path.abspath(images_dir),
            "images": result["images"], **run_keys}
    return {**head, **{k: v for k, v in result.items() if k not in head}}


def _write_outputs(output_dir: str, report: dict, markdown: str,
                   pngs: dict[str, np.ndarray]) -> None:
    """Writes metrics.json, metrics.md and the named PNGs into ``output_dir`` (created)."""
    os.makedirs(output_dir, exist_ok=True)
    _atomic_write_text(os.path.join(output_dir, METRICS_JSON), to_json(report))
    _atomic_write_text(os.path.join(output_dir, METRICS_MD), markdown)
    for name, image in pngs.items():
        save_png(os.path.join(output_dir, name), image)


def _display_name(path: str | os.PathLike, root: str | os.PathLike | None) -> str:
    """``path`` relative to ``root`` (posix), or as given when it isn't under ``root``."""
    path = pathlib.Path(path)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def _readable_images(paths, *, root, max_images, per_image, skipped, progress):
    """Yields ``(display name, uint8 RGB)`` for each readable image, with a progress bar.

    Unreadable files are appended to ``skipped`` and the loop goes on; it stops once
    ``per_image`` (the caller's evaluated entries) holds ``max_images``. The bar ticks once
    per path, whether the caller evaluates or skips it.
    """
    with Progress(len(paths), "evaluate", enabled=progress) as bar:
        for path in paths:
            if max_images is not None and len(per_image) >= max_images:
                break
            name = _display_name(path, root)
            try:
                rgb = images.load_image(path, name=name).rgb
            except ImageError as e:
                skipped.append({"path": name, "reason": e.reason})
            else:
                yield name, rgb
            bar.update()


def colorize_report(
    colorizers: dict[str, SupportsColorize],
    image_paths: Iterable[str | os.PathLike],
    *,
    saturation: float = DEFAULT_SATURATION,
    root: str | os.PathLike | None = None,
    max_images: int | None = None,
    progress: bool = False,
    on_image: ImageCallback | None = None,
) -> dict:
    """Evaluates colorizers and the gray baseline on image files; the core of the colorize task.

    For each image (``koala.ops.images.load_image``; unreadable ones are skipped and listed): the
    truth is the image itself, the gray baseline ``gray_baseline(truth)``, and each model's
    output ``colorizer.colorize(truth, saturation=saturation)``; each is scored against the
    truth with :func:`_method_metrics`.

    Args:
      colorizers: table name -> model (a :class:`koala.tasks.colorize.inference.Colorizer` or anything with its
        ``colorize(image, *, saturation)``); names must not be ``gray``, ``truth`` or a
        per-image key (see :func:`model_names`).
      image_paths: image files, evaluated in this order.
      saturation: passed to every ``colorize`` call.
      root: image names in the report are relative to it (default: the paths as given).
      max_images: stop after this many evaluated (not skipped) images.
      progress: show a progress bar on stderr.
      on_image: called as ``on_image(name, [gray, *outputs, truth])`` for every evaluated
        image (uint8 arrays), e.g. to build a comparison grid.

    Returns:
      ``{"task": "colorize", "images": N, "methods": ["gray", *models], "saturation",
      "metric_variants", "per_image": [...], "mean": {...}, "skipped": [...]}`` where each
      per-image entry is ``{"name", "width", "height", "truth_colorfulness", "gray": {psnr,
      ssim, colorfulness, delta_e00}, "<model>": {...}}``, ``mean`` has the same per-method
      dicts plus ``"truth": {"colorfulness"}``, and ``skipped`` lists ``{"path", "reason"}``.
      Values are Python floats; PSNR may be ``math.inf``, SSIM None (see the module docstring
      for how metrics.json writes them).

    Raises:
      ValueError: a model name is reserved, or a model's output doesn't match its input's shape.
    """
    clashes = sorted(set(colorizers) & _RESERVED_NAMES)
    if clashes:
        raise ValueError(f"model names {clashes} are reserved; rename them (see model_names)")
    paths = list(image_paths)
    methods = [GRAY, *colorizers]
    per_image: list[dict] = []
    skipped: list[dict] = []
    for name, truth in _readable_images(paths, root=root, max_images=max_images,
                                       per_image=per_image, skipped=skipped,
                                       progress=progress):
        outputs = {GRAY: gray_baseline(truth)}
        for model_name, colorizer in colorizers.items():
            output = np.asarray(colorizer.colorize(truth, saturation=saturation))
            if output.shape != truth.shape:
                raise ValueError(f"model {model_name!r} returned shape {output.shape} for "
                                 f"{name} of shape {truth.shape}")
            outputs[model_name] = output
        entry = {
            "name": name,
            "width": int(truth.shape[1]),
            "height": int(truth.shape[0]),
            "truth_colorfulness": metrics.colorfulness(truth),
        }
        for method in methods:
            entry[method] = _method_metrics(truth, outputs[method])
        per_image.append(entry)
        if on_image is not None:
            on_image(name, [*(outputs[m] for m in methods), truth])
    mean = {m: {k: _mean(e[m][k] for e in per_image) for k in _METRICS} for m in methods}
    mean[TRUTH] = {"colorfulness": _mean(e["truth_colorfulness"] for e in per_image)}
    return {
        "task": "colorize",
        "images": len(per_image),
        "methods": methods,
        "saturation": float(saturation),
        "metric_variants": dict(METRIC_VARIANTS),
        "per_image": per_image,
        "mean": mean,
        "skipped": skipped,
    }


def _evaluation_inputs(model_files, images_dir) -> list[pathlib.Path]:
    """Checks that every model file exists, then lists the images to evaluate.

    Raises:
      KoalaError: a model file or the images folder is missing.
      NoUsableImagesError: the folder holds no image file.
    """
    for path in model_files:
        if not os.path.isfile(path):
            raise KoalaError(f"model file not found: {path}")
    paths = images.find_images(images_dir)  # KoalaError when the folder is missing
    if not paths:
        raise NoUsableImagesError(f"no image files in {images_dir}")
    return paths


@dataclasses.dataclass(frozen=True)
class _Refined:
    """A colorizer whose outputs go through one chroma refinement (a report row)."""

    colorizer: Colorizer
    refine: str
    radius: int
    eps: float

    def colorize(self, image, *, saturation):
        return self.colorizer.colorize(image, saturation=saturation, refine=self.refine,
                                       radius=self.radius, eps=self.eps)


def evaluate_colorize(config: ColorizeEvalConfig) -> dict:
    """The colorize task: loads the models, runs :func:`colorize_report`, writes the outputs.

    Writes metrics.json, metrics.md and grid.png into ``config.output_dir`` (see the module
    docstring) and returns the report as written to metrics.json, before JSON conversion
    (``models`` maps table names to model files; ``images_dir``, ``embedder_weights`` and
    ``grid_height`` are added to :func:`colorize_report`'s keys).

    Raises:
      KoalaError: a model file or the images folder is missing, or a model doesn't load.
      NoUsableImagesError: no image could be evaluated (nothing is written then).
    """
    paths = _evaluation_inputs(config.models, config.images)
    names = model_names(config.models)
    colorizers = {}
    for name, path in zip(names, config.models, strict=True):
        colorizer = Colorizer.load(path, embedder_weights=config.embedder_weights)
        for refine in config.refine:
            key = name if refine == "none" else f"{name}+{refine}"
            colorizers[key] = _Refined(colorizer, refine, config.radius, config.eps)

    height = config.grid_height
    rows: list[list[np.ndarray]] = []

    def keep_row(_name: str, cells: list[np.ndarray]) -> None:
        rows.append(_shrink_cells(cells, height))

    root = config.images if os.path.isdir(config.images) else None
    result = colorize_report(colorizers, paths, saturation=config.saturation, root=root,
                             max_images=config.max_images, progress=config.progress,
                             on_image=keep_row)
    _require_images(result, config.images)

    report = _with_run_keys(
        result, config.images,
        models={name: os.path.abspath(p) for name, p in zip(names, config.models, strict=True)},
        embedder_weights=config.embedder_weights, grid_height=config.grid_height,
        refine=list(config.refine),
        **({"radius": config.radius, "eps": config.eps} if "guided" in config.refine else {}))
    _write_outputs(config.output_dir, report, colorize_markdown(report),
                   {GRID_PNG: make_grid(rows, height=height)})
    return report


# ---------------------------------------------------------------------------------------------
# Task "sr" (super-resolution).

BICUBIC = "bicubic"  # name of the bicubic baseline in reports
HR = "hr"
CROPS_PNG = "crops.png"
DEFAULT_CROP_SIZE = 96
CROP_DISPLAY_HEIGHT = 192  # crops.png cells are enlarged by pixel repetition to about this

_SR_RESERVED_NAMES = frozenset({"name", "width", "height", "lr_width", "lr_height", BICUBIC, HR})
_SR_METRICS = ("psnr_y", "ssim_y", "psnr_rgb")
_SR_TITLES = {
    "psnr_y": "PSNR-Y (dB, BT.601 studio Y, border crop = scale; higher is better)",
    "ssim_y": "SSIM-Y (BT.601 studio Y, border crop = scale; higher is better)",
    "psnr_rgb": "PSNR-RGB (dB, whole image; higher is better)",
}


def _sr_metric_variants(scale: int) -> dict:
    return {
        "psnr_y": f"PSNR = 10 log10(255^2 / MSE) on the Y channel of YCbCr, BT.601 studio "
                  f"swing (Y = 16 + 65.481 R + 128.553 G + 24.966 B, RGB in [0, 1]), not "
                  f"rounded, float64, {scale} px (= scale) cropped from every border, peak "
                  f"255 (koala.ops.metrics.psnr_y); identical images give inf, written as the "
                  f"string \"inf\" in metrics.json",
        "ssim_y": f"SSIM (Wang et al. 2004) of the same studio Y with the same {scale} px "
                  f"border crop: Gaussian window 11x11 sigma 1.5, K1 0.01, K2 0.03, data "
                  f"range 255, population moments, 5 px (window radius) more border excluded "
                  f"(koala.ops.metrics.ssim_y); null when the cropped image is under 11 px on a "
                  f"side",
        "psnr_rgb": "PSNR = 10 log10(255^2 / MSE) over all RGB pixels and channels (0..255, "
                    "peak 255), whole image, no border crop (koala.ops.metrics.psnr)",
        "hr": f"the truth: the image, mod-cropped (bottom and right) to a multiple of {scale}",
        "lr": f"koala.data.pipelines.bicubic_downscale(HR / 255, {scale}) (the SR training "
              f"degradation: bicubic, anti-aliased, clipped), rounded to uint8",
        BICUBIC: f"the bicubic baseline: koala.data.pipelines.bicubic_upscale(LR / 255, "
                 f"{scale}) (tf.image.resize bicubic, clipped), rounded to uint8",
        "models": "koala.tasks.sr.inference.Upscaler.upscale(LR), uint8",
        "mean": "arithmetic mean over the evaluated images (SSIM-Y: over the images that have "
                "one); a single inf PSNR makes the mean inf",
    }


class SupportsUpscale(Protocol):
    """What :func:`sr_report` needs of a model: :class:`koala.tasks.sr.inference.Upscaler` or a stub with
    the same ``scale`` and ``upscale``."""

    @property
    def scale(self) -> int: ...

    def upscale(self, rgb: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class SREvalConfig:
    """What :func:`evaluate_sr` evaluates and where the results go.

    models:      saved SR models (``.keras`` files), at least one; each must be of ``scale``.
    images:      a folder of images (walked recursively, ``koala.ops.images.find_images``) or one
                 image file: the high-res truths.
    scale:       the upscaling factor (every model's ``scale`` must equal it).
    output_dir:  where metrics.json, metrics.md and crops.png go (created if needed).
    max_images:  stop after this many evaluated images (None: all of them).
    crop_size:   side in high-res pixels of the centred crop shown in crops.png.
    progress:    show a progress bar over the images on stderr.
    """

    models: tuple[str, ...]
    images: str
    scale: int
    output_dir: str = os.path.join("runs", "eval", "sr")
    max_images: int | None = None
    crop_size: int = DEFAULT_CROP_SIZE
    progress: bool = True

    def __post_init__(self):
        if not self.models:
            raise ValueError("at least one model is needed")
        if isinstance(self.scale, bool) or not isinstance(self.scale, int) or self.scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {self.scale!r}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        if self.crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {self.crop_size}")


def mod_crop(rgb: np.ndarray, scale: int) -> np.ndarray:
    """The image cut (bottom and right) to a multiple of ``scale`` on both sides."""
    h, w = rgb.shape[:2]
    return rgb[: h - h % scale, : w - w % scale]


def _to_uint8(x01) -> np.ndarray:
    """[0, 1] float (tensor or array) -> uint8 0..255, rounded half to even."""
    return np.clip(np.round(np.asarray(x01, np.float32) * np.float32(255.0)),
                   0, 255).astype(np.uint8)


def degrade(hr: np.ndarray, scale: int) -> np.ndarray:
    """The low-res input for a uint8 (H, W, 3) HR image (H, W multiples of ``scale``).

    ``round(255 * pipelines.bicubic_downscale(HR / 255, scale))`` as uint8: the SR training
    degradation itself (looked up on :mod:`koala.data.pipelines` at call time, never copied),
    then 8 bits, as a real low-res image has.
    """
    x = np.asarray(hr, np.uint8).astype(np.float32) / np.float32(255.0)
    return _to_uint8(pipelines.bicubic_downscale(x, scale))


def bicubic_baseline(lr: np.ndarray, scale: int) -> np.ndarray:
    """The bicubic baseline: ``round(255 * pipelines.bicubic_upscale(LR / 255, scale))``."""
    x = np.asarray(lr, np.uint8).astype(np.float32) / np.float32(255.0)
    return _to_uint8(pipelines.bicubic_upscale(x, scale))


def _sr_method_metrics(hr: np.ndarray, output: np.ndarray, scale: int) -> dict:
    """Y-PSNR and Y-SSIM (border crop = scale) and whole-image RGB PSNR of one output."""
    fits = min(hr.shape[:2]) - 2 * scale >= _SSIM_MIN_SIDE
    return {
        "psnr_y": metrics.psnr_y(hr, output, crop=scale),
        "ssim_y": metrics.ssim_y(hr, output, crop=scale) if fits else None,
        "psnr_rgb": metrics.psnr(hr, output, peak=255.0),
    }


def _check_scales(upscalers: dict, scale: int) -> None:
    for name, upscaler in upscalers.items():
        model_scale = getattr(upscaler, "scale", None)
        if model_scale is not None and int(model_scale) != scale:
            raise KoalaError(f"model {name!r} upscales x{int(model_scale)}, but --scale is "
                             f"{scale}")


def sr_report(
    upscalers: dict[str, SupportsUpscale],
    image_paths: Iterable[str | os.PathLike],
    *,
    scale: int,
    root: str | os.PathLike | None = None,
    max_images: int | None = None,
    progress: bool = False,
    on_image: ImageCallback | None = None,
) -> dict:
    """Evaluates SR models and the bicubic baseline on image files; the core of the sr task.

    For each image (``koala.ops.images.load_image``; unreadable ones are skipped and listed, and
    so are images too small for the border crop): HR = :func:`mod_crop` of the image, LR =
    :func:`degrade` (HR), the baseline :func:`bicubic_baseline` (LR), each model's output
    ``upscaler.upscale(LR)``; each is scored against HR with :func:`_sr_method_metrics`.

    Args:
      upscalers: table name -> model (a :class:`koala.tasks.sr.inference.Upscaler` or anything with its
        ``scale`` and ``upscale(uint8 (h, w, 3)) -> uint8 (h*s, w*s, 3)``); names must not be
        ``bicubic``, ``hr`` or a per-image key.
      image_paths: image files, evaluated in this order.
      scale: the upscaling factor; every upscaler's ``scale`` must equal it.
      root: image names in the report are relative to it (default: the paths as given).
      max_images: stop after this many evaluated (not skipped) images.
      progress: show a progress bar on stderr.
      on_image: called as ``on_image(name, [bicubic, *outputs, hr])`` for every evaluated
        image (uint8 arrays of HR size), e.g. to build a comparison grid.

    Returns:
      ``{"task": "sr", "images": N, "scale", "methods": ["bicubic", *models],
      "metric_variants", "per_image": [...], "mean": {...}, "skipped": [...]}`` where each
      per-image entry is ``{"name", "width", "height" (of HR, mod-cropped), "lr_width",
      "lr_height", "bicubic": {psnr_y, ssim_y, psnr_rgb}, "<model>": {...}}``, ``mean`` has
      the same per-method dicts and ``skipped`` lists ``{"path", "reason"}``. PSNR may be
      ``math.inf``, SSIM-Y None.

    Raises:
      KoalaError: a model's ``scale`` isn't ``scale``.
      ValueError: a model name is reserved, ``scale`` < 1, or a model's output isn't a uint8
        image of HR's shape.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
    clashes = sorted(set(upscalers) & _SR_RESERVED_NAMES)
    if clashes:
        raise ValueError(f"model names {clashes} are reserved; rename them (see model_names)")
    _check_scales(upscalers, scale)
    paths = list(image_paths)
    methods = [BICUBIC, *upscalers]
    per_image: list[dict] = []
    skipped: list[dict] = []
    for name, rgb in _readable_images(paths, root=root, max_images=max_images,
                                       per_image=per_image, skipped=skipped,
                                       progress=progress):
        hr = mod_crop(rgb, scale)
        if min(hr.shape[:2]) <= 2 * scale:
            skipped.append({"path": name, "reason": (
                f"too small for x{scale}: {rgb.shape[1]}x{rgb.shape[0]} px, the "
                f"{scale} px border crop needs more than {2 * scale} px a side")})
            continue
        lr = degrade(hr, scale)
        outputs = {BICUBIC: bicubic_baseline(lr, scale)}
        for model_name, upscaler in upscalers.items():
            output = np.asarray(upscaler.upscale(lr))
            if output.shape != hr.shape or output.dtype != np.uint8:
                raise ValueError(
                    f"model {model_name!r} returned {output.dtype} {output.shape} for "
                    f"{name}: expected uint8 {hr.shape} (x{scale} of {lr.shape})")
            outputs[model_name] = output
        entry = {
            "name": name,
            "width": int(hr.shape[1]),
            "height": int(hr.shape[0]),
            "lr_width": int(lr.shape[1]),
            "lr_height": int(lr.shape[0]),
        }
        for method in methods:
            entry[method] = _sr_method_metrics(hr, outputs[method], scale)
        per_image.append(entry)
        if on_image is not None:
            on_image(name, [*(outputs[m] for m in methods), hr])
    mean = {m: {k: _mean(e[m][k] for e in per_image) for k in _SR_METRICS} for m in methods}
    return {
        "task": "sr",
        "images": len(per_image),
        "scale": int(scale),
        "methods": methods,
        "metric_variants": _sr_metric_variants(scale),
        "per_image": per_image,
        "mean": mean,
        "skipped": skipped,
    }


def crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)`` of the centred ``size`` x ``size`` crop of a
    ``height`` x ``width`` image, clipped to the image."""
    ch, cw = min(size, height), min(size, width)
    return (height - ch) // 2, (width - cw) // 2, ch, cw


def _crop_cells(cells: list[np.ndarray], size: int, display: int) -> list[np.ndarray]:
    """The same centred crop of every cell, enlarged by pixel repetition to about
    ``display`` px high (``make_grid`` then has little or nothing left to resample)."""
    top, left, ch, cw = crop_box(*cells[-1].shape[:2], size)
    k = max(1, round(display / ch))
    return [np.repeat(np.repeat(c[top : top + ch, left : left + cw], k, 0), k, 1)
            for c in cells]


def evaluate_sr(config: SREvalConfig) -> dict:
    """The sr task: loads the models, runs :func:`sr_report`, writes the outputs.

    Writes metrics.json, metrics.md and crops.png into ``config.output_dir`` (see the module
    docstring) and returns the report as written to metrics.json, before JSON conversion
    (``models`` maps table names to model files; ``images_dir``, ``crop_size`` and
    ``crop_display_height`` are added to :func:`sr_report`'s keys).

    Raises:
      KoalaError: a model file or the images folder is missing, a model doesn't load (or
        isn't an SR model), or a model's scale isn't ``config.scale``.
      NoUsableImagesError: no image could be evaluated (nothing is written then).
    """
    from koala.tasks.sr.inference import Upscaler  # keras and the models only when this task runs

    paths = _evaluation_inputs(config.models, config.images)
    names = model_names(config.models, reserved=_SR_RESERVED_NAMES)
    upscalers = {name: Upscaler.load(path)
                 for name, path in zip(names, config.models, strict=True)}
    _check_scales(upscalers, config.scale)  # before any image is read

    # Cells of about CROP_DISPLAY_HEIGHT px: crop_size * a whole repetition factor.
    height = config.crop_size * max(1, round(CROP_DISPLAY_HEIGHT / config.crop_size))
    rows: list[list[np.ndarray]] = []

    def keep_row(_name: str, cells: list[np.ndarray]) -> None:
        rows.append(_crop_cells(cells, config.crop_size, height))  # crop now: small rows

    root = config.images if os.path.isdir(config.images) else None
    result = sr_report(upscalers, paths, scale=config.scale, root=root,
                       max_images=config.max_images, progress=config.progress,
                       on_image=keep_row)
    _require_images(result, config.images)

    report = _with_run_keys(
        result, config.images, scale=result["scale"],
        models={name: os.path.abspath(p) for name, p in zip(names, config.models, strict=True)},
        crop_size=config.crop_size, crop_display_height=height)
    _write_outputs(config.output_dir, report, sr_markdown(report),
                   {CROPS_PNG: make_grid(rows, height=height)})
    return report


# ---------------------------------------------------------------------------------------------
# Task "codec" (Invertible Grayscale).

LUMA = "luma"  # the SPEC §6 baseline: the plain luminance image, no colour
LUMA_DECODED = "luma_decoded"  # an ordinary grayscale (the luma) given to the decoder
CODEC = "codec"  # the decoder on the encoder's grayscale after a real 8-bit PNG round trip
GRAY_VS_LUMA = "gray_vs_luma"  # the stored grayscale against the input's luma
JPEG_PLOT_PNG = "jpeg_psnr.png"
DEFAULT_JPEG_QUALITIES = (95, 90, 75, 50)

_CODEC_VARIANTS = {
    "psnr": "colour: PSNR = 10 log10(255^2 / MSE) over all RGB pixels and channels of the "
            "restored image against the input (0..255, peak 255; koala.ops.metrics.psnr); "
            "gray_vs_luma: the same on the single channel; identical images give inf, written "
            "as the string \"inf\" in metrics.json",
    "ssim": "SSIM (Wang et al. 2004), Gaussian window 11x11 sigma 1.5, K1 0.01, K2 0.03, data "
            "range 255, population moments, 5 px border excluded; colour: mean of the three "
            "RGB channels; null for images under 11 px on a side",
    "mae": "gray_vs_luma: mean absolute difference in grey levels (0..255)",
    LUMA: "the baseline (SPEC §6): the input's BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B, "
          "rounded to uint8 (koala.tasks.codec.inference.luma), shown as gray RGB; it restores no colour",
    LUMA_DECODED: "that uint8 luma fed to the decoder, as if the stored gray were an ordinary "
                  "grayscale photo",
    CODEC: "decoder(G8), G8 = the encoder's grayscale rounded to uint8, written as an 8-bit PNG "
           "with PIL and read back (koala.tasks.codec.inference.round_trip)",
    "jpegQ": "decoder(the grayscale written as a JPEG of quality Q with PIL and read back)",
    GRAY_VS_LUMA: "G8 (the stored grayscale) against the uint8 luma of the input",
    "mean": "arithmetic mean over the evaluated images (SSIM: over the images that have one); "
            "a single inf PSNR makes the mean inf",
}


def _jpeg_method(quality: int) -> str:
    return f"jpeg{quality}"


@dataclasses.dataclass(frozen=True)
class CodecEvalConfig:
    """What :func:`evaluate_codec` evaluates and where the results go.

    model:          a whole InvertibleGrayscale model saved as ``.keras``.
    images:         a folder of images (walked recursively) or one image file.
    output_dir:     where metrics.json, metrics.md, grid.png and jpeg_psnr.png go (created).
    max_images:     stop after this many evaluated images (None: all of them).
    jpeg_qualities: the JPEG qualities the grayscale is also stored at (robustness table).
    grid_height:    height in pixels of every cell of grid.png.
    tile:           tile side for the codec (:class:`koala.tasks.codec.inference.TiledPart`; None: whole).
    progress:       show a progress bar over the images on stderr.
    """

    model: str
    images: str
    output_dir: str = os.path.join("runs", "eval", "codec")
    max_images: int | None = None
    jpeg_qualities: tuple[int, ...] = DEFAULT_JPEG_QUALITIES
    grid_height: int = 160
    tile: int | None = codec_lib.DEFAULT_TILE
    progress: bool = True

    def __post_init__(self):
        object.__setattr__(self, "jpeg_qualities", tuple(self.jpeg_qualities))
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        if not all(isinstance(q, int) and 1 <= q <= 100 for q in self.jpeg_qualities) or \
                len(set(self.jpeg_qualities)) != len(self.jpeg_qualities):
            raise ValueError(f"jpeg_qualities must be distinct integers in 1..100, got "
                             f"{self.jpeg_qualities}")
        if self.grid_height < 1:
            raise ValueError(f"grid_height must be >= 1, got {self.grid_height}")


def codec_report(
    encoder,
    decoder,
    image_paths: Iterable[str | os.PathLike],
    *,
    jpeg_qualities: Sequence[int] = DEFAULT_JPEG_QUALITIES,
    root: str | os.PathLike | None = None,
    max_images: int | None = None,
    progress: bool = False,
    on_image: ImageCallback | None = None,
) -> dict:
    """Evaluates a codec, its JPEG robustness and the luminance baseline on image files.

    For each image (unreadable ones are skipped and listed): G8 = ``koala.tasks.codec.inference.encode`` of
    the image, stored as an 8-bit PNG and read back (:func:`koala.tasks.codec.inference.round_trip`); the
    restored image ``decode(G8)``; ``decode`` of G8 stored as JPEG at each quality; the luma
    baseline and the luma given to the decoder (see ``metric_variants``). Colour outputs are
    scored against the image with PSNR and SSIM on RGB, G8 against the uint8 luma.

    Args:
      encoder, decoder: the codec's halves (Keras models or :class:`koala.tasks.codec.inference.TiledPart`).
      image_paths: image files, evaluated in this order.
      jpeg_qualities: JPEG qualities for the robustness table.
      root: image names in the report are relative to it (default: the paths as given).
      max_images: stop after this many evaluated (not skipped) images.
      progress: show a progress bar on stderr.
      on_image: called as ``on_image(name, [input, G8, restored])`` for every evaluated image
        (uint8; G8 is (H, W)), e.g. to build a comparison grid.

    Returns:
      ``{"task": "codec", "images": N, "methods": ["luma", "luma_decoded", "codec",
      "jpeg95", ...], "jpeg_qualities", "metric_variants", "per_image": [...], "mean": {...},
      "skipped": [...]}``: each per-image entry is ``{"name", "width", "height",
      "gray_vs_luma": {psnr, ssim, mae}, "<method>": {psnr, ssim}, ...}``; ``mean`` has the
      same dicts. PSNR may be ``math.inf``, SSIM None.
    """
    methods = [LUMA, LUMA_DECODED, CODEC, *map(_jpeg_method, jpeg_qualities)]
    per_image: list[dict] = []
    skipped: list[dict] = []
    for name, truth in _readable_images(list(image_paths), root=root, max_images=max_images,
                                       per_image=per_image, skipped=skipped,
                                       progress=progress):
        gray = codec_lib.encode(encoder, truth)
        stored = codec_lib.round_trip(gray, "PNG")
        luma = codec_lib.luma(truth)
        outputs = {LUMA: np.repeat(luma[..., None], 3, axis=2),
                   LUMA_DECODED: codec_lib.decode(decoder, luma),
                   CODEC: codec_lib.decode(decoder, stored)}
        for quality in jpeg_qualities:
            jpeg = codec_lib.round_trip(gray, "JPEG", quality=quality)
            outputs[_jpeg_method(quality)] = codec_lib.decode(decoder, jpeg)
        entry = {
            "name": name,
            "width": int(truth.shape[1]),
            "height": int(truth.shape[0]),
            GRAY_VS_LUMA: {**_psnr_ssim(luma, stored),
                           "mae": float(np.mean(np.abs(stored.astype(np.int16) - luma)))},
        }
        for method in methods:
            entry[method] = _psnr_ssim(truth, outputs[method])
        per_image.append(entry)
        if on_image is not None:
            on_image(name, [truth, stored, outputs[CODEC]])
    mean = {m: {k: _mean(e[m][k] for e in per_image) for k in ("psnr", "ssim")}
            for m in methods}
    mean[GRAY_VS_LUMA] = {k: _mean(e[GRAY_VS_LUMA][k] for e in per_image)
                          for k in ("psnr", "ssim", "mae")}
    return {
        "task": "codec",
        "images": len(per_image),
        "methods": methods,
        "jpeg_qualities": [int(q) for q in jpeg_qualities],
        "metric_variants": dict(_CODEC_VARIANTS),
        "per_image": per_image,
        "mean": mean,
        "skipped": skipped,
    }


def evaluate_codec(config: CodecEvalConfig) -> dict:
    """The codec task: loads the model, runs :func:`codec_report`, writes the outputs.

    Writes metrics.json, metrics.md, grid.png ([input | grayscale | restored] per image) and
    jpeg_psnr.png (:func:`jpeg_plot`) into ``config.output_dir`` and returns the report as
    written to metrics.json, before JSON conversion (``model``, ``images_dir``, ``tile`` and
    ``grid_height`` are added to :func:`codec_report`'s keys).

    Raises:
      KoalaError: the model file or the images folder is missing, or the model doesn't load
        or is not a whole InvertibleGrayscale.
      NoUsableImagesError: no image could be evaluated (nothing is written then).
    """
    encoder, decoder = codec_lib.load_codec(config.model)
    paths = _evaluation_inputs((), config.images)
    encoder = codec_lib.TiledPart(encoder, tile=config.tile)
    decoder = codec_lib.TiledPart(decoder, tile=config.tile)

    height = config.grid_height
    rows: list[list[np.ndarray]] = []

    def keep_row(_name: str, cells: list[np.ndarray]) -> None:
        rows.append(_shrink_cells(cells, height))

    root = config.images if os.path.isdir(config.images) else None
    result = codec_report(encoder, decoder, paths, jpeg_qualities=config.jpeg_qualities,
                          root=root, max_images=config.max_images, progress=config.progress,
                          on_image=keep_row)
    _require_images(result, config.images)
    report = _with_run_keys(result, config.images, model=os.path.abspath(config.model),
                            tile=config.tile, grid_height=config.grid_height)
    _write_outputs(config.output_dir, report, codec_markdown(report),
                   {GRID_PNG: make_grid(rows, height=height), JPEG_PLOT_PNG: jpeg_plot(report)})
    return report


def _dashed(draw, start, end, fill, dash: int = 6) -> None:
    """A dashed horizontal line from ``start`` to ``end`` (PIL has no dash style)."""
    (x0, y), (x1, _) = start, end
    for x in range(int(x0), int(x1), 2 * dash):
        draw.line([(x, y), (min(x + dash, x1), y)], fill=fill, width=2)


def jpeg_plot(report: dict, *, size: tuple[int, int] = (560, 360)) -> np.ndarray:
    """The mean colour PSNR against the JPEG quality the grayscale was stored at, as a uint8
    (H, W, 3) chart drawn with PIL: one point per quality, the PNG (lossless) result as a
    dashed reference line and the luma baseline as a dotted one. Infinite PSNRs are left out
    of the axes and named in the legend."""
    mean = report["mean"]
    qualities = sorted(report["jpeg_qualities"])
    points = [(q, mean[_jpeg_method(q)]["psnr"]) for q in qualities]
    refs = [("PNG (lossless)", mean[CODEC]["psnr"], (200, 40, 40)),
            ("luma baseline, no colour", mean[LUMA]["psnr"], (110, 110, 110))]
    finite = [v for v in [p for _, p in points] + [v for _, v, _ in refs]
              if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    step = next(s for s in (0.5, 1, 2, 5, 10, 20, 50, 100) if (hi - lo) / s <= 6)
    lo, hi = math.floor(lo / step) * step - step, math.ceil(hi / step) * step + step
    q_lo = min(qualities) - 5 if qualities else 0

    width, height = size
    left, right, top, bottom = 60, 20, 72, 45
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()

    def xy(quality, psnr):
        x = left + (quality - q_lo) / (100 - q_lo) * (width - left - right)
        y = top + (hi - psnr) / (hi - lo) * (height - top - bottom)
        return x, y

    draw.rectangle([left, top, width - right, height - bottom], outline="black")
    tick = lo
    while tick <= hi + 1e-9:
        _, y = xy(q_lo, tick)
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((4, y - 6), f"{tick:g}", fill="black", font=font)
        tick += step
    for q in [*qualities, 100]:
        x, _ = xy(q, lo)
        draw.line([(x, height - bottom), (x, height - bottom + 4)], fill="black")
        draw.text((x - 8, height - bottom + 8), str(q), fill="black", font=font)
    draw.text((left, height - 16), "JPEG quality of the stored grayscale", fill="black",
              font=font)
    draw.text((4, 6), f"Mean colour PSNR (dB) after decoding, {report['images']} images",
              fill="black", font=font)
    for i, (label, value, colour) in enumerate(refs):
        text = f"{label}: {_cell(value, 2)} dB"
        if value is not None and math.isfinite(value):
            _, y = xy(q_lo, value)
            _dashed(draw, (left, y), (width - right, y), colour, dash=6 if i == 0 else 2)
        draw.text((left + 6, 22 + 14 * i), text, fill=colour, font=font)
    blue = (30, 80, 200)
    draw.text((left + 6, 22 + 14 * len(refs)), "JPEG-stored grayscale (points)", fill=blue,
              font=font)
    shown = [xy(q, p) for q, p in points if p is not None and math.isfinite(p)]
    if len(shown) > 1:
        draw.line(shown, fill=blue, width=2)
    for x, y in shown:
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=blue)
    return np.asarray(image)


# ---------------------------------------------------------------------------------------------
# Report formatting.


def _json_safe(value):
    """``value`` with non-finite floats made JSON-safe: +-inf -> "inf"/"-inf", NaN -> None."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def to_json(report: dict) -> str:
    """The report as strict JSON text (infinite PSNR as the string "inf", see the docstring)."""
    return json.dumps(_json_safe(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _atomic_write_text(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _cell(value, decimals: int) -> str:
    """A metric value for a Markdown cell: fixed decimals, "inf", or "n/a" for None."""
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{decimals}f}"


def _escape(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """Markdown table lines; the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _per_image_table(report: dict, methods: Sequence[str], key: str) -> list[str]:
    """Markdown table lines: one row per image, one column per method, metric ``key``."""
    rows = [[_escape(e["name"]), *(_cell(e[m][key], _DECIMALS.get(key, 4)) for m in methods)]
            for e in report["per_image"]]
    return _table(["image", *map(_escape, methods)], rows)


def _variants_and_skipped(variants: dict, skipped: list[dict]) -> list[str]:
    """The closing sections of metrics.md: the metric variants, then the skipped files."""
    lines = ["## Metric variants", "", *(f"- **{k}**: {v}" for k, v in variants.items())]
    if skipped:
        lines += ["", "## Skipped", ""]
        lines += [f"- `{_escape(s['path'])}`: {s['reason']}" for s in skipped]
    return lines


def markdown_mean_table(report: dict) -> str:
    """The report's ``mean`` as a Markdown table: one row per method (and ``truth``), one
    column per metric; cells a method has no value for are left empty. Works for any task whose
    ``mean`` maps method -> {metric: value}."""
    keys = list(dict.fromkeys(k for values in report["mean"].values() for k in values))
    header = ["method", *(_HEADERS.get(k, k) for k in keys)]
    rows = [[_escape(method), *(_cell(values[k], _DECIMALS.get(k, 4)) if k in values else ""
                                for k in keys)]
            for method, values in report["mean"].items()]
    return "\n".join(_table(header, rows)) + "\n"


def colorize_markdown(report: dict) -> str:
    """metrics.md for the colorize task: per metric a table with one row per image, the gray
    baseline first on every row and the models next to it; then the means."""
    methods = report["methods"]
    models = report.get("models") or {}
    lines = [
        "# Colorization: models against the gray baseline",
        "",
        f"{report['images']} images, saturation {report['saturation']:g}; "
        f"{len(report['skipped'])} skipped.",
        "",
    ]
    for name in methods[1:]:
        lines.append(f"- `{_escape(name)}`: {models.get(name, 'in-memory model')}")
    lines.append(f"- `{GRAY}`: {METRIC_VARIANTS['gray']}")
    lines += ["", "## Mean", "", markdown_mean_table(report).rstrip("\n"), ""]
    for key in _METRICS:
        with_truth = key == "colorfulness"
        header = ["image", *map(_escape, methods), *([TRUTH] if with_truth else [])]
        rows = [[_escape(e["name"]),
                 *(_cell(e[m][key], _DECIMALS[key]) for m in methods),
                 *([_cell(e["truth_colorfulness"], _DECIMALS[key])] if with_truth else [])]
                for e in report["per_image"]]
        lines += [f"## {_TITLES[key]}", "", *_table(header, rows), ""]
    lines += _variants_and_skipped(METRIC_VARIANTS, report["skipped"])
    return "\n".join(lines) + "\n"


def sr_markdown(report: dict) -> str:
    """metrics.md for the sr task: the means (rows bicubic, then each model), then per metric
    a table with one row per image, bicubic first on every row and the models next to it."""
    methods = report["methods"]
    models = report.get("models") or {}
    scale = report["scale"]
    variants = report.get("metric_variants") or _sr_metric_variants(scale)
    lines = [
        f"# Super-resolution x{scale}: models against the bicubic baseline",
        "",
        f"{report['images']} images, x{scale}; {len(report['skipped'])} skipped. PSNR-Y and "
        f"SSIM-Y: BT.601 studio Y, {scale} px border crop (= scale), float64; PSNR-RGB: whole "
        f"image, peak 255.",
        "",
    ]
    for name in methods[1:]:
        lines.append(f"- `{_escape(name)}`: {models.get(name, 'in-memory model')}")
    lines.append(f"- `{BICUBIC}`: {variants[BICUBIC]}")
    lines.append(f"- LR input: {variants['lr']}")
    lines += ["", "## Mean", "", markdown_mean_table(report).rstrip("\n"), ""]
    for key in _SR_METRICS:
        lines += [f"## {_SR_TITLES[key]}", "", *_per_image_table(report, methods, key), ""]
    lines += _variants_and_skipped(variants, report["skipped"])
    return "\n".join(lines) + "\n"


def codec_markdown(report: dict) -> str:
    """metrics.md for the codec task: the mean colour PSNR/SSIM (the luma baseline first), the
    grayscale against luma, the JPEG robustness table, then per-image tables."""
    methods = report["methods"]
    mean = report["mean"]
    variants = report.get("metric_variants") or _CODEC_VARIANTS
    lines = [
        "# Invertible grayscale: colour restored from the stored 8-bit grayscale",
        "",
        f"{report['images']} images; {len(report['skipped'])} skipped. Colour PSNR and SSIM on "
        "RGB against the input; the grayscale is stored as a real 8-bit PNG (or JPEG) and read "
        "back before decoding.",
        "",
        f"- model: {report.get('model', 'in-memory model')}",
        *(f"- `{m}`: {variants[m]}" for m in (LUMA, LUMA_DECODED, CODEC, "jpegQ")),
        "",
        "## Colour restoration (mean)",
        "",
        markdown_mean_table({"mean": {m: mean[m] for m in methods}}).rstrip("\n"),
        "",
        "## Grayscale against BT.601 luma (mean)",
        "",
        markdown_mean_table({"mean": {GRAY_VS_LUMA: mean[GRAY_VS_LUMA]}}).rstrip("\n"),
        "",
        "## JPEG robustness (mean)",
        "",
        f"The grayscale stored as JPEG instead of PNG, then decoded; plot: `{JPEG_PLOT_PNG}`.",
        "",
    ]
    png = mean[CODEC]["psnr"]
    rows = [["PNG (lossless)", _cell(png, 2), _cell(mean[CODEC]["ssim"], 4), "0.00"]]
    for q in report["jpeg_qualities"]:
        values = mean[_jpeg_method(q)]
        drop = (round(values["psnr"] - png, 2) + 0.0  # + 0.0: no "-0.00"
                if None not in (values["psnr"], png)
                and not (math.isinf(values["psnr"]) and math.isinf(png)) else None)
        rows.append([f"JPEG q{q}", _cell(values["psnr"], 2), _cell(values["ssim"], 4),
                     _cell(drop, 2)])
    lines += [*_table(["storage", "PSNR", "SSIM", "ΔPSNR vs PNG"], rows), ""]
    for key, title in (("psnr", "Colour PSNR per image (dB)"), ("ssim", "Colour SSIM per image")):
        lines += [f"## {title}", "", *_per_image_table(report, methods, key), ""]
    rows = [[_escape(e["name"]), *(_cell(e[GRAY_VS_LUMA][k], _DECIMALS[k])
                                   for k in ("psnr", "ssim", "mae"))]
            for e in report["per_image"]]
    lines += ["## Grayscale against luma per image", "",
              *_table(["image", "PSNR", "SSIM", "MAE"], rows), ""]
    lines += _variants_and_skipped(variants, report["skipped"])
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# The tasks, by name, and the command line.

TASKS: dict[str, Callable] = {"colorize": evaluate_colorize, "sr": evaluate_sr,
                              "codec": evaluate_codec}
"""Task name -> function(config) -> report dict."""

FLAGS = flags.FLAGS
_DEFINED_IN: list[flags.FlagValues] = []


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """Defines the command-line flags (once per FlagValues).

    Called by :func:`run`, not at import, like :func:`koala.cli.colorize.define_flags`: other entry
    modules define flags of the same names (``--output_dir``, ``--progress``, ...), and a
    process (a test session) that imports several of them must not see them clash.
    """
    if any(fv is flag_values for fv in _DEFINED_IN):
        return
    _DEFINED_IN.append(flag_values)
    fv = flag_values
    flags.DEFINE_enum("task", None, sorted(TASKS), "What to evaluate.", flag_values=fv)
    flags.DEFINE_multi_string("model", None, "A saved model (.keras); repeat for several "
                              "models, which then share one table.", flag_values=fv)
    flags.DEFINE_string("images", None, "Folder of evaluation images (walked recursively), or "
                        "one image file.", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "Where the report goes. Default: runs/eval/TASK.",
                        flag_values=fv)
    flags.DEFINE_integer("max_images", None, "Evaluate at most this many images (default: "
                         "all).", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("saturation", DEFAULT_SATURATION,
                       "colorize: factor on the predicted a*b* (SPEC §1: 1.2).",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_string("embedder_weights", None,
                        "colorize: override the embedder weights recorded in the models "
                        "(imagenet, none or a local weights file).", flag_values=fv)
    flags.DEFINE_multi_enum("refine", ["none"], list(REFINES),
                            "colorize: report every model with this chroma refinement; repeat "
                            "(--refine=none --refine=guided) for rows with and without the "
                            "guided filter (SPEC §5).", flag_values=fv)
    flags.DEFINE_integer("radius", DEFAULT_RADIUS, "colorize: guided-filter radius (SPEC §5: "
                         "40).", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("eps", DEFAULT_EPS, "colorize: guided-filter ε (SPEC §5: 1e-4).",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_integer("grid_height", 160, "Height in pixels of each grid.png cell.",
                         lower_bound=8, flag_values=fv)
    flags.DEFINE_integer("scale", None, "sr (required): the upscaling factor; every model "
                         "must be of this scale.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("crop_size", DEFAULT_CROP_SIZE,
                         "sr: side in high-res pixels of the centred crop in crops.png.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_multi_integer("jpeg_quality", list(DEFAULT_JPEG_QUALITIES),
                               "codec: a JPEG quality to store the grayscale at for the "
                               "robustness table; repeat for several.", lower_bound=1,
                               upper_bound=100, flag_values=fv)
    flags.DEFINE_integer("tile", codec_lib.DEFAULT_TILE, "codec: tile side in px for the "
                         "encoder and decoder (bounds memory); 0 runs images whole.",
                         lower_bound=0, flag_values=fv)
    flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=fv)


# The flags each task's flags.txt records, in order.
_TASK_FLAG_NAMES = {
    "colorize": ("task", "model", "images", "output_dir", "max_images", "saturation",
                 "embedder_weights", "grid_height", "refine", "radius", "eps", "progress"),
    "sr": ("task", "model", "images", "scale", "output_dir", "max_images", "crop_size",
           "progress"),
    "codec": ("task", "model", "images", "output_dir", "max_images", "jpeg_quality",
              "grid_height", "tile", "progress"),
}


def _colorize_config(fv: flags.FlagValues = FLAGS) -> ColorizeEvalConfig:
    return ColorizeEvalConfig(
        models=tuple(fv.model), images=fv.images,
        output_dir=fv.output_dir or os.path.join("runs", "eval", "colorize"),
        max_images=fv.max_images, saturation=fv.saturation,
        embedder_weights=fv.embedder_weights, grid_height=fv.grid_height,
        progress=fv.progress, refine=tuple(fv.refine), radius=fv.radius, eps=fv.eps)


def _sr_config(fv: flags.FlagValues = FLAGS) -> SREvalConfig:
    if fv.scale is None:
        raise KoalaError("--scale is required for --task=sr")
    return SREvalConfig(
        models=tuple(fv.model), images=fv.images, scale=fv.scale,
        output_dir=fv.output_dir or os.path.join("runs", "eval", "sr"),
        max_images=fv.max_images, crop_size=fv.crop_size, progress=fv.progress)


def _codec_config(fv: flags.FlagValues = FLAGS) -> CodecEvalConfig:
    if len(fv.model) != 1:
        raise KoalaError(f"--task=codec evaluates one model (a whole InvertibleGrayscale "
                         f".keras), got {len(fv.model)} --model flags")
    return CodecEvalConfig(
        model=fv.model[0], images=fv.images,
        output_dir=fv.output_dir or os.path.join("runs", "eval", "codec"),
        max_images=fv.max_images, jpeg_qualities=tuple(fv.jpeg_quality),
        grid_height=fv.grid_height, tile=fv.tile or None, progress=fv.progress)


# Task name -> config built from the flags; the same keys as TASKS.
_CONFIG_FROM_FLAGS = {"colorize": _colorize_config, "sr": _sr_config, "codec": _codec_config}


def _flags_text() -> str:
    """The effective flags, one ``--flag=value`` per line (a flagfile)."""
    lines = []
    for name in _TASK_FLAG_NAMES[FLAGS.task]:
        value = FLAGS[name].value
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                lines.append(f"--{name}={item}")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        config = _CONFIG_FROM_FLAGS[FLAGS.task]()
        report = TASKS[FLAGS.task](config)
    except NoUsableImagesError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KoalaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _atomic_write_text(os.path.join(config.output_dir, "flags.txt"), _flags_text())
    for item in report["skipped"]:
        print(f"skipped {item['path']}: {item['reason']}", file=sys.stderr)
    print(f"{FLAGS.task}: {report['images']} images, {len(report['skipped'])} skipped; "
          f"mean over images:")
    print(markdown_mean_table(report), end="")
    if FLAGS.task == "sr":
        print(f"x{report['scale']}: PSNR-Y and SSIM-Y on BT.601 studio Y with a "
              f"{report['scale']} px border crop, PSNR-RGB on the whole image; crops: "
              f"{os.path.join(config.output_dir, CROPS_PNG)}")
    if FLAGS.task == "codec":
        print(f"colour PSNR/SSIM on RGB after a real 8-bit PNG (or JPEG) round trip of the "
              f"grayscale; luma is the baseline; JPEG plot: "
              f"{os.path.join(config.output_dir, JPEG_PLOT_PNG)}")
    print(f"report: {os.path.join(config.output_dir, METRICS_MD)}")
    return 0


def run():
    define_flags()
    flags.mark_flags_as_required(["task", "model", "images"])
    app.run(main)


if __name__ == "__main__":
    run()
