"""Model export (orbax parameters plus config.json), and loading any checkpoint.

    save_model(model, "exports/hair3d")
    model = load_checkpoint("exports/hair3d")
    loaded = load_model(path)   # a training workdir, an export or a .ckpt

The export directory is written under a temporary name and renamed at the
end, so an interrupted or failed save never leaves something that looks
complete.

The three kinds of checkpoint `load_model` tells apart:
  * a training workdir (`python train.py --workdir DIR`): `DIR/checkpoints/<step>`
    hold the whole train state (orbax) and `DIR/config.json` the run's config;
    the model is rebuilt from the config, with the EMA weights when the run
    kept them;
  * a model export (`save_model`, `python -m hair_jax.convert`, or a workdir's
    `export/` at the end of training): `config.json` (the model config) and
    `params/`;
  * the authors' PyTorch Lightning `.ckpt` (or a bare state_dict file), read
    without torch (`hair_jax.load_torch_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import jax
import orbax.checkpoint as ocp
from flax import nnx

from hair_jax import models

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


def read_json(path: str) -> dict:
    """The JSON object in `path` (at most MAX_CONFIG_BYTES); ExportError naming it otherwise."""
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise ExportError(f"{path}: {size} bytes, more than the {MAX_CONFIG_BYTES} bytes of a config")
        with open(path, "rb") as f:
            value = json.loads(f.read(MAX_CONFIG_BYTES + 1))
    except (FileNotFoundError, ExportError):
        raise
    except (OSError, ValueError, RecursionError) as e:  # ValueError: also bad JSON or UTF-8
        raise ExportError(f"{path}: invalid model config ({_first_line(e)})") from None
    if not isinstance(value, dict):
        raise ExportError(f"{path}: invalid model config (not a JSON object)")
    return value


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _check_types(d: dict) -> None:
    """Each field of a model config must have its default's type (ValueError otherwise)."""
    default = models.ModelConfig()
    for name, value in d.items():
        if not hasattr(default, name):
            continue  # from_dict names the unknown fields
        want = getattr(default, name)
        if isinstance(want, bool) or name in ("bias", "scan_blocks"):
            ok = isinstance(value, bool)
            kind = "true or false"
        elif isinstance(want, int) or name == "dac_channels":
            ok = (value is None and want is None) or (
                isinstance(value, int) and not isinstance(value, bool) and value > 0)
            kind = "an integer > 0"
        elif isinstance(want, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
            kind = "a number > 0"
        elif isinstance(want, str):
            ok = isinstance(value, str)
            kind = "a string"
        else:  # tuples of ints (num_box may be null)
            ok = (value is None and name == "num_box") or (
                isinstance(value, list) and all(
                    isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))
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
    try:
        _check_types(d)
        return models.ModelConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ExportError(f"{path}: invalid model config ({e})") from None


def _shapes(tree) -> dict[str, tuple]:
    """Leaf path -> shape, with keys as strings (orbax stores list indices as strings)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {
        "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in p): tuple(v.shape)
        for p, v in leaves
    }


def _reason(error: BaseException) -> str:
    """The first line of what went wrong at the bottom of `error`'s chain."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


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
        raise ExportError(f"{path}: cannot read the parameters ({_reason(e)})") from None
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(graphdef, state)


WORKDIR, EXPORT, TORCH = "workdir", "export", "torch"


@dataclasses.dataclass
class LoadedModel:
    """A model and where it came from.

    Attributes:
      model: the NNX model, ready to run.
      kind: WORKDIR, EXPORT or TORCH.
      path: the checkpoint path as given.
      step: the training step (workdirs only, else None).
      weights: "ema" or "raw" for workdirs, else None.
      data_config: the run's `config.data` (workdirs only, else None).
    """

    model: nnx.Module
    kind: str
    path: str
    step: int | None = None
    weights: str | None = None
    data_config: object | None = None

    def describe(self) -> str:
        """One line, e.g. 'runs/demo (training workdir, step 250, EMA weights)'."""
        if self.kind == WORKDIR:
            weights = "EMA" if self.weights == "ema" else "raw"
            return f"{self.path} (training workdir, step {self.step}, {weights} weights)"
        return f"{self.path} ({'model export' if self.kind == EXPORT else 'PyTorch checkpoint'})"


def checkpoint_kind(path: str | os.PathLike) -> str:
    """WORKDIR, EXPORT or TORCH for `path`; ExportError naming it otherwise."""
    path = os.fspath(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        return WORKDIR
    if os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isdir(
        os.path.join(path, PARAMS_DIR)
    ):
        return EXPORT
    if os.path.isfile(path):
        return TORCH
    if not os.path.exists(path):
        raise ExportError(f"{path}: no such file or directory")
    raise ExportError(
        f"{path} is not a checkpoint: neither a training workdir (no checkpoints/), "
        f"a model export (no {CONFIG_FILE} and {PARAMS_DIR}/) nor a PyTorch .ckpt file"
    )


def load_model(
    path: str | os.PathLike, *, step: int | None = None, raw_weights: bool = False
) -> LoadedModel:
    """Loads a model from a training workdir, a model export or a PyTorch .ckpt.

    Args:
      path: the checkpoint; its kind is detected (see the module docstring).
      step: workdirs only: this checkpoint step instead of the latest.
      raw_weights: workdirs only: the trained weights even when the run kept
        an EMA of them (the EMA is the default).

    Raises:
      ExportError, CheckpointError: `path` is no checkpoint or is damaged; the
        message names it.
    """
    path = os.fspath(path)
    kind = checkpoint_kind(path)
    if kind != WORKDIR and (step is not None or raw_weights):
        what = "a model export" if kind == EXPORT else "a PyTorch checkpoint"
        raise ExportError(
            f"{path} is {what}: --step and --raw_weights apply to training workdirs only"
        )
    if kind == EXPORT:
        return LoadedModel(load_checkpoint(path), kind, path)
    if kind == TORCH:
        from hair_jax.convert import load_torch_checkpoint  # pylint: disable=g-import-not-at-top

        return LoadedModel(load_torch_checkpoint(path), kind, path)
    return _load_workdir(path, step, raw_weights)


def _load_workdir(path: str, step: int | None, raw_weights: bool) -> LoadedModel:
    import ml_collections  # pylint: disable=g-import-not-at-top

    # The one place that knows where the training code lives.
    from hair_jax.train import ConfigError, restore_train_state  # pylint: disable=g-import-not-at-top

    config_path = os.path.join(path, CONFIG_FILE)
    try:
        config = ml_collections.ConfigDict(read_json(config_path))
    except FileNotFoundError:
        raise ExportError(f"{config_path}: not found; the run's config is needed") from None
    ckpt_dir = os.path.join(path, "checkpoints")
    steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
    if not steps:
        raise ExportError(f"{path}: no checkpoint in {ckpt_dir} yet")
    if step is not None and step not in steps:
        have = ", ".join(map(str, steps))
        raise ExportError(f"{path}: no checkpoint of step {step}; --step can be one of {have}")
    try:
        graphdef, state = restore_train_state(config, path, step=step)
    except ConfigError as e:
        raise ExportError(f"{config_path}: {e}") from None
    except Exception as e:  # noqa: BLE001 - orbax raises plain Exception for damaged files
        which = steps[-1] if step is None else step
        raise ExportError(
            f"{path}: cannot restore step {which} from {ckpt_dir}, is it damaged? ({_reason(e)})"
        ) from None
    use_ema = state.ema is not None and not raw_weights
    params = state.ema if use_ema else state.params
    model = nnx.merge(graphdef, params, state.rest)
    return LoadedModel(
        model,
        WORKDIR,
        path,
        step=int(state.step),
        weights="ema" if use_ema else "raw",
        data_config=config.get("data"),
    )
