"""HAIR's plug-and-play mechanism: per-image weights mixed from a weight bank.

Nothing here knows about Restormer. Given any NNX block and a filter that
picks some of its parameters (the *dynamic* ones):

* `WeightBank` holds `num_box` independently initialised copies of those
  parameters, stacked on a leading box axis, and mixes them per image:
  W_b = sum_i s_bi W_i for a selector s of shape [B, num_box].
* `HSN` (hyper selecting net) maps the global information vector (GIV) to
  such a selector with an MLP and a softmax.
* `DynamicBlock` keeps the block's other (static) parameters and runs the
  block once per image with that image's mixed parameters under `jax.vmap`.
  A convolution inside the block thus becomes a convolution with per-image
  kernels; `jax.vmap` lowers `lax.conv_general_dilated` to one grouped conv,
  and the exact fast paths of `layers.Conv2d` to batched matmuls/FMAs.
* `HyperLevel` chains blocks that share one bank, each with its own HSN, as
  in Res-HAIR's hyper levels.

A convolution is linear in its kernel, so each generated convolution
conv(x, sum_i s_i W_i) equals the gated mixture sum_i s_i conv(x, W_i) (the
paper's Proposition 1; it holds per convolution, not for the whole block,
whose norms, attention and GELU are not linear); tests check this.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from hair_jax.nn import stages

Filter = nnx.filterlib.Filter


class HSN(nnx.Module):
    """Hyper selecting net: GIV [B, G] -> softmax selector [B, num_box].

    Linear layers halve the width `depth` times (G -> G/2 -> ... ), each
    followed by an exact GELU, then a last Linear to `num_box` and a softmax.
    """

    def __init__(self, giv_dim: int, num_box: int, *, depth: int = 3, rngs: nnx.Rngs):
        widths = [giv_dim // 2**i for i in range(depth + 1)] + [num_box]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )

    def __call__(self, giv: jax.Array) -> jax.Array:
        h = giv.astype(jnp.float32)
        for layer in self.layers[:-1]:
            h = jax.nn.gelu(layer(h), approximate=False)
        return jax.nn.softmax(self.layers[-1](h), axis=-1)


class WeightBank(nnx.Module):
    """`num_box` copies of a block's dynamic parameters, mixed per image.

    Each copy is the block's own default initialisation with fresh keys, so
    a bank is what `num_box` independently built blocks would hold.
    """

    def __init__(
        self,
        make_block: Callable[[nnx.Rngs], nnx.Module],
        num_box: int,
        dynamic: Filter,
        *,
        rngs: nnx.Rngs,
    ):
        boxes = [nnx.state(make_block(rngs), dynamic) for _ in range(num_box)]
        # Leaves [num_box, *param_shape].
        self.weights = nnx.data(jax.tree.map(lambda *a: jnp.stack(a), *boxes))
        self.num_box = num_box

    def mix(self, selector: jax.Array) -> nnx.State:
        """selector [B, num_box] -> per-image parameters, leaves [B, *param_shape]."""

        def mix_one(w):
            return jnp.einsum("bn,n...->b...", selector.astype(w.dtype), w)

        return jax.tree.map(mix_one, self.weights)


class DynamicBlock(nnx.Module):
    """A block whose dynamic parameters are supplied per image at call time."""

    def __init__(self, block: nnx.Module, dynamic: Filter):
        self.graphdef, _, static = nnx.split(block, dynamic, ...)
        self.static = nnx.data(static)

    def __call__(self, x: jax.Array, weights: nnx.State, *args) -> jax.Array:
        """x [B, ...], weights with leaves [B, ...]: image b runs with weights[b]."""
        graphdef = self.graphdef

        # The static state is passed in (in_axes=None), never closed over: NNX
        # refuses to read a Variable of an outer trace inside the vmap.
        def one(x_i, w_i, static):
            return nnx.merge(graphdef, w_i, static)(x_i[None], *args)[0]

        return jax.vmap(one, in_axes=(0, 0, None))(x, weights, self.static)


class HyperLevel(nnx.Module):
    """`num_blocks` dynamic blocks sharing one weight bank, one HSN each.

    `remat` and `scan` choose how the chain of blocks runs (see `stages`).
    """

    def __init__(
        self,
        make_block: Callable[[nnx.Rngs], nnx.Module],
        num_blocks: int,
        num_box: int,
        giv_dim: int,
        dynamic: Filter,
        *,
        hsn_depth: int = 3,
        remat: str = "none",
        scan: bool = False,
        rngs: nnx.Rngs,
    ):
        self.remat, self.scan = remat, scan
        self.bank = WeightBank(make_block, num_box, dynamic, rngs=rngs)
        self.blocks = nnx.List([DynamicBlock(make_block(rngs), dynamic) for _ in range(num_blocks)])
        self.hsns = nnx.List(
            [HSN(giv_dim, num_box, depth=hsn_depth, rngs=rngs) for _ in range(num_blocks)]
        )

    def selectors(self, giv: jax.Array) -> jax.Array:
        """[num_blocks, B, num_box]: each block's mixture weights per image."""
        return jnp.stack([hsn(giv) for hsn in self.hsns])

    def __call__(self, x: jax.Array, giv: jax.Array) -> jax.Array:
        def step(stage, x, bank):
            block, hsn = stage
            return block(x, bank.mix(hsn(giv)))

        return stages.run_stages(
            step,
            x,
            zip(self.blocks, self.hsns),
            shared=self.bank,
            remat=self.remat,
            scan=self.scan,
        )
