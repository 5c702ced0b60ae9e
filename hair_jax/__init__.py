"""hair-jax: HAIR / Res-HAIR all-in-one image restoration in JAX + Flax NNX.

import hair_jax
model = hair_jax.load_torch_checkpoint("hair3d.ckpt")   # authors' weights
restored = model(images)                               # [B, H, W, 3] in [0, 1]
"""

import importlib

# Imported on first use (PEP 562), so that `import hair_jax.cli` (train.py's
# and eval.py's flag checks) does not wait seconds for jax.
_EXPORTS = {
    "CheckpointError": "hair_jax.torch_pickle",
    "ModelConfig": "hair_jax.models",
    "ResHAIR": "hair_jax.models",
    "Restormer": "hair_jax.restormer",
    "VARIANTS": "hair_jax.models",
    "build_model": "hair_jax.models",
    "load_checkpoint": "hair_jax.checkpoint",
    "load_torch_checkpoint": "hair_jax.convert",
    "save_model": "hair_jax.checkpoint",
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
    "load_torch_checkpoint",
    "save_model",
]
