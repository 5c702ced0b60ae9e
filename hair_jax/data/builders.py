"""TFDS dataset builders for the HAIR datasets, written as array_record files.

array_record needs no TensorFlow to write or read (tfrecord would), and
`as_data_source` gives grain random access. The builders do not scan folders
themselves: `layout.split_examples` does that and hands them `Example`s, so
pairing and its errors live in one place. While writing, each image is decoded
once to catch corrupt files and size mismatches.

A dataset is built into a temporary folder next to its destination and moved
into place only when complete, so a failed build leaves nothing that looks
usable.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence

import PIL.Image
import tensorflow_datasets as tfds

from hair_jax.data.layout import DATASETS_BY_NAME, DataError, Example

VERSION = "1.0.0"


def _encodable(image: str | bytes) -> tuple[str | bytes | PIL.Image.Image, tuple[int, int]]:
    """What to hand tfds for one image (a path or encoded bytes), and its (width, height).

    Files are decoded fully here so that truncated or corrupt ones fail now,
    naming the file. RGB JPEG/PNG files are stored as they are (no re-encoding,
    no size blow-up for JPEG); anything else (grayscale BSD400, BMP from WED) is
    converted to RGB and stored as PNG. Encoded RGB bytes (the synthetic set)
    pass through.
    """
    if isinstance(image, bytes):
        with PIL.Image.open(io.BytesIO(image)) as img:
            return image, img.size
    try:
        with PIL.Image.open(image) as img:
            img.load()
            if img.mode == "RGB" and img.format in ("JPEG", "PNG"):
                return image, img.size
            return img.convert("RGB"), img.size
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable or corrupt image {image}: {e}") from None


class _HairBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes given examples; `PAIRED` says whether there is a degraded image.

    Args (constructor):
      examples: split name -> examples; only needed to build, not to read.
      **kwargs: passed to `tfds.core.GeneratorBasedBuilder` (data_dir, ...).
    """

    VERSION = tfds.core.Version(VERSION)
    PAIRED = True
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Build with `python -m hair_jax.data.prepare`; see docs/data.md."

    # tfds finds a builder's source folder (to look for a checksums file) with
    # the `importlib_resources` backport, which tfds does not install. Nothing
    # is downloaded here, so there is no checksums file to find.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return None

    def __init__(self, *, examples: Mapping[str, Sequence[Example]] | None = None, **kwargs):
        self._examples = examples or {}
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "clean": tfds.features.Image(shape=(None, None, 3)),
            "name": tfds.features.Text(),
        }
        if self.PAIRED:
            features["degraded"] = tfds.features.Image(shape=(None, None, 3))
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(features),
            supervised_keys=("degraded", "clean") if self.PAIRED else None,
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded.
        return {
            split: self._generate_examples(examples) for split, examples in self._examples.items()
        }

    def _generate_examples(self, examples):
        for index, ex in enumerate(examples):
            clean, clean_size = _encodable(ex.clean)
            record = {"clean": clean, "name": ex.name}
            if self.PAIRED:
                degraded, size = _encodable(ex.degraded)
                if size != clean_size:
                    raise DataError(
                        f"size mismatch: {ex.degraded} is {size[0]}x{size[1]} but its "
                        f"clean pair {ex.clean} is {clean_size[0]}x{clean_size[1]}"
                    )
                record["degraded"] = degraded
            # The index keeps keys unique even when two sub-folders share a stem.
            yield f"{index:08d}", record


# One registered class per dataset: TFDS names datasets after their class.
class HairDenoiseClean(_HairBuilder):
    """BSD400 + WED clean images for on-the-fly denoising pairs."""

    PAIRED = False


class HairBsd68(_HairBuilder):
    """BSD68 clean test images (noise is added at evaluation)."""

    PAIRED = False


class HairUrban100(_HairBuilder):
    """Urban100 clean test images (noise is added at evaluation)."""

    PAIRED = False


class HairRain100l(_HairBuilder):
    """Rain100L: train (Rain100L train pairs) and test."""


class HairReside(_HairBuilder):
    """RESIDE: train = OTS, test = SOTS outdoor."""


class HairGopro(_HairBuilder):
    """GoPro deblurring pairs."""


class HairLol(_HairBuilder):
    """LOLv1 low-light pairs."""


class HairSyntheticClean(_HairBuilder):
    """Bundled photos (scikit-image) for on-the-fly noise; see synthetic.py."""

    PAIRED = False


class HairSynthetic(_HairBuilder):
    """Bundled photos with synthetic rain, haze, blur and low light."""


class HairSyntheticLargeClean(_HairBuilder):
    """All bundled photos, 24 test crops; for studies (synthetic.py)."""

    PAIRED = False


class HairSyntheticLarge(_HairBuilder):
    """The large flavour's rain, haze, blur and low-light pairs."""


BUILDERS = {
    "denoise_clean": HairDenoiseClean,
    "bsd68": HairBsd68,
    "urban100": HairUrban100,
    "rain100l": HairRain100l,
    "reside": HairReside,
    "gopro": HairGopro,
    "lol": HairLol,
    "synthetic_clean": HairSyntheticClean,
    "synthetic": HairSynthetic,
    "synthetic_large_clean": HairSyntheticLargeClean,
    "synthetic_large": HairSyntheticLarge,
}


def dataset_dir(data_dir: str, name: str) -> str:
    """Where the finished dataset `name` lives under `data_dir`."""
    return os.path.join(os.path.expanduser(data_dir), BUILDERS[name].name, VERSION)


def build(
    name: str,
    examples: Mapping[str, Sequence[Example]],
    data_dir: str,
    overwrite: bool = True,
    quiet: bool = False,
) -> str:
    """Builds dataset `name` from `examples` into `data_dir`, atomically.

    An existing build of the same dataset is replaced only after the new one
    is complete. With `overwrite=False` an existing build is kept (for several
    processes building the same deterministic dataset at once). `quiet` hides
    what tfds prints while building (progress bars and a line per dataset).

    Returns:
      The dataset's directory.

    Raises:
      DataError: an image is unreadable or a pair's sizes differ.
    """
    data_dir = os.path.expanduser(data_dir)
    final = dataset_dir(data_dir, name)
    os.makedirs(data_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{BUILDERS[name].name}-", dir=data_dir)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # as os.makedirs would: the built set is renamed from here
    try:
        builder = BUILDERS[name](examples=examples, data_dir=tmp)
        with contextlib.ExitStack() as stack:
            if quiet:  # printed, not logged
                stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
                stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
            builder.download_and_prepare()
        built = os.path.join(tmp, BUILDERS[name].name, VERSION)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        if os.path.exists(final) and not overwrite:
            return final
        if os.path.exists(final):
            old = os.path.join(tmp, "old")
            os.replace(final, old)
        os.replace(built, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def splits(data_dir: str, name: str) -> dict[str, int]:
    """Split name -> number of examples of a built dataset ({} if not built)."""
    path = dataset_dir(data_dir, name)
    if not os.path.exists(os.path.join(path, "dataset_info.json")):
        return {}
    info = tfds.builder_from_directory(path).info
    return {s: info.splits[s].num_examples for s in info.splits}


def data_source(data_dir: str, name: str, split: str):
    """Random-access reader of one split: `len(src)`, `src[i]` -> dict of numpy.

    Raises:
      FileNotFoundError: the dataset or split has not been built.
    """
    path = dataset_dir(data_dir, name)
    if split not in splits(data_dir, name):
        spec = DATASETS_BY_NAME.get(name)
        needs = f" from {spec.download}" if spec else ""
        raise FileNotFoundError(
            f"dataset {BUILDERS[name].name} split {split!r} not found in {data_dir}; "
            f"build it{needs} with `python -m hair_jax.data.prepare` (see docs/data.md)"
        )
    return tfds.builder_from_directory(path).as_data_source(split)
