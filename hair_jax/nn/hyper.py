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


class RouterTemperature(nnx.Variable):
    """A fixed or scheduled softmax temperature of an HSN (not trained).

    The train step overwrites it when `config.hair` anneals the temperature;
    a model export rebuilds it from the config (the schedule's end value).
    """


SHARED_RESIDUAL = 0.1  # `bank_init="shared"`: each box = shared kernel + 0.1 x its own draw
BANK_INITS = ("independent", "scaled", "shared")


class HSN(nnx.Module):
    """Hyper selecting net: GIV [B, G] -> softmax selector [B, num_box].

    Linear layers halve the width `depth` times (G -> G/2 -> ... ), each
    followed by an exact GELU, then a last Linear to `num_box` and a softmax
    (the paper's HSN, the default).

    Options (off by default; see SELECTOR_NOTES in docs/results.md for why):
      norm: standardise the GIV (zero mean, unit variance over its features),
        initialise the hidden layers to keep the variance through the GELUs
        (normal, variance 2 / fan_in) and the last layer with variance
        1 / fan_in and no bias, so the logits spread about 1 at initialisation
        instead of about 0.01.
      temperature: divide the logits by this before the softmax (values below
        1 sharpen it). Held in a `RouterTemperature` variable that training
        may anneal.
      learned_temperature: learn log(temperature) instead (a Param starting
        at log(temperature or 1)).
    """

    def __init__(
        self,
        giv_dim: int,
        num_box: int,
        *,
        depth: int = 3,
        norm: bool = False,
        temperature: float | None = None,
        learned_temperature: bool = False,
        rngs: nnx.Rngs,
    ):
        widths = [giv_dim // 2**i for i in range(depth + 1)] + [num_box]
        pairs = list(zip(widths[:-1], widths[1:]))
        if norm:
            hidden = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")
            last = nnx.initializers.variance_scaling(1.0, "fan_in", "normal")
            linears = [nnx.Linear(a, b, kernel_init=hidden, rngs=rngs) for a, b in pairs[:-1]]
            linears.append(nnx.Linear(*pairs[-1], kernel_init=last, use_bias=False, rngs=rngs))
        else:
            linears = [nnx.Linear(a, b, rngs=rngs) for a, b in pairs]
        self.layers = nnx.List(linears)
        self.norm = norm
        if learned_temperature:
            self.temperature = nnx.Param(jnp.log(jnp.float32(temperature or 1.0)))
        elif temperature is not None:
            self.temperature = RouterTemperature(jnp.float32(temperature))
        else:
            self.temperature = None

    def logits(self, giv: jax.Array, bias: jax.Array | None = None) -> jax.Array:
        """[B, num_box]: what the softmax reads (after any temperature).

        `bias` [B, num_box] is added before the temperature (`TypeRouting`).
        """
        h = giv.astype(jnp.float32)
        if self.norm:
            h = (h - h.mean(-1, keepdims=True)) * jax.lax.rsqrt(h.var(-1, keepdims=True) + 1e-6)
        for layer in self.layers[:-1]:
            h = jax.nn.gelu(layer(h), approximate=False)
        h = self.layers[-1](h)
        if bias is not None:
            h = h + bias
        if isinstance(self.temperature, nnx.Param):
            h = h * jnp.exp(-self.temperature[...])
        elif self.temperature is not None:
            h = h / self.temperature[...]
        return h

    def __call__(self, giv: jax.Array, bias: jax.Array | None = None) -> jax.Array:
        return jax.nn.softmax(self.logits(giv, bias), axis=-1)


class WeightBank(nnx.Module):
    """`num_box` copies of a block's dynamic parameters, mixed per image.

    `init` says how the copies start:
      "independent" (the paper): each copy is the block's own default
        initialisation with fresh keys, so a bank is what `num_box`
        independently built blocks would hold; a uniform mix of them has
        1 / num_box of one block's variance.
      "scaled": the same copies times sqrt(num_box), so a uniform mix has one
        block's variance.
      "shared": one shared draw plus `SHARED_RESIDUAL` times an independent
        draw per copy (kernels as W0 + dW_k): the mix starts as one block.
    """

    def __init__(
        self,
        make_block: Callable[[nnx.Rngs], nnx.Module],
        num_box: int,
        dynamic: Filter,
        *,
        init: str = "independent",
        rngs: nnx.Rngs,
    ):
        if init not in BANK_INITS:
            raise ValueError(f"bank init must be one of {BANK_INITS}, got {init!r}")
        boxes = [nnx.state(make_block(rngs), dynamic) for _ in range(num_box)]
        # Leaves [num_box, *param_shape].
        weights = jax.tree.map(lambda *a: jnp.stack(a), *boxes)
        if init == "scaled":
            weights = jax.tree.map(lambda w: w * num_box**0.5, weights)
        elif init == "shared":
            shared = nnx.state(make_block(rngs), dynamic)
            weights = jax.tree.map(lambda s, w: s[None] + SHARED_RESIDUAL * w, shared, weights)
        self.weights = nnx.data(weights)
        self.num_box = num_box

    def mix(self, selector: jax.Array) -> nnx.State:
        """selector [B, num_box] -> per-image parameters, leaves [B, *param_shape]."""

        def mix_one(w):  # a 2-D matmul, not jnp.einsum: one ONNX MatMul, not an Einsum
            mixed = selector.astype(w.dtype) @ w.reshape(self.num_box, -1)
            return mixed.reshape(selector.shape[0], *w.shape[1:])

        return jax.tree.map(mix_one, self.weights)


PER_IMAGE = ("vmap", "loop")


class DynamicBlock(nnx.Module):
    """A block whose dynamic parameters are supplied per image at call time.

    `per_image` says how the images meet their parameters: "vmap" (the
    default) batches the block over images with `jax.vmap`; "loop" calls it
    once per image (the batch must be static) and concatenates. The loop
    keeps every per-image convolution an ordinary convolution whose kernel
    happens to be computed, with no batching rule folding the batch into
    its groups: the ONNX export's form (`ModelConfig.conv_impl="onnx"`),
    exported at batch 1 where it is a single call.
    """

    def __init__(self, block: nnx.Module, dynamic: Filter, *, per_image: str = "vmap"):
        if per_image not in PER_IMAGE:
            raise ValueError(f"per_image must be one of {PER_IMAGE}, got {per_image!r}")
        self.graphdef, _, static = nnx.split(block, dynamic, ...)
        self.static = nnx.data(static)
        self.per_image = per_image

    def __call__(self, x: jax.Array, weights: nnx.State, *args) -> jax.Array:
        """x [B, ...], weights with leaves [B, ...]: image b runs with weights[b]."""
        graphdef = self.graphdef
        if self.per_image == "loop":
            if not isinstance(x.shape[0], int):
                raise ValueError(f"per_image='loop' needs a static batch, got {x.shape[0]}")
            outs = [
                nnx.merge(graphdef, jax.tree.map(lambda w, i=i: w[i], weights), self.static)(
                    x[i : i + 1], *args
                )
                for i in range(x.shape[0])
            ]
            return outs[0] if len(outs) == 1 else jnp.concatenate(outs)

        # The static state is passed in (in_axes=None), never closed over: NNX
        # refuses to read a Variable of an outer trace inside the vmap.
        def one(x_i, w_i, static):
            return nnx.merge(graphdef, w_i, static)(x_i[None], *args)[0]

        return jax.vmap(one, in_axes=(0, 0, None))(x, weights, self.static)


def choose_giv(
    giv: jax.Array | None, use_giv: jax.Array | None, compute: Callable[[], jax.Array]
) -> jax.Array:
    """The GIV a forward pass runs with: `compute()` (the DAC's) unless one is given.

    `giv` alone is used for every image. With `use_giv` [B, 1] too, image b
    runs with giv[b] where use_giv[b] > 0.5 and with its computed GIV
    elsewhere: one graph for both (the ONNX export's), whose encoder runs
    once.
    """
    if giv is None:
        return compute()
    if use_giv is None:
        return giv
    if use_giv.shape != (giv.shape[0], 1):
        raise ValueError(f"use_giv has shape {use_giv.shape}, expected {(giv.shape[0], 1)}")
    return jnp.where(use_giv > 0.5, giv, compute())


def giv_head(giv_dim: int, classes: int, rngs: nnx.Rngs) -> nnx.Linear | None:
    """A linear degradation-type head on the GIV, or None for `classes` 0."""
    return nnx.Linear(giv_dim, classes, rngs=rngs) if classes else None


class GivSkip(nnx.Module):
    """A linear map of a feature map's spatial mean [B, C] -> [B, giv_dim], zero at first.

    Added to the DAC's GIV (`ModelConfig.giv_skip`): the mean keeps the
    per-image statistics (noise energy, contrast) that the DAC's last
    GroupNorm removes before it pools.
    """

    def __init__(self, channels: int, giv_dim: int, *, rngs: nnx.Rngs):
        zeros = nnx.initializers.zeros_init()
        self.proj = nnx.Linear(channels, giv_dim, use_bias=False, kernel_init=zeros, rngs=rngs)

    def __call__(self, features: jax.Array) -> jax.Array:
        return self.proj(features.astype(jnp.float32).mean(axis=(1, 2)))


class RoutingGain(nnx.Variable):
    """`TypeRouting`'s gain (a variable, so a copy can switch it off)."""


class TypeRouting(nnx.Module):
    """Routes by the GIV head's type posterior: gain x p(type t) added to box t mod K.

    Every HSN's logits get `type_bias(weights(type_logits), K)`: with a
    confident head, an image of type t takes box t mod K of every bank (with
    weight e^gain / (e^gain + K - 1) at temperature 1); the HSN's own
    logits still move it. Before the head has learnt, the posterior is
    near uniform and so is the bias.
    """

    def __init__(self, gain: float):
        self.gain = RoutingGain(jnp.float32(gain))

    def weights(self, type_logits: jax.Array) -> jax.Array:
        """[B, T]: gain x softmax of the GIV head's logits."""
        return self.gain[...] * jax.nn.softmax(type_logits.astype(jnp.float32), axis=-1)


def type_bias(types: jax.Array, num_box: int) -> jax.Array:
    """[B, num_box]: the weights [B, T] of each type summed onto box (type mod num_box)."""
    to_box = jax.nn.one_hot(jnp.arange(types.shape[-1]) % num_box, num_box, dtype=types.dtype)
    return types @ to_box


class HyperLevel(nnx.Module):
    """`num_blocks` dynamic blocks sharing one weight bank, one HSN each.

    `remat` and `scan` choose how the chain of blocks runs (see `stages`);
    `per_image` how each block meets its per-image weights (`DynamicBlock`).
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
        hsn_kw: dict | None = None,
        bank_init: str = "independent",
        remat: str = "none",
        scan: bool = False,
        per_image: str = "vmap",
        rngs: nnx.Rngs,
    ):
        self.remat, self.scan = remat, scan
        self.bank = WeightBank(make_block, num_box, dynamic, init=bank_init, rngs=rngs)
        self.blocks = nnx.List(
            [
                DynamicBlock(make_block(rngs), dynamic, per_image=per_image)
                for _ in range(num_blocks)
            ]
        )
        self.hsns = nnx.List(
            [
                HSN(giv_dim, num_box, depth=hsn_depth, rngs=rngs, **(hsn_kw or {}))
                for _ in range(num_blocks)
            ]
        )

    def _bias(self, types: jax.Array | None) -> jax.Array | None:
        return None if types is None else type_bias(types, self.bank.num_box)

    def selectors(self, giv: jax.Array, types: jax.Array | None = None) -> jax.Array:
        """[num_blocks, B, num_box]: each block's mixture weights per image.

        `types` [B, T]: the `TypeRouting` weights of the images, if the model routes by type.
        """
        bias = self._bias(types)
        return jnp.stack([hsn(giv, bias) for hsn in self.hsns])

    def logits(self, giv: jax.Array, types: jax.Array | None = None) -> jax.Array:
        """[num_blocks, B, num_box]: what each block's softmax reads."""
        bias = self._bias(types)
        return jnp.stack([hsn.logits(giv, bias) for hsn in self.hsns])

    def __call__(self, x: jax.Array, giv: jax.Array, types: jax.Array | None = None) -> jax.Array:
        bias = self._bias(types)

        def step(stage, x, bank):
            block, hsn = stage
            return block(x, bank.mix(hsn(giv, bias)))

        return stages.run_stages(
            step,
            x,
            zip(self.blocks, self.hsns),
            shared=self.bank,
            remat=self.remat,
            scan=self.scan,
        )
