"""What training minimises: the L1 loss, plus the options that make HAIR select.

The paper trains with the L1 loss alone, though every batch carries its
degradation type; with it the HSN softmaxes stay uniform (docs/results.md).
`config.hair` (hair_jax.train.defaults) adds, each off by default:

* a degradation-type loss on the GIV: cross-entropy of the model's GIV head
  (`giv_classes` > 0) with label smoothing, or a supervised contrastive loss
  on the GIV itself (`giv_loss`); `giv_warmup_steps` trains the DAC by this
  loss alone for that many steps (the restoration loss's gradient does not
  reach the GIV; it trains the rest);
* a routing loss: minus the image-box mutual information of the selectors
  (`selection.batch_information`: sharp per image, balanced over the batch);
* a routing target: cross-entropy of every selector to box
  (type mod num_box) of its image's degradation type;
* a temperature anneal: the HSNs' `RouterTemperature` goes geometrically
  from `temperature_start` to the model's `router_temperature` over
  `temperature_anneal_steps` steps.

With every weight 0 the loss is the L1 loss and the step is the paper's.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hair_jax.data.config import TYPES
from hair_jax.evaluation import selection
from hair_jax.nn import hyper, registry

GIV_LOSSES = ("ce", "supcon")


@dataclasses.dataclass(frozen=True)
class Objective:
    """The training loss's options (`config.hair`); see the module docstring."""

    giv_loss: str = "ce"
    giv_loss_weight: float = 0.0
    giv_label_smoothing: float = 0.1
    supcon_temperature: float = 0.1
    giv_warmup_steps: int = 0
    routing_loss_weight: float = 0.0
    routing_target_weight: float = 0.0
    temperature_start: float = 1.0
    temperature_anneal_steps: int = 0

    @classmethod
    def from_config(cls, config, model_cfg) -> Objective:
        """`config.hair` (absent: the paper's loss), checked against the model.

        Raises:
          ValueError: an unknown field or value, or an option the model
            cannot serve (a GIV loss without a GIV head, an anneal without a
            router temperature, any option on a model without HAIR).
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        given = dict(config.get("hair", {}))
        unknown = sorted(set(given) - fields)
        if unknown:
            raise ValueError(f"config.hair has no field {unknown[0]!r}; fields: {sorted(fields)}")
        obj = cls(**given)
        if obj.giv_loss not in GIV_LOSSES:
            raise ValueError(
                f"config.hair.giv_loss must be one of {GIV_LOSSES}, got {obj.giv_loss!r}"
            )
        for name in fields - {"giv_loss"}:
            if getattr(obj, name) < 0:
                raise ValueError(f"config.hair.{name} must be >= 0, got {getattr(obj, name)}")
        if obj.active and not registry.get(model_cfg.arch).has_giv:
            raise ValueError(
                f"config.hair sets options of HAIR's router, but {model_cfg.arch} has none"
            )
        if obj.giv_loss_weight and obj.giv_loss == "ce" and model_cfg.giv_classes != len(TYPES):
            raise ValueError(
                "config.hair.giv_loss='ce' needs the GIV head: set "
                f"config.model.overrides.giv_classes={len(TYPES)} (one per type in {TYPES})"
            )
        if obj.temperature_anneal_steps and model_cfg.router_temperature is None:
            raise ValueError(
                "config.hair.temperature_anneal_steps needs a router temperature to anneal "
                "to: set config.model.overrides.router_temperature"
            )
        if obj.temperature_anneal_steps and model_cfg.learned_temperature:
            raise ValueError("a learned temperature cannot also be annealed")
        return obj

    @property
    def active(self) -> bool:
        """Whether anything differs from the paper's L1 loss."""
        return bool(
            self.giv_loss_weight
            or self.routing_loss_weight
            or self.routing_target_weight
            or self.temperature_anneal_steps
        )

    def temperature(self, step: jax.Array, end: float) -> jax.Array:
        """The annealed temperature at `step`: geometric from start to `end`."""
        frac = jnp.clip(step / max(self.temperature_anneal_steps, 1), 0.0, 1.0)
        return jnp.float32(self.temperature_start) * (end / self.temperature_start) ** frac


def set_temperature(rest: nnx.State, value: jax.Array) -> nnx.State:
    """`rest` with every `hyper.RouterTemperature` set to `value`."""

    def one(v):
        return (
            v.replace(jnp.asarray(value, jnp.float32))
            if isinstance(v, hyper.RouterTemperature)
            else v
        )

    return jax.tree.map(one, rest, is_leaf=lambda x: isinstance(x, nnx.Variable))


def l1_loss(restored, clean):
    return jnp.mean(jnp.abs(restored.astype(jnp.float32) - clean))


def giv_cross_entropy(logits: jax.Array, types: jax.Array, smoothing: float) -> jax.Array:
    """Mean cross-entropy of GIV-head logits [B, T] with smoothed one-hot types [B]."""
    labels = optax.smooth_labels(jax.nn.one_hot(types, logits.shape[-1]), smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32), labels))


def supervised_contrastive(giv: jax.Array, types: jax.Array, temperature: float) -> jax.Array:
    """Supervised contrastive loss (Khosla et al. 2020) on L2-normalised GIVs.

    For each image with at least one other image of its type in the batch:
    minus the mean log-probability, under a softmax over the other images
    of cosine similarity / temperature, of the images sharing its type.
    0 when no image has a partner.
    """
    z = giv.astype(jnp.float32)
    z = z * jax.lax.rsqrt(jnp.sum(z * z, -1, keepdims=True) + 1e-12)
    n = z.shape[0]
    eye = jnp.eye(n, dtype=bool)
    sim = jnp.where(eye, -jnp.inf, z @ z.T / temperature)
    log_prob = jax.nn.log_softmax(sim, axis=-1)
    positive = (types[:, None] == types[None, :]) & ~eye
    count = positive.sum(-1)
    per_image = -jnp.sum(jnp.where(positive, log_prob, 0.0), -1) / jnp.maximum(count, 1)
    has = count > 0
    return jnp.sum(jnp.where(has, per_image, 0.0)) / jnp.maximum(has.sum(), 1)


def routing_target_loss(selectors: dict, types: jax.Array) -> jax.Array:
    """Mean cross-entropy of every selector to box (type mod num_box); levels of 2+ boxes."""
    values = []
    for w in selectors.values():
        k = w.shape[-1]
        if k > 1:
            target = jax.nn.one_hot(types % k, k)  # [B, k]
            values.append(-jnp.sum(target * jnp.log(w.astype(jnp.float32) + 1e-9), -1).reshape(-1))
    return jnp.mean(jnp.concatenate(values)) if values else jnp.float32(0.0)


def loss_fn(model, batch, step, obj: Objective):
    """(loss, (restored, metrics)) of one batch under `obj`.

    For a model without HAIR (a Restormer, a NAFNet) this is the L1 loss
    alone. For HAIR models the metrics add the selection measures of
    `selection.step_measures` on the batch, and `obj`'s terms.
    """
    x = batch["degraded"]
    if not model.has_giv:
        restored = model(x)
        return l1_loss(restored, batch["clean"]), (restored, {})
    if obj.giv_warmup_steps:
        giv = model.giv(x)
        # During the warm-up the GIV's value is used but not its gradient.
        on = (step >= obj.giv_warmup_steps).astype(jnp.float32)
        frozen = jax.lax.stop_gradient(giv)
        f = model.features(x, frozen + on * (giv - frozen))
    else:
        f = model.features(x)
        giv = f["giv"]
    restored = f["output"]
    loss = l1 = l1_loss(restored, batch["clean"])
    types = selection.task_types(batch["task"])
    metrics = selection.step_measures(model, jax.lax.stop_gradient(giv), batch["task"])
    if obj.active:
        metrics["l1"] = l1
    if obj.giv_loss_weight:
        if obj.giv_loss == "ce":
            logits = model.giv_logits(giv)
            term = giv_cross_entropy(logits, types, obj.giv_label_smoothing)
            metrics["giv_accuracy"] = jnp.mean(jnp.argmax(logits, -1) == types)
        else:
            term = supervised_contrastive(giv, types, obj.supcon_temperature)
        metrics["giv_loss"] = term
        loss = loss + obj.giv_loss_weight * term
    if obj.routing_loss_weight or obj.routing_target_weight:
        selectors = model.selectors(giv)
        if obj.routing_loss_weight:
            info = selection.batch_information(selectors)  # None: no level has a choice
            term = -info if info is not None else jnp.float32(0.0)
            metrics["routing_loss"] = term
            loss = loss + obj.routing_loss_weight * term
        if obj.routing_target_weight:
            term = routing_target_loss(selectors, types)
            metrics["routing_target_loss"] = term
            loss = loss + obj.routing_target_weight * term
    return loss, (restored, metrics)
