"""Reporting evaluation results: text tables and results.json / results.csv."""

from __future__ import annotations

import csv
import io
import json
import os
import textwrap

from hair_jax.evaluation.protocol import METRICS, PROTOCOL, Y_PROTOCOL, Row, average
from hair_jax.io.files import write_atomic

# Paper-style column titles; other set names are shown as they are.
DISPLAY_NAMES = {
    "sots": "SOTS",
    "rain100l": "Rain100L",
    **{f"bsd68_{s}": f"BSD68 s{s}" for s in (15, 25, 50)},
    **{f"urban100_{s}": f"Urban100 s{s}" for s in (15, 25, 50)},
    "gopro": "GoPro",
    "lol": "LOLv1",
}


def format_table(rows: list[Row]) -> str:
    """Fixed-width text table, one line per set: degraded vs restored PSNR / SSIM."""
    header = (
        f"{'test set':<24} {'n':>4} {'degraded PSNR':>14} "
        f"{'restored PSNR':>14} {'gain':>7} {'deg SSIM':>9} {'res SSIM':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.name:<24} {r.num_images:>4} {r.degraded_psnr:>14.2f} "
            f"{r.restored_psnr:>14.2f} {r.restored_psnr - r.degraded_psnr:>+7.2f} "
            f"{r.degraded_ssim:>9.4f} {r.restored_ssim:>9.4f}"
        )
    return "\n".join(lines)


def paper_table(rows: list[Row], *, y_channel: bool = False, label: str = "restored") -> str:
    """The paper's layout: a PSNR/SSIM column per test set, then the average.

    The protocol is printed above the table; `y_channel` shows the BT.601 Y
    metrics instead of the protocol's RGB ones.
    """
    psnr, ssim = ("psnr_y", "ssim_y") if y_channel else ("psnr", "ssim")
    columns = [*rows, average(rows)] if rows else []
    titles = [DISPLAY_NAMES.get(r.name, r.name) for r in columns[:-1]] + ["Average"]
    protocol = f"Protocol: {Y_PROTOCOL if y_channel else PROTOCOL}."
    lines = textwrap.wrap(protocol, width=100, subsequent_indent="  ")
    cells = {
        which: [f"{r.metric(which, psnr):.2f}/{r.metric(which, ssim):.4f}" for r in columns]
        for which in ("restored", "degraded")
    }
    cells["images"] = [str(r.num_images) for r in columns]
    widths = [max(len(t), *(len(c[i]) for c in cells.values())) for i, t in enumerate(titles)]
    first = max(len(label), len("degraded input"), len("PSNR/SSIM"))

    def line(name, values):
        return "  ".join([f"{name:<{first}}"] + [f"{v:>{w}}" for v, w in zip(values, widths)])

    lines.append(line("PSNR/SSIM", titles))
    lines.append(line(label, cells["restored"]))
    lines.append(line("degraded input", cells["degraded"]))
    lines.append(line("images", cells["images"]))
    return "\n".join(lines)


def results_dict(rows: list[Row], **meta) -> dict:
    """The contents of results.json: `meta`, the protocol, per-set and average metrics."""

    def metrics_of(row):
        return {
            which: {m: row.metric(which, m) for m in METRICS} for which in ("restored", "degraded")
        }

    out = dict(meta)
    out["protocol"] = PROTOCOL
    out["y_channel"] = "ITU-R BT.601: Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255"
    out["sets"] = {
        r.name: {"num_images": r.num_images, **metrics_of(r), "images": list(r.images)}
        for r in rows
    }
    out["average"] = metrics_of(average(rows)) if rows else {}
    return out


def write_results(out_dir: str, rows: list[Row], **meta) -> tuple[str, str]:
    """Writes results.json and results.csv to `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "results.json")
    csv_path = os.path.join(out_dir, "results.csv")
    text = json.dumps(results_dict(rows, **meta), indent=2, allow_nan=True)
    write_atomic(json_path, (text + "\n").encode())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    fields = [*METRICS, *(f"degraded_{m}" for m in METRICS)]
    writer.writerow(["set", "num_images", *fields])
    for r in [*rows, average(rows)] if rows else []:
        values = [r.metric("restored", m) for m in METRICS] + [
            r.metric("degraded", m) for m in METRICS
        ]
        writer.writerow([r.name, r.num_images, *(f"{v:.6f}" for v in values)])
    write_atomic(csv_path, buffer.getvalue().encode())
    return json_path, csv_path
