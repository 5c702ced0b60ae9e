"""Model export: a model's config.json plus its orbax parameters, no training state.

    save_model(model, "exports/hair3d")
    model = load_checkpoint("exports/hair3d")

This is what `python -m hair_jax.convert` and the end of training write. The
directory is written under a temporary name and renamed at the end, so an
interrupted or failed save never leaves something that looks complete.
Loading it needs the model code (`hair_jax.nn`); `hair_jax.loading.load_model`
reads any checkpoint kind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import orbax.checkpoint as ocp
from flax import nnx

from hair_jax.io.files import error_line
from hair_jax.nn import models

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"


class ExportError(ValueError):
    """A model export directory that cannot be written or read."""


def save_model(model: nnx.Module, directory: str | os.PathLike) -> None:
    """Writes `model` (its `config` and parameters) to a new `directory`."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise ExportError(f"{directory} already exists and is not empty; choose a new directory")
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(directory) + "-", dir=parent)
    try:
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            f.write(model.config.to_json())
        params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, PARAMS_DIR), params)
        if os.path.isdir(directory):
            os.rmdir(directory)  # empty, checked above
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_config(directory: str | os.PathLike) -> models.ModelConfig:
    path = os.path.join(os.fspath(directory), CONFIG_FILE)
    try:
        with open(path) as f:
            return models.ModelConfig.from_dict(json.load(f))
    except FileNotFoundError:
        raise ExportError(f"{path}: not found; is {directory} a hair-jax model export?") from None
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise ExportError(f"{path}: invalid model config ({e})") from None


def load_checkpoint(directory: str | os.PathLike) -> nnx.Module:
    """Restores a model written by `save_model` (or `python -m hair_jax.convert`)."""
    directory = os.path.abspath(os.fspath(directory))
    cfg = load_config(directory)
    abstract = models.abstract_model(cfg)
    graphdef, state = nnx.split(abstract)
    target = nnx.to_pure_dict(state)
    path = os.path.join(directory, PARAMS_DIR)
    if not os.path.isdir(path):
        raise ExportError(f"{path}: parameters not found")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(path, target)
    except Exception as e:  # noqa: BLE001 - orbax raises plain Exception for damaged files
        raise ExportError(f"{path}: cannot read the parameters ({error_line(e)})") from None
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)
