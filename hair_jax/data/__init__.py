"""Datasets, degradations and loaders for HAIR (see docs/data.md).

Public API:
  TASKS, default_config: the task names (batch ids) and the data configuration.
  make_train_loader, TrainLoader: the all-in-one training stream.
  load_test_sets, TestImage, TestSet: evaluation data after the paper protocol.
  DataError: bad input found while preparing datasets.
"""
from hair_jax.data.config import TASKS, default_config, default_data_dir, tasks_of, test_sets_of
from hair_jax.data.layout import DataError
from hair_jax.data.pipeline import (TestImage, TestSet, TrainLoader, load_test_sets,
                                    make_train_loader)

__all__ = [
    "TASKS", "DataError", "TestImage", "TestSet", "TrainLoader", "default_config",
    "default_data_dir", "load_test_sets", "make_train_loader", "tasks_of", "test_sets_of",
]
