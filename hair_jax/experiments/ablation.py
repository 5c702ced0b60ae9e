"""Does HAIR help? A seeded ablation with controls on the synthetic data.

    python -m hair_jax.experiments.ablation --preset cpu --out runs/ablation-cpu

(run from the repository root: the run configs are built with
configs/common.py). Every (setting, arm, seed) run trains with the same
budget (steps, batch, patch, schedule, data order per seed) on the
`synthetic_large` data (`hair_jax.data.synthetic`), in its own workdir
`<out>/runs/<setting>/<arm>/seed<seed>`. Training checkpoints every
`eval_every` steps; afterwards each checkpoint (and the initialisation) is
evaluated on the held-out test sets: PSNR, the GIV separation of
`hair_jax.evaluation.giv.separation` and the mean normalised selector entropy. The
final model is evaluated with the paper's protocol on every test image,
and again with each image's GIV replaced by that of an image of another
degradation (`giv_swap`). A finished run writes `result.json` atomically;
a rerun of the command skips it, and an interrupted run resumes from its
last checkpoint. At the end the sweep writes `results.json`, `results.md`
(mean +- std over seeds, the paired difference to the static Restormer,
parameters, step time) and one plot per setting, `curves_<setting>.png`.

Arms (`ARMS`): the static Restormer; Res-HAIR with the same dims and
blocks; Res-HAIR with one box per hyper level (the HAIR code path with
nothing to choose: dynamics or extra depth?); and a Restormer widened to
Res-HAIR's parameter count (`matched_width`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time

import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs import common  # the run configs; run from the repository root
from hair_jax import cli, data, evaluate, inference, train
from hair_jax.data.degrade import crop_to_multiple
from hair_jax.evaluation import giv, metrics, protocol
from hair_jax.io.files import write_atomic
from hair_jax.nn import models
from hair_jax.train.loop import host_model

# The two settings: the paper's three tasks, and five (adds blur, low light).
SETTINGS = ("3d", "5d")
ARMS = ("restormer", "res_hair", "res_hair_1box", "restormer_wide")
HAIR_ARMS = ("res_hair", "res_hair_1box")
BASELINE = "restormer"


@dataclasses.dataclass(frozen=True)
class Preset:
    """One study: model size, training budget, evaluation and runs.

    Attributes:
      name: the preset's name (also in results.json).
      dim, num_blocks, num_refinement_blocks, heads, dac_groups: the Res-HAIR
        and Restormer architecture (`models.ModelConfig` fields).
      patch_size, batch_size, num_steps, warmup_steps, learning_rate: the
        training budget, the same for every run.
      eval_every: checkpoint and evaluate every this many steps.
      curve_images: test images per set at the evaluations during training
        (None: all).
      max_images: test images per set at the final evaluation, the GIV swap
        and the GIV probes (None: all).
      runs: (setting, arm, seeds) triples, run in this order (list what
        matters most first: an interrupted sweep has those).
    """

    name: str
    dim: int
    num_blocks: tuple[int, ...]
    num_refinement_blocks: int
    heads: tuple[int, ...]
    dac_groups: int
    patch_size: int
    batch_size: int
    num_steps: int
    warmup_steps: int
    learning_rate: float
    eval_every: int
    curve_images: int | None
    max_images: int | None
    runs: tuple[tuple[str, str, tuple[int, ...]], ...]

    def run_list(self, only=None) -> list[tuple[str, str, int]]:
        """Every (setting, arm, seed) in the order of `runs`, each entry's seeds in turn.

        Args:
          only: if given, keep just these (setting, arm, seed) runs; each
            must be a run of the preset (else ValueError).
        """
        runs = [(st, arm, s) for st, arm, ss in self.runs for s in ss]
        if only is None:
            return runs
        unknown = sorted(set(only) - set(runs))
        if unknown:
            raise ValueError(
                f"{'/'.join(map(str, unknown[0]))} is not a run of preset {self.name!r}"
            )
        return [r for r in runs if r in set(only)]

    def eval_steps(self) -> list[int]:
        """The steps evaluated during training, 0 (initialisation) included."""
        return sorted({*range(0, self.num_steps, self.eval_every), self.num_steps})


_MAIN_PAIR = (BASELINE, "res_hair")
_CPU = Preset(
    name="cpu",
    dim=16,
    num_blocks=(1, 1, 1, 1),
    num_refinement_blocks=1,
    heads=(1, 2, 4, 8),
    dac_groups=24,
    patch_size=48,
    batch_size=4,
    num_steps=2000,
    warmup_steps=100,
    learning_rate=1e-3,
    eval_every=250,
    curve_images=8,
    max_images=None,
    runs=tuple(("3d", arm, (seed,)) for seed in (0, 1, 2) for arm in _MAIN_PAIR),
)
PRESETS = {
    # The 3d main pair x 3 seeds: about two hours on a 2-core CPU (docs/results.md).
    "cpu": _CPU,
    # The same runs, then the controls and the 5d pair with the same budget;
    # with the same --out it trains only those four.
    "cpu_full": dataclasses.replace(
        _CPU,
        name="cpu_full",
        runs=(
            *_CPU.runs,
            ("3d", "res_hair_1box", (0,)),
            ("3d", "restormer_wide", (0,)),
            *(("5d", arm, (0,)) for arm in _MAIN_PAIR),
        ),
    ),
    # The same study at the paper's width and depth, for a GPU.
    "gpu": Preset(
        name="gpu",
        dim=48,
        num_blocks=(4, 6, 6, 8),
        num_refinement_blocks=4,
        heads=(1, 2, 4, 8),
        dac_groups=24,
        patch_size=128,
        batch_size=8,
        num_steps=10000,
        warmup_steps=500,
        learning_rate=2e-4,
        eval_every=1000,
        curve_images=None,
        max_images=None,
        runs=(
            *(("3d", arm, (seed,)) for seed in (0, 1, 2) for arm in ARMS),
            *(("5d", arm, (seed,)) for seed in (0, 1, 2) for arm in _MAIN_PAIR),
        ),
    ),
}


# ---------------------------------------------------------------------------
# Arms and run configs
# ---------------------------------------------------------------------------
def base_model(preset: Preset, arch: str = "res_hair"):
    """The preset's `models.ModelConfig` for `arch`."""
    return models.ModelConfig(
        arch=arch,
        dim=preset.dim,
        num_blocks=preset.num_blocks,
        num_refinement_blocks=preset.num_refinement_blocks,
        heads=preset.heads,
        dac_groups=preset.dac_groups,
        remat="none",  # small models: memory is no concern, recomputing is
    )


def param_count(model_cfg) -> int:
    """Parameters of a model config (nothing is allocated)."""
    return models.count_params(models.abstract_model(model_cfg))


def matched_width(preset: Preset) -> tuple[int, int, int]:
    """(dim, its Restormer's params, Res-HAIR's params): the widened Restormer.

    Searches even dims from the preset's upward whose channels at every
    level divide by that level's heads, and takes the one whose Restormer's
    parameter count is closest to Res-HAIR's.
    """
    target = param_count(base_model(preset))
    restormer = base_model(preset, "restormer")
    best = None
    dim = preset.dim + preset.dim % 2
    while True:
        if all(dim * 2**level % h == 0 for level, h in enumerate(preset.heads)):
            n = param_count(dataclasses.replace(restormer, dim=dim))
            if best is None or abs(n - target) < abs(best[1] - target):
                best = (dim, n)
            if n >= target:
                return best[0], best[1], target
        dim += 2


def arm_model(preset: Preset, arm: str, wide_dim: int | None = None):
    """The `models.ModelConfig` of an arm; `wide_dim` from `matched_width`."""
    if arm == "restormer":
        return base_model(preset, "restormer")
    if arm == "res_hair":
        return base_model(preset)
    if arm == "res_hair_1box":
        return dataclasses.replace(base_model(preset), num_box=(1, 1, 1, 1, 1))
    if arm == "restormer_wide":
        dim = wide_dim if wide_dim is not None else matched_width(preset)[0]
        return dataclasses.replace(base_model(preset, "restormer"), dim=dim)
    raise ValueError(f"unknown arm {arm!r}; one of {ARMS}")


def run_config(preset: Preset, setting: str, model_cfg, seed: int, data_dir: str):
    """The training config of one run (configs/common.py plus the preset)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; one of {SETTINGS}")
    config = common.get_base_config()
    config.name = f"ablation-{preset.name}"
    config.model.variant = model_cfg.arch
    for field in ("dim", "num_blocks", "num_refinement_blocks", "heads", "dac_groups", "remat"):
        setattr(config.model.overrides, field, getattr(model_cfg, field))
    config.model.overrides.num_box = model_cfg.num_box
    config.data.name = "synthetic_large"
    config.data.data_dir = data_dir
    config.data.synthetic_five_task = setting == "5d"
    t = config.train
    t.seed = seed
    t.global_batch_size = preset.batch_size
    t.patch_size = preset.patch_size
    t.num_steps = preset.num_steps
    t.warmup_steps = preset.warmup_steps
    t.learning_rate = preset.learning_rate
    t.log_every = preset.eval_every
    t.image_every = 0
    t.checkpoint_every = preset.eval_every
    # Every checkpoint stays until evaluated; `prune` removes them after.
    t.keep_checkpoints = len(preset.eval_steps()) + 1
    return config


# ---------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------
def swap_pairs(test_sets, max_images=None) -> list[tuple[str, int, str, int]]:
    """(set, image index, donor set, donor index) for the GIV swap.

    Each image's donor is the image at the same index (modulo its size) of
    the next set, in `test_sets` order and cyclically, whose degradation
    type (`giv.KINDS`) differs.
    """
    names = list(test_sets)
    kinds = [giv.KINDS.get(test_sets[n][0].task, test_sets[n][0].task) for n in names]
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


def _cropped(image) -> tuple[np.ndarray, np.ndarray]:
    return tuple(
        crop_to_multiple(np.asarray(a, np.float32), 16) for a in (image.degraded, image.clean)
    )


def giv_swap(predictor, test_sets, max_images=None) -> dict:
    """PSNR with each image's own GIV and with another degradation's (`swap_pairs`).

    Same protocol as the evaluation (batch 1, crop to a multiple of 16,
    output clipped to [0, 1], RGB PSNR). Returns set -> {donor, own,
    swapped, drop (own - swapped, dB), images: [per-image swapped PSNR]}.
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


def giv_measures(predictor, probes, batch_size: int = 8) -> dict:
    """GIV separation (`giv.separation`) and selector entropy of `probes`."""
    images = np.stack([p.image for p in probes])  # one size: the sets are crops
    pad = -len(images) % batch_size  # one compiled batch shape
    padded = np.concatenate([images, np.repeat(images[:1], pad, 0)])
    givs = np.concatenate(
        [
            np.asarray(predictor.giv(jnp.asarray(padded[i : i + batch_size])))
            for i in range(0, len(padded), batch_size)
        ]
    )[: len(images)]
    selectors = predictor.selectors(jnp.asarray(givs))
    gmap = giv.GivMap(
        givs=givs,
        tasks=tuple(p.task for p in probes),
        strengths=np.array([p.strength for p in probes], np.float32),
        selectors={k: np.asarray(v) for k, v in selectors.items()},
    )
    return {"separation": giv.separation(gmap), "entropy": giv.selector_entropy(gmap.selectors)}


def evaluate_point(predictor, test_sets, probes, max_images) -> dict:
    """PSNR per set and their average, and for Res-HAIR the GIV measures."""
    rows = protocol.evaluate_sets(predictor, test_sets, max_images=max_images)
    point = {
        "psnr": {r.name: r.restored_psnr for r in rows},
        "average_psnr": protocol.average(rows).restored_psnr,
    }
    if predictor.has_giv:
        point.update(giv_measures(predictor, probes))
    return point


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------
def _write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _predictor(model, reuse=None):
    """A Predictor of `model`; `reuse`, one of the same architecture, keeps its compiled functions."""
    if reuse is None:
        return inference.Predictor(model)
    reuse.load(model)
    return reuse


def _model_at(config, workdir: str, step: int):
    """The model of `workdir` at checkpoint `step`; 0 is the seed's initialisation."""
    if step == 0:
        run = train.setup(config)
        return host_model(run.graphdef, run.initialize(), use_ema=False)
    graphdef, state = train.restore_train_state(config, workdir, step=step)
    return nnx.merge(graphdef, state.params, state.rest)


def prune(workdir: str, keep: int) -> None:
    """Deletes every checkpoint of `workdir` but step `keep` (all are evaluated)."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    for name in os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else ():
        if name.isdigit() and int(name) != keep:
            shutil.rmtree(os.path.join(ckpt_dir, name))


def run_one(preset, setting, arm, seed, model_cfg, workdir, data_dir, test_sets, probes, log=print):
    """Trains (or resumes) one run, evaluates it and writes its result.json.

    Returns:
      The run's record (what result.json holds).
    """
    config = run_config(preset, setting, model_cfg, seed, data_dir)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    done = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
    start = max(done, default=0)
    log(f"  training steps {start} -> {preset.num_steps} in {workdir}")
    began = time.perf_counter()
    train.train_and_evaluate(config, workdir, test_sets={})
    seconds = time.perf_counter() - began
    timing_path = os.path.join(workdir, "timing.json")
    if start < preset.num_steps:  # else training had finished: keep the timing it wrote
        _write_json(timing_path, {"steps": preset.num_steps - start, "seconds": seconds})
    timing = _read_json(timing_path) if os.path.exists(timing_path) else None
    curve, predictor = [], None
    for step in [*preset.eval_steps(), None]:  # None: the final model again, for `final`
        path = os.path.join(workdir, "curve", f"{step}.json")
        if step is not None and os.path.exists(path):
            curve.append(_read_json(path))
            continue
        predictor = _predictor(
            _model_at(config, workdir, preset.num_steps if step is None else step), predictor
        )
        if step is not None:
            point = evaluate_point(predictor, test_sets, probes, preset.curve_images)
            _write_json(path, {"step": step, **point})
            curve.append(_read_json(path))
            log(f"  step {step}: " + _point_line(curve[-1]))
    final = evaluate_point(predictor, test_sets, probes, preset.max_images)
    record = {
        "setting": setting,
        "arm": arm,
        "seed": seed,
        "model": dataclasses.asdict(model_cfg),
        "params": param_count(model_cfg),
        "num_steps": preset.num_steps,
        "timing": timing,
        "curve": curve,
        "final": final,
        "giv_swap": giv_swap(predictor, test_sets, preset.max_images)
        if predictor.has_giv
        else None,
    }
    _write_json(os.path.join(workdir, "result.json"), record)
    prune(workdir, keep=preset.num_steps)
    return record


def _point_line(point) -> str:
    line = f"PSNR {point['average_psnr']:.2f} dB"
    if "separation" in point:
        sep = point["separation"]
        line += f", GIV type accuracy {sep['type_accuracy']:.1%} (chance {sep['chance']:.1%})"
        if point["entropy"] is not None:
            line += f", selector entropy {point['entropy']:.3f}"
    return line


# ---------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------
def _test_data(data_dir: str, setting: str, max_images):
    """(test sets, GIV probes) of a setting on the synthetic_large data."""
    cfg = data.default_config()
    cfg.name, cfg.data_dir, cfg.synthetic_five_task = "synthetic_large", data_dir, setting == "5d"
    sets = data.load_test_sets(cfg)
    return sets, giv.probes_from_test_sets(sets, max_images)


def sweep(preset: Preset, out: str, *, data_dir: str | None = None, only=None, log=print) -> dict:
    """Runs every run of `preset` not yet done under `out`, then summarises.

    Args:
      only: if given, a collection of (setting, arm, seed) runs of the preset:
        run and summarise just these (to reproduce one run on its own).

    Returns:
      The summary (results.json's contents; see `summarize`).
    """
    data_dir = os.path.expanduser(data_dir or data.default_data_dir())
    runs = preset.run_list(only)
    wide = matched_width(preset) if any(a == "restormer_wide" for _, a, _ in runs) else None
    loaded = {}
    records = []
    for i, (setting, arm, seed) in enumerate(runs, 1):
        workdir = os.path.join(out, "runs", setting, arm, f"seed{seed}")
        result = os.path.join(workdir, "result.json")
        head = f"[{i}/{len(runs)}] {setting} {arm} seed {seed}"
        if os.path.exists(result):
            log(f"{head}: done before, skipped")
            records.append(_read_json(result))
            continue
        log(f"{head}: ...")
        if setting not in loaded:
            loaded[setting] = _test_data(data_dir, setting, preset.max_images)
        model_cfg = arm_model(preset, arm, wide[0] if wide else None)
        record = run_one(
            preset, setting, arm, seed, model_cfg, workdir, data_dir, *loaded[setting], log=log
        )
        records.append(record)
        log(f"{head}: done, " + _point_line(record["final"]))
    summary = summarize(records, preset)
    _write_json(os.path.join(out, "results.json"), summary)
    write_atomic(os.path.join(out, "results.md"), markdown(summary).encode())
    for setting in summary["settings"]:
        plot_curves(records, setting, os.path.join(out, f"curves_{setting}.png"))
    log(f"Wrote {out}/results.json, results.md and curves_*.png")
    return summary


# ---------------------------------------------------------------------------
# Tables and plots
# ---------------------------------------------------------------------------
def mean_std(values) -> dict:
    """{mean, std, n}: std is the sample standard deviation (ddof 1), None for one value."""
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else None
    return {"mean": float(values.mean()), "std": std, "n": len(values)}


def summarize(records: list[dict], preset: Preset | None = None) -> dict:
    """Mean +- std over seeds per setting, arm and test set, and paired differences.

    The paired difference of an arm is, per seed that both it and the
    Restormer ran, its PSNR minus the Restormer's (same seed: same init key
    and data order), then mean +- std over those seeds.
    """
    settings = {}
    for r in records:
        arms = settings.setdefault(r["setting"], {})
        arms.setdefault(r["arm"], []).append(r)
    out = {"preset": dataclasses.asdict(preset) if preset else None, "settings": {}}
    for setting, arms in settings.items():
        table = {}
        base = {r["seed"]: r for r in arms.get(BASELINE, [])}
        for arm in [a for a in ARMS if a in arms]:
            runs = sorted(arms[arm], key=lambda r: r["seed"])
            sets = list(runs[0]["final"]["psnr"])
            psnr = {s: mean_std([r["final"]["psnr"][s] for r in runs]) for s in sets}
            psnr["average"] = mean_std([r["final"]["average_psnr"] for r in runs])
            entry = {
                "seeds": [r["seed"] for r in runs],
                "params": runs[0]["params"],
                "seconds_per_step": _seconds_per_step(runs),
                "psnr": psnr,
            }
            paired = [r for r in runs if r["seed"] in base]
            if arm != BASELINE and paired:
                entry["paired_difference"] = {
                    s: mean_std([_psnr(r, s) - _psnr(base[r["seed"]], s) for r in paired])
                    for s in [*sets, "average"]
                }
            if runs[0].get("giv_swap"):
                entry["giv_swap_drop"] = {
                    s: mean_std([r["giv_swap"][s]["drop"] for r in runs]) for s in sets
                }
                entry["giv_type_accuracy"] = mean_std(
                    [r["final"]["separation"]["type_accuracy"] for r in runs]
                )
                if runs[0]["final"]["entropy"] is not None:
                    entry["selector_entropy"] = mean_std([r["final"]["entropy"] for r in runs])
            table[arm] = entry
        out["settings"][setting] = table
    return out


def _psnr(record, name):
    return record["final"]["average_psnr"] if name == "average" else record["final"]["psnr"][name]


def _seconds_per_step(runs):
    timed = [r["timing"] for r in runs if r.get("timing")]
    if not timed:
        return None
    return sum(t["seconds"] for t in timed) / sum(t["steps"] for t in timed)


def _cell(stats, signed=False) -> str:
    if stats is None:
        return ""
    value = f"{stats['mean']:+.2f}" if signed else f"{stats['mean']:.2f}"
    spread = "" if stats["std"] is None else f" ± {stats['std']:.2f}"
    return f"{value}{spread}"


def markdown(summary: dict) -> str:
    """results.md: per setting, PSNR per set and average, paired differences, GIV swap."""
    lines = [
        (
            "PSNR in dB on the held-out synthetic test sets, mean ± sample std over seeds "
            "(n seeds). Δ: paired difference to the static Restormer (same seeds). "
            "s/step: training wall time per step, compilation included."
        ),
    ]
    for setting, table in summary["settings"].items():
        sets = next(iter(table.values()))["psnr"]
        names = [s for s in sets if s != "average"]
        lines += ["", f"## Setting {setting}", ""]
        header = ["arm", "seeds", "params", "s/step", *names, "average", "Δ average"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for arm, e in table.items():
            sps = "" if e["seconds_per_step"] is None else f"{e['seconds_per_step']:.3f}"
            diff = e.get("paired_difference", {}).get("average")
            cells = [arm, str(len(e["seeds"])), f"{e['params']:,}", sps]
            cells += [_cell(e["psnr"][s]) for s in [*names, "average"]] + [_cell(diff, True)]
            lines.append("| " + " | ".join(cells) + " |")
        hair = {a: e for a, e in table.items() if "giv_swap_drop" in e}
        if hair:
            lines += [
                "",
                (
                    "GIV swap: PSNR drop (dB) when each image gets the GIV of an image "
                    "of another degradation; GIV type accuracy and selector entropy at the end."
                ),
                "",
            ]
            header = ["arm", *names, "GIV type accuracy", "selector entropy"]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for arm, e in hair.items():
                acc = e["giv_type_accuracy"]
                acc_cell = f"{acc['mean']:.1%}" + (
                    "" if acc["std"] is None else f" ± {acc['std']:.1%}"
                )
                cells = [
                    arm,
                    *(_cell(e["giv_swap_drop"][s], True) for s in names),
                    acc_cell,
                    _cell(e.get("selector_entropy")),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(records: list[dict], setting: str, path: str) -> None:
    """Average PSNR, GIV type accuracy and selector entropy vs step, per arm (mean, min-max band)."""
    # matplotlib takes a second to import; only the plots need it.
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

    fig = Figure(figsize=(15, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    measures = (
        ("average PSNR (dB)", lambda p: p["average_psnr"]),
        (
            "GIV type accuracy (nearest centroid)",
            lambda p: p.get("separation", {}).get("type_accuracy"),
        ),
        ("mean normalised selector entropy", lambda p: p.get("entropy")),
    )
    chance = None
    for i, arm in enumerate(ARMS):
        runs = [r for r in records if r["setting"] == setting and r["arm"] == arm]
        if not runs:
            continue
        steps = [p["step"] for p in runs[0]["curve"]]
        for ax, (label, get) in zip(axes, measures):
            values = [[get(p) for p in r["curve"]] for r in runs]
            if any(v is None for row in values for v in row):
                continue
            values = np.asarray(values, np.float64)
            ax.plot(steps, values.mean(0), color=f"C{i}", label=f"{arm} ({len(runs)} seeds)")
            ax.fill_between(steps, values.min(0), values.max(0), color=f"C{i}", alpha=0.2)
        if "separation" in runs[0]["curve"][0]:
            chance = runs[0]["curve"][0]["separation"]["chance"]
    if chance is not None:
        axes[1].axhline(chance, color="grey", linestyle=":", label="chance")
    # The whole range, so that near-uniform selectors look near-uniform.
    axes[2].axhline(1.0, color="grey", linestyle=":", label="uniform (no choice)")
    axes[2].set_ylim(0.0, 1.05)
    for ax, (label, _) in zip(axes, measures):
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.suptitle(f"Setting {setting}: mean over seeds, band from min to max")
    giv.save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hair_jax.experiments.ablation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--out", default=None, help="default runs/ablation-<preset>")
    parser.add_argument(
        "--data_dir", default=None, help="default $HAIR_DATA_DIR or ~/tensorflow_datasets"
    )
    parser.add_argument(
        "--run",
        action="append",
        metavar="SETTING/ARM/SEED",
        help="only this run of the preset, e.g. 3d/res_hair/1 (repeatable); "
        "to reproduce one run's numbers, give a fresh --out",
    )
    args = parser.parse_args(argv)
    out = args.out or os.path.join("runs", f"ablation-{args.preset}")
    preset = PRESETS[args.preset]
    try:
        evaluate.check_output(out)
        only = None if args.run is None else [_parse_run(r) for r in args.run]
        preset.run_list(only)  # each --run is a run of the preset
    except ValueError as e:
        cli.fail(parser.prog, e)
    cli.quiet_logs()
    sweep(preset, out, data_dir=args.data_dir, only=only)


def _parse_run(text: str) -> tuple[str, str, int]:
    """'3d/res_hair/1' -> ('3d', 'res_hair', 1)."""
    parts = text.split("/")
    if len(parts) != 3 or not parts[2].isdigit():
        raise ValueError(f"--run {text!r}: expected SETTING/ARM/SEED, e.g. 3d/res_hair/1")
    return parts[0], parts[1], int(parts[2])


if __name__ == "__main__":
    main(sys.argv[1:])
