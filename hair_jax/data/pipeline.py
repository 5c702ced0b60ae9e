"""The all-in-one training stream (grain) and the test sets.

Training stream. Each epoch lists every task's examples in the configured
proportions (the mixture index: source, record, task), shuffled per epoch from
the seed. Epochs are concatenated into one infinite global stream; global batch
k is stream positions [k * B, (k + 1) * B), and process p of n takes the p-th
slice of b = B / n of them, so processes are disjoint and together cover the
data. Example g draws its crop, flip/rotation and noise from a generator seeded
by (seed, g), so a batch does not depend on threads, workers or process count.

The loader's state is grain's (the index of the next local batch), which is
the same on every process; restoring it continues with exactly the next batch.
"""

from __future__ import annotations

import collections.abc
import dataclasses

import grain
import numpy as np
from absl import flags

from hair_jax.data import builders, synthetic
from hair_jax.data.config import SYNTHETIC_NAMES, TASKS, TRAIN_SOURCES, tasks_of, test_sets_of
from hair_jax.data.degrade import (
    NOISE_SIGMAS,
    add_gaussian_noise,
    crop_to_multiple,
    flip_rot,
    name_key,
)

# Images are cropped to a multiple of this before patches are drawn, as the
# reference does for training, and for evaluation (the paper's protocol).
CROP_BASE = 16
_STREAM_LENGTH = 2**62  # "infinite": grain's MapDataset needs a length.


def _text(value) -> str:
    """A tfds Text feature as str (data sources return bytes)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def mixture_index(tasks, sources, sizes, weights=None, seed=0):
    """Lists one epoch of the training mixture.

    Args:
      tasks: task names to include.
      sources: task -> (dataset, split, repeats per epoch).
      sizes: (dataset, split) -> number of records.
      weights: None or task -> multiplier of that task's repeats (tasks not
        listed keep 1). A fractional part takes that fraction of the records,
        a fixed random subset.
      seed: picks the fractional subsets.

    Returns:
      (source keys, entries): the (dataset, split) of each source id, and an
      int64 array [N, 3] of (source id, record index, task id) rows.
    """
    weights = dict(weights or {})
    # Weights of known but untrained tasks are ignored, so one weights table
    # can serve both the three- and five-task settings.
    unknown = set(weights) - set(TASKS)
    if unknown:
        raise ValueError(f"weights for unknown tasks: {sorted(unknown)}")
    keys, rows = [], []
    for task in tasks:
        dataset, split, repeats = sources[task]
        key = (dataset, split)
        if key not in keys:
            keys.append(key)
        weight = float(weights.get(task, 1.0))
        if weight < 0:
            raise ValueError(f"weight of {task} must be >= 0, got {weight}")
        n = sizes[key]
        whole, fraction = divmod(repeats * weight, 1.0)
        rng = np.random.default_rng(name_key(seed, task))
        records = np.concatenate(
            [np.tile(np.arange(n), int(whole)), rng.permutation(n)[: round(fraction * n)]]
        )
        rows.append(
            np.stack(
                [
                    np.full_like(records, keys.index(key)),
                    records,
                    np.full_like(records, TASKS.index(task)),
                ],
                axis=1,
            )
        )
    entries = np.concatenate(rows).astype(np.int64)
    if not len(entries):
        raise ValueError("the training mixture is empty: check tasks and weights")
    return keys, entries


def make_train_example(
    clean: np.ndarray,
    degraded: np.ndarray | None,
    task: int,
    patch_size: int,
    rng: np.random.Generator,
    name: str = "",
):
    """Crops, augments and (for denoising) degrades one training example.

    Args:
      clean: uint8 (H, W, 3) clean image.
      degraded: its uint8 degraded pair, or None to synthesise noise.
      task: task id (index into TASKS).
      patch_size: side of the square patch.
      rng: the example's random generator.
      name: for the error message.

    Returns:
      {'degraded', 'clean': float32 [P, P, 3] in [0, 1], 'task': int32}.

    Raises:
      ValueError: the image is smaller than the patch. Padding would teach the
        model artificial borders, so such images must be removed instead.
    """
    clean = crop_to_multiple(clean, CROP_BASE)
    h, w = clean.shape[:2]
    if h < patch_size or w < patch_size:
        raise ValueError(
            f"image {name!r} is {h}x{w} after cropping to a multiple of "
            f"{CROP_BASE}, smaller than the {patch_size}x{patch_size} patch; "
            "use a smaller patch_size or remove the image"
        )
    top = rng.integers(0, h - patch_size + 1)
    left = rng.integers(0, w - patch_size + 1)
    window = np.s_[top : top + patch_size, left : left + patch_size]
    mode = int(rng.integers(1, 8))  # Never the identity, as in the reference.
    clean = flip_rot(clean[window], mode)
    if degraded is None:
        # As the reference: noise is added to the augmented uint8 patch.
        degraded = add_gaussian_noise(clean, NOISE_SIGMAS[TASKS[task]], rng)
    else:
        degraded = flip_rot(crop_to_multiple(degraded, CROP_BASE)[window], mode)
    return {
        "degraded": degraded.astype(np.float32) / 255.0,
        "clean": clean.astype(np.float32) / 255.0,
        "task": np.int32(task),
    }


class _TrainExamples:
    """Local stream index -> training example; picklable for grain workers."""

    def __init__(
        self, data_dir, keys, entries, *, patch_size, seed, local_batch, global_batch, process_index
    ):
        self.data_dir, self.keys, self.entries = data_dir, keys, entries
        self.patch_size, self.seed = patch_size, seed
        self.local_batch, self.global_batch = local_batch, global_batch
        self.process_index = process_index
        self._sources = None
        self._order = (-1, None)

    def __getstate__(self):
        # Readers hold open files: workers reopen their own.
        return {**self.__dict__, "_sources": None}

    def global_index(self, local_index: int) -> int:
        """Position in the global stream of this process's `local_index`-th example."""
        batch, offset = divmod(local_index, self.local_batch)
        return batch * self.global_batch + self.process_index * self.local_batch + offset

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The shuffled order of the mixture entries in `epoch`."""
        cached_epoch, order = self._order
        if cached_epoch != epoch:
            # Threads may race to fill this; they compute the same permutation.
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.entries))
            self._order = (epoch, order)
        return order

    def entry(self, global_index: int) -> np.ndarray:
        """The (source id, record, task) of global stream position `global_index`."""
        epoch, position = divmod(global_index, len(self.entries))
        return self.entries[self.epoch_order(epoch)[position]]

    def __call__(self, local_index: int):
        if self._sources is None:
            self._sources = [builders.data_source(self.data_dir, *k) for k in self.keys]
        g = self.global_index(int(local_index))
        source, record, task = (int(v) for v in self.entry(g))
        data = self._sources[source][record]
        rng = np.random.default_rng([self.seed, g])
        return make_train_example(
            data["clean"],
            data.get("degraded"),
            task,
            self.patch_size,
            rng,
            name=_text(data["name"]),
        )


class TrainLoader:
    """Infinite iterator over this process's share of each global batch.

    Yields {'degraded', 'clean': float32 [b, P, P, 3], 'task': int32 [b]}.

    Attributes:
      examples_per_epoch: length of one epoch of the global stream.
      local_batch_size: b, examples per batch on this process.
      tasks: the trained task names.
    """

    def __init__(
        self, dataset: grain.IterDataset, examples: _TrainExamples, tasks: tuple[str, ...]
    ):
        self._examples = examples
        self._iterator = iter(dataset)
        self.examples_per_epoch = len(examples.entries)
        self.local_batch_size = examples.local_batch
        self.tasks = tasks

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iterator)

    def close(self) -> None:
        """Stops prefetching (and grain workers, if any). Idempotent."""
        self._iterator.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def batch_entries(self, batch_index: int) -> np.ndarray:
        """The (source id, record, task id) rows of this process's batch `batch_index`.

        For inspection (what a batch contains), without decoding images.
        """
        b = self.local_batch_size
        return np.stack(
            [
                self._examples.entry(self._examples.global_index(i))
                for i in range(batch_index * b, (batch_index + 1) * b)
            ]
        )

    def _identity(self) -> dict:
        e = self._examples
        return {
            "seed": e.seed,
            "global_batch_size": e.global_batch,
            "patch_size": e.patch_size,
            "examples_per_epoch": self.examples_per_epoch,
        }

    def get_state(self) -> dict:
        """A JSON-serialisable position; `set_state` of it resumes at the next batch."""
        return {**self._identity(), "iterator": self._iterator.get_state()}

    def set_state(self, state: dict) -> None:
        """Continues from a `get_state` result.

        Raises:
          ValueError: the state comes from a loader with another seed, batch,
            patch size or mixture, whose next batch would not be the same.
        """
        saved = {k: state[k] for k in self._identity()}
        if saved != self._identity():
            raise ValueError(f"loader state {saved} does not match this loader {self._identity()}")
        self._iterator.set_state(state["iterator"])


def make_train_loader(
    data_cfg,
    *,
    global_batch_size: int,
    patch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
) -> TrainLoader:
    """The training stream of `data_cfg` for this process (see module docstring).

    With a synthetic name the synthetic datasets are built first if missing.

    Raises:
      ValueError: global_batch_size is not divisible by process_count.
      FileNotFoundError: a needed dataset is not built.
    """
    if process_index is None or process_count is None:
        import jax  # Only for the defaults: data code otherwise stays jax-free.

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by "
            f"process_count {process_count}"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    tasks = tasks_of(data_cfg)
    if data_cfg.name in SYNTHETIC_NAMES:
        synthetic.ensure_built(data_cfg.data_dir, large=data_cfg.name == "synthetic_large")
    sources = TRAIN_SOURCES[data_cfg.name]
    sizes = {}
    for task in tasks:
        dataset, split, _ = sources[task]
        sizes[(dataset, split)] = len(builders.data_source(data_cfg.data_dir, dataset, split))
    weights = (
        data_cfg.weights.to_dict() if hasattr(data_cfg.weights, "to_dict") else data_cfg.weights
    )
    keys, entries = mixture_index(tasks, sources, sizes, weights, seed)
    local_batch = global_batch_size // process_count
    examples = _TrainExamples(
        data_cfg.data_dir,
        keys,
        entries,
        patch_size=patch_size,
        seed=seed,
        local_batch=local_batch,
        global_batch=global_batch_size,
        process_index=process_index,
    )
    dataset = grain.MapDataset.range(_STREAM_LENGTH).map(examples).batch(local_batch)
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=data_cfg.num_threads, prefetch_buffer_size=data_cfg.prefetch)
    )
    if data_cfg.num_workers > 0:
        # grain's workers read absl flags; outside absl.app.run nothing parses them.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=data_cfg.num_workers)
        )
    return TrainLoader(iter_dataset, examples, tasks)


@dataclasses.dataclass(frozen=True)
class TestImage:
    """One evaluation pair after the paper protocol (float32 HxWx3 in [0, 1])."""

    name: str
    task: str
    degraded: np.ndarray
    clean: np.ndarray


def test_image(record: dict, task: str) -> TestImage:
    """Applies the paper protocol to one stored record.

    Both images are centre-cropped to a multiple of 16. Clean-only sets get
    Gaussian noise from a key of (task, image name), so an image's noise is the
    same whatever else is evaluated and in which order.
    """
    name = _text(record["name"])
    clean = crop_to_multiple(record["clean"], CROP_BASE)
    if "degraded" in record:
        degraded = crop_to_multiple(record["degraded"], CROP_BASE)
    else:
        rng = np.random.default_rng(name_key(task, name))
        degraded = add_gaussian_noise(clean, NOISE_SIGMAS[task], rng)
    return TestImage(
        name, task, degraded.astype(np.float32) / 255.0, clean.astype(np.float32) / 255.0
    )


class TestSet(collections.abc.Sequence):
    """A read-only list of TestImage, decoded on access.

    Full-size test sets (SOTS: 500 images) would need gigabytes as float32,
    so images are read one at a time; iterate it like a list.
    """

    def __init__(self, source, task: str):
        self._source, self.task = source, task

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return test_image(self._source[index % len(self)], self.task)


def load_test_sets(data_cfg) -> dict[str, TestSet]:
    """Test set name -> its images, for every configured test set that is built.

    Names: 'sots', 'rain100l', 'bsd68_<sigma>', 'urban100_<sigma>', 'gopro',
    'lol'; with name 'synthetic', 'synthetic_<task>' (2 images of 192x192 each,
    built first if missing; 'synthetic_large': 24 of 128x128). Sets that are not built are left out (the caller
    says so: `test_sets_of(data_cfg)` names them all).
    """
    if data_cfg.name in SYNTHETIC_NAMES:
        synthetic.ensure_built(data_cfg.data_dir, large=data_cfg.name == "synthetic_large")
    sets = {}
    for set_name, (dataset, split, task) in test_sets_of(data_cfg).items():
        if split in builders.splits(data_cfg.data_dir, dataset):
            sets[set_name] = TestSet(builders.data_source(data_cfg.data_dir, dataset, split), task)
    return sets
