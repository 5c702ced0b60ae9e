"""Datasets, degradations and loaders for HAIR (see docs/data.md).

Public API:
  TASKS, default_config: the task names (batch ids) and the data configuration.
  make_train_loader, TrainLoader: the all-in-one training stream.
  load_test_sets, TestImage, TestSet: evaluation data after the paper protocol.
  DataError: bad input found while preparing datasets.
"""

import importlib

from hair_jax.data.config import TASKS, default_config, default_data_dir, tasks_of, test_sets_of
from hair_jax.data.layout import DataError

# The loader pulls in grain and jax (seconds); `python -m hair_jax.data.prepare`
# needs neither, so those names are imported on first use (PEP 562).
_FROM_PIPELINE = ("TestImage", "TestSet", "TrainLoader", "load_test_sets", "make_train_loader")


def __getattr__(name):
    if name in _FROM_PIPELINE:
        return getattr(importlib.import_module("hair_jax.data.pipeline"), name)
    raise AttributeError(f"module 'hair_jax.data' has no attribute {name!r}")


__all__ = [
    "DataError",
    "TASKS",
    "default_config",
    "default_data_dir",
    "tasks_of",
    "test_sets_of",
    *_FROM_PIPELINE,
]
