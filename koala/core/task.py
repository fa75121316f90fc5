"""The Task protocol: what a model family tells the generic trainer (tensorflow/models'
``base_task`` is the model: build_model / build_inputs / build_losses).

A family (``koala/tasks/<family>/task.py``) implements it once for all its models; the
trainer (:mod:`koala.core.trainer`) knows no family by name. The registry
(:mod:`koala.registry`) maps model names to a :class:`ModelEntry` and task names to tasks.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, Protocol

from koala.core.run_config import RunConfig


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One trainable model name: which task trains it, and its constructor.

    task:    a key of ``koala.registry.TASKS``.
    variant: what the task builds it as (colorize: fusion, lal or colorgan; sr; codec).
    build:   the model constructor; the task passes it keyword arguments from its config.
    """

    task: str
    variant: str
    build: Callable[..., Any]


@dataclasses.dataclass(frozen=True)
class Datasets:
    """A task's input pipelines: training batches, and validation batches or None."""

    train: Any
    val: Any = None


class Task(Protocol):
    """What a family provides. ``cfg`` is always an instance of ``config_class``."""

    name: str
    config_class: type

    def build_model(self, entry: ModelEntry, run: RunConfig, cfg, records) -> Any:
        """The model for ``entry`` (``records``: the training RecordSet, its manifest)."""

    def compile(self, model, run: RunConfig, cfg, optimizer) -> None:
        """Attaches what the losses need and compiles, inside the strategy scope."""

    def datasets(self, model, run: RunConfig, cfg, train_source, val_source, val_split,
                 val_batch: int | None) -> Datasets:
        """Training and validation pipelines; ``val_batch`` None: no validation."""

    def callbacks(self, model, run: RunConfig, cfg) -> list:
        """The family's own callbacks (stages, critic learning rate ...)."""

    def preview(self, model, examples) -> tuple[str, Any]:
        """(title, uint8 grid image) of fixed validation examples for TensorBoard."""

    def monitor(self, model) -> str:
        """The log key best.keras follows ("loss", or a term that doesn't swing)."""

    def run_info(self, entry: ModelEntry, run: RunConfig, cfg) -> dict:
        """Extra keys for run.json (e.g. the ab prior a colorizer was trained with)."""

    @property
    def evaluator(self) -> Any:
        """The family's evaluator module: its eval config dataclass and ``run(config)``
        (``python -m koala.evaluate --task=NAME``)."""


class TaskBase:
    """Defaults for the optional parts of a :class:`Task`: no extra callbacks, best.keras
    follows the loss, nothing more in run.json, the evaluator in the family's folder."""

    name: str

    @property
    def evaluator(self) -> Any:
        """``koala.tasks.<name>.evaluator``, imported when first asked for."""
        return importlib.import_module(f"koala.tasks.{self.name}.evaluator")

    def callbacks(self, model, run: RunConfig, cfg) -> list:
        return []

    def monitor(self, model) -> str:
        return "loss"

    def run_info(self, entry: ModelEntry, run: RunConfig, cfg) -> dict:
        return {}
