"""The data configuration and the task/dataset tables behind it."""

from __future__ import annotations

import os

import ml_collections

from hair_jax.data import layout

# Task-and-strength names; a task's position is its integer id in batches.
TASKS = ("denoise_15", "denoise_25", "denoise_50", "derain", "dehaze", "deblur", "lowlight")
THREE_TASKS = TASKS[:5]
# Degradation types (the noise levels are one type) and each task's type id.
TYPES = ("noise", "rain", "haze", "blur", "low light")
TYPE_OF_TASK = (0, 0, 0, 1, 2, 3, 4)

# Training sources per configuration name: task -> (dataset, split, repeats per
# epoch). The reference lists each clean image once per sigma, Rain100L 120
# times and OTS once; GoPro and LOL (five tasks, not in the reference code)
# are listed once.
_REAL_SOURCES = {
    "denoise_15": ("denoise_clean", "train", 1),
    "denoise_25": ("denoise_clean", "train", 1),
    "denoise_50": ("denoise_clean", "train", 1),
    "derain": ("rain100l", "train", 120),
    "dehaze": ("reside", "train", 1),
    "deblur": ("gopro", "train", 1),
    "lowlight": ("lol", "train", 1),
}
_SYNTHETIC_SOURCES = {
    **{t: ("synthetic_clean", "train", 1) for t in THREE_TASKS[:3]},
    **{t: ("synthetic", f"train_{t}", 1) for t in TASKS[3:]},
}
# The large flavour (hair_jax.experiments.ablation): same layout, more photos.
_LARGE_SOURCES = {
    t: (d.replace("synthetic", "synthetic_large"), s, r)
    for t, (d, s, r) in _SYNTHETIC_SOURCES.items()
}
TRAIN_SOURCES = {
    "all_in_one_3d": _REAL_SOURCES,
    "all_in_one_5d": _REAL_SOURCES,
    "synthetic": _SYNTHETIC_SOURCES,
    "synthetic_large": _LARGE_SOURCES,
}

# Test sets: set name -> (dataset, split, task). Noise is added to clean-only sets.
_REAL_TESTS = {
    "sots": ("reside", "test", "dehaze"),
    "rain100l": ("rain100l", "test", "derain"),
    **{f"bsd68_{s}": ("bsd68", "test", f"denoise_{s}") for s in (15, 25, 50)},
    **{f"urban100_{s}": ("urban100", "test", f"denoise_{s}") for s in (15, 25, 50)},
    "gopro": ("gopro", "test", "deblur"),
    "lol": ("lol", "test", "lowlight"),
}
_SYNTHETIC_TESTS = {
    **{f"synthetic_{t}": ("synthetic_clean", "test", t) for t in THREE_TASKS[:3]},
    **{f"synthetic_{t}": ("synthetic", f"test_{t}", t) for t in TASKS[3:]},
}
_LARGE_TESTS = {
    n: (d.replace("synthetic", "synthetic_large"), s, t)
    for n, (d, s, t) in _SYNTHETIC_TESTS.items()
}
TEST_SETS = {
    "all_in_one_3d": _REAL_TESTS,
    "all_in_one_5d": _REAL_TESTS,
    "synthetic": _SYNTHETIC_TESTS,
    "synthetic_large": _LARGE_TESTS,
}
SYNTHETIC_NAMES = ("synthetic", "synthetic_large")  # built offline on first use
# The paper's five-task table uses sigma 25 only.
_DEFAULT_TESTS_5D = ("sots", "rain100l", "bsd68_25", "gopro", "lol")


def default_data_dir() -> str:
    """`$HAIR_DATA_DIR` if set, else `~/tensorflow_datasets` (expanded)."""
    return os.path.expanduser(os.environ.get("HAIR_DATA_DIR", "~/tensorflow_datasets"))


def default_config() -> ml_collections.ConfigDict:
    """The data configuration.

    Fields:
      name: 'synthetic' (default, builds itself offline), 'synthetic_large'
        (the same from every bundled photo, 24 images per test set),
        'all_in_one_3d' (noise/rain/haze) or 'all_in_one_5d' (adds GoPro and LOL).
      data_dir: where TFDS datasets are written and read; `$HAIR_DATA_DIR` or
        `~/tensorflow_datasets`.
      train_root, test_root: the folders `prepare` reads (reference layout).
      folders: per-folder overrides by key (see `layout.default_folders`);
        None keeps the default.
      tasks: task names to train on; None means all the tasks of `name`
        (three for 'all_in_one_3d' and 'synthetic', seven for 'all_in_one_5d'
        or 'synthetic' with `synthetic_five_task`).
      weights: None or task -> multiplier of that task's repeats per epoch
        (1.0 keeps the reference proportion; 0.5 lists half of its examples).
      test_sets: names of test sets to load; None means the defaults of `name`.
      num_workers: grain worker processes (0: threads only; workers need a
        `__main__` guard and take seconds to start).
      num_threads: reader threads per process.
      prefetch: batches buffered ahead.
      synthetic_five_task: with a synthetic name, also train and test deblur
        and low light.
    """
    cfg = ml_collections.ConfigDict()
    cfg.name = "synthetic"
    cfg.data_dir = default_data_dir()
    cfg.train_root = "data/Train"
    cfg.test_root = "data/test"
    cfg.folders = ml_collections.ConfigDict({k: None for k in layout.default_folders("", "")})
    cfg.tasks = None
    cfg.weights = None
    cfg.test_sets = None
    cfg.num_workers = 0
    cfg.num_threads = 4
    cfg.prefetch = 8
    cfg.synthetic_five_task = False
    return cfg


def _check_name(cfg) -> None:
    if cfg.name not in TRAIN_SOURCES:
        raise ValueError(f"unknown data name {cfg.name!r}; one of {sorted(TRAIN_SOURCES)}")


def tasks_of(cfg) -> tuple[str, ...]:
    """The training tasks of a configuration (see `default_config`)."""
    _check_name(cfg)
    if cfg.tasks is not None:
        unknown = set(cfg.tasks) - set(TASKS)
        if unknown:
            raise ValueError(f"unknown tasks {sorted(unknown)}; known: {TASKS}")
        return tuple(t for t in TASKS if t in cfg.tasks)
    five = cfg.name == "all_in_one_5d" or (cfg.name in SYNTHETIC_NAMES and cfg.synthetic_five_task)
    return TASKS if five else THREE_TASKS


def test_sets_of(cfg) -> dict[str, tuple[str, str, str]]:
    """Test set name -> (dataset, split, task) for a configuration."""
    _check_name(cfg)
    table = TEST_SETS[cfg.name]
    if cfg.test_sets is not None:
        names = tuple(cfg.test_sets)
    elif cfg.name == "all_in_one_5d":
        names = _DEFAULT_TESTS_5D
    else:
        tasks = tasks_of(cfg)
        names = tuple(n for n, (_, _, task) in table.items() if task in tasks)
    unknown = set(names) - set(table)
    if unknown:
        raise ValueError(f"unknown test sets {sorted(unknown)}; known: {sorted(table)}")
    return {n: table[n] for n in names}
