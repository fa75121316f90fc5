"""Every trainable koala model and task, by name: two explicit dicts, no registration by
import side effects.

Importing this module imports every model family, which also registers each koala layer and
model with Keras' serialisation: ``import koala.registry`` before a plain
``keras.saving.load_model`` of a koala ``.keras`` file.
"""

from __future__ import annotations

from koala.core import run_config
from koala.core.errors import KoalaError
from koala.core.run_config import RunConfig
from koala.core.task import ModelEntry, Task
from koala.tasks.codec import model as codec
from koala.tasks.codec import task as codec_task
from koala.tasks.colorize import task as colorize_task
from koala.tasks.colorize.models import colorgan, fusion, lal, pixcolor, vcnn
from koala.tasks.sr import models as sr
from koala.tasks.sr import task as sr_task

TASKS: dict[str, Task] = {
    "colorize": colorize_task.TASK,
    "sr": sr_task.TASK,
    "codec": codec_task.TASK,
}

MODELS: dict[str, ModelEntry] = {
    "fusion": ModelEntry("colorize", "fusion", fusion.fusion),
    "fusion_small": ModelEntry("colorize", "fusion", fusion.fusion_small),
    "lal": ModelEntry("colorize", "lal", lal.lal),
    "lal_small": ModelEntry("colorize", "lal", lal.lal_small),
    "colorgan": ModelEntry("colorize", "colorgan", colorgan.colorgan),
    "colorgan_small": ModelEntry("colorize", "colorgan", colorgan.colorgan_small),
    "vcnn": ModelEntry("colorize", "vcnn", vcnn.vcnn),
    "vcnn_small": ModelEntry("colorize", "vcnn", vcnn.vcnn_small),
    "pixcolor": ModelEntry("colorize", "pixcolor", pixcolor.pixcolor),
    "pixcolor_small": ModelEntry("colorize", "pixcolor", pixcolor.pixcolor_small),
    "srcnn": ModelEntry("sr", "sr", sr.srcnn),
    "srcnn_955": ModelEntry("sr", "sr", sr.srcnn_955),
    "srcnn_small": ModelEntry("sr", "sr", sr.srcnn_small),
    "fsrcnn": ModelEntry("sr", "sr", sr.fsrcnn),
    "fsrcnn_small": ModelEntry("sr", "sr", sr.fsrcnn_small),
    "sr_autoencoder": ModelEntry("sr", "sr", sr.sr_autoencoder),
    "sr_autoencoder_small": ModelEntry("sr", "sr", sr.sr_autoencoder_small),
    "codec": ModelEntry("codec", "codec", codec.codec),
    "codec_small": ModelEntry("codec", "codec", codec.codec_small),
}


def lookup(model: str) -> tuple[ModelEntry, Task]:
    """The model's entry and its task; KoalaError naming the choices for an unknown name."""
    if model not in MODELS:
        raise KoalaError(f"unknown model {model!r}; choose from {', '.join(sorted(MODELS))}")
    entry = MODELS[model]
    return entry, TASKS[entry.task]


def families_of(setting: str) -> list[str]:
    """The task names whose config has ``setting`` (empty for a run setting)."""
    return [name for name, task in TASKS.items()
            if setting in run_config.field_names(task.config_class)]


def configs(**settings) -> tuple[RunConfig, object]:
    """(RunConfig, the model family's config) from flat settings, as the flags give them.

    ``model`` picks the family (default: fusion). A setting of another family is refused
    with a ValueError naming the family it belongs to; an unknown one names the settings.

    Raises:
      ValueError: a bad value, an unknown model or setting, or a setting of another family.
    """
    model = settings.get("model", "fusion")
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(sorted(MODELS))}")
    entry, task = lookup(model)
    run_fields = set(run_config.field_names(RunConfig))
    own = set(run_config.field_names(task.config_class))
    run_kw, own_kw = {}, {}
    for key, value in settings.items():
        if key in own:
            own_kw[key] = value
        elif key in run_fields:
            run_kw[key] = value
        elif families_of(key):
            raise ValueError(f"--{key} is a setting of the {' and '.join(families_of(key))} "
                             f"family; --model={model} is of the {entry.task} family")
        else:
            raise ValueError(f"unknown setting {key!r}")
    run = RunConfig(**run_kw)
    cfg = task.config_class(**own_kw)
    return run, cfg


def train(run: RunConfig, cfg=None, **kwargs):
    """Trains ``run.model`` with its family's task (:func:`koala.core.trainer.train`; ``cfg``
    None: the family's defaults); returns the Keras History."""
    from koala.core import trainer

    entry, task = lookup(run.model)
    cfg = task.config_class() if cfg is None else cfg
    return trainer.train(run, cfg, entry, task, **kwargs)
