"""Restormer (Zamir et al., CVPR 2022) in Flax NNX, NHWC.

Pieces shared by the plain `Restormer` baseline and by Res-HAIR: the
transformer block (MDTA attention + GDFN feed-forward), the resizing
layers and the 3-level encoder.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hair_jax.nn import layers, stages


class MDTA(nnx.Module):
    """Multi-Dconv head Transposed Attention: attention across channels."""

    def __init__(self, dim: int, num_heads: int, *, bias: bool, rngs: nnx.Rngs, **conv_kw):
        self.num_heads = num_heads
        self.temperature = nnx.Param(jnp.ones((num_heads,), jnp.float32))
        self.qkv = layers.Conv2d(dim, 3 * dim, 1, use_bias=bias, rngs=rngs, **conv_kw)
        self.qkv_dwconv = layers.Conv2d(
            3 * dim, 3 * dim, 3, groups=3 * dim, use_bias=bias, rngs=rngs, **conv_kw
        )
        self.project_out = layers.Conv2d(dim, dim, 1, use_bias=bias, rngs=rngs, **conv_kw)

    def _attend(self, q, k, pixels: int):
        """softmax(temperature * normalize(q) . normalize(k)) [b, heads, d, d].

        normalize(q) . normalize(k) over pixels (torch F.normalize, eps
        1e-12) as the raw Gram matrix divided by the two norms: the same
        value, without normalised copies of q and k. `q`, `k`: float32, the
        pixels on axis `pixels` (1: [b, hw, heads, d]; 3: [b, heads, d, hw]).
        """
        if pixels == 1:
            gram = jnp.einsum("bpnc,bpnd->bncd", q, k)
        else:  # dot_general, not jnp.einsum: jax2onnx writes an ONNX MatMul
            gram = jax.lax.dot_general(q, k, (((3,), (3,)), ((0, 1), (0, 1))))
        qn = jnp.maximum(jnp.sqrt(jnp.sum(q * q, axis=pixels)), 1e-12)  # [b, heads, d]
        kn = jnp.maximum(jnp.sqrt(jnp.sum(k * k, axis=pixels)), 1e-12)
        attn = gram / (qn[..., :, None] * kn[..., None, :])
        attn = attn * self.temperature[...][None, :, None, None]
        return jax.nn.softmax(attn, axis=-1)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.qkv.channel_major:
            return self._channel_major(x)
        b, h, w, c = x.shape
        n, d = self.num_heads, c // self.num_heads
        qkv = self.qkv_dwconv(self.qkv(x))  # [b, h, w, 3c]
        # chunk(3) then '(head c)', as PyTorch; pixels stay the leading axis
        # (pixel-major), so the large maps are never transposed by hand.
        q, k, v = (t.reshape(b, h * w, n, d) for t in jnp.split(qkv, 3, axis=-1))
        attn = self._attend(q.astype(jnp.float32), k.astype(jnp.float32), 1).astype(v.dtype)
        out = jnp.einsum("bncd,bpnd->bpnc", attn, v)  # [b, hw, heads, d]
        return self.project_out(out.reshape(b, h, w, c))

    def _channel_major(self, x: jax.Array) -> jax.Array:
        """The same sums, the ONNX export's form: channels before pixels, as PyTorch.

        onnxruntime runs a `Conv` in NCHW. This form computes q, k and v
        straight into NCHW, each its own product (onnxruntime folds the
        transpose of the C-channel input into the matmul; no Split copies a
        3C map apart), and project_out reads the attention's output
        channel-first (the transpose folded into its matmul, likewise): no
        map is transposed on its own. Exported, the pixel-major form above
        transposed the 3C map twice around the conv and four C maps for the
        products.
        """
        b, h, w, c = x.shape
        n, d = self.num_heads, c // self.num_heads
        q, k, v = (
            self.qkv_dwconv.channels_first(t, (i, 3)).reshape(b, n, d, h * w)
            for i, t in enumerate(self.qkv.to_channels_first(x, chunks=3))
        )
        attn = self._attend(q.astype(jnp.float32), k.astype(jnp.float32), 3).astype(v.dtype)
        out = jax.lax.dot_general(attn, v, (((3,), (2,)), ((0, 1), (0, 1))))  # [b, n, d, hw]
        return self.project_out.from_channels_first(out.reshape(b, c, h, w))


class GDFN(nnx.Module):
    """Gated-Dconv Feed-forward Network: gelu(x1) * x2 after a depthwise conv."""

    def __init__(
        self, dim: int, ffn_expansion_factor: float, *, bias: bool, rngs: nnx.Rngs, **conv_kw
    ):
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = layers.Conv2d(dim, 2 * hidden, 1, use_bias=bias, rngs=rngs, **conv_kw)
        self.dwconv = layers.Conv2d(
            2 * hidden, 2 * hidden, 3, groups=2 * hidden, use_bias=bias, rngs=rngs, **conv_kw
        )
        self.project_out = layers.Conv2d(hidden, dim, 1, use_bias=bias, rngs=rngs, **conv_kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.project_in.channel_major:  # in NCHW (see MDTA._channel_major)
            x1, x2 = (
                self.dwconv.channels_first(t, (i, 2))
                for i, t in enumerate(self.project_in.to_channels_first(x, chunks=2))
            )
            # jax.nn.gelu is one ONNX Gelu (gelu_gate's erf form: six nodes).
            # project_out reads the gate NCHW and its C-channel output is
            # transposed back, not the 2.66 C-channel gate.
            gated = jax.nn.gelu(x1, approximate=False) * x2
            return self.project_out.channels_first(gated).transpose(0, 2, 3, 1)
        x1, x2 = jnp.split(self.dwconv(self.project_in(x)), 2, axis=-1)
        return self.project_out(layers.gelu_gate(x1, x2))


class TransformerBlock(nnx.Module):
    """x + MDTA(LN(x)), then x + GDFN(LN(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_expansion_factor: float,
        *,
        bias: bool = False,
        with_bias_norm: bool = True,
        rngs: nnx.Rngs,
        **conv_kw,
    ):
        self.norm1 = layers.LayerNorm(dim, with_bias=with_bias_norm)
        self.attn = MDTA(dim, num_heads, bias=bias, rngs=rngs, **conv_kw)
        self.norm2 = layers.LayerNorm(dim, with_bias=with_bias_norm)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias=bias, rngs=rngs, **conv_kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Downsample(nnx.Module):
    """3x3 conv n -> n/2, then PixelUnshuffle(2): [H, W, n] -> [H/2, W/2, 2n]."""

    def __init__(self, n: int, *, rngs: nnx.Rngs, **conv_kw):
        self.conv = layers.Conv2d(n, n // 2, 3, rngs=rngs, **conv_kw)

    def __call__(self, x):
        if not self.conv.channel_major:
            return layers.pixel_unshuffle(self.conv(x), 2)
        # The ONNX form: the conv in NCHW, its output unshuffled straight
        # into NHWC by one transpose ([b, c, h, i, w, j] -> [b, h, w, c, i, j]).
        y = self.conv.channels_first(x.transpose(0, 3, 1, 2))
        b, c, h, w = y.shape
        y = y.reshape(b, c, h // 2, 2, w // 2, 2).transpose(0, 2, 4, 1, 3, 5)
        return y.reshape(b, h // 2, w // 2, 4 * c)


class Upsample(nnx.Module):
    """3x3 conv n -> 2n, then PixelShuffle(2): [H, W, n] -> [2H, 2W, n/2]."""

    def __init__(self, n: int, *, rngs: nnx.Rngs, **conv_kw):
        self.conv = layers.Conv2d(n, 2 * n, 3, rngs=rngs, **conv_kw)

    def __call__(self, x):
        if not self.conv.channel_major:
            return layers.pixel_shuffle(self.conv(x), 2)
        # The ONNX form (see Downsample's): [b, c, i, j, h, w] -> [b, h, i, w, j, c].
        y = self.conv.channels_first(x.transpose(0, 3, 1, 2))
        b, c4, h, w = y.shape
        y = y.reshape(b, c4 // 4, 2, 2, h, w).transpose(0, 4, 2, 5, 3, 1)
        return y.reshape(b, 2 * h, 2 * w, c4 // 4)


def run_blocks(blocks, x, **stage_kw):
    """Runs transformer blocks in order; `stage_kw` is `remat=`, `scan=` (see `stages`)."""
    return stages.run_stages(lambda block, x: block(x), x, blocks, **stage_kw)


class Encoder(nnx.Module):
    """Patch embedding and encoder levels 1-3 with their downsamples.

    Returns the three skip tensors (C, 2C, 4C channels) and the latent input
    (H/8 x W/8 x 8C), which is also what Res-HAIR's classifier reads.
    """

    def __init__(
        self, dim, num_blocks, heads, ffn_expansion_factor, *, block_kw, rngs, conv_kw, stage_kw
    ):
        self.stage_kw = stage_kw
        self.patch_embed = layers.Conv2d(3, dim, 3, rngs=rngs, **conv_kw)
        make = lambda d, n, h: nnx.List(
            [
                TransformerBlock(d, h, ffn_expansion_factor, rngs=rngs, **block_kw, **conv_kw)
                for _ in range(n)
            ]
        )
        self.levels = nnx.List([make(dim * 2**i, num_blocks[i], heads[i]) for i in range(3)])
        self.downs = nnx.List([Downsample(dim * 2**i, rngs=rngs, **conv_kw) for i in range(3)])

    def __call__(self, x):
        x = self.patch_embed(x)
        skips = []
        for level, down in zip(self.levels, self.downs):
            x = run_blocks(level, x, **self.stage_kw)
            skips.append(x)
            x = down(x)
        return skips, x


class Restormer(nnx.Module):
    """The plain Restormer: static weights, the standard Restormer decoder."""

    has_giv = False
    multiple = 8
    min_size = 8
    level_names = ()

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.config = cfg
        c, nb, heads, ffn = cfg.dim, cfg.num_blocks, cfg.heads, cfg.ffn_expansion_factor
        conv_kw, block_kw = cfg.conv_kwargs(), cfg.block_kwargs()
        self.stage_kw = stage_kw = cfg.stage_kwargs()
        blocks = lambda d, n, h: nnx.List(
            [TransformerBlock(d, h, ffn, rngs=rngs, **block_kw, **conv_kw) for _ in range(n)]
        )
        self.encoder = Encoder(
            c, nb, heads, ffn, block_kw=block_kw, rngs=rngs, conv_kw=conv_kw, stage_kw=stage_kw
        )
        self.latent = blocks(8 * c, nb[3], heads[3])
        self.up4_3 = Upsample(8 * c, rngs=rngs, **conv_kw)
        self.reduce_chan_level3 = layers.Conv2d(
            8 * c, 4 * c, 1, use_bias=cfg.bias, rngs=rngs, **conv_kw
        )
        self.decoder_level3 = blocks(4 * c, nb[2], heads[2])
        self.up3_2 = Upsample(4 * c, rngs=rngs, **conv_kw)
        self.reduce_chan_level2 = layers.Conv2d(
            4 * c, 2 * c, 1, use_bias=cfg.bias, rngs=rngs, **conv_kw
        )
        self.decoder_level2 = blocks(2 * c, nb[1], heads[1])
        self.up2_1 = Upsample(2 * c, rngs=rngs, **conv_kw)
        self.decoder_level1 = blocks(2 * c, nb[0], heads[0])
        self.refinement = blocks(2 * c, cfg.num_refinement_blocks, heads[0])
        self.output = layers.Conv2d(2 * c, 3, 3, use_bias=cfg.bias, rngs=rngs, **conv_kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        layers.check_images(x)
        (s1, s2, s3), x_lat = self.encoder(x)
        run = lambda blocks, y: run_blocks(blocks, y, **self.stage_kw)
        y = run(self.latent, x_lat)
        y = self.reduce_chan_level3(jnp.concatenate([self.up4_3(y), s3], axis=-1))
        y = run(self.decoder_level3, y)
        y = self.reduce_chan_level2(jnp.concatenate([self.up3_2(y), s2], axis=-1))
        y = run(self.decoder_level2, y)
        y = jnp.concatenate([self.up2_1(y), s1], axis=-1)
        y = run(self.refinement, run(self.decoder_level1, y))
        return self.output(y) + x
