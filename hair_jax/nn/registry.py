"""The backbone contract and the registry: what the rest of the package may ask of a model.

A *backbone* is a model family (Res-HAIR, Restormer, NAFNet, NAF-HAIR, or
yours): a config dataclass, a constructor, named variants. `register` adds
one; `get`, `variants` and `config_from_dict` are how training, loading and
export find it. Outside `hair_jax.nn`, code asks a model only what `Model`
(and, where `has_giv`, `HairModel`) names; docs/architecture.md has the
recipe for a new backbone, and tests/test_backbone_contract.py registers a
toy one from the test file alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol

import jax


class Config(Protocol):
    """A backbone's config: a frozen dataclass with these members.

    `arch` names the backbone in the registry (and in saved configs). HAIR
    configs (their backbone's `has_giv`) also have `giv_dim`, and the
    selection options the training loss reads: `giv_classes` (a type head on
    the GIV: 0 for none), `router_temperature` (None or > 0),
    `learned_temperature`, `type_routing`.
    """

    arch: str

    def resolved(self, platform: str | None = None) -> Config:
        """This config with any per-backend "auto" choice made for `platform`."""
        ...


class Model(Protocol):
    """What every model offers: restore, and its size rules.

    Attributes:
      config: the `Config` it was built from (as given, "auto" kept).
      has_giv: it computes a GIV (then it is a `HairModel`).
      min_size: smallest input height/width.
      multiple: input height and width must be multiples of this; callers pad
        to it (`hair_jax.inference.padded_size`), exports take multiples of it.
      level_names: a HAIR model's hyper levels in order (its selectors' keys);
        () without a GIV.
    """

    config: Config
    has_giv: ClassVar[bool]
    min_size: int
    multiple: int
    level_names: tuple[str, ...]

    def __call__(self, x: jax.Array) -> jax.Array:
        """Restored images [B, H, W, 3] of x [B, H, W, 3]."""
        ...


class HairModel(Model, Protocol):
    """A model with a GIV and hypernetwork-selected weights."""

    def __call__(
        self, x: jax.Array, giv: jax.Array | None = None, use_giv: jax.Array | None = None
    ) -> jax.Array:
        """Restored images; with `giv` [B, D], restored with that GIV instead of x's.

        With `use_giv` [B, 1] too, only where it is > 0.5 (`hyper.choose_giv`).
        """
        ...

    def features(
        self, x: jax.Array, giv: jax.Array | None = None, use_giv: jax.Array | None = None
    ) -> dict[str, jax.Array]:
        """The forward pass's named maps; at least "giv" (the one used) and "output".

        Training reads them; the ONNX export runs it once for both outputs.
        """
        ...

    def giv(self, x: jax.Array) -> jax.Array:
        """The global information vector [B, D] of images x."""
        ...

    def giv_logits(self, giv: jax.Array) -> jax.Array:
        """[B, giv_classes]: the degradation-type head on the GIV."""
        ...

    def selectors(self, giv: jax.Array) -> dict[str, jax.Array]:
        """Per level (`level_names`), the mixture weights the blocks use [blocks, B, boxes]."""
        ...

    def router_logits(self, giv: jax.Array) -> dict[str, jax.Array]:
        """Per level, what the selector softmaxes read [blocks, B, boxes]."""
        ...


class Restorer(Protocol):
    """A model behind jitted functions: `hair_jax.inference.Predictor` and the artifacts.

    Attributes as `Model`'s; `restore` clips to [0, 1]; `giv` and `selectors`
    only where `has_giv`; `traces` counts compilations.
    """

    has_giv: bool
    level_names: tuple[str, ...]
    min_size: int
    multiple: int
    traces: int

    def restore(self, x, giv=None): ...

    def giv(self, x): ...

    def selectors(self, giv) -> dict: ...


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One registered model family.

    Attributes:
      arch: its name, the `arch` field of its configs.
      config: its config class (`Config`); `config(**fields)` validates.
      build: (resolved config, rngs) -> the model; rngs has `.params()`.
      variants: named configs, e.g. {"nafnet_tiny": NAFNetConfig(...)}.
      has_giv: its models are `HairModel`s.
    """

    arch: str
    config: type
    build: Callable[[Any, Any], Model]
    variants: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    has_giv: bool = False


# Filled by hair_jax.nn.models (the built-in backbones), which hair_jax.nn's
# __init__ imports before any of its modules can be used.
_BACKBONES: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    """Adds `backbone`; ValueError if its arch or a variant name is taken."""
    taken = {backbone.arch} & set(_BACKBONES) or set(backbone.variants) & set(variants())
    if taken:
        raise ValueError(f"backbone {backbone.arch!r}: {sorted(taken)[0]!r} is already registered")
    _BACKBONES[backbone.arch] = backbone
    return backbone


def unregister(arch: str) -> None:
    """Removes a backbone (for tests that register their own)."""
    _BACKBONES.pop(arch, None)


def get(arch: str) -> Backbone:
    """The backbone named `arch`; ValueError listing the known ones."""
    if arch not in _BACKBONES:
        raise ValueError(f"unknown arch {arch!r}: expected one of {tuple(_BACKBONES)}")
    return _BACKBONES[arch]


def variants() -> dict[str, Any]:
    """Every registered variant name -> config."""
    return {name: cfg for b in _BACKBONES.values() for name, cfg in b.variants.items()}


def config_from_dict(d: Mapping[str, Any]) -> Any:
    """The config a saved dict describes (its `arch` picks the class; default "res_hair").

    Raises ValueError naming unknown fields or a field the config rejects.
    """
    backbone = get(d.get("arch", "res_hair"))
    known = {f.name for f in dataclasses.fields(backbone.config)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown model config fields: {unknown}")
    return backbone.config(**{"arch": backbone.arch, **d})
