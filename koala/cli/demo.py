"""The main job (``make demo``): the whole chain on the built-in sample photos.

  python -m koala.demo

1. build records from data/samples/ (MobileNet embedder, *random* weights: the demo runs
   offline; 12 train / 3 val photos by path hash);
2. train the fusion colorizer with experiments/fusion_demo.flags (~3-4 min on 2 CPU cores);
3. colorize the validation photos (runs/demo/colorized/, with side-by-side grids);
4. evaluate them against the truth next to the gray baseline (runs/demo/metrics.json,
   metrics.md, grid.png);
5. run the shipped super-resolution preset (``fsrcnn_x3``, koala/presets, trained on the
   corpus) on the same photos against bicubic (runs/demo/sr/: crops.png with bicubic beside
   it, metrics.md), so a newcomer sees what a trained koala does.

Each step is the real command-line tool, run as a user would run it (the commands are
printed). Re-running resumes: finished shards and a finished training run are kept.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"
RECORDS = REPO / "data" / "records" / "samples"
RUN = REPO / "runs" / "demo"
VAL_FRACTION = 0.2
EMBEDDER = ("mobilenet", "none")


def _step(title: str, args: list[str]) -> None:
    print(f"\n== {title}\n$ {' '.join(args)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, *args], cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"demo: step '{title}' failed with exit status {proc.returncode}")
    print(f"   ({time.monotonic() - start:.0f} s)", flush=True)


def _val_photos() -> pathlib.Path:
    """Copies the val split of the samples (the same hash split as the records) into the run."""
    from koala.data.build import split_of
    from koala.ops.images import find_images

    out = RUN / "val_photos"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for path in find_images(SAMPLES):
        if split_of(path.relative_to(SAMPLES).as_posix(), VAL_FRACTION) == "val":
            shutil.copy2(path, out / path.name)
    return out


def main(argv=None) -> int:
    if argv is not None and len(argv) > 1:
        print(f"error: the demo takes no arguments, got {' '.join(argv[1:])}", file=sys.stderr)
        return 2
    start = time.monotonic()
    name, weights = EMBEDDER
    print(f"koala demo: embedder {name} with weights '{weights}' (random, deterministic: the "
          f"demo runs offline; see README for ImageNet weights)")
    _step("1/5 build records from data/samples", [
        "data_prep/build_records.py", f"--embedder={name}", f"--embedder_weights={weights}",
        f"--val_fraction={VAL_FRACTION}", "--resume"])
    _step("2/5 train the fusion colorizer", [
        "-m", "koala.train", "--flagfile=experiments/fusion_demo.flags"])
    model = RUN / "train" / "best.keras"
    val = _val_photos()
    _step("3/5 colorize the validation photos", [
        "-m", "koala.colorize", str(val), "-o", str(RUN / "colorized"), "--model", str(model),
        "--grid"])
    _step("4/5 evaluate against the truth and the gray baseline", [
        "-m", "koala.evaluate", "--task=colorize", "--model", str(model), "--images", str(val),
        "--output_dir", str(RUN)])
    _step("5/5 upscale x3 with the shipped fsrcnn_x3 preset, against bicubic", [
        "-m", "koala.evaluate", "--task=sr", "--scale=3", "--model=fsrcnn_x3", "--images",
        str(val), "--output_dir", str(RUN / "sr")])
    metrics = json.loads((RUN / "metrics.json").read_text())
    sr = json.loads((RUN / "sr" / "metrics.json").read_text())["mean"]
    print(f"\ndemo done in {time.monotonic() - start:.0f} s: {RUN}/grid.png, "
          f"{RUN}/metrics.json ({metrics['images']} validation photos); {RUN}/sr/crops.png: "
          f"fsrcnn_x3 PSNR-Y {sr['fsrcnn_x3']['psnr_y']:.2f} dB against bicubic "
          f"{sr['bicubic']['psnr_y']:.2f} dB")
    return 0


def run() -> None:
    from koala.cli import quiet

    with quiet.native_logs_filtered(not quiet.wanted(sys.argv)):
        status = main(sys.argv)
    sys.exit(status)


if __name__ == "__main__":
    run()
