"""The settings every training run has, whatever the model family (:class:`RunConfig`).

A family's own settings live in its config dataclass (``koala/tasks/<family>/config.py``);
:func:`koala.registry.configs` splits a flat set of settings between the two and refuses a
setting of another family. Defaults live here, once; the command line's flags default to None
and are dropped.
"""

from __future__ import annotations

import dataclasses

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
LR_SCHEDULES = ("step", "polynomial")
DISTRIBUTE = ("none", "mirrored", "multi_worker")
OPTIMIZERS = ("adam", "sgd")

# Settings that may change between a run and its resumption: they don't change the result.
RESUMABLE = ("epochs", "verify_records", "collective_timeout")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Where a run reads and writes, how long it trains and how it optimises.

    workdir:             checkpoints, logs, backup, flags.txt, run.json.
    train_records:       a records folder (its train-* shards), a shard pattern or a file.
    model:               a name in :data:`koala.registry.MODELS`.
    val_records:         validation records; None: the val split of train_records if any.
    epochs, steps_per_epoch, validation_steps, batch_size: the loop (None: one pass).
    learning_rate, lr_boundaries, lr_decay, lr_schedule, lr_end, lr_power: the schedule
                         (step: x lr_decay at each boundary epoch; polynomial: from
                         learning_rate to lr_end over the epochs with lr_power).
    mixed_precision:     auto (mixed_float16 on a GPU, float32 on a CPU) or a policy name.
    jit_compile, seed, distribute, collective_timeout, shuffle_buffer: as the flags say.
    crop_size:           random training crops of this side (a multiple of 8); None: the
                         family's default (the records' size, or 256 for the codec).
    image_grid_count:    validation images in the TensorBoard preview grid.
    verify_records:      check every shard (sha256/CRC) before training.
    optimizer, momentum, last_layer_lr_scale: the optimizer (the layer named "output" gets
                         last_layer_lr_scale times the rate; SRCNN's paper: 0.1).
    init_from:           a .keras file or preset name whose weights start the run, layer by
                         layer (:func:`koala.core.trainer.warm_start`; FSRCNN's paper trains
                         x3 and fine-tunes it for x2 and x4); None: fresh initialisation. A
                         resumed run restores its backup instead.
    init_skip:           layers of the model that --init_from does not copy (they keep their
                         fresh initialisation), e.g. a part being retrained.
    """

    workdir: str
    train_records: str
    model: str = "fusion"
    val_records: str | None = None
    epochs: int = 400
    steps_per_epoch: int | None = None
    validation_steps: int | None = None
    batch_size: int = 100
    learning_rate: float = 1e-3
    lr_boundaries: tuple = (100, 150, 200, 300)
    lr_decay: float = 0.1
    lr_schedule: str = "step"
    lr_end: float = 2e-6
    lr_power: float = 0.9
    mixed_precision: str = "auto"
    jit_compile: bool = False
    seed: int = 0
    distribute: str = "none"
    collective_timeout: float = 120.0
    shuffle_buffer: int = 1024
    crop_size: int | None = None
    image_grid_count: int = 4
    verify_records: bool = True
    optimizer: str = "adam"
    momentum: float = 0.9
    last_layer_lr_scale: float = 1.0
    init_from: str | None = None
    init_skip: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "lr_boundaries", tuple(int(b) for b in self.lr_boundaries))
        object.__setattr__(self, "init_skip", tuple(str(n) for n in self.init_skip))
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1,
             "steps_per_epoch must be >= 1"),
            (self.validation_steps is None or self.validation_steps >= 1,
             "validation_steps must be >= 1"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (list(self.lr_boundaries) == sorted(set(self.lr_boundaries))
             and all(b > 0 for b in self.lr_boundaries),
             "lr_boundaries must be increasing positive epoch numbers"),
            (0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (0 <= self.lr_end <= self.learning_rate, "lr_end must be in [0, learning_rate]"),
            (self.lr_power > 0, "lr_power must be > 0"),
            (self.mixed_precision in PRECISIONS, f"mixed_precision must be one of {PRECISIONS}"),
            (self.distribute in DISTRIBUTE, f"distribute must be one of {DISTRIBUTE}"),
            (self.distribute != "multi_worker" or self.steps_per_epoch is not None,
             "distribute=multi_worker needs steps_per_epoch (every worker must run the same "
             "number of steps)"),
            (self.collective_timeout > 0, "collective_timeout must be > 0"),
            (self.shuffle_buffer >= 1, "shuffle_buffer must be >= 1"),
            (self.crop_size is None or self.crop_size % 8 == 0,
             "crop_size must be a multiple of 8"),
            (self.image_grid_count >= 0, "image_grid_count must be >= 0"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (0 <= self.momentum <= 1, "momentum must be in [0, 1]"),
            (self.last_layer_lr_scale > 0, "last_layer_lr_scale must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def field_names(config_class) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(config_class))


def as_dict(*configs) -> dict:
    """The configs' fields as one flat JSON-ready dict (tuples as lists), as run.json holds
    them."""
    out = {}
    for config in configs:
        for k, v in dataclasses.asdict(config).items():
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


def defaults(*config_classes) -> dict:
    """The fields' defaults (those that have one) of the config classes, JSON-ready."""
    out = {}
    for cls in config_classes:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = list(f.default) if isinstance(f.default, tuple) else f.default
    return out
