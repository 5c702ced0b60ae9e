"""Does a HAIR model select? The measures, one implementation for every caller.

Training logs the cheap ones per step (`step_measures`: entropy, mutual
information with the batch's degradation types, router logit spread);
eval.py, the notebook and the study use the same functions on test images,
plus the ones that need restorations (`uniform_ablation`, `giv_swap`) or the
weights (`box_similarity`).

Selectors are what `model.selectors(giv)` returns: level -> [num_blocks, B,
num_box] mixture weights; levels of one box have no choice and are left out
of every average. Entropies and mutual information are normalised by
log(num_box): 1 = uniform weights (no choice) / the type fixes the box.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hair_jax.data.config import TASKS, TYPE_OF_TASK, TYPES
from hair_jax.data.degrade import crop_to_multiple
from hair_jax.evaluation import metrics, protocol
from hair_jax.nn import hyper


def _entropy(p: jax.Array, axis: int = -1) -> jax.Array:
    """-sum p log p along `axis` (0 log 0 = 0)."""
    return -jnp.sum(p * jnp.log(jnp.where(p > 0, p, 1.0)), axis=axis)


def _choices(selectors: Mapping[str, jax.Array]) -> list[jax.Array]:
    """The selector arrays [num_blocks, B, K] of levels with K > 1, as float32."""
    return [jnp.asarray(w, jnp.float32) for w in selectors.values() if w.shape[-1] > 1]


def normalised_entropy(selectors: Mapping[str, jax.Array]) -> jax.Array | None:
    """Mean over levels, blocks and images of H(p) / log K; None without a choice."""
    values = [(_entropy(w) / jnp.log(w.shape[-1])).reshape(-1) for w in _choices(selectors)]
    return jnp.mean(jnp.concatenate(values)) if values else None


def mutual_information(p: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """I(box; label) / log K of soft assignments p [..., B, K] and labels [B], per leading index.

    I = H(mean p) - sum_t w_t H(mean of p over label t), w_t the share of
    label t in the batch: 0 when every label gets the same mixture, 1 when
    K labels each take their own box.
    """
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)  # [B, T]
    counts = onehot.sum(0)  # [T]
    per_label = jnp.einsum("...bk,bt->...tk", p, onehot) / jnp.maximum(counts, 1)[:, None]
    weights = counts / counts.sum()
    info = _entropy(p.mean(-2)) - jnp.sum(weights * _entropy(per_label), axis=-1)
    return info / jnp.log(p.shape[-1])


def type_information(selectors: Mapping[str, jax.Array], types: jax.Array) -> jax.Array | None:
    """Mean over levels and blocks of `mutual_information` with degradation types."""
    values = [mutual_information(w, types, len(TYPES)).reshape(-1) for w in _choices(selectors)]
    return jnp.mean(jnp.concatenate(values)) if values else None


def batch_information(selectors: Mapping[str, jax.Array]) -> jax.Array | None:
    """Mean over levels and blocks of (H(mean p) - mean H(p)) / log K over the batch.

    The mutual information between image and box: high when each image's
    selector is sharp and the batch uses the boxes evenly. No labels needed;
    `train.objective`'s routing loss maximises it.
    """
    values = [
        ((_entropy(w.mean(-2)) - _entropy(w).mean(-1)) / jnp.log(w.shape[-1])).reshape(-1)
        for w in _choices(selectors)
    ]
    return jnp.mean(jnp.concatenate(values)) if values else None


def logit_spread(logits: Mapping[str, jax.Array]) -> jax.Array | None:
    """Mean over levels, blocks and boxes of the logits' std over the images.

    How much the router's input reaches its output: about 0.01 for the
    paper's HSN at initialisation (SELECTOR_NOTES), about 1 for a router
    that can choose per image. Needs two or more images.
    """
    values = [jnp.std(jnp.asarray(v, jnp.float32), axis=-2).reshape(-1) for v in logits.values()]
    return jnp.mean(jnp.concatenate(values)) if values else None


def task_types(tasks: jax.Array) -> jax.Array:
    """Degradation type index (into `TYPES`) of task ids (indices into `data.TASKS`)."""
    return jnp.asarray(TYPE_OF_TASK, jnp.int32)[tasks]


def step_measures(model, giv: jax.Array, tasks: jax.Array) -> dict[str, jax.Array]:
    """The per-step selection metrics of a HAIR model on one batch (for training logs)."""
    selectors = model.selectors(giv)
    out = {
        "selector_entropy": normalised_entropy(selectors),
        "selector_type_mi": type_information(selectors, task_types(tasks)),
        "router_logit_spread": logit_spread(model.router_logits(giv)),
    }
    return {k: v for k, v in out.items() if v is not None}


def box_similarity(model) -> float | None:
    """Mean over banks and box pairs of the cosine similarity of the boxes' flattened weights.

    1 means every box holds the same kernels (nothing to choose between);
    independently initialised boxes start near 0. None without a bank of 2+.
    """
    values = []
    for _, bank in nnx.iter_graph(model):
        if not isinstance(bank, hyper.WeightBank) or bank.num_box < 2:
            continue
        leaves = jax.tree.leaves(bank.weights)
        flat = np.concatenate(
            [np.asarray(w, np.float64).reshape(bank.num_box, -1) for w in leaves], 1
        )
        unit = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-30)
        cos = unit @ unit.T
        values.append(cos[np.triu_indices(bank.num_box, 1)].mean())
    return float(np.mean(values)) if values else None


def uniform_model(model):
    """A copy of a HAIR `model` whose every selector is uniform, 1 / num_box.

    Each HSN's last layer is zeroed and a `hyper.TypeRouting` gain set to 0,
    so every logit is 0 whatever the GIV (and the temperature); the copy has
    the same graph as `model`.
    """
    model = copy.deepcopy(model)  # nnx modules: a deep copy has its own Variables
    for _, gain in nnx.iter_graph(model):
        if isinstance(gain, hyper.RoutingGain):
            gain[...] = jnp.zeros_like(gain[...])
    for _, hsn in nnx.iter_graph(model):
        if isinstance(hsn, hyper.HSN):
            last = hsn.layers[-1]
            last.kernel[...] = jnp.zeros_like(last.kernel[...])
            if last.bias is not None:
                last.bias[...] = jnp.zeros_like(last.bias[...])
    return model


# ---------------------------------------------------------------------------
# On test images: what the selection changes in the restorations
# ---------------------------------------------------------------------------
def _cropped(image) -> tuple[np.ndarray, np.ndarray]:
    return tuple(
        crop_to_multiple(np.asarray(a, np.float32), 16) for a in (image.degraded, image.clean)
    )


def swap_pairs(test_sets, max_images=None) -> list[tuple[str, int, str, int]]:
    """(set, image index, donor set, donor index) for the GIV swap.

    Each image's donor is the image at the same index (modulo its size) of
    the next set, in `test_sets` order and cyclically, whose degradation
    type differs.
    """
    names = list(test_sets)
    kinds = [TYPE_OF_TASK[TASKS.index(test_sets[n][0].task)] for n in names]
    pairs = []
    for i, name in enumerate(names):
        donors = [names[(i + k) % len(names)] for k in range(1, len(names))]
        donors = [d for d in donors if kinds[names.index(d)] != kinds[i]]
        if not donors:
            raise ValueError(f"no test set of another degradation than {name!r} to swap with")
        donor = donors[0]
        count = (
            len(test_sets[name]) if max_images is None else min(max_images, len(test_sets[name]))
        )
        pairs += [(name, j, donor, j % len(test_sets[donor])) for j in range(count)]
    return pairs


def giv_swap(predictor, test_sets, max_images=None) -> dict:
    """PSNR with each image's own GIV and with another degradation's (`swap_pairs`).

    Same protocol as the evaluation (batch 1, crop to a multiple of 16,
    output clipped to [0, 1], RGB PSNR). Returns set -> {donor, own,
    swapped, drop (own - swapped, dB), own_images, images: per-image PSNRs}.
    """
    out = {}
    for name, j, donor, k in swap_pairs(test_sets, max_images):
        degraded, clean = _cropped(test_sets[name][j])
        donor_giv = predictor.giv(jnp.asarray(_cropped(test_sets[donor][k])[0][None]))
        x, y = jnp.asarray(degraded[None]), jnp.asarray(clean[None])
        own = float(metrics.psnr(predictor.restore(x), y)[0])
        swapped = float(metrics.psnr(predictor.restore(x, donor_giv), y)[0])
        entry = out.setdefault(name, {"donor": donor, "own_images": [], "images": []})
        entry["own_images"].append(own)
        entry["images"].append(swapped)
    for entry in out.values():
        entry["own"] = float(np.mean(entry["own_images"]))
        entry["swapped"] = float(np.mean(entry["images"]))
        entry["drop"] = entry["own"] - entry["swapped"]
    return out


def uniform_ablation(predictor, test_sets, max_images=None) -> dict[str, float]:
    """PSNR drop (dB) per test set and on average when every selector is uniform.

    `predictor` is an `inference.Predictor` of a HAIR model; it runs the
    `uniform_model` of its weights (same graph: nothing recompiles) and is
    given its own weights back.
    """
    own = protocol.evaluate_sets(predictor, test_sets, max_images=max_images)
    state = predictor.state
    predictor.load(uniform_model(nnx.merge(predictor.graphdef, state)))
    try:
        uniform = protocol.evaluate_sets(predictor, test_sets, max_images=max_images)
    finally:
        predictor.state = state
    drop = {a.name: a.restored_psnr - b.restored_psnr for a, b in zip(own, uniform)}
    drop["average"] = protocol.average(own).restored_psnr - protocol.average(uniform).restored_psnr
    return drop


def on_probes(predictor, gmap) -> dict[str, float | None]:
    """Entropy, type information and logit spread of a `giv.GivMap`'s selectors."""
    types = jnp.asarray([TYPES.index(k) for k in gmap.kinds])
    model = nnx.merge(predictor.graphdef, predictor.state)
    values = {
        "entropy": normalised_entropy(gmap.selectors),
        "type_mi": type_information(gmap.selectors, types),
        "logit_spread": logit_spread(model.router_logits(jnp.asarray(gmap.givs))),
    }
    return {k: None if v is None else float(v) for k, v in values.items()}


# What "selects" means on held-out images (the adaptive-HAIR issue's bounds).
SELECTS = {"entropy": 0.8, "type_mi": 0.2, "swap_drop": 0.1, "uniform_drop": 0.1}


def selects(measures: Mapping[str, float | None]) -> bool:
    """Whether entropy, type MI, swap drop and uniform drop all meet `SELECTS`."""
    values = {k: measures.get(k) for k in SELECTS}
    if any(v is None for v in values.values()):
        return False
    return (
        values["entropy"] <= SELECTS["entropy"]
        and values["type_mi"] >= SELECTS["type_mi"]
        and values["swap_drop"] >= SELECTS["swap_drop"]
        and values["uniform_drop"] >= SELECTS["uniform_drop"]
    )


def on_test_sets(predictor, test_sets, gmap, max_images=None) -> dict:
    """Every held-out selection measure of a HAIR `Predictor` on `test_sets`.

    `gmap` (`giv.collect` of `giv.probes_from_test_sets(test_sets)`) gives
    entropy, type information and logit spread; the uniform ablation and the
    GIV swap restore the test images.
    """
    out = on_probes(predictor, gmap)
    out["uniform_drop"] = uniform_ablation(predictor, test_sets, max_images)["average"]
    swap = giv_swap(predictor, test_sets, max_images)
    out["swap_drop"] = float(np.mean([s["drop"] for s in swap.values()]))
    out["selects"] = selects(out)
    return out


def summary(measures: Mapping) -> str:
    """`on_test_sets`'s numbers in one line, with the verdict."""
    verdict = "selects" if measures["selects"] else "does not select"
    bounds = ", ".join(f"{k} {'<=' if k == 'entropy' else '>='} {v}" for k, v in SELECTS.items())
    return (
        f"Selection on the test images: normalised entropy {measures['entropy']:.3f}, type "
        f"MI {measures['type_mi']:.3f}, uniform-selector drop {measures['uniform_drop']:+.3f} "
        f"dB, GIV-swap drop {measures['swap_drop']:+.3f} dB: the model {verdict} "
        f"({bounds})"
    )
