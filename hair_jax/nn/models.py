"""The model config, the named variants and the built-in backbones' registration.

Paper terms -> code: DAC -> `dac.DAC`, GIV -> `ResHAIR.giv`, HSN ->
`hyper.HSN`, weight bank ("kernel box") -> `hyper.WeightBank`, hyper level
-> `hyper.HyperLevel`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hair_jax.nn import hyper, layers, nafnet, registry, restormer, stages

# Res-HAIR lives in its own module; these names stay importable from here.
from hair_jax.nn.res_hair import HYPER_LEVELS, MIN_SIZE, ResHAIR, min_size

__all__ = [
    "ADAPTIVE",
    "HYPER_LEVELS",
    "MIN_SIZE",
    "VARIANTS",
    "ModelConfig",
    "ResHAIR",
    "abstract_model",
    "build_model",
    "count_params",
    "get_config",
    "min_size",
]

ARCHS = ("res_hair", "restormer", "nafnet", "naf_hair")
NAF_ARCHS = ("nafnet", "naf_hair")

# What "auto" means for the speed options, per backend. They change how the
# model computes, never its parameters or (beyond float rounding) its values.
# CPU: the forms measured fastest on XLA:CPU; GPU/TPU: reasoned, not yet
# measured (BENCHMARKS.md, "Per-backend choices", says why for each).
PLATFORM_DEFAULTS = {
    "cpu": {"conv_impl": "fast_rows", "remat": "block", "scan_blocks": True},
    "gpu": {"conv_impl": "fast", "remat": "none", "scan_blocks": False},
    "tpu": {"conv_impl": "fast", "remat": "block", "scan_blocks": True},
}


def platform_kind(platform: str | None = None) -> str:
    """ "cpu", "gpu" or "tpu" for a JAX platform name (default: the default backend).

    Accepts device platforms ("cpu", "gpu", "tpu") and export platforms
    ("cuda", "rocm"); any other accelerator plugin gets the GPU choices.
    """
    platform = (platform or jax.default_backend()).lower()
    return platform if platform in ("cpu", "tpu") else "gpu"


def _parse_scan(value):
    # Command-line overrides arrive as strings ("auto", "False").
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if value != "auto" and not isinstance(value, bool):
        raise ValueError(f"scan_blocks must be True, False or 'auto', got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of a Res-HAIR, Restormer, NAFNet or NAF-HAIR model.

    Attributes:
      arch: one of `ARCHS`: "res_hair", "restormer", "nafnet" or "naf_hair".
      dim: C, the channel width of level 1 (NAFNet's `width`).
      num_blocks: transformer blocks per level (levels 1-3 and latent);
        Restormer and Res-HAIR only.
      num_refinement_blocks: blocks of the refinement stage.
      heads: attention heads per level.
      ffn_expansion_factor: GDFN hidden width is int(d * factor).
      bias: biases in the Restormer convolutions.
      layer_norm: "WithBias" or "BiasFree".
      enc_blocks, middle_blocks, dec_blocks: NAFNet's blocks per encoder
        stage, middle level and decoder stage (NAFNet and NAF-HAIR only).
      num_box: weight-bank size of each hyper level, in `HYPER_LEVELS` order
        (NAF-HAIR: middle, then decoders from the deepest); None takes the
        released code's rule (see `default_num_box`, `naf_num_box`).
      dac_channels: DAC width; None means int(1.5 * dim) as released.
      dac_groups: GroupNorm groups in the DAC.
      hsn_depth: hidden layers of each HSN.
      giv_classes: if > 0, a linear head on the GIV with this many outputs
        (`giv_logits`), for the degradation-type loss of training
        (`config.hair.giv_loss_weight`); 0 (the paper) has none.
      router_norm: the normalised router of `hyper.HSN` (norm=True).
      router_temperature: the HSNs' softmax temperature; None (the paper)
        divides by nothing. Below 1 sharpens the selectors.
      learned_temperature: learn each HSN's temperature (starting at
        router_temperature, or 1).
      bank_init: how weight banks start, see `hyper.WeightBank`
        ("independent", the paper's; "scaled"; "shared").
      type_routing: if > 0 (needs giv_classes), every HSN's logits get this
        gain times the GIV head's type posterior on box (type mod boxes):
        `hyper.TypeRouting`. 0 (the paper) routes by the HSNs alone.
      giv_skip: add to the GIV a linear map of the DAC input's spatial mean
        (`hyper.GivSkip`, zero at initialisation). The DAC's last GroupNorm
        normalises each image's statistics away before its pooling, so its
        GIV hardly varies with the degradation; the mean keeps them.
      conv_impl: "fast" (exact fast paths for 1x1 and depthwise convs),
        "fast_rows" (the same, with the depthwise kernel gradient summed over
        blocks of rows in a loop: the XLA:CPU form), "lax" (always
        `lax.conv_general_dilated`), "onnx" (the ONNX export's form: 1x1
        convs as matmuls, the others as `lax.conv_general_dilated`, and the
        blocks of hyper levels run image by image, see `layers.Conv2d` and
        `hyper.DynamicBlock`) or "auto" (per backend, see `PLATFORM_DEFAULTS`).
      dtype: compute dtype ("float32" or "bfloat16"); parameters, norms,
        softmax, L2 normalisation and the DAC's pooling stay float32.
      remat: "block" recomputes each transformer block's forward in the
        backward pass (only block inputs are kept: far less memory, one more
        forward of compute); "none" keeps every activation; "auto" per backend.
      scan_blocks: run the blocks of each level with `jax.lax.scan` (one
        compiled block per level: shorter compiles, same results); "auto"
        per backend.

    "auto" is resolved when the model is built (`build_model(platform=)`,
    default: the default backend; training passes its mesh's platform); the
    model keeps the config as given, so an export resolves where it is loaded.
    """

    arch: str = "res_hair"
    dim: int = 48
    num_blocks: tuple[int, ...] = (4, 6, 6, 8)
    num_refinement_blocks: int = 4
    heads: tuple[int, ...] = (1, 2, 4, 8)
    ffn_expansion_factor: float = 2.66
    bias: bool = False
    layer_norm: str = "WithBias"
    enc_blocks: tuple[int, ...] = ()
    middle_blocks: int = 1
    dec_blocks: tuple[int, ...] = ()
    num_box: tuple[int, ...] | None = None
    dac_channels: int | None = None
    dac_groups: int = 24
    hsn_depth: int = 3
    giv_classes: int = 0
    router_norm: bool = False
    router_temperature: float | None = None
    learned_temperature: bool = False
    bank_init: str = "independent"
    type_routing: float = 0.0
    giv_skip: bool = False
    conv_impl: str = "auto"
    dtype: str = "float32"
    remat: str = "auto"
    scan_blocks: bool | str = "auto"

    def __post_init__(self):
        # Tuples keep the config hashable even when built from JSON lists.
        for name in ("num_blocks", "heads", "num_box", "enc_blocks", "dec_blocks"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(int(v) for v in value))
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}: expected one of {ARCHS}")
        if self.arch in NAF_ARCHS and (
            not self.enc_blocks or len(self.dec_blocks) != len(self.enc_blocks)
        ):
            raise ValueError(
                f"{self.arch} needs as many dec_blocks as enc_blocks (at least one), "
                f"got {self.enc_blocks}, {self.dec_blocks}"
            )
        if len(self.num_blocks) != 4 or len(self.heads) != 4:
            raise ValueError(
                f"num_blocks and heads need 4 entries, got {self.num_blocks}, {self.heads}"
            )
        if self.layer_norm not in ("WithBias", "BiasFree"):
            raise ValueError(
                f"layer_norm must be 'WithBias' or 'BiasFree', got {self.layer_norm!r}"
            )
        if self.conv_impl not in ("auto", *layers.CONV_IMPLS):
            raise ValueError(
                f"conv_impl must be one of {('auto', *layers.CONV_IMPLS)}, got {self.conv_impl!r}"
            )
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.remat not in ("auto", *stages.REMAT):
            raise ValueError(f"remat must be one of {('auto', *stages.REMAT)}, got {self.remat!r}")
        object.__setattr__(self, "scan_blocks", _parse_scan(self.scan_blocks))
        if self.bank_init not in hyper.BANK_INITS:
            raise ValueError(f"bank_init must be one of {hyper.BANK_INITS}, got {self.bank_init!r}")
        if self.router_temperature is not None and not self.router_temperature > 0:
            raise ValueError(f"router_temperature must be > 0, got {self.router_temperature!r}")
        if self.giv_classes < 0:
            raise ValueError(f"giv_classes must be >= 0, got {self.giv_classes!r}")
        if self.type_routing < 0 or (self.type_routing and not self.giv_classes):
            raise ValueError(
                f"type_routing must be >= 0 and needs giv_classes > 0, got {self.type_routing!r}"
            )
        levels = 1 + len(self.dec_blocks) if self.arch in NAF_ARCHS else len(HYPER_LEVELS)
        if self.num_box is not None and len(self.num_box) != levels:
            raise ValueError(f"num_box needs {levels} entries, got {self.num_box}")

    @property
    def boxes(self) -> tuple[int, ...]:
        if self.num_box:
            return self.num_box
        if self.arch in NAF_ARCHS:
            return tuple(naf_num_box(n) for n in (self.middle_blocks, *self.dec_blocks))
        return default_num_box(self.num_blocks, self.num_refinement_blocks)

    @property
    def giv_dim(self) -> int:
        return 2 * self.dim

    def resolved(self, platform: str | None = None) -> ModelConfig:
        """This config with every "auto" replaced by `platform`'s choice."""
        choices = PLATFORM_DEFAULTS[platform_kind(platform)]
        auto = {k: v for k, v in choices.items() if getattr(self, k) == "auto"}
        return dataclasses.replace(self, **auto) if auto else self

    def conv_kwargs(self) -> dict[str, Any]:
        return {"impl": self.conv_impl, "dtype": jnp.dtype(self.dtype)}

    def stage_kwargs(self) -> dict[str, Any]:
        return {"remat": self.remat, "scan": self.scan_blocks}

    def hyper_kwargs(self) -> dict[str, Any]:
        """`hyper.HyperLevel` arguments of the router and bank options."""
        hsn_kw = {}
        if self.router_norm:
            hsn_kw["norm"] = True
        if self.router_temperature is not None:
            hsn_kw["temperature"] = self.router_temperature
        if self.learned_temperature:
            hsn_kw["learned_temperature"] = True
        # The ONNX form runs each image's block on its own (`hyper.DynamicBlock`).
        per_image = "loop" if self.conv_impl == "onnx" else "vmap"
        return {
            "hsn_depth": self.hsn_depth,
            "hsn_kw": hsn_kw,
            "bank_init": self.bank_init,
            "per_image": per_image,
        }

    def block_kwargs(self) -> dict[str, Any]:
        return {"bias": self.bias, "with_bias_norm": self.layer_norm == "WithBias"}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**d)


def default_num_box(num_blocks, num_refinement_blocks) -> tuple[int, ...]:
    """Bank sizes as in the released code: max(4, n) + 1, except decoder 3 (no +1)."""
    n1, n2, n3, n4 = num_blocks
    return (
        max(4, n4) + 1,
        max(4, n3),
        max(4, n2) + 1,
        max(4, n1) + 1,
        max(4, num_refinement_blocks) + 1,
    )


def naf_num_box(num_blocks: int) -> int:
    """NAF-HAIR's bank size for a level of `num_blocks` blocks: min(max(n, 2), 4) + 1.

    HAIR's max(4, n) + 1 gives a one-block level (every decoder of the GoPro
    configs) 5 boxes for one HSN, and the 12-block middle level of the SIDD
    configs, the widest level at 16x the width, 13 copies of its kernels.
    This rule gives one- and two-block levels 3 boxes (one per task of the
    three-task setting) and caps every level at 5, HAIR's size for levels of
    up to 4 blocks.
    """
    return min(max(num_blocks, 2), 4) + 1


def _naf(arch: str, width: int, enc, middle: int, dec) -> ModelConfig:
    return ModelConfig(arch=arch, dim=width, enc_blocks=enc, middle_blocks=middle, dec_blocks=dec)


_SIDD = ((2, 2, 4, 8), 12, (2, 2, 2, 2))
_GOPRO = ((1, 1, 1, 28), 1, (1, 1, 1, 1))
_NAF_TINY = ((1, 1, 1, 1), 1, (1, 1, 1, 1))

# The selection options of the "adaptive" variants (the study's `adaptive` arm):
# typed_skip's, with a type-routing gain of 5 (p ~ 0.97 on the type's box
# when the head is sure) instead of 3 (~0.83), which left the type MI at 0.14.
ADAPTIVE = {"giv_classes": 5, "type_routing": 5.0, "giv_skip": True}

VARIANTS: dict[str, ModelConfig] = {
    # The paper's Res-HAIR, as released (28,559,846 parameters).
    "res_hair": ModelConfig(),
    # The Restormer baseline of the paper's tables.
    "restormer": ModelConfig(arch="restormer"),
    # A small Res-HAIR for tests and CPU demos (the shape of the parity fixture).
    "tiny": ModelConfig(dim=16, num_blocks=(1, 2, 2, 1), num_refinement_blocks=1),
    # Res-HAIR with the options that make it select (docs/results.md): a
    # degradation-type head on the GIV (train it with config.hair.giv_loss_weight),
    # routing by its posterior, and the latent's mean added to the GIV.
    "res_hair_adaptive": ModelConfig(**ADAPTIVE),
    "tiny_adaptive": ModelConfig(
        dim=16, num_blocks=(1, 2, 2, 1), num_refinement_blocks=1, **ADAPTIVE
    ),
    # The official NAFNet configs (NAFNet-SIDD-width32/64, NAFNet-GoPro-width32/64).
    "nafnet_sidd_32": _naf("nafnet", 32, *_SIDD),
    "nafnet_sidd_64": _naf("nafnet", 64, *_SIDD),
    "nafnet_gopro_32": _naf("nafnet", 32, *_GOPRO),
    "nafnet_gopro_64": _naf("nafnet", 64, *_GOPRO),
    "nafnet_tiny": _naf("nafnet", 16, *_NAF_TINY),
    # HAIR on the middle and decoder levels of the same U-Nets.
    "naf_hair_sidd_32": _naf("naf_hair", 32, *_SIDD),
    "naf_hair_gopro_32": _naf("naf_hair", 32, *_GOPRO),
    "naf_hair_tiny": _naf("naf_hair", 16, *_NAF_TINY),
}


def get_config(variant: str | ModelConfig, **overrides) -> ModelConfig:
    """A registered variant by name (`registry.variants()`) or a config, with fields replaced."""
    if not isinstance(variant, str):
        cfg = variant
    elif variant in (known := registry.variants()):
        cfg = known[variant]
    else:
        raise ValueError(f"unknown model variant {variant!r}; known: {sorted(known)}")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


class _KeyStream:
    """Draws init keys like `nnx.Rngs.params()`, but counts in Python.

    Each draw from an `nnx.Rngs` updates a counter Variable; under a trace
    (jit or eval_shape) flax 0.12.8 then inspects the tracer's origin, at a
    cost that grows with the trace, so a traced Res-HAIR init was an order
    of magnitude slower. Modules only ever call `.params()`.
    """

    def __init__(self, key: jax.Array):
        self._key, self._count = key, 0

    def params(self) -> jax.Array:
        self._count += 1
        return jax.random.fold_in(self._key, self._count)


def build_model(
    variant: str | ModelConfig,
    *,
    rngs: nnx.Rngs | None = None,
    platform: str | None = None,
    **overrides,
) -> nnx.Module:
    """Builds the model of a variant name or config, through its backbone's `build`.

    `platform` ("cpu", "gpu"/"cuda", "tpu"; default: the default backend)
    decides what the config's "auto" speed options become (see
    `PLATFORM_DEFAULTS`).
    """
    cfg = get_config(variant, **overrides)
    run_cfg = cfg.resolved(platform)
    rngs = _KeyStream((rngs if rngs is not None else nnx.Rngs(0)).params())
    model = registry.get(cfg.arch).build(run_cfg, rngs)
    # Keep "auto" in the recorded config: exports then resolve where they run.
    model.config = cfg
    return model


def abstract_model(
    variant: str | ModelConfig, *, platform: str | None = None, **overrides
) -> nnx.Module:
    """The model with `jax.ShapeDtypeStruct` leaves: nothing is allocated."""
    return nnx.eval_shape(
        lambda: build_model(variant, rngs=nnx.Rngs(0), platform=platform, **overrides)
    )


def count_params(model: nnx.Module) -> int:
    """Number of parameters (works on abstract models too)."""
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _register(arch: str, cls: type, has_giv: bool) -> None:
    registry.register(
        registry.Backbone(
            arch,
            ModelConfig,
            lambda cfg, rngs: cls(cfg, rngs=rngs),
            {name: cfg for name, cfg in VARIANTS.items() if cfg.arch == arch},
            has_giv=has_giv,
        )
    )


# The built-in backbones share ModelConfig (the saved configs' format).
_register("res_hair", ResHAIR, True)
_register("restormer", restormer.Restormer, False)
_register("nafnet", nafnet.NAFNet, False)
_register("naf_hair", nafnet.NAFHAIR, True)
