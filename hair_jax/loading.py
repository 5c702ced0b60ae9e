"""A model from any checkpoint kind: workdir, model export, .ckpt, .safetensors or artifact.

    loaded = load_model(path)          # LoadedModel: .model, .kind, .step, ...
    loaded = load_model(workdir, step=2000, raw_weights=True)

The kinds `load_model` tells apart:
  * a training workdir (`python train.py --workdir DIR`): `DIR/checkpoints/<step>`
    hold the whole train state (orbax) and `DIR/config.json` the run's config;
    the model is rebuilt from the config, with the EMA weights when the run
    kept them;
  * a model export (`hair_jax.io.model_export`: `python -m hair_jax.convert`,
    or a workdir's `export/` at the end of training): `config.json` (the model
    config) and `params/`;
  * the authors' PyTorch Lightning `.ckpt` (or a bare state_dict file), read
    without torch (`hair_jax.io.torch_import`);
  * a `*.safetensors` file (`hair_jax.io.safetensors_file`): weights that
    `python -m hair_jax.export` wrote, or a reference PyTorch state dict
    saved with `safetensors.torch.save_file`;
  * a standalone artifact (`python -m hair_jax.export`: `*.jaxexport` or
    `*.onnx`, `hair_jax.io.artifacts`): no NNX model then, `LoadedModel.model`
    is the artifact itself, which has the interface of
    `hair_jax.inference.Predictor`.

This sits above `hair_jax.train` because reading a workdir means rebuilding
its train state; the commands (eval.py, hair-restore) use it.
"""

from __future__ import annotations

import dataclasses
import os

import ml_collections
from flax import nnx

from hair_jax.io import artifacts, safetensors_file
from hair_jax.io.files import error_line
from hair_jax.io.model_export import (
    CONFIG_FILE,
    PARAMS_DIR,
    ExportError,
    load_checkpoint,
    read_json,
)
from hair_jax.io.torch_import import load_torch_checkpoint
from hair_jax.train import ConfigError, restore_train_state

WORKDIR, EXPORT, TORCH, ARTIFACT = "workdir", "export", "torch", "artifact"
SAFETENSORS = "safetensors"
_DESCRIPTIONS = {
    EXPORT: "model export",
    TORCH: "PyTorch checkpoint",
    SAFETENSORS: "safetensors file",
    ARTIFACT: "standalone artifact",
}


@dataclasses.dataclass
class LoadedModel:
    """A model and where it came from.

    Attributes:
      model: the NNX model, ready to run (ARTIFACT: the artifact).
      kind: WORKDIR, EXPORT, TORCH, SAFETENSORS or ARTIFACT.
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
        if self.kind == ARTIFACT:
            return self.model.describe()
        return f"{self.path} ({_DESCRIPTIONS[self.kind]})"


def checkpoint_kind(path: str | os.PathLike) -> str:
    """WORKDIR, EXPORT, TORCH, SAFETENSORS or ARTIFACT for `path`; ExportError naming it if none."""
    path = os.fspath(path)
    if artifacts.artifact_kind(path):
        return ARTIFACT
    if safetensors_file.is_safetensors(path):
        return SAFETENSORS
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
    """Loads a model from a training workdir, a model export, a .ckpt or .safetensors file.

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
        raise ExportError(
            f"{path} is a {_DESCRIPTIONS[kind]}: --step and --raw_weights apply to training "
            "workdirs only"
        )
    if kind == EXPORT:
        return LoadedModel(load_checkpoint(path), kind, path)
    if kind == TORCH:
        return LoadedModel(load_torch_checkpoint(path), kind, path)
    if kind == SAFETENSORS:
        return LoadedModel(safetensors_file.load_safetensors(path), kind, path)
    if kind == ARTIFACT:
        try:
            return LoadedModel(artifacts.read_artifact(path), kind, path)
        except artifacts.ArtifactError as e:
            raise ExportError(str(e)) from None
    return _load_workdir(path, step, raw_weights)


def _load_workdir(path: str, step: int | None, raw_weights: bool) -> LoadedModel:
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
            f"{path}: cannot restore step {which} from {ckpt_dir}, is it damaged? ({error_line(e)})"
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
