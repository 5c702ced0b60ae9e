"""Where the datasets live on disk, and how degraded images find their clean pair.

The default layout is the reference's (`data/Train/...` for training,
`data/test/...` for testing), extended with folders for GoPro and LOL. Every
folder has a key (e.g. `rain100l_train_degraded`) and can be overridden.

Pairing rules (the clean image is looked up in the clean folder):
- `rain`: `rain-N.png` <-> `norain-N.png` (Rain100L), or the same name.
- `haze`: `<id>_<A>_<beta>.jpg`, in any sub-folder <-> `<id>.*` (RESIDE).
- `same`: same relative path and stem, any extension (GoPro, LOL).
Extensions may differ between a pair (SOTS pairs .jpg inputs with .png targets).

Problems are reported as a `DataError` whose message is one line naming the
file or folder, so the `prepare` command can print it and exit with code 2.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class DataError(Exception):
    """A problem with the input data; the message is a single line."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One image (clean-only sets) or one degraded/clean pair.

    Images are file paths, or encoded PNG bytes for generated data.
    """

    name: str
    clean: str | bytes
    degraded: str | bytes | None = None


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its task, pairing rule, splits and where to get it.

    Attributes:
      name: short name; the TFDS dataset is called `hair_<name>`.
      task: the task family (`denoise`, `derain`, `dehaze`, `deblur`, `lowlight`).
      pairing: `clean` (no degraded images), `rain`, `haze` or `same`.
      splits: split name -> (root, degraded folder or None, clean folder),
        folders relative to the train or test root.
      download: what to download, for the error message when it is missing.
    """

    name: str
    task: str
    pairing: str
    splits: Mapping[str, tuple[str, str | None, str]]
    download: str

    def folder_keys(self, split: str) -> tuple[str | None, str]:
        """The override keys of a split's (degraded, clean) folders."""
        degraded = None if self.pairing == "clean" else f"{self.name}_{split}_degraded"
        return degraded, f"{self.name}_{split}_clean"


DATASETS = (
    DatasetSpec(
        "denoise_clean",
        "denoise",
        "clean",
        {"train": ("train", None, "Denoise")},
        "BSD400 and WED (Waterloo Exploration Database) clean images, all in one folder",
    ),
    DatasetSpec(
        "bsd68",
        "denoise",
        "clean",
        {"test": ("test", None, "denoise/bsd68")},
        "the BSD68 test images",
    ),
    DatasetSpec(
        "urban100",
        "denoise",
        "clean",
        {"test": ("test", None, "denoise/urban100")},
        "the Urban100 test images",
    ),
    DatasetSpec(
        "rain100l",
        "derain",
        "rain",
        {
            "train": ("train", "Derain/rainy", "Derain/gt"),
            "test": ("test", "derain/Rain100L/input", "derain/Rain100L/target"),
        },
        "Rain100L (train: 200 rain-N/norain-N pairs; test: 100 pairs)",
    ),
    DatasetSpec(
        "reside",
        "dehaze",
        "haze",
        {
            "train": ("train", "Dehaze/synthetic", "Dehaze/original"),
            "test": ("test", "dehaze/input", "dehaze/target"),
        },
        "RESIDE OTS (train: hazy <id>_<A>_<beta>.jpg and clean <id>.jpg) and SOTS outdoor (test)",
    ),
    DatasetSpec(
        "gopro",
        "deblur",
        "same",
        {
            "train": ("train", "Deblur/blur", "Deblur/sharp"),
            "test": ("test", "deblur/GoPro/input", "deblur/GoPro/target"),
        },
        "GoPro (blur and sharp frames, one sub-folder per sequence)",
    ),
    DatasetSpec(
        "lol",
        "lowlight",
        "same",
        {
            "train": ("train", "Lowlight/low", "Lowlight/high"),
            "test": ("test", "lowlight/LOL/input", "lowlight/LOL/target"),
        },
        "LOLv1 (our485 low/high for train, eval15 low/high for test)",
    ),
)
DATASETS_BY_NAME = {spec.name: spec for spec in DATASETS}


def default_folders(train_root: str, test_root: str) -> dict[str, str]:
    """Every folder key mapped to its path in the reference layout."""
    roots = {"train": train_root, "test": test_root}
    folders = {}
    for spec in DATASETS:
        for split, (root, degraded, clean) in spec.splits.items():
            degraded_key, clean_key = spec.folder_keys(split)
            if degraded_key:
                folders[degraded_key] = os.path.join(roots[root], degraded)
            folders[clean_key] = os.path.join(roots[root], clean)
    return folders


def resolve_folders(
    train_root: str, test_root: str, overrides: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """The default folders with the non-empty `overrides` applied.

    Raises:
      DataError: an override names an unknown folder key.
    """
    folders = default_folders(train_root, test_root)
    for key, path in (overrides or {}).items():
        if key not in folders:
            raise DataError(f"unknown folder key {key!r}; known: {', '.join(sorted(folders))}")
        if path:
            folders[key] = path
    return folders


def list_images(folder: str, download: str = "") -> list[str]:
    """Image paths under `folder` (recursively), relative to it and sorted.

    Raises:
      DataError: the folder is missing or holds no images.
    """
    if not os.path.isdir(folder):
        hint = f": download {download} and put it there" if download else ""
        raise DataError(f"missing folder {folder}{hint}")
    found = []
    for root, _, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.relpath(os.path.join(root, f), folder))
    if not found:
        raise DataError(f"empty folder {folder}: no {'/'.join(IMAGE_EXTENSIONS)} images")
    return sorted(found)


def _stem(relpath: str) -> str:
    return os.path.splitext(relpath)[0].replace(os.sep, "/")


def clean_candidates(pairing: str, degraded_relpath: str) -> list[str]:
    """The clean stems (relative path, no extension) a degraded image may pair with."""
    stem = _stem(degraded_relpath)
    head, _, base = stem.rpartition("/")
    prefix = head + "/" if head else ""
    if pairing == "rain":
        names = ["no" + base] if base.startswith("rain-") else []
        return [prefix + n for n in names] + [stem]
    if pairing == "haze":
        return [base.split("_")[0]]
    if pairing == "same":
        return [stem]
    raise ValueError(f"unknown pairing rule {pairing!r}")


def split_examples(spec: DatasetSpec, split: str, folders: Mapping[str, str]) -> list[Example]:
    """Scans one split of a dataset and pairs its images.

    Raises:
      DataError: a folder is missing or empty, two clean images share a stem,
        or a degraded image has no clean pair.
    """
    degraded_key, clean_key = spec.folder_keys(split)
    clean_dir = folders[clean_key]
    clean = list_images(clean_dir, spec.download)
    if degraded_key is None:
        return [Example(_stem(p), os.path.join(clean_dir, p)) for p in clean]
    degraded_dir = folders[degraded_key]
    degraded = list_images(degraded_dir, spec.download)
    by_stem = {}
    for p in clean:
        if _stem(p) in by_stem:
            raise DataError(
                f"two clean images with one name in {clean_dir}: {by_stem[_stem(p)]} and {p}"
            )
        by_stem[_stem(p)] = p
    examples = []
    for p in degraded:
        match = next((by_stem[c] for c in clean_candidates(spec.pairing, p) if c in by_stem), None)
        if match is None:
            raise DataError(f"no clean pair for {os.path.join(degraded_dir, p)} in {clean_dir}")
        examples.append(
            Example(_stem(p), os.path.join(clean_dir, match), os.path.join(degraded_dir, p))
        )
    return examples


def present_splits(spec: DatasetSpec, folders: Mapping[str, str]) -> list[str]:
    """The splits of `spec` with at least one of their folders on disk."""
    present = []
    for split in spec.splits:
        keys = [k for k in spec.folder_keys(split) if k]
        if any(os.path.exists(folders[k]) for k in keys):
            present.append(split)
    return present
