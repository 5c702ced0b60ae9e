"""Res-HAIR: the Restormer encoder, a DAC -> GIV, hyper levels in the decoder.

Its config is `models.ModelConfig` (shared with the other built-in backbones).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import nnx

from hair_jax.nn import dac, hyper, layers, restormer

if TYPE_CHECKING:
    from hair_jax.nn.models import ModelConfig

# The DAC halves the H/8 latent twice more; below 32 px nothing would be left.
# At 32-56 px its last map is 1x1, where a GroupNorm with one channel per
# group outputs a constant: such DACs (the tiny variant's) need 64 px, see
# `min_size`.
MIN_SIZE = 32
HYPER_LEVELS = ("latent", "decoder_level3", "decoder_level2", "decoder_level1", "refinement")


class ResHAIR(nnx.Module):
    """Res-HAIR: Restormer encoder, DAC -> GIV, hyper levels in the decoder.

    Call `model(x)` on float32 images [B, H, W, 3] in [0, 1] with H and W
    multiples of 8; every image gets its own generated weights. Pass
    `giv=` to restore with a given GIV (e.g. one GIV shared by all tiles of
    an image) instead of computing it from `x`.
    """

    has_giv = True
    multiple = 8
    level_names = HYPER_LEVELS

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        c, nb, heads, ffn = cfg.dim, cfg.num_blocks, cfg.heads, cfg.ffn_expansion_factor
        conv_kw, block_kw, stage_kw = cfg.conv_kwargs(), cfg.block_kwargs(), cfg.stage_kwargs()
        self.encoder = restormer.Encoder(
            c, nb, heads, ffn, block_kw=block_kw, rngs=rngs, conv_kw=conv_kw, stage_kw=stage_kw
        )
        self.dac = dac.DAC(
            8 * c,
            cfg.dac_channels or int(1.5 * c),
            cfg.giv_dim,
            groups=cfg.dac_groups,
            rngs=rngs,
            **conv_kw,
        )

        def hyper_level(d, n, h, boxes):
            make = lambda r: restormer.TransformerBlock(d, h, ffn, rngs=r, **block_kw, **conv_kw)
            # Every convolution kernel of the block is generated; norms and the
            # attention temperature stay static, as in the paper.
            return hyper.HyperLevel(
                make,
                n,
                boxes,
                cfg.giv_dim,
                nnx.PathContains("kernel"),
                rngs=rngs,
                **cfg.hyper_kwargs(),
                **stage_kw,
            )

        boxes = cfg.boxes
        self.latent = hyper_level(8 * c, nb[3], heads[3], boxes[0])
        self.reduce_latent = layers.Conv2d(8 * c, 4 * c, 3, use_bias=True, rngs=rngs, **conv_kw)
        self.up4_3 = restormer.Upsample(4 * c, rngs=rngs, **conv_kw)
        self.reduce_chan_level3 = layers.Conv2d(
            6 * c, 4 * c, 1, use_bias=cfg.bias, rngs=rngs, **conv_kw
        )
        self.decoder_level3 = hyper_level(4 * c, nb[2], heads[2], boxes[1])
        self.up3_2 = restormer.Upsample(4 * c, rngs=rngs, **conv_kw)
        self.reduce_chan_level2 = layers.Conv2d(
            4 * c, 2 * c, 1, use_bias=cfg.bias, rngs=rngs, **conv_kw
        )
        self.decoder_level2 = hyper_level(2 * c, nb[1], heads[1], boxes[2])
        self.up2_1 = restormer.Upsample(2 * c, rngs=rngs, **conv_kw)
        self.decoder_level1 = hyper_level(2 * c, nb[0], heads[0], boxes[3])
        self.refinement = hyper_level(2 * c, cfg.num_refinement_blocks, heads[0], boxes[4])
        self.output = layers.Conv2d(2 * c, 3, 3, use_bias=cfg.bias, rngs=rngs, **conv_kw)
        self.giv_head = hyper.giv_head(cfg.giv_dim, cfg.giv_classes, rngs)
        self.type_routing = hyper.TypeRouting(cfg.type_routing) if cfg.type_routing else None
        self.giv_skip = hyper.GivSkip(8 * c, cfg.giv_dim, rngs=rngs) if cfg.giv_skip else None

    def _giv(self, latent: jax.Array) -> jax.Array:
        giv = self.dac(latent)
        return giv if self.giv_skip is None else giv + self.giv_skip(latent)

    def types(self, giv: jax.Array) -> jax.Array | None:
        """The `hyper.TypeRouting` weights [B, T] of `giv`, or None without type routing."""
        return None if self.type_routing is None else self.type_routing.weights(self.giv_head(giv))

    @property
    def min_size(self) -> int:
        """Smallest input height/width (`min_size` of the config)."""
        return min_size(self.config)

    def giv(self, x: jax.Array) -> jax.Array:
        """The global information vector [B, 2C] of images x [B, H, W, 3]."""
        layers.check_images(x, min_size=self.min_size)
        return self._giv(self.encoder(x)[1])

    def giv_logits(self, giv: jax.Array) -> jax.Array:
        """[B, giv_classes]: the degradation-type head on the GIV (giv_classes > 0)."""
        return self.giv_head(giv)

    def selectors(self, giv: jax.Array) -> dict[str, jax.Array]:
        """Per hyper level, the HSN softmax weights [num_blocks, B, num_box]."""
        types = self.types(giv)
        return {name: getattr(self, name).selectors(giv, types) for name in HYPER_LEVELS}

    def router_logits(self, giv: jax.Array) -> dict[str, jax.Array]:
        """Per hyper level, what the HSN softmaxes read [num_blocks, B, num_box]."""
        types = self.types(giv)
        return {name: getattr(self, name).logits(giv, types) for name in HYPER_LEVELS}

    def __call__(
        self, x: jax.Array, giv: jax.Array | None = None, use_giv: jax.Array | None = None
    ) -> jax.Array:
        return self.features(x, giv, use_giv)["output"]

    def features(
        self, x: jax.Array, giv: jax.Array | None = None, use_giv: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """The forward pass, returning every level's output by name (NHWC).

        Keys: encoder_level1-3, latent_input, giv, latent, decoder_level3-1,
        refinement, output. Under `jax.jit` the unused ones cost nothing.
        `giv`, `use_giv`: see `hyper.choose_giv`.
        """
        layers.check_images(x, min_size=self.min_size)
        if giv is not None and giv.shape != (x.shape[0], self.config.giv_dim):
            raise ValueError(
                f"giv has shape {giv.shape}, expected {(x.shape[0], self.config.giv_dim)}"
            )
        f = {}
        (f["encoder_level1"], f["encoder_level2"], f["encoder_level3"]), f["latent_input"] = (
            self.encoder(x)
        )
        f["giv"] = giv = hyper.choose_giv(giv, use_giv, lambda: self._giv(f["latent_input"]))
        types = self.types(giv)
        f["latent"] = y = self.latent(f["latent_input"], giv, types)
        y = self.up4_3(self.reduce_latent(y))
        y = self.reduce_chan_level3(jnp.concatenate([y, f["encoder_level3"]], axis=-1))
        f["decoder_level3"] = y = self.decoder_level3(y, giv, types)
        y = self.reduce_chan_level2(jnp.concatenate([self.up3_2(y), f["encoder_level2"]], axis=-1))
        f["decoder_level2"] = y = self.decoder_level2(y, giv, types)
        y = jnp.concatenate([self.up2_1(y), f["encoder_level1"]], axis=-1)
        f["decoder_level1"] = y = self.decoder_level1(y, giv, types)
        f["refinement"] = y = self.refinement(y, giv, types)
        f["output"] = (self.output(y) + x).astype(x.dtype)
        return f


def min_size(cfg: ModelConfig) -> int:
    """Smallest image height/width a Res-HAIR of `cfg` takes: 32, or 64 for a blind DAC.

    The DAC reads the H/8 latent and halves it twice. Below 64 px its last
    GroupNorm sees a 1x1 map; with one channel per group (the tiny variant's
    24 channels in 24 groups) that normalises every image to the same
    constant, so the GIV could not depend on the image. Such DACs need 64 px
    (a 2x2 map); with two or more channels per group (the paper's 72 in 24)
    32 px is enough.
    """
    channels = cfg.dac_channels or int(1.5 * cfg.dim)
    return 2 * MIN_SIZE if channels // cfg.dac_groups < 2 else MIN_SIZE
