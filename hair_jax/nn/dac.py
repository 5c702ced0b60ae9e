"""DAC, the degradation-aware classifier that produces the GIV.

An LDM-style ResNet encoder over Res-HAIR's latent input
(H/8 x W/8 x 8C): conv_in, stages of ResNet blocks with stride-2
downsamples between them, a middle ResNet block / self-attention / ResNet
block, GroupNorm-swish-conv, then a global average pool. The pooled vector
is the global information vector (GIV) that every HSN reads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hair_jax.nn import layers


class GroupNorm(nnx.Module):
    """PyTorch GroupNorm (biased variance over each group), in float32."""

    def __init__(self, channels: int, groups: int, eps: float = 1e-6):
        if channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels not divisible by {groups} groups")
        self.groups, self.eps = groups, eps
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def __call__(self, x):
        b, h, w, c = x.shape
        g = x.astype(jnp.float32).reshape(b, h, w, self.groups, c // self.groups)
        mu = g.mean(axis=(1, 2, 4), keepdims=True)
        var = ((g - mu) ** 2).mean(axis=(1, 2, 4), keepdims=True)
        y = ((g - mu) * jax.lax.rsqrt(var + self.eps)).reshape(b, h, w, c)
        return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class ResnetBlock(nnx.Module):
    """x + conv(swish(GN(conv(swish(GN(x)))))), channels unchanged."""

    def __init__(self, ch: int, groups: int, *, rngs: nnx.Rngs, **conv_kw):
        self.norm1 = GroupNorm(ch, groups)
        self.conv1 = layers.Conv2d(ch, ch, 3, use_bias=True, rngs=rngs, **conv_kw)
        self.norm2 = GroupNorm(ch, groups)
        self.conv2 = layers.Conv2d(ch, ch, 3, use_bias=True, rngs=rngs, **conv_kw)

    def __call__(self, x):
        h = self.conv1(jax.nn.swish(self.norm1(x)))
        return x + self.conv2(jax.nn.swish(self.norm2(h)))


class AttnBlock(nnx.Module):
    """Single-head self-attention over pixels, with a residual connection."""

    def __init__(self, ch: int, groups: int, *, rngs: nnx.Rngs, **conv_kw):
        self.norm = GroupNorm(ch, groups)
        conv = lambda: layers.Conv2d(ch, ch, 1, use_bias=True, rngs=rngs, **conv_kw)
        self.q, self.k, self.v, self.proj_out = conv(), conv(), conv(), conv()

    def __call__(self, x):
        b, h, w, c = x.shape
        hn = self.norm(x)
        q, k, v = (f(hn).reshape(b, h * w, c) for f in (self.q, self.k, self.v))
        # matmul, not jnp.einsum: jax2onnx writes ONNX MatMuls for it, and
        # jnp.einsum as onnxruntime's slower Einsum.
        att = jnp.matmul(q, k.transpose(0, 2, 1)).astype(jnp.float32) * c**-0.5  # [b, hw, hw]
        att = jax.nn.softmax(att, axis=-1).astype(v.dtype)
        out = jnp.matmul(att, v).reshape(b, h, w, c)
        return x + self.proj_out(out)


class Downsample(nnx.Module):
    """Zero-pad right and bottom by one, then a stride-2 3x3 conv (odd sizes work)."""

    def __init__(self, ch: int, *, rngs: nnx.Rngs, **conv_kw):
        self.conv = layers.Conv2d(
            ch, ch, 3, stride=2, padding=((0, 1), (0, 1)), use_bias=True, rngs=rngs, **conv_kw
        )

    def __call__(self, x):
        return self.conv(x)


class DAC(nnx.Module):
    """Degradation-aware classifier: [B, h, w, in_ch] -> GIV [B, out_ch]."""

    def __init__(
        self,
        in_ch: int,
        ch: int,
        out_ch: int,
        *,
        num_stages: int = 3,
        blocks_per_stage: int = 3,
        groups: int = 24,
        rngs: nnx.Rngs,
        **conv_kw,
    ):
        self.conv_in = layers.Conv2d(in_ch, ch, 3, use_bias=True, rngs=rngs, **conv_kw)
        self.stages = nnx.List(
            [
                nnx.List(
                    [ResnetBlock(ch, groups, rngs=rngs, **conv_kw) for _ in range(blocks_per_stage)]
                )
                for _ in range(num_stages)
            ]
        )
        self.downsamples = nnx.List(
            [Downsample(ch, rngs=rngs, **conv_kw) for _ in range(num_stages - 1)]
        )
        self.mid_block_1 = ResnetBlock(ch, groups, rngs=rngs, **conv_kw)
        self.mid_attn_1 = AttnBlock(ch, groups, rngs=rngs, **conv_kw)
        self.mid_block_2 = ResnetBlock(ch, groups, rngs=rngs, **conv_kw)
        self.norm_out = GroupNorm(ch, groups)
        self.conv_out = layers.Conv2d(ch, out_ch, 3, use_bias=True, rngs=rngs, **conv_kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv_in(x)
        for i, stage in enumerate(self.stages):
            for block in stage:
                h = block(h)
            if i < len(self.downsamples):
                h = self.downsamples[i](h)
        h = self.mid_block_2(self.mid_attn_1(self.mid_block_1(h)))
        h = self.conv_out(jax.nn.swish(self.norm_out(h)))
        return h.astype(jnp.float32).mean(axis=(1, 2))
