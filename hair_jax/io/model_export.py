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

import dataclasses
import json
import os
import shutil

import jax
import orbax.checkpoint as ocp
from flax import nnx

from hair_jax.io.files import error_line, temp_dir
from hair_jax.nn import models, registry

CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
# A model or run config is a few KiB; a bigger file is not one, and is not read.
MAX_CONFIG_BYTES = 2**20


class ExportError(ValueError):
    """A model export directory that cannot be written or read."""


def save_model(model: nnx.Module, directory: str | os.PathLike) -> None:
    """Writes `model` (its `config` and parameters) to a new `directory`."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise ExportError(f"{directory} already exists and is not empty; choose a new directory")
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = temp_dir(".tmp-" + os.path.basename(directory) + "-", parent)
    try:
        with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
            json.dump(dataclasses.asdict(model.config), f, indent=2)
        # Every variable: the parameters, and a router temperature if the model has one.
        params = nnx.to_pure_dict(nnx.state(model))
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, PARAMS_DIR), params)
        if os.path.isdir(directory):
            os.rmdir(directory)  # empty, checked above
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str) -> dict:
    """The JSON object in `path` (at most MAX_CONFIG_BYTES); ExportError naming it otherwise."""
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise ExportError(
                f"{path}: {size} bytes, more than the {MAX_CONFIG_BYTES} bytes of a config"
            )
        with open(path, "rb") as f:
            value = json.loads(f.read(MAX_CONFIG_BYTES + 1))
    except (FileNotFoundError, ExportError):
        raise
    except (OSError, ValueError, RecursionError) as e:  # ValueError: also bad JSON or UTF-8
        raise ExportError(f"{path}: invalid model config ({error_line(e)})") from None
    if not isinstance(value, dict):
        raise ExportError(f"{path}: invalid model config (not a JSON object)")
    return value


def _check_types(d: dict) -> None:
    """Each field of a model config must have its default's type (ValueError otherwise)."""
    default = models.ModelConfig()
    for name, value in d.items():
        if not hasattr(default, name):
            continue  # from_dict names the unknown fields
        want = getattr(default, name)
        if name == "scan_blocks":  # True, False or "auto" (per backend)
            ok = isinstance(value, bool) or value == "auto"
            kind = 'true, false or "auto"'
        elif isinstance(want, bool) or name == "bias":
            ok = isinstance(value, bool)
            kind = "true or false"
        elif name == "giv_classes":
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            kind = "an integer >= 0"
        elif name == "type_routing":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            kind = "a number >= 0"
        elif name == "router_temperature":
            ok = value is None or (
                isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            )
            kind = "null or a number > 0"
        elif isinstance(want, int) or name == "dac_channels":
            ok = (value is None and want is None) or (
                isinstance(value, int) and not isinstance(value, bool) and value > 0
            )
            kind = "an integer > 0"
        elif isinstance(want, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            kind = "a number > 0"
        elif isinstance(want, str):
            ok = isinstance(value, str)
            kind = "a string"
        else:  # tuples of ints (num_box may be null)
            ok = (value is None and name == "num_box") or (
                isinstance(value, list)
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            )
            kind = "a list of integers > 0"
        if not ok:
            raise ValueError(f"{name} must be {kind}, got {json.dumps(value)[:40]}")


def load_config(directory: str | os.PathLike) -> models.ModelConfig:
    """The model config of an export; ExportError naming config.json if it is bad."""
    path = os.path.join(os.fspath(directory), CONFIG_FILE)
    try:
        d = read_json(path)
    except FileNotFoundError:
        raise ExportError(f"{path}: not found; is {directory} a hair-jax model export?") from None
    return config_from_dict(d, path)


def config_from_dict(d: dict, where: str):
    """The model config a saved dict describes, field types checked.

    Raises:
      ExportError: '<where>: invalid model config (...)', one line.
    """
    try:
        if registry.get(d.get("arch", "res_hair")).config is models.ModelConfig:
            _check_types(d)
        return registry.config_from_dict(d)
    except (TypeError, ValueError) as e:
        raise ExportError(f"{where}: invalid model config ({e})") from None


def _shapes(tree) -> dict[str, tuple]:
    """Leaf path -> shape, with keys as strings (orbax stores list indices as strings)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p): tuple(v.shape)
        for p, v in leaves
    }


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
            stored = ckptr.metadata(path)
            stored = _shapes(getattr(stored, "item_metadata", stored))
            # Compared before restoring, so memory never exceeds what params/
            # declares, whatever config.json claims.
            wanted = _shapes(target)
            if not stored:  # orbax logs a damaged _METADATA and returns nothing
                raise ExportError(f"{path}: cannot read the parameters (no readable metadata)")
            if stored != wanted:
                diff = sorted(set(stored.items()) ^ set(wanted.items()))[0][0]
                raise ExportError(
                    f"{path}: does not hold the model {CONFIG_FILE} describes (first "
                    f"difference at {diff}: stored {stored.get(diff)}, expected {wanted.get(diff)})"
                )
            params = ckptr.restore(path, target)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - orbax raises plain Exception for damaged files
        raise ExportError(f"{path}: cannot read the parameters ({error_line(e)})") from None
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)
