r"""Trains any koala model: ``python -m koala.train --flagfile=experiments/<model>.flags``.

  python -m koala.train --model=fusion --workdir=runs/fusion \
      --train_records=data/records/samples [--val_records=...] [--epochs=400] ...

--workdir and --train_records are required. Every other flag defaults to the config
dataclasses' defaults (:class:`koala.core.run_config.RunConfig` and the model family's config,
``koala/tasks/<family>/config.py``); a flag of another family (``--stage2_epoch`` with a
colorizer) is an error that names its family. Re-running the same command resumes;
``--flagfile=WORKDIR/flags.txt`` reproduces a run. What a workdir holds, resume and NaN
handling: :mod:`koala.core.trainer`.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from absl import flags

from koala.cli import common
from koala.core.run_config import DISTRIBUTE, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, RunConfig
from koala.tasks.codec.config import LOSS_PRESETS, QUANT_UNITS, CodecTrainConfig
from koala.tasks.colorize.config import (
    CLASS_TARGETS,
    CROPS_FROM,
    HEADS,
    PERCEPTUAL_NETS,
    ColorizeTrainConfig,
)
from koala.tasks.sr.config import SR_CHANNELS, SRTrainConfig

_FAMILY_CONFIGS = (ColorizeTrainConfig, SRTrainConfig, CodecTrainConfig)


def define_flags(fv: flags.FlagValues) -> None:
    """The run's flags, then each family's; all default to None (the dataclass default)."""
    s, i, f, b, e = (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float,
                     flags.DEFINE_bool, flags.DEFINE_enum)

    def d(define, name, *args, **kw):
        define(name, None, *args, flag_values=fv, **kw)

    # RunConfig
    d(s, "model", "Which model to train: a name in koala.registry.MODELS (fusion, "
      "fusion_small, lal, colorgan, vcnn, pixcolor, "
      "srcnn, srcnn_955, fsrcnn, sr_autoencoder, codec, their "
      "_small variants). Default: fusion.")
    d(s, "workdir", "Run directory: checkpoints, logs, backup, flags.txt (required).")
    d(s, "train_records", "Records directory (its train-* shards), a shard pattern, or a shard "
      "file (required).")
    d(s, "val_records", "Validation records (directory: its val-* shards). Default: the val "
      "split of --train_records when it has one.")
    d(i, "epochs", "Epochs (SPEC §1: the report converges in ~400; default 400).",
      lower_bound=1)
    d(i, "steps_per_epoch", "Steps per epoch; default: one pass over the records.",
      lower_bound=1)
    d(i, "validation_steps", "Validation steps; default: the whole split.", lower_bound=1)
    d(i, "batch_size", "Global batch size (SPEC §1: 100, the default).", lower_bound=1)
    d(f, "learning_rate", "Learning rate (SPEC §1: Adam 1e-3, the default).", lower_bound=0.0)
    d(flags.DEFINE_list, "lr_boundaries", "Epochs at which the learning rate is multiplied "
      "by --lr_decay (default 100,150,200,300).")
    d(f, "lr_decay", "Step decay factor (SPEC §1: ÷10, default 0.1).", lower_bound=0.0,
      upper_bound=1.0)
    d(e, "lr_schedule", list(LR_SCHEDULES), "step (default): x --lr_decay at "
      "--lr_boundaries (SPEC §1); polynomial: from --learning_rate to --lr_end over --epochs "
      "with --lr_power (SPEC §2).")
    d(f, "lr_end", "Polynomial schedule: final learning rate (SPEC §2: 2e-6).", lower_bound=0.0)
    d(f, "lr_power", "Polynomial schedule: power (SPEC §2: 0.9).", lower_bound=0.0)
    d(e, "mixed_precision", list(PRECISIONS), "auto (default): mixed_float16 on a GPU, "
      "float32 on a CPU.")
    d(b, "jit_compile", "XLA-compile the train step (default false).")
    d(i, "seed", "Random seed (weights, shuffling, augmentation; default 0).")
    d(e, "distribute", list(DISTRIBUTE), "none (default); mirrored: MirroredStrategy over "
      "this machine's devices; multi_worker: MultiWorkerMirroredStrategy over the cluster in "
      "TF_CONFIG (needs --steps_per_epoch and a workdir shared by all workers).")
    d(f, "collective_timeout", "multi_worker: seconds a collective may wait for a peer "
      "before the worker fails instead of hanging (default 120).", lower_bound=1.0)
    d(i, "shuffle_buffer", "Records in the shuffle buffer (default 1024).", lower_bound=1)
    d(i, "crop_size", "Random training crops of this side (a multiple of 8). Default: the "
      "records' size (colorizers; the model is built at this size), 256 (codec).",
      lower_bound=8)
    d(i, "image_grid_count", "Validation images in the TensorBoard grid (default 4).",
      lower_bound=0)
    d(b, "verify_records", "Check every shard (sha256/CRC) before training (default true).")
    d(e, "optimizer", list(OPTIMIZERS), "Optimizer (SPEC §1: adam, the default; SRCNN: sgd).")
    d(f, "momentum", "SGD momentum (default 0.9).", lower_bound=0.0, upper_bound=1.0)
    d(f, "last_layer_lr_scale", "Learning-rate factor of the last layer ('output'); SRCNN's "
      "paper: 0.1 (1e-5 vs 1e-4). Default 1.", lower_bound=0.0)
    d(s, "init_from", "Start from the weights of this .keras file or preset name, layer by "
      "layer (same names and shapes; every layer with weights must match), e.g. FSRCNN's x3 "
      "network fine-tuned for x2 or x4 as in its paper. Default: fresh weights. A resumed "
      "run restores its backup instead.")
    d(flags.DEFINE_list, "init_skip", "Layers that --init_from does not copy: they keep their "
      "fresh initialisation (e.g. --init_skip=refine_net retrains PixColor's refinement).")
    # ColorizeTrainConfig
    d(b, "batch_norm", "Colorize (fusion): the report's BatchNorm layers (default true; "
      "false = the paper's original code).")
    d(f, "filters_scale", "Colorize (fusion): multiply every filter count (1 = paper).",
      lower_bound=0.0)
    d(e, "head", list(HEADS), "Colorize (fusion): regression (default; SPEC §1: tanh ab, "
      "MSE) or classification (SPEC §5, Zhang et al.: ab bins, class-rebalanced "
      "cross-entropy, annealed mean; needs the records' bin prior, see --ab_prior).")
    d(f, "temperature", "Colorize, classification: annealed-mean temperature (SPEC §5: 0.38; "
      "1 = the mean).", lower_bound=0.0)
    d(s, "ab_prior", "Colorize, classification: the ab bin prior (.npz) of python "
      "data_prep/bin_prior.py --records=DIR. Default: ab_prior.npz beside --train_records.")
    d(f, "rebalance_lambda", "Colorize, classification: λ of the rebalancing weights "
      "((1 - λ)·prior + λ/Q)^-1 (SPEC §5: 0.5; 1 = no rebalancing).", lower_bound=0.0,
      upper_bound=1.0)
    d(e, "perceptual_net", list(PERCEPTUAL_NETS), "Codec and ColorGAN: the perceptual terms' "
      "network (SPEC §2, §4: vgg19, the default; mobilenet works offline with "
      "../shared/weights).")
    d(s, "perceptual_weights", "Codec and ColorGAN: imagenet (default; downloads), none "
      "(random, smoke runs only) or a weights file.")
    d(i, "perceptual_size", "Codec and ColorGAN: images are resized to this square for the "
      "perceptual network (codec authors' code: 224, the default); 0 = no resize.",
      lower_bound=0)
    d(e, "crops_from", list(CROPS_FROM), "Colorize (fusion, Lal): training crops from the "
      "stored L/ab squares (records, the default; the paper) or from the stored "
      "full-resolution photo (rgb: random squares of random size; needs --groups=rgb in the "
      "records). Validation then takes the whole padded image, as inference does.")
    d(f, "min_crop_fraction", "Colorize, --crops_from=rgb: smallest square side as a share "
      "of the photo's short side (default 0.4).", lower_bound=0.01, upper_bound=1.0)
    d(f, "whole_image_fraction", "Colorize, --crops_from=rgb: share of training examples "
      "that are the whole padded image instead of a crop (default 0.25).", lower_bound=0.0,
      upper_bound=1.0)
    d(f, "semantic_weight", "Colorize, lal: λ2 of Lal et al.'s semantic classification term, a "
      "class head on the generator's last feature layer (default 0: none).", lower_bound=0.0)
    d(e, "class_targets", list(CLASS_TARGETS), "Colorize, lal with --semantic_weight > 0: the "
      "class targets: embedding (default; the records' embedder softmax as soft targets, "
      "distillation from the embedder) or labels (records built with --labels_from=dirname).")
    d(i, "vcnn_mse_steps", "Colorize, vcnn: optimizer steps of MSE alone before the MSE / "
      "log-loss alternation (Liang et al.: 100).", lower_bound=0)
    d(i, "vcnn_alternate_every", "Colorize, vcnn: steps per loss in the alternation (default "
      "1: every other step).", lower_bound=1)
    d(i, "uv_bins", "Colorize, vcnn: bins per chroma channel of the log loss (default 32).",
      lower_bound=2)
    d(i, "pixel_layers", "Colorize, pixcolor: gated PixelCNN layers (default 20).",
      lower_bound=1)
    d(i, "pixel_filters", "Colorize, pixcolor: the PixelCNN's width (default 128).",
      lower_bound=1)
    d(i, "chroma_levels", "Colorize, pixcolor: bins per chroma channel, Cb and Cr (the paper: "
      "32, the default).", lower_bound=2)
    d(f, "sampling_temperature", "Colorize, pixcolor: the default sampling temperature saved "
      "in the model (default 1).", lower_bound=0.0)
    d(e, "pixcolor_train", ["all", "refine"], "Colorize, pixcolor: train all three networks "
      "(default), or the refinement alone, the others frozen (with --init_from and "
      "--init_skip=refine_net).")
    d(f, "refine_weight", "Colorize, pixcolor: weight of the refinement network's ab MSE in "
      "the loss (default 1).", lower_bound=0.0)
    # SRTrainConfig
    d(e, "scale", ["2", "3", "4"], "SR: upscaling factor (default 3).")
    d(i, "patch_size", "SR: high-res patch side (SRCNN: 33, the default).", lower_bound=2)
    d(i, "stride", "SR: extract every patch on this grid (SRCNN: 14); default: "
      "--patches_per_image random crops per image.", lower_bound=1)
    d(i, "patches_per_image", "SR, codec and vcnn: random patches per image and epoch "
      "(default 16).",
      lower_bound=1)
    d(e, "sr_channels", list(SR_CHANNELS), "SR: the Y channel (default; the papers) or RGB.")
    # CodecTrainConfig
    d(i, "stage2_epoch", "Codec: first epoch of stage 2 (quantization loss on, fresh "
      "optimizer state); SPEC §2: 90 of 120 (the default).", lower_bound=0)
    d(e, "loss_preset", list(LOSS_PRESETS), "Codec: the paper's loss weights (default) or the "
      "authors' code's (koala/tasks/codec/model.py).")
    d(f, "contrast_weight", "Codec: the contrast weight (default: the preset's 1e-7); 0 drops "
      "the term and the perceptual network.", lower_bound=0.0)
    d(e, "quant_unit", list(QUANT_UNITS), "Codec: the unit of stage 2's quantization weight: "
      "levels (SPEC §2's 0..255; the paper preset's default) or signed (the authors' code's "
      "[-1, 1], 2/255 of it; the authors preset's default). 'levels' with w2 = 10 saturates "
      "a small model's tanh (docs/models/codec.md).")
    d(b, "quant_ste", "Codec: in stage 2 the decoder sees the 8-bit grayscale, gradients "
      "passing straight through the rounding (default: false, the paper).")
    d(b, "codec_residual", "Codec: the encoder adds to the luma and the decoder to the gray "
      "instead of ending in tanh (default false, the paper; koala/tasks/codec/model.py).")
    d(f, "theta_levels", "Codec: the lightness slack, in grey levels of [-1, 1] (SPEC §2: 70, "
      "the default).", lower_bound=0.0)
    d(f, "structure_weight", "Codec: beta, the local-structure weight (default: the preset's; "
      "the paper 0.5). Lower lets more colour through the grayscale's pattern.",
      lower_bound=0.0)

    flags.register_validator(
        "lr_boundaries", lambda v: v is None or (all(x.isdigit() and int(x) > 0 for x in v)
                                                 and [int(x) for x in v]
                                                 == sorted({int(x) for x in v})),
        "--lr_boundaries must be increasing positive epoch numbers, e.g. 100,150,200,300",
        flag_values=fv)
    flags.register_validator("temperature", lambda v: v is None or v > 0,
                             "--temperature must be > 0", flag_values=fv)
    flags.register_validator("crop_size", lambda v: v is None or v % 8 == 0,
                             "--crop_size must be a multiple of 8", flag_values=fv)


def _settings(fv: flags.FlagValues) -> dict:
    """The flags that were given (not None), converted to the configs' types."""
    names = [f.name for f in dataclasses.fields(RunConfig)]
    for cls in _FAMILY_CONFIGS:
        names += [f.name for f in dataclasses.fields(cls) if f.name not in names]
    # workdir and train_records always: RunConfig requires them (main checks they're given).
    out = {n: fv[n].value for n in names
           if fv[n].value is not None or n in ("workdir", "train_records")}
    if "lr_boundaries" in out:
        out["lr_boundaries"] = tuple(int(x) for x in out["lr_boundaries"])
    if "scale" in out:
        out["scale"] = int(out["scale"])
    return out


def config_from_flags(fv: flags.FlagValues):
    """``(RunConfig, family config)`` from parsed flags (ValueError names a bad value or a flag
    of another family; KoalaError an unknown model)."""
    from koala import registry

    return registry.configs(**_settings(fv))


def flags_text(*configs) -> str:
    """The resolved configs as a flagfile: every setting that has a value, one per line."""
    lines = ["# effective flags of this run: python -m koala.train --flagfile=THIS_FILE"]
    for config in configs:
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            if value is None:
                continue
            if isinstance(value, bool):
                lines.append(f"--{field.name}" if value else f"--no{field.name}")
            elif isinstance(value, tuple):
                lines.append(f"--{field.name}={','.join(str(v) for v in value)}")
            else:
                lines.append(f"--{field.name}={value}")
    return "\n".join(lines) + "\n"


def main(argv) -> int:
    fv, rest = common.parse(argv, define_flags, doc=__doc__,
                            required=("workdir", "train_records"))
    if rest:
        return common.error(f"unexpected arguments: {rest}")
    import tensorflow as tf

    from koala import registry
    from koala.core.errors import KoalaError

    try:
        run, cfg = config_from_flags(fv)
    except (ValueError, KoalaError) as e:
        return common.error(str(e))
    try:
        history = registry.train(run, cfg, flags_text=flags_text(run, cfg))
    except KoalaError as e:
        return common.error(str(e))
    except tf.errors.DataLossError as e:
        # TensorFlow does not say which file; koala's check does (it is what --noverify skips).
        return common.error(f"a record shard is damaged ({' '.join(e.message.split())[:200]}); "
                            f"run again without --noverify_records: the check before "
                            f"training names the damaged shard")
    except RuntimeError as e:  # TerminateOnNaN(raise_error=True)
        backup = os.path.join(run.workdir, "backup")
        kept = (f"the backup in {backup} is kept" if os.path.isdir(backup) and os.listdir(backup)
                else "no epoch had finished, so there is no backup to resume from")
        return common.error(f"training stopped: {e} ({kept})", 3)
    print(f"done: {len(history.epoch)} epoch(s) this run; checkpoints in {run.workdir} "
          f"(best.keras, last.keras), log {run.workdir}/log.csv")
    return 0


run = functools.partial(common.run, main)  # the console script


if __name__ == "__main__":
    run()
