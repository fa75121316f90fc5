r"""build_records on Apache Beam's DirectRunner against the local driver, in one run, on the same
photos and settings (the fusion presets' records: colour + RGB groups, the MobileNet embedder).

  python benchmarks/build_beam.py [--input_dir=../shared/corpus/train] \
      [--embedder_weights=../shared/weights/mobilenet_1_0_224_imagenet.weights.h5] \
      [--beam_options=--direct_num_workers=1]

Each build goes to a fresh temporary folder, through ``python -m koala.build_records`` run
in-process (its main), so each figure includes the embedder's construction; img/s is images
written over the wall time of the whole command. The examples of the two builds are then
compared by name (split, L, ab, RGB bytes; embeddings within float16 rounding).
"""

import tempfile
import time
from pathlib import Path

from common import REPO  # first: quiets TF, puts the checkout on sys.path

# isort: split

import json

import numpy as np
import tensorflow as tf
from absl import app, flags

from koala.cli import build_records
from koala.cli import common as cli
from koala.data import features

SHARED = REPO.parent / "shared"
flags.DEFINE_string("input_dir", str(SHARED / "corpus" / "train"), "The photos.")
flags.DEFINE_string("embedder_weights",
                    str(SHARED / "weights" / "mobilenet_1_0_224_imagenet.weights.h5"),
                    "MobileNet weights (a local file, imagenet or none).")
flags.DEFINE_multi_string("beam_options", [], "Extra Beam pipeline options.")
FLAGS = flags.FLAGS


def run(output_dir: Path, *extra) -> tuple[float, dict]:
    args = ["build_records", f"--input_dir={FLAGS.input_dir}", f"--output_dir={output_dir}",
            "--groups=color", "--groups=rgb", "--embedder=mobilenet",
            f"--embedder_weights={FLAGS.embedder_weights}", "--max_side=512",
            "--val_fraction=0.05", "--noprogress", *extra]
    start = time.perf_counter()
    status = cli.call(build_records.main, args)
    seconds = time.perf_counter() - start
    if status:
        raise SystemExit(f"{' '.join(args)}: exit status {status}")
    return seconds, json.loads((output_dir / "manifest.json").read_text())


def examples(folder: Path) -> dict:
    spec = features.feature_spec(("color", "rgb"))
    out = {}
    for shard in sorted(folder.glob("*.tfrecord")):
        for raw in tf.data.TFRecordDataset(str(shard)):
            ex = tf.io.parse_single_example(raw, spec)
            out[ex[features.NAME].numpy().decode()] = (shard.name.split("-")[0], ex)
    return out


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for label, extra in (("local (threads + one embedder)", ()),
                             ("beam DirectRunner", ("--runner=beam", *(
                                 f"--beam_options={o}" for o in FLAGS.beam_options)))):
            seconds, manifest = run(tmp / label.split()[0], *extra)
            n = sum(manifest["counts"].values())
            rows.append((label, n, len(manifest["skipped"]), seconds))
        print(f"\n{FLAGS.input_dir}: colour + rgb groups, MobileNet, max_side 512; "
              f"CPU threads {tf.config.threading.get_intra_op_parallelism_threads() or 'all'}")
        print("| driver | images | skipped | wall s | img/s |")
        print("|---|---:|---:|---:|---:|")
        for label, n, skipped, seconds in rows:
            print(f"| {label} | {n} | {skipped} | {seconds:.1f} | {n / seconds:.1f} |")
        local, beam = examples(tmp / "local"), examples(tmp / "beam")
        same = sorted(local) == sorted(beam)
        worst = 0.0
        for name, (split, ex) in local.items():
            bsplit, bex = beam[name]
            same &= split == bsplit
            for key in (features.L, features.AB, features.RGB):
                same &= bool(ex[key].numpy() == bex[key].numpy())
            a = features.decode_embedding(ex[features.EMBEDDING]).numpy()
            b = features.decode_embedding(bex[features.EMBEDDING]).numpy()
            worst = max(worst, float(np.max(np.abs(a - b))))
        print(f"same examples (names, splits, L, ab, RGB bytes): {same}; largest embedding "
              f"difference {worst:.2e}")


if __name__ == "__main__":
    app.run(main)
