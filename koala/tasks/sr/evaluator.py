r"""``koala.evaluate --task=sr`` (SPEC §3, §6): SR models against the bicubic baseline.

Super-resolves a low-res version of every image with each model (a saved SR model, run through
:class:`koala.tasks.sr.inference.Upscaler`) and compares the result with the image itself (the
high-res truth, "HR"), next to the bicubic baseline that every SR model must beat. Per image:
HR = the image, mod-cropped (bottom and right) to a multiple of ``scale``; LR =
``koala.data.pipelines.bicubic_downscale`` of HR, the very degradation the SR trainer uses
(bicubic with anti-aliasing), rounded to 8 bits like a real low-res image (:func:`degrade`);
bicubic baseline = ``pipelines.bicubic_upscale(LR)``, rounded to 8 bits
(:func:`bicubic_baseline`); each model's output = ``upscaler.upscale(LR)``. Per image and
method, against HR: PSNR and SSIM on the BT.601 studio Y channel with ``scale`` pixels cropped
from every border (the field's convention, float64; ``koala.ops.metrics.psnr_y`` /
``ssim_y``) and PSNR on RGB over the whole image; their arithmetic means. Every model's
``scale`` must equal the config's. :func:`run` writes, in ``output_dir``:

  ``metrics.json``  the report (as for colorize; methods ``bicubic``, then the models).
  ``metrics.md``    a table of the means (rows bicubic, then each model) and one table per
                    metric (one row per image, bicubic first on every row), the variants.
  ``crops.png``     one row per image: [bicubic | model 1 | ... | HR], the same centred
                    ``crop_size`` x ``crop_size`` HR-pixel crop of each, enlarged by pixel
                    repetition (nearest neighbour) to about 192 px so pixels show.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Protocol

import numpy as np

from koala.core import evaluation
from koala.core import report as fmt
from koala.core.errors import KoalaError
from koala.core.evaluation import ImageCallback, NoUsableImagesError
from koala.data import pipelines
from koala.ops import metrics
from koala.ops.grid import make_grid

__all__ = ["BICUBIC", "CROPS_PNG", "NoUsableImagesError", "SREvalConfig", "bicubic_baseline",
           "crop_box", "degrade", "evaluate_sr", "mod_crop", "run", "sr_markdown", "sr_report",
           "summary"]

BICUBIC = "bicubic"  # name of the bicubic baseline in reports
HR = "hr"
CROPS_PNG = "crops.png"
DEFAULT_CROP_SIZE = 96
CROP_DISPLAY_HEIGHT = 192  # crops.png cells are enlarged by pixel repetition to about this

RESERVED_NAMES = fmt.IMAGE_KEYS | {"lr_width", "lr_height", BICUBIC, HR}
METRICS = ("psnr_y", "ssim_y", "psnr_rgb")
_TITLES = {
    "psnr_y": "PSNR-Y (dB, BT.601 studio Y, border crop = scale; higher is better)",
    "ssim_y": "SSIM-Y (BT.601 studio Y, border crop = scale; higher is better)",
    "psnr_rgb": "PSNR-RGB (dB, whole image; higher is better)",
}


def metric_variants(scale: int) -> dict:
    """What each metric, the truth, the input and the baseline are, for metrics.md/json."""
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
    """What :func:`sr_report` needs of a model: :class:`koala.tasks.sr.inference.Upscaler` or a
    stub with the same ``scale`` and ``upscale``."""

    @property
    def scale(self) -> int: ...

    def upscale(self, rgb: np.ndarray) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class SREvalConfig:
    """What :func:`run` evaluates and where the results go.

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
        _check_scale(self.scale)
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        if self.crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {self.crop_size}")


def _check_scale(scale) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be an integer >= 1, got {scale!r}")


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


def _method_metrics(hr: np.ndarray, output: np.ndarray, scale: int) -> dict:
    """Y-PSNR and Y-SSIM (border crop = scale) and whole-image RGB PSNR of one output (the
    image has SSIM's 11 px a side after the crop: :func:`koala.core.evaluation.check_scorable`)."""
    return {
        "psnr_y": metrics.psnr_y(hr, output, crop=scale),
        "ssim_y": metrics.ssim_y(hr, output, crop=scale),
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
    ``upscaler.upscale(LR)``; each is scored against HR with :func:`_method_metrics`.

    Args:
      upscalers: table name -> model (a :class:`koala.tasks.sr.inference.Upscaler` or anything
        with its ``scale`` and ``upscale(uint8 (h, w, 3)) -> uint8 (h*s, w*s, 3)``); names
        must not be ``bicubic``, ``hr`` or a per-image key.
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
    _check_scale(scale)
    fmt.check_names(upscalers, RESERVED_NAMES)
    _check_scales(upscalers, scale)
    methods = [BICUBIC, *upscalers]

    def score(name: str, rgb: np.ndarray) -> dict:
        hr = mod_crop(rgb, scale)
        if min(hr.shape[:2]) <= 2 * scale:
            raise evaluation.Skip(
                f"too small for x{scale}: {rgb.shape[1]}x{rgb.shape[0]} px, the "
                f"{scale} px border crop needs more than {2 * scale} px a side")
        evaluation.check_scorable(*hr.shape[:2], crop=scale)
        lr = degrade(hr, scale)
        outputs = {BICUBIC: bicubic_baseline(lr, scale)}
        for model_name, upscaler in upscalers.items():
            output = np.asarray(upscaler.upscale(lr))
            if output.shape != hr.shape or output.dtype != np.uint8:
                raise ValueError(
                    f"model {model_name!r} returned {output.dtype} {output.shape} for "
                    f"{name}: expected uint8 {hr.shape} (x{scale} of {lr.shape})")
            outputs[model_name] = output
        entry = {"name": name, "width": int(hr.shape[1]), "height": int(hr.shape[0]),
                 "lr_width": int(lr.shape[1]), "lr_height": int(lr.shape[0])}
        entry.update({m: _method_metrics(hr, outputs[m], scale) for m in methods})
        if on_image is not None:
            on_image(name, [*(outputs[m] for m in methods), hr])
        return entry

    per_image, skipped = evaluation.score_images(image_paths, score, root=root,
                                                 max_images=max_images, progress=progress)
    return {
        "task": "sr",
        "images": len(per_image),
        "scale": int(scale),
        "methods": methods,
        "metric_variants": metric_variants(scale),
        "per_image": per_image,
        "mean": evaluation.means(per_image, methods, METRICS),
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


def sr_markdown(report: dict) -> str:
    """metrics.md for the sr task: the means (rows bicubic, then each model), then per metric
    a table with one row per image, bicubic first on every row and the models next to it."""
    scale = report["scale"]
    variants = report.get("metric_variants") or metric_variants(scale)
    lines = [
        f"# Super-resolution x{scale}: models against the bicubic baseline",
        "",
        f"{report['images']} images, x{scale}; {len(report['skipped'])} skipped. PSNR-Y and "
        f"SSIM-Y: BT.601 studio Y, {scale} px border crop (= scale), float64; PSNR-RGB: whole "
        f"image, peak 255.",
        "",
        *fmt.model_lines(report, BICUBIC, variants),
        f"- LR input: {variants['lr']}",
        "",
        *fmt.mean_section(report),
    ]
    for key in METRICS:
        lines += [f"## {_TITLES[key]}", "",
                  *fmt.per_image_table(report, report["methods"], key), ""]
    return fmt.document(lines, report, variants)


def run(config: SREvalConfig) -> dict:
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
    from koala.tasks.sr.inference import Upscaler  # keras and the models only when this runs

    names = model_names(config.models)

    def load() -> dict:
        upscalers = {name: Upscaler.load(path)
                     for name, path in zip(names, config.models, strict=True)}
        _check_scales(upscalers, config.scale)  # before any image is read
        return upscalers

    def report(upscalers, paths, *, root, on_image):
        return sr_report(upscalers, paths, scale=config.scale, root=root,
                         max_images=config.max_images, progress=config.progress,
                         on_image=on_image)

    # Cells of about CROP_DISPLAY_HEIGHT px: crop_size * a whole repetition factor.
    height = config.crop_size * max(1, round(CROP_DISPLAY_HEIGHT / config.crop_size))
    return evaluation.evaluate(
        model_files=config.models, images_dir=config.images, output_dir=config.output_dir,
        load=load, report=report, row=lambda cells: _crop_cells(cells, config.crop_size, height),
        outputs=lambda rep, rows: (sr_markdown(rep), {CROPS_PNG: make_grid(rows, height=height)}),
        run_keys=dict(
            scale=config.scale,
            models={n: evaluation.model_source(p)
                    for n, p in zip(names, config.models, strict=True)},
            crop_size=config.crop_size, crop_display_height=height))


def model_names(paths) -> list[str]:
    """:func:`koala.core.report.model_names` with this report's keys reserved."""
    return fmt.model_names(paths, reserved=RESERVED_NAMES)


def summary(report: dict, output_dir: str) -> list[str]:
    """What the command line prints under the mean table."""
    return [f"x{report['scale']}: PSNR-Y and SSIM-Y on BT.601 studio Y with a "
            f"{report['scale']} px border crop, PSNR-RGB on the whole image; crops: "
            f"{os.path.join(output_dir, CROPS_PNG)}"]


evaluate_sr = run
"""The name koala's earlier ``evaluate`` module gave :func:`run`."""
