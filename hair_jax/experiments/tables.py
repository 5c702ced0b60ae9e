"""The study's summary: mean +- std over seeds, paired differences, selection, plots.

Everything here reads run records (`ablation.run_one`'s result.json) and
nothing else, so the tables can be rebuilt from the committed records.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hair_jax.evaluation import giv, selection
from hair_jax.experiments.arms import ARMS
from hair_jax.io.files import write_atomic

SELECTS = selection.SELECTS
# Paired differences are taken against each of these arms (same seeds).
REFERENCES = ("restormer", "restormer_wide", "res_hair")


def mean_std(values) -> dict:
    """{mean, std, n}: std is the sample standard deviation (ddof 1), None for one value."""
    values = np.asarray(values, np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else None
    return {"mean": float(values.mean()), "std": std, "n": len(values)}


def selection_of(record) -> dict | None:
    """A HAIR run's final selection measures, one number each (None for a Restormer)."""
    final = record["final"]
    if record.get("giv_swap") is None:
        return None
    uniform = final.get("uniform_drop")
    return {
        "entropy": final.get("entropy"),
        "type_mi": final.get("type_mi"),
        "swap_drop": float(np.mean([s["drop"] for s in record["giv_swap"].values()])),
        "uniform_drop": None if uniform is None else uniform["average"],
        "giv_type_accuracy": final["separation"]["type_accuracy"],
        "logit_spread": final.get("logit_spread"),
        "box_similarity": final.get("box_similarity"),
    }


def selects(stats: dict) -> bool:
    """Whether the means over seeds meet every `SELECTS` bound."""
    return selection.selects({k: (stats.get(k) or {}).get("mean") for k in SELECTS})


def summarize(records: list[dict], preset=None) -> dict:
    """Mean +- std over seeds per setting, arm and test set, paired differences, selection.

    The paired difference of an arm to a reference arm (`REFERENCES`) is, per
    seed both ran, its PSNR minus the reference's (same seed: same init key
    and data order), then mean +- std over those seeds.
    """
    settings = {}
    for r in records:
        settings.setdefault(r["setting"], {}).setdefault(r["arm"], []).append(r)
    out = {"preset": dataclasses.asdict(preset) if preset else None, "settings": {}}
    for setting, by_arm in settings.items():
        table = {}
        order = [a for a in ARMS if a in by_arm] + sorted(set(by_arm) - set(ARMS))
        for arm in order:
            runs = sorted(by_arm[arm], key=lambda r: r["seed"])
            sets = list(runs[0]["final"]["psnr"])
            psnr = {s: mean_std([r["final"]["psnr"][s] for r in runs]) for s in sets}
            psnr["average"] = mean_std([r["final"]["average_psnr"] for r in runs])
            entry = {
                "seeds": [r["seed"] for r in runs],
                "params": runs[0]["params"],
                "seconds_per_step": _seconds_per_step(runs),
                "machines": sorted({r.get("machine", {}).get("cpu", "?") for r in runs}),
                "psnr": psnr,
                "paired_difference": {},
            }
            for ref in REFERENCES:
                base = {r["seed"]: r for r in by_arm.get(ref, [])}
                paired = [r for r in runs if r["seed"] in base]
                if arm != ref and paired:
                    entry["paired_difference"][ref] = {
                        s: mean_std([_psnr(r, s) - _psnr(base[r["seed"]], s) for r in paired])
                        for s in [*sets, "average"]
                    }
            measures = [m for m in map(selection_of, runs) if m is not None]
            if measures:
                entry["selection"] = {
                    k: mean_std([m[k] for m in measures])
                    for k in measures[0]
                    if all(m[k] is not None for m in measures)
                }
                entry["selects"] = selects(entry["selection"])
                entry["giv_swap_drop"] = {
                    s: mean_std([r["giv_swap"][s]["drop"] for r in runs]) for s in sets
                }
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


def _cell(stats, signed=False, digits=2) -> str:
    if stats is None:
        return ""
    value = f"{stats['mean']:+.{digits}f}" if signed else f"{stats['mean']:.{digits}f}"
    spread = "" if stats["std"] is None else f" ± {stats['std']:.{digits}f}"
    return f"{value}{spread}"


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(summary: dict) -> str:
    """results.md: per setting, PSNR, paired differences and the selection measures."""
    lines = [
        "Generated by `python -m hair_jax.experiments.ablation --summary` from the run "
        "records; do not edit. PSNR in dB on the held-out synthetic test sets, mean ± "
        "sample std over seeds. Δ X: paired difference to arm X (same seeds). s/step: "
        "training wall time per step, compilation included (not comparable across "
        "machines or loads).",
    ]
    for setting, table in summary["settings"].items():
        names = [s for s in next(iter(table.values()))["psnr"] if s != "average"]
        lines += ["", f"### Setting {setting}", ""]
        header = ["arm", "seeds", "params", "s/step", *names, "average"]
        header += [f"Δ {ref}" for ref in REFERENCES]
        lines += [_row(header), "|" + "---|" * len(header)]
        for arm, e in table.items():
            sps = "" if e["seconds_per_step"] is None else f"{e['seconds_per_step']:.3f}"
            cells = [arm, str(len(e["seeds"])), f"{e['params']:,}", sps]
            cells += [_cell(e["psnr"][s]) for s in [*names, "average"]]
            cells += [
                _cell(e["paired_difference"].get(ref, {}).get("average"), True)
                for ref in REFERENCES
            ]
            lines.append(_row(cells))
        hair = {a: e for a, e in table.items() if "selection" in e}
        if hair:
            lines += [
                "",
                "Selection at the end, on the held-out images (thresholds of "
                f"'selects': entropy <= {SELECTS['entropy']}, type MI >= {SELECTS['type_mi']}, "
                f"swap drop >= {SELECTS['swap_drop']} dB, uniform drop >= "
                f"{SELECTS['uniform_drop']} dB). Entropy: normalised selector entropy (1 = "
                "uniform); type MI: mutual information of box and degradation type / log K; "
                "swap drop: PSNR lost when each image gets another degradation's GIV (mean "
                "over sets); uniform drop: PSNR lost when every selector is 1/K; GIV acc.: "
                "nearest-centroid type accuracy of the GIV; spread: router logits' std over "
                "images; box cos: mean cosine similarity of a bank's boxes.",
                "",
            ]
            keys = (
                "entropy",
                "type_mi",
                "swap_drop",
                "uniform_drop",
                "giv_type_accuracy",
                "logit_spread",
                "box_similarity",
            )
            header = ["arm", "selects", "entropy", "type MI", "swap drop", "uniform drop"]
            header += ["GIV acc.", "spread", "box cos"]
            lines += [_row(header), "|" + "---|" * len(header)]
            for arm, e in hair.items():
                sel = e["selection"]
                cells = [arm, "yes" if e["selects"] else "no"]
                cells += [_cell(sel.get(k), k.endswith("drop"), 3) for k in keys]
                lines.append(_row(cells))
    return "\n".join(lines) + "\n"


def point_line(point) -> str:
    """One evaluation point (curve or final) in one line."""
    line = f"PSNR {point['average_psnr']:.2f} dB"
    if "separation" in point:
        sep = point["separation"]
        line += f", GIV type accuracy {sep['type_accuracy']:.1%} (chance {sep['chance']:.1%})"
        if point.get("entropy") is not None:
            line += f", selector entropy {point['entropy']:.3f}, type MI {point['type_mi']:.3f}"
    if point.get("uniform_drop"):
        line += f", uniform-selector drop {point['uniform_drop']['average']:+.3f} dB"
    return line


def plot_curves(records: list[dict], setting: str, path: str) -> None:
    """Average PSNR, GIV type accuracy, selector entropy and type MI vs step, per arm."""
    # matplotlib takes a second to import; only the plots need it.
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

    fig = Figure(figsize=(18, 4.6), layout="constrained")
    axes = fig.subplots(1, 4)
    measures = (
        ("average PSNR (dB)", lambda p: p["average_psnr"]),
        (
            "GIV type accuracy (nearest centroid)",
            lambda p: p.get("separation", {}).get("type_accuracy"),
        ),
        ("mean normalised selector entropy", lambda p: p.get("entropy")),
        ("selector-type mutual information / log K", lambda p: p.get("type_mi")),
    )
    chance = None
    names = [a for a in ARMS if any(r["arm"] == a for r in records)]
    for i, arm in enumerate(names):
        runs = [r for r in records if r["setting"] == setting and r["arm"] == arm]
        if not runs:
            continue
        steps = [p["step"] for p in runs[0]["curve"]]
        style = {"color": f"C{i % 10}", "linestyle": "-" if i < 10 else "--"}
        for ax, (_, get) in zip(axes, measures):
            values = [[get(p) for p in r["curve"]] for r in runs]
            if any(v is None for row in values for v in row):
                continue
            values = np.asarray(values, np.float64)
            ax.plot(steps, values.mean(0), label=f"{arm} ({len(runs)})", **style)
            if len(runs) > 1:
                ax.fill_between(steps, values.min(0), values.max(0), alpha=0.15, **style)
        if "separation" in runs[0]["curve"][0]:
            chance = runs[0]["curve"][0]["separation"]["chance"]
    # Reference lines, named in each panel's legend (the arms in the first).
    marks = [[], [], [], []]
    if chance is not None:
        marks[1].append(axes[1].axhline(chance, color="grey", linestyle=":", label="chance"))
    # The whole ranges, so that near-uniform selectors look near-uniform.
    marks[2].append(axes[2].axhline(1.0, color="grey", linestyle=":", label="uniform (no choice)"))
    for i, key in ((2, "entropy"), (3, "type_mi")):
        bound = axes[i].axhline(
            SELECTS[key], color="black", linestyle="-.", label="'selects' bound"
        )
        marks[i].append(bound)
        axes[i].set_ylim(-0.02, 1.05)
    for ax, (label, _) in zip(axes, measures):
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
    if axes[0].has_data():
        axes[0].legend(fontsize=7, ncol=2, title="arm (seeds)")
    for ax, lines in zip(axes[1:], marks[1:]):
        if lines:
            ax.legend(handles=lines, fontsize=7)
    fig.suptitle(f"Setting {setting}: mean over seeds, band from min to max")
    giv.save_figure(fig, path)


def embed(doc: str, preset: str, text: str) -> bool:
    """Replaces the block between `<!-- study:PRESET -->` and `<!-- /study:PRESET -->` in `doc`.

    Returns False (and changes nothing) when `doc` lacks the markers.
    """
    begin, end = f"<!-- study:{preset} -->", f"<!-- /study:{preset} -->"
    with open(doc, encoding="utf-8") as f:
        content = f.read()
    if begin not in content or end not in content:
        return False
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    content = f"{head}{begin}\n{text.rstrip()}\n{end}{tail}"
    write_atomic(doc, content.encode())
    return True
