"""Builds the HAIR TFDS datasets from local folders.

    python -m hair_jax.data.prepare --train-root data/Train --test-root data/test \
        --data-dir ~/tensorflow_datasets [--tasks denoise derain dehaze ...] \
        [--folder rain100l_train_degraded=/elsewhere/rainy ...]

Without --tasks, every dataset with at least one folder present is built and
the others are listed as not found. With --tasks, a requested task with no
folder at all is an error. Every folder is scanned and paired before anything
is built. On bad input (a missing or empty folder, an unreadable image, a
degraded image without its clean pair, a pair of different sizes) the command
prints one line naming the file or folder and exits with code 2; datasets are
built in a temporary folder and moved into place only when complete.
"""

from __future__ import annotations

import argparse
import sys

import tqdm

from hair_jax.data import builders
from hair_jax.data.config import default_data_dir
from hair_jax.data.layout import (
    DATASETS,
    DataError,
    default_folders,
    present_splits,
    resolve_folders,
    split_examples,
)

TASK_FAMILIES = ("denoise", "derain", "dehaze", "deblur", "lowlight", "synthetic")
PROG = "python -m hair_jax.data.prepare"
EXIT_BAD_INPUT = 2


def _parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument(
        "--train-root", default="data/Train", help="training folders in the reference layout"
    )
    parser.add_argument(
        "--test-root", default="data/test", help="test folders in the reference layout"
    )
    parser.add_argument(
        "--data-dir", default=default_data_dir(), help="where the TFDS datasets are written"
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        choices=TASK_FAMILIES,
        help="build only these (default: every real dataset found)",
    )
    parser.add_argument(
        "--folder",
        action="append",
        default=[],
        metavar="KEY=PATH",
        help="override one folder; keys: " + ", ".join(sorted(default_folders("", ""))),
    )
    return parser.parse_args(argv)


def _overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, path = pair.partition("=")
        if not sep or not path:
            raise DataError(f"--folder expects KEY=PATH, got {pair!r}")
        overrides[key] = path
    return overrides


def collect(args) -> tuple[dict, list[str]]:
    """Scans and pairs every requested dataset before anything is built.

    Returns:
      (dataset name -> split -> examples, notes on datasets not found).

    Raises:
      DataError: on any bad input, or a requested task with no folder.
    """
    folders = resolve_folders(args.train_root, args.test_root, _overrides(args.folder))
    explicit = args.tasks is not None
    tasks = set(args.tasks or TASK_FAMILIES[:-1])
    plan, notes = {}, []
    for spec in DATASETS:
        if spec.task not in tasks:
            continue
        splits = present_splits(spec, folders)
        if not splits:
            folder = folders[spec.folder_keys(next(iter(spec.splits)))[1]]
            message = f"{spec.name} not found: download {spec.download} to {folder}"
            # A requested task needs its training set; test sets may be absent.
            if explicit and "train" in spec.splits:
                raise DataError(
                    f"missing folder {folder}: download {spec.download} and put it there"
                )
            notes.append(message)
            continue
        plan[spec.name] = {s: split_examples(spec, s, folders) for s in splits}
    return plan, notes


def _table(data_dir: str, names) -> str:
    rows = [(n, s, c) for n in names for s, c in builders.splits(data_dir, n).items()]
    width = max([len("dataset")] + [len(builders.BUILDERS[n].name) for n, _, _ in rows])
    lines = [f"{'dataset':<{width}}  {'split':<14} {'examples':>9}"]
    lines += [f"{builders.BUILDERS[n].name:<{width}}  {s:<14} {c:>9}" for n, s, c in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    """Runs the command; returns the exit code (0, or 2 on bad input)."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    built = []
    try:
        plan, notes = collect(args)
        for note in notes:
            print(f"skipped: {note}")
        jobs = list(plan.items())
        for name, splits in tqdm.tqdm(jobs, desc="datasets", unit="dataset"):
            builders.build(name, splits, args.data_dir)
            built.append(name)
        if args.tasks and "synthetic" in args.tasks:
            from hair_jax.data import synthetic  # Imports scikit-image: only if asked.

            synthetic.build(args.data_dir)
            built += ["synthetic_clean", "synthetic"]
    except DataError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not built:
        print(
            f"{PROG}: error: no dataset found under {args.train_root} or {args.test_root}; "
            "see docs/data.md",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    print(_table(args.data_dir, built))
    return 0


if __name__ == "__main__":
    sys.exit(main())
