"""Does HAIR help, and does it select? A seeded ablation with controls.

    python -m hair_jax.experiments.ablation --preset cpu

(from any directory; the run configs come from hair_jax.train.defaults).
Every (setting, arm, seed) run trains with the same
budget (steps, batch, patch, schedule, data order per seed) on the
`synthetic_large` data (`hair_jax.data.synthetic`), in its own workdir
`<out>/runs/<setting>/<arm>/seed<seed>`. Training checkpoints every
`eval_every` steps; afterwards each checkpoint (and the initialisation) is
evaluated on the held-out test sets: PSNR and, for HAIR arms, the selection
measures of `hair_jax.evaluation.selection` on the GIV probes (entropy,
type information, logit spread) and the GIV separation. The final model is
evaluated on every test image, with the GIV swap, the uniform-selector
ablation and the boxes' similarity.

A finished run's record (`result.json`: curve, final measures, timing,
machine) is also copied to `<records>/<preset>/<setting>/<arm>/seed<seed>.json`
(default records: docs/study under the current directory: from the
repository root, the committed ones). A run with a
record is never retrained, here or on another machine; an interrupted run
resumes from its last checkpoint. At the end, and with `--summary` alone,
the records are summarised (`tables`): `<records>/<preset>/results.json`,
`results.md`, `curves_<setting>.png`, and the tables replace the
`<!-- study:<preset> -->` block of `--doc` (docs/results.md).

Arms and presets: `hair_jax.experiments.arms`.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import platform
import shutil
import sys
import time

import jax
from flax import nnx

from hair_jax import data, inference, train
from hair_jax.evaluation import evaluators, giv, selection
from hair_jax.experiments import arms, tables
from hair_jax.io.files import write_atomic
from hair_jax.train.loop import host_model

DEFAULT_RECORDS = os.path.join("docs", "study")
DEFAULT_DOC = os.path.join("docs", "results.md")


class Stopped(Exception):
    """A run's training stopped before its last step (SIGTERM, SIGINT): nothing is recorded."""


# ---------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------
def evaluate_point(predictor, test_sets, probes, max_images) -> dict:
    """PSNR per set and their average, and for HAIR models the GIV measures.

    The train loop's `evaluators.Psnr` and `evaluators.Giv`, run here on
    each kept checkpoint.
    """
    point = evaluators.Psnr(test_sets, max_images).run(predictor)
    return {**point, **evaluators.Giv(probes).run(predictor)}


def final_measures(predictor, model, test_sets, probes, max_images) -> dict:
    """`evaluate_point` on every image, plus what only the final model gets.

    For HAIR models: the uniform-selector ablation (PSNR drop per set and
    average) and the boxes' mean cosine similarity (None with one box).
    """
    final = evaluate_point(predictor, test_sets, probes, max_images)
    if predictor.has_giv:
        final["box_similarity"] = selection.box_similarity(model)
        choice = max(model.config.boxes) > 1
        final["uniform_drop"] = (
            selection.uniform_ablation(predictor, test_sets, max_images) if choice else None
        )
    return final


# ---------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------
def _write_json(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, (json.dumps(obj, indent=2) + "\n").encode())


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def machine() -> dict:
    """Where a run ran: CPU model, cores, jax/jaxlib versions, backend."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
    }


def _model_at(config, workdir: str, step: int):
    """The model of `workdir` at checkpoint `step`; 0 is the seed's initialisation."""
    if step == 0:
        run = train.setup(config)
        return host_model(run.graphdef, run.initialize(), use_ema=False)
    graphdef, state = train.restore_train_state(config, workdir, step=step)
    return nnx.merge(graphdef, state.params, state.rest)


def _predictor(model, reuse=None):
    """A Predictor of `model`; `reuse`, one of the same graph, keeps its compiled functions."""
    if reuse is None:
        return inference.Predictor(model)
    reuse.load(model)
    return reuse


def prune(workdir: str, keep: int) -> None:
    """Deletes every checkpoint of `workdir` but step `keep` (all are evaluated)."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    for name in os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else ():
        if name.isdigit() and int(name) != keep:
            shutil.rmtree(os.path.join(ckpt_dir, name))


def _last_checkpoint(workdir: str) -> int:
    ckpt_dir = os.path.join(workdir, "checkpoints")
    done = [int(d) for d in os.listdir(ckpt_dir) if d.isdigit()] if os.path.isdir(ckpt_dir) else []
    return max(done, default=0)


def run_one(preset, setting, arm, seed, workdir, data_dir, test_sets, probes, wide_dim, log=print):
    """Trains (or resumes) one run, evaluates it and writes its result.json.

    Returns:
      The run's record (what result.json holds).
    """
    config = arms.run_config(preset, setting, arm, seed, data_dir, wide_dim)
    model_cfg = arms.arm_model(preset, arm, wide_dim)
    start = _last_checkpoint(workdir)
    log(f"  training steps {start} -> {preset.num_steps} in {workdir}")
    began = time.perf_counter()
    train.train_and_evaluate(config, workdir, test_sets={})
    seconds = time.perf_counter() - began
    step = _last_checkpoint(workdir)
    timing_path = os.path.join(workdir, "timing.json")
    if step > start:  # this call trained: add its steps and time to the earlier calls'
        timing = _read_json(timing_path) if start and os.path.exists(timing_path) else {}
        _write_json(
            timing_path,
            {
                "steps": timing.get("steps", 0) + step - start,
                "seconds": timing.get("seconds", 0.0) + seconds,
            },
        )
    if step < preset.num_steps:
        raise Stopped(
            f"{workdir} stopped at step {step} of {preset.num_steps}; "
            "run the same command again to continue it"
        )
    timing = _read_json(timing_path) if os.path.exists(timing_path) else None
    curve, predictor = [], None
    for step in preset.eval_steps():
        path = os.path.join(workdir, "curve", f"{step}.json")
        if not os.path.exists(path):
            predictor = _predictor(_model_at(config, workdir, step), predictor)
            point = evaluate_point(predictor, test_sets, probes, preset.curve_images)
            _write_json(path, {"step": step, **point})
            log(f"  step {step}: " + tables.point_line(point))
        curve.append(_read_json(path))
    model = _model_at(config, workdir, preset.num_steps)
    predictor = _predictor(model, predictor)
    record = {
        "setting": setting,
        "arm": arm,
        "seed": seed,
        "preset": preset.name,
        "model": dataclasses.asdict(model_cfg),
        "hair": dict(arms.ARMS[arm].hair),
        "params": arms.param_count(model_cfg),
        "num_steps": preset.num_steps,
        "machine": machine(),
        "timing": timing,
        "curve": curve,
        "final": final_measures(predictor, model, test_sets, probes, preset.max_images),
        "giv_swap": selection.giv_swap(predictor, test_sets, preset.max_images)
        if predictor.has_giv
        else None,
    }
    _write_json(os.path.join(workdir, "result.json"), record)
    prune(workdir, keep=preset.num_steps)
    return record


# ---------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------
def _test_data(data_dir: str, setting: str, max_images):
    """(test sets, GIV probes) of a setting on the synthetic_large data."""
    cfg = data.default_config()
    cfg.name, cfg.data_dir, cfg.synthetic_five_task = "synthetic_large", data_dir, setting == "5d"
    sets = data.load_test_sets(cfg)
    return sets, giv.probes_from_test_sets(sets, max_images)


def record_path(records: str, preset: str, setting: str, arm: str, seed: int) -> str:
    return os.path.join(records, preset, setting, arm, f"seed{seed}.json")


def load_records(records: str, preset: str) -> list[dict]:
    """Every committed record of `preset`, in path order."""
    paths = sorted(glob.glob(os.path.join(records, preset, "*", "*", "seed*.json")))
    return [_read_json(p) for p in paths]


def sweep(
    preset: arms.Preset,
    out: str,
    *,
    records: str = DEFAULT_RECORDS,
    data_dir: str | None = None,
    only=None,
    doc: str | None = None,
    log=print,
) -> dict:
    """Runs every run of `preset` that has no record yet, then summarises the records.

    Args:
      out: where the runs' workdirs go (`<out>/runs/...`).
      records: the records folder (see the module docstring).
      only: if given, a collection of (setting, arm, seed) runs of the preset:
        run and summarise just these (to reproduce one run on its own: give
        a fresh `records` too).
      doc: see `summarize`.

    Returns:
      The summary (results.json's contents; see `tables.summarize`).
    """
    data_dir = os.path.expanduser(data_dir or data.default_data_dir())
    runs = preset.run_list(only)
    wide = None
    loaded = {}
    done = []
    for i, (setting, arm, seed) in enumerate(runs, 1):
        path = record_path(records, preset.name, setting, arm, seed)
        head = f"[{i}/{len(runs)}] {setting} {arm} seed {seed}"
        if os.path.exists(path):
            log(f"{head}: recorded, skipped")
            done.append(_read_json(path))
            continue
        log(f"{head}: ...")
        if setting not in loaded:
            loaded[setting] = _test_data(data_dir, setting, preset.max_images)
        if arms.ARMS[arm].wide and wide is None:
            wide = arms.matched_width(preset)[0]
        workdir = os.path.join(out, "runs", setting, arm, f"seed{seed}")
        record = run_one(
            preset, setting, arm, seed, workdir, data_dir, *loaded[setting], wide, log=log
        )
        _write_json(path, record)
        done.append(record)
        log(f"{head}: done, " + tables.point_line(record["final"]))
    return summarize(preset, records, None if only is None else done, doc=doc, log=log)


def summarize(preset, records: str, chosen=None, doc: str | None = None, log=print) -> dict:
    """Writes results.json, results.md and the curves of `preset`'s records (or `chosen`).

    With `doc`, the tables also replace the `<!-- study:PRESET -->` block of
    that markdown file (docs/results.md), if it has one.
    """
    found = chosen if chosen is not None else load_records(records, preset.name)
    summary = tables.summarize(found, preset)
    folder = os.path.join(records, preset.name)
    _write_json(os.path.join(folder, "results.json"), summary)
    text = tables.markdown(summary)
    write_atomic(os.path.join(folder, "results.md"), text.encode())
    if doc and os.path.exists(doc) and tables.embed(doc, preset.name, text):
        log(f"Updated the tables of {doc}")
    for setting in summary["settings"]:
        tables.plot_curves(found, setting, os.path.join(folder, f"curves_{setting}.png"))
    log(f"Wrote {folder}/results.json, results.md and curves_*.png from {len(found)} records")
    return summary


if __name__ == "__main__":  # the command's former name
    from hair_jax.commands import ablation as _command

    sys.exit(_command.main(sys.argv[1:]))
