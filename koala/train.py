r"""Trains any koala model: ``python -m koala.train --flagfile=experiments/<model>.flags``.

  python -m koala.train --model=fusion --workdir=runs/fusion \
      --train_records=data/records/samples [--val_records=...] [--epochs=400] ...

All flags are optional and validated (--workdir and --train_records are required to run);
flags live only here, and koala/training.py does the work (see its docstring for what a
workdir holds, resume and NaN handling). Re-running the same command resumes; re-running with
``--flagfile=WORKDIR/flags.txt`` reproduces a run.
"""

import sys

from absl import app, flags

from koala import colorbins, training
from koala.errors import KoalaError
from koala.models import fusion

FLAGS = flags.FLAGS

flags.DEFINE_enum("model", "fusion", sorted(training.MODELS), "Which model to train.")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, logs, backup, flags.txt.")
flags.DEFINE_string("train_records", None, "Records directory (its train-* shards), a shard "
                    "pattern, or a shard file.")
flags.DEFINE_string("val_records", None, "Validation records (directory: its val-* shards). "
                    "Default: the val split of --train_records when it has one.")
flags.DEFINE_integer("epochs", 400, "Epochs (SPEC §1: the report converges in ~400).",
                     lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch; default: one pass over the "
                     "records.", lower_bound=1)
flags.DEFINE_integer("validation_steps", None, "Validation steps; default: the whole split.",
                     lower_bound=1)
flags.DEFINE_integer("batch_size", 100, "Global batch size (SPEC §1: 100).", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate (SPEC §1: 1e-3).",
                   lower_bound=0.0)
flags.DEFINE_list("lr_boundaries", ["100", "150", "200", "300"],
                  "Epochs at which the learning rate is multiplied by --lr_decay.")
flags.DEFINE_float("lr_decay", 0.1, "Step decay factor (SPEC §1: ÷10).", lower_bound=0.0,
                   upper_bound=1.0)
flags.DEFINE_enum("mixed_precision", "auto", training.PRECISIONS,
                  "auto: mixed_float16 on a GPU, float32 on a CPU.")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step.")
flags.DEFINE_integer("seed", 0, "Random seed (weights, shuffling, augmentation).")
flags.DEFINE_enum("distribute", "none", training.DISTRIBUTE,
                  "none; mirrored: tf.distribute.MirroredStrategy over this machine's devices; "
                  "multi_worker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG "
                  "(needs --steps_per_epoch and a workdir shared by all workers).")
flags.DEFINE_float("collective_timeout", 120.0, "multi_worker: seconds a collective may wait "
                   "for a peer before the worker fails instead of hanging.", lower_bound=1.0)
flags.DEFINE_integer("shuffle_buffer", 1024, "Records in the shuffle buffer.", lower_bound=1)
flags.DEFINE_integer("crop_size", None, "Random training crops of this side (a multiple of "
                     "8); the model is built at this size. Default: the records' size.",
                     lower_bound=8)
flags.DEFINE_bool("batch_norm", True, "Fusion: the report's BatchNorm layers (False = the "
                  "paper's original code).")
flags.DEFINE_float("filters_scale", None, "Fusion: multiply every filter count (1 = paper).",
                   lower_bound=0.0)
flags.DEFINE_enum("head", "regression", list(fusion.HEADS), "Fusion: regression (SPEC §1: "
                  "tanh ab, MSE) or classification (SPEC §5, Zhang et al.: a distribution over "
                  "ab bins, class-rebalanced cross-entropy, annealed-mean decoding; needs the "
                  "records' bin prior, see --ab_prior).")
flags.DEFINE_float("temperature", colorbins.ANNEAL_TEMPERATURE, "Classification: temperature "
                   "of the annealed-mean decoding (SPEC §5: 0.38; 1 = the mean).",
                   lower_bound=0.0)
flags.DEFINE_string("ab_prior", None, "Classification: the ab bin prior (.npz) written by "
                    "python data_prep/bin_prior.py --records=DIR. Default: "
                    "ab_prior.npz beside --train_records.")
flags.DEFINE_float("rebalance_lambda", colorbins.REBALANCE_LAMBDA, "Classification: λ of the "
                   "class-rebalancing weights ((1 - λ)·prior + λ/Q)^-1 (SPEC §5: 0.5; 1 = no "
                   "rebalancing).", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("image_grid_count", 4, "Validation images in the TensorBoard grid.",
                     lower_bound=0)
flags.DEFINE_bool("verify_records", True, "Check every shard (sha256/CRC) before training.")
flags.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Optimizer (SPEC §1: Adam; SRCNN: SGD).")
flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("last_layer_lr_scale", 1.0, "Learning-rate factor of the last layer "
                   "('output'); SRCNN's paper: 0.1 (1e-5 vs 1e-4).", lower_bound=0.0)
flags.DEFINE_enum("scale", "3", ["2", "3", "4"], "SR: upscaling factor.")
flags.DEFINE_integer("patch_size", 33, "SR: high-res patch side (SRCNN: 33).", lower_bound=2)
flags.DEFINE_integer("stride", None, "SR: extract every patch on this grid (SRCNN: 14); "
                     "default: --patches_per_image random crops per image.", lower_bound=1)
flags.DEFINE_integer("patches_per_image", 16, "SR: random patches per image and epoch.",
                     lower_bound=1)
flags.DEFINE_enum("sr_channels", "y", ["y", "rgb"], "SR: the Y channel (papers) or RGB.")

flags.DEFINE_enum("lr_schedule", "step", training.LR_SCHEDULES, "step: x --lr_decay at "
                  "--lr_boundaries (SPEC §1); polynomial: from --learning_rate to --lr_end "
                  "over --epochs with --lr_power (SPEC §2).")
flags.DEFINE_float("lr_end", 2e-6, "Polynomial schedule: final learning rate (SPEC §2: 2e-6).",
                   lower_bound=0.0)
flags.DEFINE_float("lr_power", 0.9, "Polynomial schedule: power (SPEC §2: 0.9).",
                   lower_bound=0.0)
flags.DEFINE_integer("stage2_epoch", 90, "Codec: first epoch of stage 2 (quantization loss on, "
                     "fresh optimizer state); SPEC §2: 90 of 120.", lower_bound=0)
flags.DEFINE_enum("loss_preset", "paper", ["paper", "authors"], "Codec: the paper's loss "
                  "weights or the authors' code's (koala/models/codec.py).")
flags.DEFINE_enum("perceptual_net", "vgg19", ["vgg19", "mobilenet"], "Codec and ColorGAN: "
                  "the perceptual terms' network (SPEC §2, §4: VGG19; MobileNet works offline "
                  "with ../shared/weights).")
flags.DEFINE_string("perceptual_weights", "imagenet", "Codec and ColorGAN: imagenet "
                    "(downloads), none (random, smoke runs only) or a weights file.")
flags.DEFINE_integer("perceptual_size", 224, "Codec and ColorGAN: images are resized to this "
                     "square for the perceptual network (codec authors' code: 224); 0 = no "
                     "resize (ColorGAN's flagfiles).", lower_bound=0)
flags.DEFINE_float("contrast_weight", None, "Codec: the contrast weight (default: the "
                   "preset's 1e-7); 0 drops the term and the perceptual network.",
                   lower_bound=0.0)

flags.register_validator(
    "lr_boundaries", lambda v: all(s.isdigit() and int(s) > 0 for s in v)
    and [int(s) for s in v] == sorted({int(s) for s in v}),
    "--lr_boundaries must be increasing positive epoch numbers, e.g. 100,150,200,300")
flags.register_validator("temperature", lambda v: v > 0, "--temperature must be > 0")
flags.register_validator("crop_size", lambda v: v is None or v % 8 == 0,
                         "--crop_size must be a multiple of 8")

_CONFIG_FLAGS = ("model", "workdir", "train_records", "val_records", "epochs",
                 "steps_per_epoch", "validation_steps", "batch_size", "learning_rate",
                 "lr_decay", "mixed_precision", "jit_compile", "seed", "distribute",
                 "collective_timeout",
                 "shuffle_buffer", "crop_size", "batch_norm", "filters_scale",
                 "image_grid_count", "verify_records", "optimizer", "momentum",
                 "last_layer_lr_scale", "patch_size", "stride", "patches_per_image",
                 "sr_channels", "lr_schedule", "lr_end", "lr_power", "stage2_epoch",
                 "loss_preset", "perceptual_net", "perceptual_weights", "perceptual_size",
                 "contrast_weight", "head", "temperature", "ab_prior", "rebalance_lambda")


def effective_flags() -> str:
    """Every koala.train flag with its value, one ``--flag=value`` per line (a flagfile)."""
    names = sorted((*_CONFIG_FLAGS, "lr_boundaries", "scale"))
    lines = [FLAGS[n].serialize() for n in names if FLAGS[n].value is not None]
    return "# effective flags of this run: python -m koala.train --flagfile=THIS_FILE\n" + \
        "\n".join(lines) + "\n"


def config_from_flags(values: flags.FlagValues = FLAGS) -> training.TrainConfig:
    """The parsed flags as a validated TrainConfig (ValueError names a bad value)."""
    return training.TrainConfig(
        lr_boundaries=tuple(int(b) for b in values["lr_boundaries"].value),
        scale=int(values["scale"].value),
        **{name: values[name].value for name in _CONFIG_FLAGS})


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        config = config_from_flags()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        history = training.train(config, flags_text=effective_flags())
    except KoalaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:  # TerminateOnNaN(raise_error=True)
        print(f"error: training stopped: {e} (the backup in {FLAGS.workdir}/backup is kept)",
              file=sys.stderr)
        return 3
    epochs = len(history.epoch)
    print(f"done: {epochs} epoch(s) this run; checkpoints in {config.workdir} "
          f"(best.keras, last.keras), log {config.workdir}/log.csv")
    return 0


def run():
    flags.mark_flags_as_required(["workdir", "train_records"])
    app.run(main)


if __name__ == "__main__":
    run()
