r"""``koala.evaluate --task=codec`` (SPEC §2, §6): the Invertible Grayscale codec against luma.

Runs one whole Invertible Grayscale model (a ``.keras`` file of
:class:`koala.tasks.codec.model.InvertibleGrayscale`, through
:mod:`koala.tasks.codec.inference`) on every image. The grayscale G is rounded to 8 bits,
written as a PNG with PIL and read back (a real round trip), then decoded. Per image and on
average: colour PSNR and SSIM on RGB of the restored image against the input (method
``codec``); next to it the baseline ``luma`` (the input's BT.601 luma as a gray image: what a
plain grayscale gives, no colour) and ``luma_decoded`` (that luma fed to the decoder); PSNR,
SSIM and mean absolute difference of G against the uint8 luma (``gray_vs_luma``; the paper lets
G stray up to 70 levels to hide colour); and the JPEG robustness: G stored as JPEG at each of
``jpeg_qualities`` (95, 90, 75, 50), decoded, colour PSNR/SSIM (methods ``jpeg95`` ...).
:func:`run` writes ``metrics.json``, ``metrics.md`` (the mean tables, the JPEG table with the
PNG result as reference, per-image tables), ``grid.png`` (one row per image: [input |
grayscale | restored]) and ``jpeg_psnr.png`` (mean colour PSNR against JPEG quality, PNG and
luma as reference lines, drawn with matplotlib: :func:`jpeg_plot`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from koala.core import evaluation
from koala.core import report as fmt
from koala.core.evaluation import ImageCallback, NoUsableImagesError
from koala.core.report import GRID_PNG
from koala.ops.grid import make_grid
from koala.tasks.codec import inference as codec_lib

__all__ = ["CODEC", "LUMA", "CodecEvalConfig", "NoUsableImagesError", "codec_markdown",
           "codec_report", "evaluate_codec", "jpeg_plot", "run", "summary"]

LUMA = "luma"  # the SPEC §6 baseline: the plain luminance image, no colour
LUMA_DECODED = "luma_decoded"  # an ordinary grayscale (the luma) given to the decoder
CODEC = "codec"  # the decoder on the encoder's grayscale after a real 8-bit PNG round trip
GRAY_VS_LUMA = "gray_vs_luma"  # the stored grayscale against the input's luma
JPEG_PLOT_PNG = "jpeg_psnr.png"
DEFAULT_JPEG_QUALITIES = (95, 90, 75, 50)
PLOT_SIZE = (560, 360)  # jpeg_psnr.png, (width, height) in px

METRIC_VARIANTS = {
    "psnr": "colour: PSNR = 10 log10(255^2 / MSE) over all RGB pixels and channels of the "
            "restored image against the input (0..255, peak 255; koala.ops.metrics.psnr); "
            "gray_vs_luma: the same on the single channel; identical images give inf, written "
            "as the string \"inf\" in metrics.json",
    "ssim": "SSIM (Wang et al. 2004), Gaussian window 11x11 sigma 1.5, K1 0.01, K2 0.03, data "
            "range 255, population moments, 5 px border excluded; colour: mean of the three "
            "RGB channels; null for images under 11 px on a side",
    "mae": "gray_vs_luma: mean absolute difference in grey levels (0..255)",
    LUMA: "the baseline (SPEC §6): the input's BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B, "
          "rounded to uint8 (koala.tasks.codec.inference.luma), shown as gray RGB; it restores "
          "no colour",
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
    """What :func:`run` evaluates and where the results go.

    model:          a whole InvertibleGrayscale model saved as ``.keras``.
    images:         a folder of images (walked recursively) or one image file.
    output_dir:     where metrics.json, metrics.md, grid.png and jpeg_psnr.png go (created).
    max_images:     stop after this many evaluated images (None: all of them).
    jpeg_qualities: the JPEG qualities the grayscale is also stored at (robustness table).
    grid_height:    height in pixels of every cell of grid.png.
    tile:           tile side for the codec (:class:`koala.tasks.codec.inference.TiledPart`;
                    None: whole images).
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

    For each image (unreadable ones are skipped and listed): G8 =
    ``koala.tasks.codec.inference.encode`` of the image, stored as an 8-bit PNG and read back
    (:func:`koala.tasks.codec.inference.round_trip`); the restored image ``decode(G8)``;
    ``decode`` of G8 stored as JPEG at each quality; the luma baseline and the luma given to
    the decoder (see ``metric_variants``). Colour outputs are scored against the image with
    PSNR and SSIM on RGB, G8 against the uint8 luma.

    Args:
      encoder, decoder: the codec's halves (Keras models or
        :class:`koala.tasks.codec.inference.TiledPart`).
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

    def score(name: str, truth: np.ndarray) -> dict:
        evaluation.check_scorable(*truth.shape[:2])
        gray = codec_lib.encode(encoder, truth)
        stored = codec_lib.round_trip(gray, "PNG")
        luma = codec_lib.luma(truth)
        outputs = {LUMA: np.repeat(luma[..., None], 3, axis=2),
                   LUMA_DECODED: codec_lib.decode(decoder, luma),
                   CODEC: codec_lib.decode(decoder, stored)}
        for quality in jpeg_qualities:
            jpeg = codec_lib.round_trip(gray, "JPEG", quality=quality)
            outputs[_jpeg_method(quality)] = codec_lib.decode(decoder, jpeg)
        mae = float(np.mean(np.abs(stored.astype(np.int16) - luma)))
        entry = {"name": name, "width": int(truth.shape[1]), "height": int(truth.shape[0]),
                 GRAY_VS_LUMA: {**evaluation.psnr_ssim(luma, stored), "mae": mae}}
        entry.update({m: evaluation.psnr_ssim(truth, outputs[m]) for m in methods})
        if on_image is not None:
            on_image(name, [truth, stored, outputs[CODEC]])
        return entry

    per_image, skipped = evaluation.score_images(image_paths, score, root=root,
                                                 max_images=max_images, progress=progress)
    mean = evaluation.means(per_image, methods, ("psnr", "ssim"))
    mean.update(evaluation.means(per_image, [GRAY_VS_LUMA], ("psnr", "ssim", "mae")))
    return {
        "task": "codec",
        "images": len(per_image),
        "methods": methods,
        "jpeg_qualities": [int(q) for q in jpeg_qualities],
        "metric_variants": dict(METRIC_VARIANTS),
        "per_image": per_image,
        "mean": mean,
        "skipped": skipped,
    }


def codec_markdown(report: dict) -> str:
    """metrics.md for the codec task: the mean colour PSNR/SSIM (the luma baseline first), the
    grayscale against luma, the JPEG robustness table, then per-image tables."""
    methods = report["methods"]
    mean = report["mean"]
    variants = report.get("metric_variants") or METRIC_VARIANTS
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
        *fmt.mean_section({"mean": {m: mean[m] for m in methods}}, "Colour restoration (mean)"),
        *fmt.mean_section({"mean": {GRAY_VS_LUMA: mean[GRAY_VS_LUMA]}},
                          "Grayscale against BT.601 luma (mean)"),
        "## JPEG robustness (mean)",
        "",
        f"The grayscale stored as JPEG instead of PNG, then decoded; plot: `{JPEG_PLOT_PNG}`.",
        "",
    ]
    png = mean[CODEC]["psnr"]
    rows = [["PNG (lossless)", fmt.cell(png, "psnr"), fmt.cell(mean[CODEC]["ssim"], "ssim"),
             "0.00"]]
    for q in report["jpeg_qualities"]:
        values = mean[_jpeg_method(q)]
        drop = (round(values["psnr"] - png, 2) + 0.0  # + 0.0: no "-0.00"
                if None not in (values["psnr"], png)
                and not (math.isinf(values["psnr"]) and math.isinf(png)) else None)
        rows.append([f"JPEG q{q}", fmt.cell(values["psnr"], "psnr"),
                     fmt.cell(values["ssim"], "ssim"), fmt.cell(drop, "psnr")])
    lines += [*fmt._table(["storage", "PSNR", "SSIM", "ΔPSNR vs PNG"], rows), ""]
    for key, title in (("psnr", "Colour PSNR per image (dB)"), ("ssim", "Colour SSIM per image")):
        lines += [f"## {title}", "", *fmt.per_image_table(report, methods, key), ""]
    rows = [[fmt._escape(e["name"]), *(fmt.cell(e[GRAY_VS_LUMA][k], k)
                                       for k in ("psnr", "ssim", "mae"))]
            for e in report["per_image"]]
    lines += ["## Grayscale against luma per image", "",
              *fmt._table(["image", "PSNR", "SSIM", "MAE"], rows), ""]
    return fmt.document(lines, report, variants)


def jpeg_plot(report: dict, *, size: tuple[int, int] = PLOT_SIZE) -> np.ndarray:
    """The mean colour PSNR against the JPEG quality the grayscale was stored at, as a uint8
    (H, W, 3) chart of ``size = (width, height)`` px drawn with matplotlib: one point per
    quality, joined, in (30, 80, 200) blue; the PNG (lossless) result as a dashed reference line
    and the luma baseline as a dotted one. Infinite PSNRs are left out of the axes and named in
    the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: only when plotting
    from matplotlib.figure import Figure

    mean = report["mean"]
    qualities = sorted(report["jpeg_qualities"])
    points = [(q, mean[_jpeg_method(q)]["psnr"]) for q in qualities]
    shown = [(q, p) for q, p in points if p is not None and math.isfinite(p)]
    refs = [("PNG (lossless)", mean[CODEC]["psnr"], "#c82828", "--"),
            ("luma baseline, no colour", mean[LUMA]["psnr"], "#6e6e6e", ":")]

    dpi = 100
    figure = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, value, colour, style in refs:
        text = f"{label}: {fmt.cell(value, 'psnr')} dB"
        if value is not None and math.isfinite(value):
            axes.axhline(value, color=colour, linestyle=style, linewidth=1.5, label=text)
        else:  # nothing to draw: the value is only named
            axes.plot([], [], color=colour, linestyle=style, label=text)
    axes.plot([q for q, _ in shown], [p for _, p in shown], color="#1e50c8", marker="o",
              markersize=7, linewidth=2, label="JPEG-stored grayscale")
    if not shown and not any(v is not None and math.isfinite(v) for _, v, _, _ in refs):
        axes.set_ylim(0.0, 1.0)  # every value infinite or missing: an empty chart
    axes.set_xlim(min(qualities, default=0) - 5, 100)
    axes.set_xticks([*qualities, 100])
    axes.set_xlabel("JPEG quality of the stored grayscale", fontsize=8)
    axes.set_ylabel("PSNR (dB)", fontsize=8)
    axes.set_title(f"Mean colour PSNR after decoding, {report['images']} images", fontsize=9)
    axes.tick_params(labelsize=7)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def run(config: CodecEvalConfig) -> dict:
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
    height = config.grid_height

    def load():
        encoder, decoder = codec_lib.load_codec(config.model)
        return (codec_lib.TiledPart(encoder, tile=config.tile),
                codec_lib.TiledPart(decoder, tile=config.tile))

    def report(codec, paths, *, root, on_image):
        return codec_report(*codec, paths, jpeg_qualities=config.jpeg_qualities, root=root,
                            max_images=config.max_images, progress=config.progress,
                            on_image=on_image)

    return evaluation.evaluate(
        model_files=(config.model,), images_dir=config.images, output_dir=config.output_dir,
        load=load, report=report, row=lambda cells: evaluation.shrink_cells(cells, height),
        outputs=lambda rep, rows: (codec_markdown(rep), {
            GRID_PNG: make_grid(rows, height=height), JPEG_PLOT_PNG: jpeg_plot(rep)}),
        run_keys=dict(model=evaluation.model_source(config.model), tile=config.tile,
                      grid_height=config.grid_height))


def summary(report: dict, output_dir: str) -> list[str]:
    """What the command line prints under the mean table."""
    return [f"colour PSNR/SSIM on RGB after a real 8-bit PNG (or JPEG) round trip of the "
            f"grayscale; luma is the baseline; JPEG plot: "
            f"{os.path.join(output_dir, JPEG_PLOT_PNG)}"]


evaluate_codec = run
"""The name koala's earlier ``evaluate`` module gave :func:`run`."""
