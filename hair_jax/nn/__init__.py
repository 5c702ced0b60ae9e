"""The model: Restormer parts, the DAC, HAIR's hypernetwork pieces, the registry.

Nothing here reads files, data or training state: `hair_jax.io` turns
checkpoints into these modules, `hair_jax.train` trains them.
"""

from hair_jax.nn.models import VARIANTS, ModelConfig, ResHAIR, build_model, count_params
from hair_jax.nn.restormer import Restormer

__all__ = ["VARIANTS", "ModelConfig", "ResHAIR", "Restormer", "build_model", "count_params"]
