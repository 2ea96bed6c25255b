"""Training side of the evaluators: datasets, model builder, quantization, pruning, one loop.

Public API (each function is a pure function of its arguments, keeps no module-level state and
is safe to call in a Ray worker process):

* :func:`dataset_info` / :func:`check_dataset_files` - cheap checks (no torch import, no data
  read), used when an experiment is validated; :func:`check_dataset_readable` reads every
  file once (no torch), used before a run starts.
* :func:`load_splits` - the seeded, stratified train/val/test tensors (:class:`Splits`).
* :func:`build_model` / :func:`extract_layers` - a :class:`NetworkSpec` as a torch module and
  as the hardware workload (``ConvLayer`` tuple) of that same network.
* :func:`train` - the one training loop -> :class:`TrainingReport`.
* :func:`evaluate_accuracy` - score trained weights on a split.

Torch is imported on first use of a torch-dependent name, so that importing this package to
validate a configuration stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from evaluators.training.datasets import (
    DEFAULT_DATA_DIRS,
    DatasetFileError,
    Splits,
    check_dataset_files,
    check_dataset_readable,
    dataset_info,
    default_data_dir,
    load_splits,
)

if TYPE_CHECKING:
    from evaluators.training.loop import evaluate_accuracy, train
    from evaluators.training.model import build_model
    from evaluators.training.workload import extract_layers

__all__ = [
    "DatasetFileError",
    "Splits",
    "build_model",
    "DEFAULT_DATA_DIRS",
    "check_dataset_files",
    "default_data_dir",
    "check_dataset_readable",
    "dataset_info",
    "evaluate_accuracy",
    "extract_layers",
    "load_splits",
    "train",
]

_LAZY = {
    "build_model": "evaluators.training.model",
    "extract_layers": "evaluators.training.workload",  # no torch
    "train": "evaluators.training.loop",
    "evaluate_accuracy": "evaluators.training.loop",
}


def __getattr__(name: str) -> Any:  # PEP 562: import torch-dependent modules on first use
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
