"""What the GIV knows: GIVs of many degraded images, their 2-D map, the selectors.

The DAC is trained only through the restoration loss, yet its global
information vectors group by degradation (the paper's Figure 2). This module
measures and draws that for any Res-HAIR checkpoint:

* `synthetic_probes` degrades random crops of the held-out synthetic test
  photos with every task, at random strengths; `probes_from_test_sets` takes
  the images of real test sets instead.
* `collect` computes each probe's GIV and every hyper level's selector
  weights (the HSN softmax over the level's weight bank).
* `nearest_centroid_accuracy` says how well the GIV alone tells the
  degradation apart: leave-one-out nearest class mean in GIV space.
* `plot_givs` draws the GIVs in 2-D (PCA, and t-SNE when scikit-learn is
  installed) coloured by degradation type and by strength; `plot_selectors`
  draws each level's mean selector weights per task as a heat map.

`python eval.py --checkpoint CKPT --giv_plot giv.png` runs all of it.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hair_jax import inference
from hair_jax.data import config as data_config
from hair_jax.data import degrade, synthetic
from hair_jax.evaluation import metrics, selection
from hair_jax.evaluation.protocol import select_test_sets
from hair_jax.io.files import write_atomic

# Degradation type of each task name (the colours of the plots).
KINDS = {t: data_config.TYPES[i] for t, i in zip(data_config.TASKS, data_config.TYPE_OF_TASK)}


@dataclasses.dataclass(frozen=True)
class Probe:
    """A degraded image (float32 HxWx3 in [0, 1]) and what was done to it.

    `strength` is the PSNR of the degraded image against the clean one in dB:
    one scale for every degradation, lower is stronger.
    """

    image: np.ndarray
    task: str
    strength: float

    @property
    def kind(self) -> str:
        return KINDS.get(self.task, self.task)


def _psnr(degraded: np.ndarray, clean: np.ndarray) -> float:
    return float(metrics.psnr(jnp.asarray(degraded), jnp.asarray(clean)))


def synthetic_probes(
    per_task: int = 24, *, size: int = 96, five_task: bool = False, seed: int = 0
) -> list[Probe]:
    """`per_task` degraded random crops per task of the synthetic test photos.

    The photos (scikit-image's astronaut and coffee) are never trained on.
    Noise uses the task's sigma; rain, haze, blur and low light draw their
    strength at random as the synthetic training set does. Deterministic.
    """
    tasks = data_config.TASKS if five_task else data_config.THREE_TASKS
    photos = [synthetic.load_photo(name) for name in synthetic.TEST_IMAGES]
    probes = []
    for task in tasks:
        rng = np.random.default_rng(degrade.name_key(seed, task))
        for i in range(per_task):
            photo = photos[i % len(photos)]
            top = rng.integers(0, photo.shape[0] - size + 1)
            left = rng.integers(0, photo.shape[1] - size + 1)
            clean = photo[top : top + size, left : left + size]
            if task in degrade.NOISE_SIGMAS:
                degraded = degrade.add_gaussian_noise(clean, degrade.NOISE_SIGMAS[task], rng)
            else:
                degraded = degrade.SYNTHESISERS[task](clean, rng)
            degraded, clean = (a.astype(np.float32) / 255.0 for a in (degraded, clean))
            probes.append(Probe(degraded, task, _psnr(degraded, clean)))
    return probes


def probes_from_test_sets(test_sets: Mapping[str, Sequence], max_images=None) -> list[Probe]:
    """Probes from test sets (`hair_jax.data.load_test_sets`), cropped to multiples of 16."""
    probes = []
    for images in test_sets.values():
        count = len(images) if max_images is None else min(len(images), max_images)
        for i in range(count):
            image = images[i]
            degraded = degrade.crop_to_multiple(np.asarray(image.degraded, np.float32), 16)
            clean = degrade.crop_to_multiple(np.asarray(image.clean, np.float32), 16)
            probes.append(Probe(degraded, image.task, _psnr(degraded, clean)))
    return probes


def probes_for(
    *, data_dir=None, setting: str = "3d", test_sets=None, max_images=None, per_task: int = 24
) -> list[Probe]:
    """The probes `python eval.py --giv_plot` uses.

    Without `data_dir`, `synthetic_probes` (the five-task ones for setting
    '5d'); with it, the images of the real test sets that
    `protocol.select_test_sets` picks, at most `max_images` per set.
    """
    if data_dir is None:
        return synthetic_probes(per_task, five_task=setting == "5d")
    _, sets = select_test_sets(
        data_dir=data_dir, setting=setting, names=test_sets, log=lambda _: None
    )
    return probes_from_test_sets(sets, max_images)


@dataclasses.dataclass(frozen=True)
class GivMap:
    """GIVs and selector weights of a list of probes.

    Attributes:
      givs: [N, 2C], one GIV per probe.
      tasks: the probes' task names (N).
      strengths: [N] degraded PSNR in dB.
      selectors: hyper level -> [num_blocks, N, num_box] HSN softmax weights.
    """

    givs: np.ndarray
    tasks: tuple[str, ...]
    strengths: np.ndarray
    selectors: dict[str, np.ndarray]

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(KINDS.get(t, t) for t in self.tasks)


def _batched_givs(predictor, probes, batch_size):
    """The GIV of each probe, probes of one size in batches of `batch_size`."""
    givs = [None] * len(probes)
    by_shape = {}
    for i, probe in enumerate(probes):
        by_shape.setdefault(probe.image.shape, []).append(i)
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = np.stack([probes[i].image for i in chunk])
            batch = np.concatenate([batch, np.repeat(batch[:1], batch_size - len(chunk), 0)])
            out = np.asarray(predictor.giv(jnp.asarray(batch)))
            for j, i in enumerate(chunk):
                givs[i] = out[j]
    return givs


def collect(model, probes: Sequence[Probe], *, batch_size: int = 8) -> GivMap:
    """Each probe's GIV and selector weights under `model` (a Res-HAIR).

    `model` may also be a `Predictor` or a standalone artifact. Probes of one
    size run in batches of `batch_size` (the last batch is padded by
    repeating its first image), so one size compiles once.

    Raises:
      ValueError: the model has no DAC (the Restormer baseline), or no probes.
    """
    predictor = inference.as_predictor(model)
    if not predictor.has_giv:
        raise ValueError(  # noqa: TRY004 (eval.py reports ValueErrors as mistakes)
            f"{type(model).__name__} has no GIV: the GIV picture needs a HAIR model"
        )
    if not probes:
        raise ValueError("no images to compute GIVs of")
    givs = np.stack(_batched_givs(predictor, probes, batch_size))
    selectors = jax.tree.map(np.asarray, predictor.selectors(jnp.asarray(givs)))
    return GivMap(
        givs=givs,
        tasks=tuple(p.task for p in probes),
        strengths=np.array([p.strength for p in probes], np.float32),
        # jax.tree.map sorted the keys: put the levels back in the model's order.
        selectors={name: selectors[name] for name in predictor.level_names},
    )


def nearest_centroid_accuracy(givs: np.ndarray, labels: Sequence[str]) -> float:
    """Balanced leave-one-out accuracy of telling `labels` apart by the nearest class mean.

    Each vector is assigned the label whose mean (computed without that
    vector) is closest in Euclidean distance; the result is the mean over
    labels of the fraction of their vectors assigned correctly, so chance is
    1 / number of labels however many vectors each has. A label with a
    single member cannot be left out and counts as a miss.
    """
    givs = np.asarray(givs, np.float64)
    labels = np.asarray(labels)
    names = sorted(set(labels.tolist()))
    counts = np.array([np.sum(labels == n) for n in names], np.float64)
    sums = np.stack([givs[labels == n].sum(0) for n in names])
    hits = dict.fromkeys(names, 0)
    for x, label in zip(givs, labels):
        own = names.index(label)
        n, s = counts.copy(), sums.copy()
        n[own] -= 1
        s[own] -= x
        with np.errstate(invalid="ignore", divide="ignore"):
            distances = np.linalg.norm(s / n[:, None] - x, axis=1)
        distances[n == 0] = np.inf
        hits[label] += int(np.argmin(distances) == own)
    return float(np.mean([hits[name] / count for name, count in zip(names, counts)]))


def pca(x: np.ndarray, dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(points [N, dims], explained variance ratio [dims]) of centred `x`."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    variance = s**2
    ratio = variance[:dims] / max(variance.sum(), 1e-30)
    return u[:, :dims] * s[:dims], ratio


def tsne(x: np.ndarray, seed: int = 0) -> np.ndarray | None:
    """2-D t-SNE of `x` with scikit-learn, or None when it is not installed."""
    try:
        # Optional (the `notebook` extra): PCA alone needs nothing more.
        from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top
    except ImportError:
        return None
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        np.asarray(x, np.float64)
    )


def _kind_order(kinds) -> list[str]:
    known = list(dict.fromkeys(KINDS.values()))
    return sorted(set(kinds), key=lambda k: (known.index(k) if k in known else len(known), k))


# GIVs whose spread across images is below this fraction of their size are
# one point: the DAC cannot see the image (e.g. a 1x1 map at its last norm).
FLAT_SPREAD = 1e-4


def relative_spread(givs: np.ndarray) -> float:
    """Mean over features of the GIVs' std across images, over their rms (0 = all equal)."""
    givs = np.asarray(givs, np.float64)
    return float(givs.std(0).mean() / max(np.sqrt(np.mean(givs**2)), 1e-30))


def flat_warning(gmap: GivMap) -> str | None:
    """One line when the GIVs hardly vary across images, else None."""
    spread = relative_spread(gmap.givs)
    if spread >= FLAT_SPREAD:
        return None
    return (
        f"warning: the {len(gmap.givs)} GIVs are one point (relative spread {spread:.1e}): "
        "this model's DAC does not see the image at these sizes; t-SNE skipped"
    )


def plot_givs(gmap: GivMap, *, title: str = "", use_tsne: bool = True):
    """The GIVs in 2-D: one row per projection (PCA, t-SNE), coloured by type and strength.

    t-SNE is left out when the GIVs are one point (`flat_warning`): it has
    nothing to show, and scikit-learn's Barnes-Hut t-SNE can crash on
    identical points. Returns a `matplotlib.figure.Figure` (no pyplot
    state is touched).
    """
    # matplotlib takes a second to import; only the plots need it.
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

    projections = [("PCA", *pca(gmap.givs))]
    if use_tsne and flat_warning(gmap) is None:
        points = tsne(gmap.givs)
        if points is not None:
            projections.append(("t-SNE", points, None))
    kinds = np.asarray(gmap.kinds)
    order = _kind_order(kinds)
    markers = dict(zip(order, "osD^vP*X"))
    fig = Figure(figsize=(11, 4.6 * len(projections)), layout="constrained")
    axes = fig.subplots(len(projections), 2, squeeze=False)
    for (name, points, ratio), (ax_kind, ax_strength) in zip(projections, axes):
        for i, kind in enumerate(order):
            sel = kinds == kind
            ax_kind.scatter(*points[sel].T, s=22, color=f"C{i}", marker=markers[kind], label=kind)
        ax_kind.legend(title="degradation", fontsize=8)
        last = None
        for kind in order:
            sel = kinds == kind
            last = ax_strength.scatter(
                *points[sel].T,
                c=gmap.strengths[sel],
                cmap="viridis",
                vmin=float(gmap.strengths.min()),
                vmax=float(gmap.strengths.max()),
                s=22,
                marker=markers[kind],
            )
        fig.colorbar(last, ax=ax_strength, label="degraded PSNR (dB): lower is stronger")
        axis = (
            [f"PC{i + 1} ({r:.0%} of variance)" for i, r in enumerate(ratio)]
            if ratio is not None
            else [f"{name} 1", f"{name} 2"]
        )
        for ax, what in ((ax_kind, "type"), (ax_strength, "strength")):
            ax.set_title(f"GIV, {name}, by degradation {what}", fontsize=10)
            ax.set_xlabel(axis[0])
            ax.set_ylabel(axis[1])
    if title:
        fig.suptitle(title)
    return fig


def plot_selectors(gmap: GivMap):
    """Per hyper level, the mean selector weights of each task's images, against uniform.

    Rows are tasks; columns are the boxes of the level's bank, grouped by
    block (every block has its own HSN). The colour scale is the same for
    every level and centred on the uniform weight 1 / boxes (white): red
    boxes are chosen more than uniform, blue ones less, up to 1 and 0. So a
    selector that does not choose looks white, however small its spread;
    each title gives the largest deviation from uniform and the mean
    normalised entropy (`selector_entropy`: 1 = uniform, 0 = one box).
    Returns a matplotlib Figure.
    """
    # matplotlib takes a second to import; only the plots need it.
    from matplotlib.colors import TwoSlopeNorm  # pylint: disable=g-import-not-at-top
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

    tasks = sorted(set(gmap.tasks), key=lambda t: (list(KINDS).index(t) if t in KINDS else 99, t))
    labels = np.asarray(gmap.tasks)
    levels = list(gmap.selectors)
    fig = Figure(figsize=(12, 0.8 + 0.3 * (len(tasks) + 2) * len(levels)), layout="constrained")
    axes = fig.subplots(len(levels), 1, squeeze=False)[:, 0]
    for ax, level in zip(axes, levels):
        weights = gmap.selectors[level]  # [blocks, N, boxes]
        blocks, _, boxes = weights.shape
        mean = np.stack([weights[:, labels == t].mean(1).reshape(-1) for t in tasks])
        norm = TwoSlopeNorm(vcenter=1 / boxes, vmin=0.0, vmax=1.0) if boxes > 1 else None
        image = ax.imshow(mean, aspect="auto", cmap="RdBu_r", norm=norm)
        ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
        ax.set_xticks([b * boxes + (boxes - 1) / 2 for b in range(blocks)])
        ax.set_xticklabels([f"block {b + 1}" for b in range(blocks)], fontsize=8)
        for b in range(1, blocks):
            ax.axvline(b * boxes - 0.5, color="black", linewidth=1)
        entropy = selector_entropy({level: weights})
        spread = np.abs(weights - 1 / boxes).max()
        detail = (
            ""
            if entropy is None
            else f"; max |w - 1/{boxes}| = {spread:.3f}, entropy {entropy:.3f}"
        )
        ax.set_title(f"{level}: {blocks} block(s) x {boxes} boxes{detail}", fontsize=10, loc="left")
        fig.colorbar(image, ax=ax, label=f"weight (white = 1/{boxes})", pad=0.01)
    return fig


def save_figure(fig, path: str, dpi: int = 110) -> None:
    """Writes `fig` as PNG to `path` under a temporary name, then renames."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_atomic(path, buffer.getvalue())


def selector_entropy(selectors) -> float | None:
    """`selection.normalised_entropy` as a float (None if no level has more than one box).

    Args:
      selectors: level -> [num_blocks, N, num_box] (`ResHAIR.selectors`, `GivMap.selectors`).
    """
    value = selection.normalised_entropy(selectors)
    return None if value is None else float(value)


def separation(gmap: GivMap) -> dict[str, float]:
    """How well the GIV alone tells the degradations apart (leave-one-out).

    type_accuracy: nearest-centroid accuracy of the degradation type (noise
    levels together); task_accuracy: of the task (each noise level apart);
    chance: 1 / number of types (the accuracies are balanced over classes);
    task_chance: 1 / number of tasks.
    """
    kinds = gmap.kinds
    return {
        "type_accuracy": nearest_centroid_accuracy(gmap.givs, kinds),
        "task_accuracy": nearest_centroid_accuracy(gmap.givs, gmap.tasks),
        "chance": 1 / len(set(kinds)),
        "task_chance": 1 / len(set(gmap.tasks)),
        "num_images": len(kinds),
    }


def summary(stats: dict) -> str:
    """`separation`'s numbers in one line, and the selection measures' when given."""
    line = (
        f"GIV nearest-centroid accuracy (balanced, leave-one-out, {stats['num_images']} images): "
        f"degradation type {stats['type_accuracy']:.1%} (chance {stats['chance']:.1%}), "
        f"task with noise level {stats['task_accuracy']:.1%}"
    )
    if "task_chance" in stats:  # older results.json files lack it
        line += f" (chance {stats['task_chance']:.1%})"
    if stats.get("entropy") is not None:
        line += (
            f"\nSelectors: normalised entropy {stats['entropy']:.3f} (1 = uniform, no choice), "
            f"mutual information with the type {stats['type_mi']:.3f} (0 = type-blind)"
        )
    if stats.get("warning"):
        line += "\n" + stats["warning"]
    return line
