"""hair-jax: HAIR / Res-HAIR all-in-one image restoration in JAX + Flax NNX.

import hair_jax
model = hair_jax.load_torch_checkpoint("hair3d.ckpt")   # authors' weights
restored = model(images)                               # [B, H, W, 3] in [0, 1]

The layers, each importing only those below it (pyproject.toml's
import-linter contracts): nn (the model) <- io (files) and data <- inference
<- evaluation <- train <- loading <- experiments (the study) <- commands
(evaluate, restore, export, convert, prepare, ablation; train.py and eval.py
call them).
"""

import importlib

# Imported on first use (PEP 562), so that `import hair_jax.commands.common`
# (train.py's and eval.py's flag checks) does not wait seconds for jax.
_EXPORTS = {
    "CheckpointError": "hair_jax.io.torch_pickle",
    "ModelConfig": "hair_jax.nn.models",
    "ResHAIR": "hair_jax.nn.res_hair",
    "Restormer": "hair_jax.nn.restormer",
    "VARIANTS": "hair_jax.nn.models",
    "build_model": "hair_jax.nn.models",
    "load_checkpoint": "hair_jax.io.model_export",
    "load_model": "hair_jax.loading",
    "load_torch_checkpoint": "hair_jax.io.torch_import",
    "save_model": "hair_jax.io.model_export",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'hair_jax' has no attribute {name!r}")


__all__ = [
    "VARIANTS",
    "CheckpointError",
    "ModelConfig",
    "ResHAIR",
    "Restormer",
    "build_model",
    "load_checkpoint",
    "load_model",
    "load_torch_checkpoint",
    "save_model",
]
