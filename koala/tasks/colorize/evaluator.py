r"""``koala.evaluate --task=colorize`` (SPEC §1, §6): colorizers against the gray baseline.

Colorizes every image's grayscale version with each model and compares the result with the
original colour image (the truth), next to the "gray" baseline (``Lab(L, 0, 0)``, ab = 0) that
every colorizer must beat. Per image and method: PSNR and SSIM on RGB, the prediction's
colourfulness, mean CIEDE2000 against the truth; their arithmetic means over the images.
:func:`run` writes, in ``output_dir``:

  ``metrics.json``  the report: per-image and mean metrics, the metric variants, the models,
                    skipped files. An infinite PSNR (identical images) is written as the string
                    ``"inf"`` (JSON has no Infinity); an undefined SSIM (image under 11 px on a
                    side) as ``null``.
  ``metrics.md``    one Markdown table per metric (one row per image, the gray baseline in the
                    first column of every row, then each model) and a table of the means.
  ``grid.png``      one row per image: [gray | model 1 | model 2 ... | truth].

With ``semantic_weights`` (a MobileNet ImageNet classifier's weights; "none" for random ones in
tests), the semantic check of Zhang et al. 2016: the classifier
(:class:`koala.ops.embedder.Classifier`) runs on the colour photo and on every method's output;
``top1`` is 1 when an output's top-1 class is the photo's, ``top5`` when the photo's top-1
class is among the output's top 5. Their means are the agreement rates: a colorizer that
restores meaningful colour moves them above the gray baseline's.

With ``samples`` N > 1, a stochastic model (ColorGAN, PixColor) draws N colourings of every
image from ``seed`` (sample k from ``(seed, k)``); its row holds the means over the samples,
and three more columns: ``psnr_best`` (the best sample's PSNR, best-of-N), ``diversity``
(the mean pairwise a*b* distance between the samples, Lab units, over pixels and pairs) and
``seconds_per_sample`` (wall time of the N colourings / N). grid.png shows sample 1.

With ``refine=("none", "guided")`` every model gets a second row ``<model>+guided``, its output
through SPEC §5's guided filter. The loop, the inputs check and the file writing are
:mod:`koala.core.evaluation`'s.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from koala.core import evaluation
from koala.core import report as fmt
from koala.core.evaluation import ImageCallback, NoUsableImagesError
from koala.core.report import GRID_PNG
from koala.ops import metrics
from koala.ops.grid import make_grid
from koala.tasks.colorize.config import DEFAULT_EPS, DEFAULT_RADIUS, DEFAULT_SATURATION, REFINES
from koala.tasks.colorize.inference import Colorizer, gray_baseline

__all__ = ["GRAY", "ColorizeEvalConfig", "NoUsableImagesError", "colorize_markdown",
           "colorize_report", "evaluate_colorize", "model_names", "run", "summary"]

GRAY = "gray"  # name of the ab = 0 baseline in reports
TRUTH = "truth"

RESERVED_NAMES = fmt.IMAGE_KEYS | {"truth_colorfulness", GRAY, TRUTH}
"""Keys of a per-image entry (and of "mean") that a model name must not take."""

METRICS = ("psnr", "ssim", "colorfulness", "delta_e00")
SEMANTIC_METRICS = ("top1", "top5")
SAMPLE_METRICS = ("psnr_best", "diversity", "seconds_per_sample")
_TITLES = {
    "psnr_best": "Best-of-N PSNR (dB, the best sample of each image)",
    "diversity": "Diversity: mean pairwise a*b* distance between samples",
    "seconds_per_sample": "Seconds per sample (wall time of N colourings / N)",
    "top1": "Top-1 agreement with the colour photo's class (semantic check)",
    "top5": "The colour photo's class in the top 5 (semantic check)",
    "psnr": "PSNR (dB, higher is better)",
    "ssim": "SSIM (higher is better)",
    "colorfulness": "Colourfulness M (truth's in the last column)",
    "delta_e00": "Mean ΔE00 (lower is better)",
}

SEMANTIC_VARIANTS = {
    "top1": "1 if the ImageNet classifier's top-1 class on the output is its top-1 class on "
            "the colour photo, else 0 (Zhang et al. 2016's semantic interpretability; the "
            "image fitted into 224 px with white padding); the mean is the agreement rate",
    "top5": "1 if the classifier's top-1 class on the colour photo is among its top 5 on "
            "the output, else 0",
}

SAMPLE_VARIANTS = {
    "psnr_best": "samples > 1: the highest PSNR among an image's N samples (best-of-N); "
                 "the stochastic model's psnr, ssim, colorfulness, delta_e00 are means over "
                 "its samples",
    "diversity": "samples > 1: mean over sample pairs and pixels of the Euclidean a*b* "
                 "distance (CIE Lab units) between two samples of the same image",
    "seconds_per_sample": "samples > 1: wall-clock seconds of colorize_samples(N) / N, "
                          "including the embedder and the full-resolution output",
}

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


class SupportsColorize(Protocol):
    """What :func:`colorize_report` needs of a model: a
    :class:`koala.tasks.colorize.inference.Colorizer` or a stub with its ``colorize``."""

    def colorize(self, image: np.ndarray, *, saturation: float) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class ColorizeEvalConfig:
    """What :func:`run` evaluates and where the results go.

    models:           saved colorizers (``.keras`` files), at least one.
    images:           a folder of images (walked recursively, ``koala.ops.images.find_images``)
                      or one image file.
    output_dir:       where metrics.json, metrics.md and grid.png go (created if needed).
    max_images:       stop after this many evaluated images (None: all of them).
    saturation:       the chroma factor the colorizers apply; None: each model's default (a
                      preset's recorded decoding, else SPEC §1's 1.2).
    temperature:      the annealed-mean temperature of the classification-head models (the
                      others ignore it); None: each model's own (a preset's recorded one).
    embedder_weights: overrides the embedder weights recorded in the models (None: keep).
    grid_height:      height in pixels of every cell of grid.png.
    progress:         show a progress bar over the images on stderr.
    refine:           the chroma refinements to report for every model: "none" (the raw
                      prediction) and/or "guided" (SPEC §5's guided filter, a row
                      "<model>+guided"), with ``radius`` and ``eps``; empty (the default):
                      one row per model with its own (a preset's recorded decoding; "guided"
                      for a VCNN, else "none").
    semantic_weights: weights of the MobileNet ImageNet classifier for the semantic check
                      (a file, "imagenet" or "none"); None: no check.
    """

    models: tuple[str, ...]
    images: str
    output_dir: str = os.path.join("runs", "eval", "colorize")
    max_images: int | None = None
    saturation: float | None = None
    embedder_weights: str | None = None
    temperature: float | None = None
    grid_height: int = 160
    progress: bool = True
    refine: tuple[str, ...] = ()
    radius: int = DEFAULT_RADIUS
    eps: float = DEFAULT_EPS
    semantic_weights: str | None = None
    samples: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if not self.models:
            raise ValueError("at least one model is needed")
        object.__setattr__(self, "refine", tuple(dict.fromkeys(self.refine)))
        if not set(self.refine) <= set(REFINES):
            raise ValueError(f"refine must be a subset of {REFINES}, got {self.refine}")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {self.max_images}")
        if self.saturation is not None and not self.saturation >= 0:
            raise ValueError(f"saturation must be >= 0, got {self.saturation}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.grid_height < 1:
            raise ValueError(f"grid_height must be >= 1, got {self.grid_height}")


def model_names(paths: Sequence[str | os.PathLike], *,
                reserved: Iterable[str] = RESERVED_NAMES) -> list[str]:
    """:func:`koala.core.report.model_names` with this report's keys (``gray``, ``truth`` ...)
    reserved."""
    return fmt.model_names(paths, reserved=reserved)


def _method_metrics(truth: np.ndarray, output: np.ndarray) -> dict:
    """PSNR, SSIM, colourfulness and mean ΔE00 of one uint8 (H, W, 3) output against the truth.

    SSIM is None when a side is under 11 px (its Gaussian window doesn't fit).
    """
    return {
        **evaluation.psnr_ssim(truth, output),
        "colorfulness": metrics.colorfulness(output),
        "delta_e00": metrics.mean_ciede2000(output, truth),
    }


def colorize_report(
    colorizers: dict[str, SupportsColorize],
    image_paths: Iterable[str | os.PathLike],
    *,
    saturation: float | None = DEFAULT_SATURATION,
    root: str | os.PathLike | None = None,
    max_images: int | None = None,
    progress: bool = False,
    on_image: ImageCallback | None = None,
    classifier=None,
    samples: int = 1,
    seed: int = 0,
) -> dict:
    """Evaluates colorizers and the gray baseline on image files; the core of the colorize task.

    For each image (``koala.ops.images.load_image``; unreadable ones are skipped and listed): the
    truth is the image itself, the gray baseline ``gray_baseline(truth)``, and each model's
    output ``colorizer.colorize(truth, saturation=saturation)``; each is scored against the
    truth with :func:`_method_metrics`.

    Args:
      colorizers: table name -> model (a :class:`koala.tasks.colorize.inference.Colorizer` or
        anything with its ``colorize(image, *, saturation)``); names must not be ``gray``,
        ``truth`` or a per-image key (see :func:`model_names`).
      image_paths: image files, evaluated in this order.
      saturation: passed to every ``colorize`` call (None: each model's own default).
      root: image names in the report are relative to it (default: the paths as given).
      max_images: stop after this many evaluated (not skipped) images.
      progress: show a progress bar on stderr.
      on_image: called as ``on_image(name, [gray, *outputs, truth])`` for every evaluated
        image (uint8 arrays), e.g. to build a comparison grid.
      classifier: None, or anything with ``probabilities(uint8 image) -> (classes,)``
        (:class:`koala.ops.embedder.Classifier`): adds ``top1`` and ``top5`` to every method
        (the semantic check, see the module docstring).
      samples, seed: N > 1 draws N colourings per image from every colorizer whose
        ``is_stochastic`` is true (``colorize_samples(image, N, seed, saturation=...)``) and adds
        :data:`SAMPLE_METRICS` (None for the others; see the module docstring).

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
    fmt.check_names(colorizers, RESERVED_NAMES)
    methods = [GRAY, *colorizers]
    keys = (METRICS + (SAMPLE_METRICS if samples > 1 else ())
            + (SEMANTIC_METRICS if classifier is not None else ()))

    def draw(model_name, colorizer, truth, name) -> tuple[list[np.ndarray], float | None]:
        start = time.perf_counter()
        if samples > 1 and getattr(colorizer, "is_stochastic", False):
            drawn = colorizer.colorize_samples(truth, samples, seed, saturation=saturation)
        else:
            drawn = [colorizer.colorize(truth, saturation=saturation)]
        seconds = (time.perf_counter() - start) / len(drawn)
        drawn = [np.asarray(d) for d in drawn]
        for output in drawn:
            if output.shape != truth.shape:
                raise ValueError(f"model {model_name!r} returned shape {output.shape} for "
                                 f"{name} of shape {truth.shape}")
        return drawn, seconds if len(drawn) > 1 else None

    def score(name: str, truth: np.ndarray) -> dict:
        evaluation.check_scorable(*truth.shape[:2])
        outputs, timings = {GRAY: [gray_baseline(truth)]}, {GRAY: None}
        for model_name, colorizer in colorizers.items():
            outputs[model_name], timings[model_name] = draw(model_name, colorizer, truth, name)
        entry = {"name": name, "width": int(truth.shape[1]), "height": int(truth.shape[0]),
                 "truth_colorfulness": metrics.colorfulness(truth)}
        label = (int(np.argmax(classifier.probabilities(truth)))
                 if classifier is not None else None)
        for m in methods:
            scores = [_method_metrics(truth, out) for out in outputs[m]]
            if classifier is not None:
                for out, one in zip(outputs[m], scores, strict=True):
                    top5 = np.argsort(classifier.probabilities(out))[::-1][:5]
                    one.update(top1=float(top5[0] == label), top5=float(label in top5))
            entry[m] = {k: evaluation.mean(one[k] for one in scores) for k in scores[0]}
            if samples > 1:
                several = len(outputs[m]) > 1
                entry[m].update(
                    psnr_best=max(one["psnr"] for one in scores) if several else None,
                    diversity=diversity(outputs[m]) if several else None,
                    seconds_per_sample=timings[m])
        if on_image is not None:
            on_image(name, [*(outputs[m][0] for m in methods), truth])
        return entry

    per_image, skipped = evaluation.score_images(image_paths, score, root=root,
                                                 max_images=max_images, progress=progress)
    mean = evaluation.means(per_image, methods, keys)
    mean[TRUTH] = {"colorfulness": evaluation.mean(e["truth_colorfulness"] for e in per_image)}
    return {
        "task": "colorize",
        "images": len(per_image),
        "methods": methods,
        "saturation": None if saturation is None else float(saturation),
        "metric_variants": {**METRIC_VARIANTS,
                            **(SAMPLE_VARIANTS if samples > 1 else {}),
                            **(SEMANTIC_VARIANTS if classifier is not None else {})},
        **({"samples": samples, "seed": seed} if samples > 1 else {}),
        "per_image": per_image,
        "mean": mean,
        "skipped": skipped,
    }


def diversity(outputs: Sequence[np.ndarray]) -> float:
    """Mean pairwise a*b* distance (CIE Lab units) between uint8 (H, W, 3) colourings of one
    image: over the pairs, the mean over pixels of the Euclidean distance in a*b*."""
    from koala.ops import color

    ab = [color.srgb_to_lab(np.asarray(o, np.float32) / 255.0).numpy()[..., 1:] for o in outputs]
    pairs = [(i, j) for i in range(len(ab)) for j in range(i + 1, len(ab))]
    if not pairs:
        raise ValueError("diversity needs at least two colourings")
    return float(np.mean([np.sqrt(((ab[i] - ab[j]) ** 2).sum(-1)).mean() for i, j in pairs]))


def colorize_markdown(report: dict) -> str:
    """metrics.md for the colorize task: per metric a table with one row per image, the gray
    baseline first on every row and the models next to it; then the means."""
    lines = [
        "# Colorization: models against the gray baseline",
        "",
        f"{report['images']} images, saturation {_saturation_text(report)}; "
        f"{len(report['skipped'])} skipped.",
        "",
        *fmt.model_lines(report, GRAY, report["metric_variants"]),
        "",
        *fmt.mean_section(report),
    ]
    semantic = SEMANTIC_METRICS if "top1" in report["mean"][GRAY] else ()
    sampled = SAMPLE_METRICS if "diversity" in report["mean"][GRAY] else ()
    for key in METRICS + sampled + semantic:
        extra = (TRUTH, "truth_colorfulness") if key == "colorfulness" else None
        lines += [f"## {_TITLES[key]}", "",
                  *fmt.per_image_table(report, report["methods"], key, extra=extra), ""]
    return fmt.document(lines, report, report["metric_variants"])


def _saturation_text(report: dict) -> str:
    if report["saturation"] is not None:
        return f"{report['saturation']:g}"
    per_model = report.get("saturations") or {}
    return "per model (" + ", ".join(f"{k} {v:g}" for k, v in per_model.items()) + ")"


@dataclasses.dataclass(frozen=True)
class _Refined:
    """A colorizer whose outputs go through one chroma refinement (a report row)."""

    colorizer: Colorizer
    refine: str | None
    radius: int
    eps: float

    @property
    def is_stochastic(self) -> bool:
        return self.colorizer.is_stochastic

    def colorize(self, image, *, saturation=None):
        # The model's own saturation (set when it was loaded): several models may differ.
        return self.colorizer.colorize(image, refine=self.refine,
                                       radius=self.radius, eps=self.eps)

    def colorize_samples(self, image, samples: int, seed: int, *, saturation=None):
        # As colorize: the model's own saturation.
        return self.colorizer.colorize_samples(image, samples, seed, refine=self.refine,
                                               radius=self.radius, eps=self.eps)


def run(config: ColorizeEvalConfig) -> dict:
    """The colorize task: loads the models, runs :func:`colorize_report`, writes the outputs.

    Writes metrics.json, metrics.md and grid.png into ``config.output_dir`` (see the module
    docstring) and returns the report as written to metrics.json, before JSON conversion
    (``models`` maps table names to model files; ``images_dir``, ``embedder_weights``,
    ``grid_height`` and ``refine`` are added to :func:`colorize_report`'s keys).

    Raises:
      KoalaError: a model file or the images folder is missing, or a model doesn't load.
      NoUsableImagesError: no image could be evaluated (nothing is written then).
    """
    names = model_names(config.models)
    height = config.grid_height

    decodings = {}  # name -> the saturation and temperature each model is scored with

    def load() -> dict[str, _Refined]:
        colorizers = {}
        for name, path in zip(names, config.models, strict=True):
            colorizer = Colorizer.load(path, embedder_weights=config.embedder_weights,
                                       saturation=config.saturation)
            if config.temperature is not None and colorizer.temperature is not None:
                colorizer = Colorizer(colorizer.model, colorizer.embedder,
                                      saturation=colorizer.saturation,
                                      temperature=config.temperature)
            decodings[name] = {"saturation": colorizer.saturation,
                               "temperature": colorizer.temperature}
            decodings[name]["refine"] = colorizer.refine
            for refine in config.refine or (None,):  # None: the model's own (one row)
                key = name if refine in (None, "none") else f"{name}+{refine}"
                colorizers[key] = _Refined(colorizer, refine, config.radius, config.eps)
        return colorizers

    classifier = None
    if config.semantic_weights is not None:
        from koala.ops.embedder import Classifier

        classifier = Classifier("mobilenet", config.semantic_weights)

    def report(colorizers, paths, *, root, on_image):
        shared = {d["saturation"] for d in decodings.values()}
        rep = colorize_report(colorizers, paths, root=root,
                              saturation=shared.pop() if len(shared) == 1 else None,
                              max_images=config.max_images, progress=config.progress,
                              on_image=on_image, classifier=classifier,
                              samples=config.samples, seed=config.seed)
        rep["saturations"] = {n: d["saturation"] for n, d in decodings.items()}
        rep["temperatures"] = {n: d["temperature"] for n, d in decodings.items()
                               if d["temperature"] is not None}
        rep["refines"] = {n: d["refine"] for n, d in decodings.items()}
        return rep

    guided = {"radius": config.radius, "eps": config.eps}
    return evaluation.evaluate(
        model_files=config.models, images_dir=config.images, output_dir=config.output_dir,
        load=load, report=report, row=lambda cells: evaluation.shrink_cells(cells, height),
        outputs=lambda rep, rows: (colorize_markdown(rep),
                                   {GRID_PNG: make_grid(rows, height=height)}),
        run_keys=dict(
            models={n: evaluation.model_source(p)
                    for n, p in zip(names, config.models, strict=True)},
            embedder_weights=config.embedder_weights, grid_height=config.grid_height,
            refine=list(config.refine), **guided,
            **({"semantic": classifier.describe()} if classifier is not None else {})))


def summary(report: dict, output_dir: str) -> list[str]:
    """What the command line prints under the mean table: nothing more for this task."""
    return []


evaluate_colorize = run
"""The name koala's earlier ``evaluate`` module gave :func:`run`."""
