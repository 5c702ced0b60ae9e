"""Fields shared by every training config: `hair_jax.train.defaults`, where they live.

The configs here start from `get_base_config()` (the reference recipe) and
change what their run needs.
"""

from hair_jax.train.defaults import get_base_config, set_epochs

__all__ = ["get_base_config", "set_epochs"]
