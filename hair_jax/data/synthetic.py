"""The embedded `synthetic` dataset: bundled photos with synthetic degradations.

scikit-image ships a handful of real RGB photographs inside its wheel, so this
set builds in seconds with no network and no manual download. It exists so that
`python train.py` runs end to end out of the box; it is far too small to learn
real restoration from.

Contents (fixed, deterministic):
- 8 photos, resized so the short side is 256 px. Split by image: astronaut and
  coffee are the test images, the other 6 train.
- `hair_synthetic_clean` (train, test): the clean photos; noise is added on the
  fly in training and with a fixed key per image and sigma in testing.
- `hair_synthetic` (train_<task>, test_<task> for derain, dehaze, deblur,
  lowlight): pre-degraded pairs. Training has `TRAIN_VARIANTS` differently
  degraded copies of each photo; testing one copy of a 192x192 centre crop, so
  evaluating a small model on a 2-core CPU takes seconds.

The `synthetic_large` flavour (`hair_synthetic_large_clean`,
`hair_synthetic_large`), for studies such as `hair_jax.experiments.ablation`,
uses every real photo that installed wheels bundle (`LARGE_TRAIN_IMAGES`,
`LARGE_TEST_IMAGES`; grayscale ones become three equal channels) and holds
`LARGE_TEST_CROPS` random 128x128 crops of each test photo, each with its
own degradation draw, so every test set has 24 images.
"""

from __future__ import annotations

import io

import numpy as np
import PIL.Image
import skimage.data
from absl import logging

from hair_jax.data import builders
from hair_jax.data.degrade import SYNTHESISERS, name_key
from hair_jax.data.layout import Example

TRAIN_IMAGES = (
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",
)
TEST_IMAGES = ("astronaut", "coffee")
SHORT_SIDE = 256
TEST_CROP = 192
TRAIN_VARIANTS = 4
PAIRED_TASKS = tuple(SYNTHESISERS)

# The large flavour: (wheel, licence as the wheel states it) per photo. The
# test photos are held out: astronaut and coffee as above, plus one photo of
# another wheel and one grayscale photo.
PHOTO_SOURCES = {
    "astronaut": ("scikit-image", "public domain (NASA)"),
    "coffee": ("scikit-image", "CC0 (Rachel Michetti)"),
    "chelsea": ("scikit-image", "CC0 (Stefan van der Walt)"),
    "rocket": ("scikit-image", "public domain (SpaceX)"),
    "hubble_deep_field": ("scikit-image", "public domain (NASA)"),
    "immunohistochemistry": ("scikit-image", "no known copyright restrictions"),
    "retina": ("scikit-image", "CC0 (Mikael Häggström)"),
    "stereo_motorcycle": ("scikit-image", "Middlebury 2014 stereo benchmark; no licence stated"),
    "camera": ("scikit-image", "CC0 (Lav Varshney)"),
    "moon": ("scikit-image", "no licence stated"),
    "grass": ("scikit-image", "CC0 (CC0Textures)"),
    "gravel": ("scikit-image", "CC0 (CC0Textures)"),
    "brick": ("scikit-image", "CC0 (CC0Textures)"),
    "coins": ("scikit-image", "no known copyright restrictions"),
    "clock": ("scikit-image", "public domain (Stefan van der Walt)"),
    "cell": ("scikit-image", "CC0"),
    "china": ("scikit-learn", "CC BY 2.0 (danielbuechele on Flickr)"),
    "flower": ("scikit-learn", "CC BY 2.0 (vultilion on Flickr)"),
    "grace_hopper": ("matplotlib", "no licence stated (a U.S. Navy portrait)"),
}
LARGE_TEST_IMAGES = ("astronaut", "coffee", "flower", "camera")
LARGE_TRAIN_IMAGES = tuple(n for n in PHOTO_SOURCES if n not in LARGE_TEST_IMAGES)
LARGE_TEST_CROPS = 6  # per test photo: 4 photos x 6 = 24 images per test set
LARGE_TEST_CROP = 128
DATASETS = {
    False: ("synthetic_clean", "synthetic"),
    True: ("synthetic_large_clean", "synthetic_large"),
}


def _bundled(name: str) -> np.ndarray:
    """The photo as a wheel stores it (uint8, grayscale or RGB)."""
    wheel = PHOTO_SOURCES.get(name, ("scikit-image",))[0]
    if wheel == "scikit-learn":
        try:
            from sklearn.datasets import load_sample_image  # pylint: disable=g-import-not-at-top
        except ImportError:
            raise ImportError(
                f"photo {name!r} comes with scikit-learn: pip install scikit-learn "
                "(the [notebook] extra)"
            ) from None
        return load_sample_image(f"{name}.jpg")
    if wheel == "matplotlib":
        # matplotlib takes a second to import; only this photo needs it.
        from matplotlib import cbook  # pylint: disable=g-import-not-at-top

        return np.asarray(PIL.Image.open(cbook.get_sample_data(f"{name}.jpg", asfileobj=False)))
    image = getattr(skimage.data, name)()
    return image[0] if isinstance(image, tuple) else image  # stereo: (left, right, disparity)


def load_photo(name: str) -> np.ndarray:
    """A bundled photo as uint8 RGB, resized so its short side is SHORT_SIDE."""
    image = np.asarray(_bundled(name))
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    pil = PIL.Image.fromarray(image[..., :3])
    scale = SHORT_SIDE / min(pil.size)
    size = (round(pil.width * scale), round(pil.height * scale))
    return np.asarray(pil.resize(size, PIL.Image.Resampling.LANCZOS))


def _centre(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


def _png(image: np.ndarray) -> bytes:
    """Lossless PNG bytes; the lowest compression level keeps the build fast."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _random_crops(image: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """LARGE_TEST_CROPS crops of LARGE_TEST_CROP px at fixed random places."""
    rng = np.random.default_rng(name_key("test_crop", name))
    size, (h, w) = LARGE_TEST_CROP, image.shape[:2]
    crops = {}
    for i in range(LARGE_TEST_CROPS):
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        crops[f"{name}_c{i}"] = image[top : top + size, left : left + size]
    return crops


def _photos(large: bool) -> dict[str, dict[str, np.ndarray]]:
    """Split -> image name -> uint8 RGB image."""
    if not large:
        return {
            "train": {n: load_photo(n) for n in TRAIN_IMAGES},
            "test": {n: _centre(load_photo(n), TEST_CROP) for n in TEST_IMAGES},
        }
    test = {}
    for name in LARGE_TEST_IMAGES:
        test.update(_random_crops(load_photo(name), name))
    return {"train": {n: load_photo(n) for n in LARGE_TRAIN_IMAGES}, "test": test}


def examples(large: bool = False) -> dict[str, dict[str, list[Example]]]:
    """Dataset name -> split -> examples, with PNG-encoded images.

    `large` gives the `synthetic_large` flavour (see the module docstring).
    """
    photos = _photos(large)
    clean_name, paired_name = DATASETS[large]
    encoded = {split: {n: _png(img) for n, img in imgs.items()} for split, imgs in photos.items()}
    clean = {split: [Example(n, png) for n, png in pngs.items()] for split, pngs in encoded.items()}
    paired = {}
    for task, synthesise in SYNTHESISERS.items():
        for split, imgs in photos.items():
            variants = TRAIN_VARIANTS if split == "train" else 1
            paired[f"{split}_{task}"] = [
                Example(
                    f"{n}_{v}",
                    encoded[split][n],
                    _png(synthesise(img, np.random.default_rng(name_key(task, n, v)))),
                )
                for n, img in imgs.items()
                for v in range(variants)
            ]
    return {clean_name: clean, paired_name: paired}


def is_built(data_dir: str, large: bool = False) -> bool:
    """Whether both synthetic datasets (of the flavour) exist under `data_dir`."""
    return all(builders.splits(data_dir, name) for name in DATASETS[large])


def build(data_dir: str, overwrite: bool = True, large: bool = False) -> None:
    """Builds both synthetic datasets into `data_dir` (seconds, offline)."""
    for name, splits in examples(large).items():
        builders.build(name, splits, data_dir, overwrite=overwrite, quiet=True)


def ensure_built(data_dir: str, large: bool = False) -> None:
    """Builds the synthetic datasets unless they are already there.

    Several processes (hosts sharing a disk) may call this at once: each
    builds privately, and the first to finish wins; the build is deterministic.
    """
    if not is_built(data_dir, large):
        logging.info("Building the synthetic dataset in %s (seconds).", data_dir)
        build(data_dir, overwrite=False, large=large)
