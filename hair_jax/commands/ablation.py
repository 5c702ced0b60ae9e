"""`python -m hair_jax.experiments.ablation`: the study's command line (`hair_jax.experiments`).

Runs the sweep of a preset (or the runs named by --run), or with --summary
only summarises the committed records; see `hair_jax.experiments.ablation`.
"""

from __future__ import annotations

import argparse
import os
import sys

from hair_jax import train
from hair_jax.commands import common
from hair_jax.experiments import ablation, arms


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hair_jax.experiments.ablation",
        description=ablation.__doc__.split("\n\n")[0],
    )
    parser.add_argument("--preset", choices=sorted(arms.PRESETS), default="cpu")
    parser.add_argument("--out", default=None, help="workdirs; default runs/ablation-<preset>")
    parser.add_argument(
        "--records",
        default=ablation.DEFAULT_RECORDS,
        help=f"run records (default {ablation.DEFAULT_RECORDS})",
    )
    parser.add_argument(
        "--data_dir", default=None, help="default $HAIR_DATA_DIR or ~/tensorflow_datasets"
    )
    parser.add_argument(
        "--run",
        action="append",
        metavar="SETTING/ARM/SEED",
        help="only this run of the preset, e.g. 3d/res_hair/1 (repeatable); "
        "to reproduce one run's numbers, give a fresh --records and --out",
    )
    parser.add_argument(
        "--summary", action="store_true", help="only summarise the records (train nothing)"
    )
    parser.add_argument(
        "--doc",
        default=ablation.DEFAULT_DOC,
        help=f"markdown whose <!-- study:PRESET --> block gets the tables (default {ablation.DEFAULT_DOC})",
    )
    args = parser.parse_args(argv)
    out = args.out or os.path.join("runs", f"ablation-{args.preset}")
    preset = arms.PRESETS[args.preset]
    try:
        common.check_output(out, "--out")
        common.check_output(args.records, "--records")
        only = None if args.run is None else [_parse_run(r) for r in args.run]
        preset.run_list(only)  # each --run is a run of the preset
    except ValueError as e:
        common.fail(parser.prog, e)
    common.quiet_logs()
    if args.summary:
        ablation.summarize(preset, args.records, doc=args.doc)
        return
    try:
        ablation.sweep(
            preset, out, records=args.records, data_dir=args.data_dir, only=only, doc=args.doc
        )
    except ablation.Stopped as e:  # a signal: the checkpoint is saved, nothing recorded
        print(f"\nStopped: {e}.")
    except (train.SaveFailed, OSError) as e:  # a full disk: the records so far are kept
        common.fail(parser.prog, f"{e}; finished runs are recorded in {args.records}")


def _parse_run(text: str) -> tuple[str, str, int]:
    """'3d/res_hair/1' -> ('3d', 'res_hair', 1)."""
    parts = text.split("/")
    if len(parts) != 3 or not parts[2].isdigit():
        raise ValueError(f"--run {text!r}: expected SETTING/ARM/SEED, e.g. 3d/res_hair/1")
    return parts[0], parts[1], int(parts[2])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
