"""hair-jax: HAIR / Res-HAIR all-in-one image restoration in JAX + Flax NNX.

import hair_jax
model = hair_jax.load_torch_checkpoint("hair3d.ckpt")   # authors' weights
restored = model(images)                               # [B, H, W, 3] in [0, 1]
"""

from hair_jax.checkpoint import load_checkpoint, save_model
from hair_jax.convert import load_torch_checkpoint
from hair_jax.models import VARIANTS, ModelConfig, ResHAIR, build_model
from hair_jax.restormer import Restormer
from hair_jax.torch_pickle import CheckpointError

__all__ = [
    "CheckpointError",
    "ModelConfig",
    "ResHAIR",
    "Restormer",
    "VARIANTS",
    "build_model",
    "load_checkpoint",
    "load_torch_checkpoint",
    "save_model",
]
