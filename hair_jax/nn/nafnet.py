"""NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022) and NAF-HAIR.

`NAFNet` follows the official `NAFNet_arch.py` operation for operation, in
NHWC: an intro 3x3 conv, encoder stages of NAFBlocks each followed by a
stride-2 2x2 conv doubling the channels, middle blocks, decoder stages of a
1x1 conv + PixelShuffle(2), an added skip and blocks, an ending 3x3 conv and
the input added back. Inputs of any size are zero-padded at the bottom and
right to a multiple of 2^(encoder stages) and the output cropped back.
Attribute names follow the official state dict (`intro`, `encoders`,
`downs`, `middle_blks`, `ups`, `decoders`, `ending`), so released weights
map onto it by a rename of `weight` to `kernel` and a layout transpose.

`NAFHAIR` is the second client of `hair_jax.nn.hyper`, built the way
Res-HAIR is: a DAC reads the last encoder stage's output (H/8 for four
stages, the skip of the deepest decoder) and pools it into the GIV, and the middle level and every decoder level become
`hyper.HyperLevel`s of NAFBlocks with `nnx.PathContains("kernel")` as the
filter. So the kernels of all six convs of a block (conv1-conv5 and the
channel-attention conv, which acts on a pooled vector and costs nothing)
are generated per image; biases, LayerNorms and beta/gamma stay static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hair_jax.nn import dac, hyper, layers, stages


class NAFBlock(nnx.Module):
    """The official NAFBlock: gated depthwise conv branch, then a gated FFN.

    y = x + beta * conv3(SCA(SG(conv2(conv1(LN(x))))))
    out = y + gamma * conv5(SG(conv4(LN(y))))
    where SG splits the channels in half and multiplies the halves, and SCA
    multiplies the features by a 1x1 conv of their global average. beta and
    gamma start at zero, so a fresh block is the identity. Dropout (0 in
    every official config) is left out.
    """

    def __init__(
        self, c: int, *, dw_expand: int = 2, ffn_expand: int = 2, rngs: nnx.Rngs, **conv_kw
    ):
        dw, ffn = c * dw_expand, c * ffn_expand
        conv = lambda i, o, k=1, **kw: layers.Conv2d(
            i, o, k, use_bias=True, rngs=rngs, **kw, **conv_kw
        )
        self.norm1 = layers.LayerNorm(c, eps=1e-6)
        self.conv1 = conv(c, dw)
        self.conv2 = conv(dw, dw, 3, groups=dw)
        self.sca = conv(dw // 2, dw // 2)
        self.conv3 = conv(dw // 2, c)
        self.norm2 = layers.LayerNorm(c, eps=1e-6)
        self.conv4 = conv(c, ffn)
        self.conv5 = conv(ffn // 2, c)
        self.beta = nnx.Param(jnp.zeros((c,), jnp.float32))
        self.gamma = nnx.Param(jnp.zeros((c,), jnp.float32))

    def __call__(self, inp: jax.Array) -> jax.Array:
        x = simple_gate(self.conv2(self.conv1(self.norm1(inp))))
        x = x * self.sca(layers.spatial_mean(x))
        y = inp + self.conv3(x) * self.beta[...].astype(x.dtype)
        x = self.conv5(simple_gate(self.conv4(self.norm2(y))))
        return y + x * self.gamma[...].astype(x.dtype)


def simple_gate(x: jax.Array) -> jax.Array:
    """NAFNet's SimpleGate: the first half of the channels times the second."""
    a, b = jnp.split(x, 2, axis=-1)
    return a * b


def block_params(c: int, dynamic_only: bool = False) -> int:
    """Parameters of one NAFBlock of width c (7c^2 + 33c; kernels alone 7c^2 + 18c)."""
    return 7 * c * c + 18 * c if dynamic_only else 7 * c * c + 33 * c


class NAFNet(nnx.Module):
    """The official NAFNet U-Net with static weights (see the module docstring).

    Call `model(x)` on float images [B, H, W, 3]; any H and W work (the
    model pads to `multiple` with zeros, as the official code does).
    """

    has_giv = False
    level_names = ()

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.config = cfg
        w, conv_kw = cfg.dim, cfg.conv_kwargs()
        self.stage_kw = cfg.stage_kwargs()
        conv = lambda i, o, k, **kw: layers.Conv2d(i, o, k, rngs=rngs, **kw, **conv_kw)
        self.intro = conv(3, w, 3, use_bias=True)
        self.encoders, self.downs, chans = nnx.List([]), nnx.List([]), []
        c = w
        for n in cfg.enc_blocks:
            self.encoders.append(self.plain_level(c, n, rngs))
            self.downs.append(conv(c, 2 * c, 2, stride=2, padding=0, use_bias=True))
            chans.append(c)
            c *= 2
        self.middle_channels = c
        self.before_levels(chans[-1], rngs)
        self.middle_blks = self.level(c, cfg.middle_blocks, 0, rngs)
        self.ups, self.decoders = nnx.List([]), nnx.List([])
        for i, n in enumerate(cfg.dec_blocks):
            self.ups.append(conv(c, 2 * c, 1, use_bias=False))
            c //= 2
            self.decoders.append(self.level(c, n, i + 1, rngs))
        self.ending = conv(w, 3, 3, use_bias=True)

    def make_block(self, c: int, rngs: nnx.Rngs) -> NAFBlock:
        return NAFBlock(c, rngs=rngs, **self.config.conv_kwargs())

    def plain_level(self, c: int, n: int, rngs: nnx.Rngs) -> nnx.List:
        return nnx.List([self.make_block(c, rngs) for _ in range(n)])

    def before_levels(self, skip_channels: int, rngs: nnx.Rngs) -> None:
        """Hook for modules built before the middle level (NAF-HAIR's DAC)."""

    def level(self, c: int, n: int, index: int, rngs: nnx.Rngs):
        """The middle level (index 0) or decoder level `index`; static here."""
        return self.plain_level(c, n, rngs)

    def run_level(self, level, x: jax.Array, giv: jax.Array | None) -> jax.Array:
        return stages.run_stages(lambda block, y: block(y), x, level, **self.stage_kw)

    @property
    def multiple(self) -> int:
        """Inputs are padded to a multiple of this (2^encoder stages)."""
        return 2 ** len(self.config.enc_blocks)

    @property
    def min_size(self) -> int:
        """Smallest input height/width callers pad to: one `multiple`."""
        return self.multiple

    def __call__(
        self, x: jax.Array, giv: jax.Array | None = None, use_giv: jax.Array | None = None
    ) -> jax.Array:
        return self.features(x, giv, use_giv)["output"]

    def features(
        self, x: jax.Array, giv: jax.Array | None = None, use_giv: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """The forward pass, returning named intermediate maps (NHWC, padded size).

        Keys: middle_input, giv (NAF-HAIR only), middle, output (cropped to
        the input size). NAF-HAIR's `giv`, `use_giv`: see `hyper.choose_giv`.
        """
        f = {}
        inp, skips, y = self.encode(x)
        f["middle_input"] = y
        h, w = x.shape[1:3]
        giv = self.compute_giv(f, giv, use_giv, skips[-1])
        f["middle"] = y = self.run_level(self.middle_blks, y, giv)
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            y = layers.pixel_shuffle(up(y), 2) + skip
            y = self.run_level(decoder, y, giv)
        out = self.ending(y) + inp.astype(y.dtype)
        f["output"] = out[:, :h, :w].astype(x.dtype)
        return f

    def encode(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array], jax.Array]:
        """Padded input, encoder skips and the middle level's input."""
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected images [B, H, W, 3], got shape {tuple(x.shape)}")
        h, w, m = x.shape[1], x.shape[2], self.multiple
        inp = jnp.pad(x, ((0, 0), (0, -h % m), (0, -w % m), (0, 0)))
        y, skips = self.intro(inp), []
        for encoder, down in zip(self.encoders, self.downs):
            y = stages.run_stages(lambda block, z: block(z), y, encoder, **self.stage_kw)
            skips.append(y)
            y = down(y)
        return inp, skips, y

    def compute_giv(self, f: dict, giv, use_giv, skip: jax.Array) -> jax.Array | None:
        return None


class NAFHAIR(NAFNet):
    """NAFNet with HAIR on its middle and decoder levels (see the module docstring).

    `model(x)` computes the GIV from x; `model(x, giv=g)` uses a given one.
    """

    has_giv = True

    def before_levels(self, skip_channels: int, rngs: nnx.Rngs) -> None:
        cfg = self.config
        # The DAC reads the deepest skip (H/8), not the middle input (H/16):
        # at the 64 px minimum its last GroupNorm then sees a 2x2 map; a 1x1
        # map with one channel per group normalises every image to one GIV.
        self.dac = dac.DAC(
            skip_channels,
            cfg.dac_channels or int(1.5 * cfg.dim),
            cfg.giv_dim,
            groups=cfg.dac_groups,
            rngs=rngs,
            **cfg.conv_kwargs(),
        )
        self.giv_head = hyper.giv_head(cfg.giv_dim, cfg.giv_classes, rngs)
        self.type_routing = hyper.TypeRouting(cfg.type_routing) if cfg.type_routing else None
        self.giv_skip = (
            hyper.GivSkip(skip_channels, cfg.giv_dim, rngs=rngs) if cfg.giv_skip else None
        )

    def types(self, giv: jax.Array) -> jax.Array | None:
        """The `hyper.TypeRouting` weights [B, T] of `giv`, or None without type routing."""
        return None if self.type_routing is None else self.type_routing.weights(self.giv_head(giv))

    def level(self, c: int, n: int, index: int, rngs: nnx.Rngs):
        cfg = self.config
        # The filter is the whole NAF-specific part: every conv kernel of the
        # block is generated; biases, norms, beta and gamma stay static.
        return hyper.HyperLevel(
            lambda r: self.make_block(c, r),
            n,
            cfg.boxes[index],
            cfg.giv_dim,
            nnx.PathContains("kernel"),
            rngs=rngs,
            **cfg.hyper_kwargs(),
            **self.stage_kw,
        )

    def run_level(self, level, x, giv):
        return level(x, giv, self.types(giv))

    @property
    def min_size(self) -> int:
        """Smallest input height/width: the DAC's input (1/(multiple/2)) must be 8 px.

        Its two stride-2 convs then leave a 2x2 map, so the GIV depends on
        the image even with one channel per GroupNorm group.
        """
        return 4 * self.multiple

    def compute_giv(self, f, giv, use_giv, skip):
        batch = skip.shape[0]
        if giv is not None and giv.shape != (batch, self.config.giv_dim):
            raise ValueError(f"giv has shape {giv.shape}, expected {(batch, self.config.giv_dim)}")
        f["giv"] = giv = hyper.choose_giv(giv, use_giv, lambda: self._dac(skip))
        return giv

    def _dac(self, skip: jax.Array) -> jax.Array:
        scale = self.multiple // 2
        if skip.shape[1] * scale < self.min_size or skip.shape[2] * scale < self.min_size:
            raise ValueError(
                f"NAF-HAIR computes its GIV from images of at least {self.min_size}x"
                f"{self.min_size} px (the DAC's input is 1/{scale} of the image), got "
                f"{skip.shape[1] * scale}x{skip.shape[2] * scale} after padding"
            )
        giv = self.dac(skip)
        return giv if self.giv_skip is None else giv + self.giv_skip(skip)

    def giv(self, x: jax.Array) -> jax.Array:
        """The global information vector [B, 2 * width] of images x [B, H, W, 3]."""
        return self._dac(self.encode(x)[1][-1])

    def giv_logits(self, giv: jax.Array) -> jax.Array:
        """[B, giv_classes]: the degradation-type head on the GIV (giv_classes > 0)."""
        return self.giv_head(giv)

    def router_logits(self, giv: jax.Array) -> dict[str, jax.Array]:
        """Per hyper level, what the HSN softmaxes read [num_blocks, B, num_box]."""
        levels, types = [self.middle_blks, *self.decoders], self.types(giv)
        return {name: lvl.logits(giv, types) for name, lvl in zip(self.level_names, levels)}

    @property
    def level_names(self) -> tuple[str, ...]:
        """The hyper levels: the middle one, then the decoders from the deepest."""
        return ("middle_blks",) + tuple(f"decoders.{i}" for i in range(len(self.decoders)))

    def selectors(self, giv: jax.Array) -> dict[str, jax.Array]:
        """Per hyper level, the HSN softmax weights [num_blocks, B, num_box]."""
        levels, types = [self.middle_blks, *self.decoders], self.types(giv)
        return {name: lvl.selectors(giv, types) for name, lvl in zip(self.level_names, levels)}
