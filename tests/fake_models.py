"""Cheap stand-ins for Res-HAIR with its API, for I/O and tiling tests.

They compile in milliseconds, and their outputs are known in closed form,
so the tests can check padding, tiling, blending and file handling exactly.
"""

import jax.numpy as jnp
from flax import nnx

from hair_jax.nn import layers, models


class PointwiseHAIR(nnx.Module):
    """out = scale * x + 0.25 + giv_weight * GIV, with GIV = mean colour of x.

    Pointwise, so a tiled pass equals a whole pass exactly when every tile
    gets the whole image's GIV; with `giv_weight` > 0 a tile with its own GIV
    would show. Checks its input like Res-HAIR (multiples of 8, >= 32 px).
    """

    has_giv = True
    multiple = 8
    min_size = models.MIN_SIZE
    level_names = ()

    def __init__(self, scale=0.5, giv_weight=0.0):
        self.scale = nnx.Param(jnp.asarray(scale, jnp.float32))
        self.giv_weight = giv_weight

    def giv(self, x):
        layers.check_images(x, min_size=models.MIN_SIZE)
        return x.mean(axis=(1, 2))  # [B, 3]

    def __call__(self, x, giv=None):
        giv = self.giv(x) if giv is None else giv
        layers.check_images(x, min_size=models.MIN_SIZE)
        return self.scale * x + 0.25 + self.giv_weight * giv[:, None, None, :]

    def selectors(self, giv):
        return {}
