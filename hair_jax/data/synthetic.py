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


def load_photo(name: str) -> np.ndarray:
    """A bundled photo as uint8 RGB, resized so its short side is SHORT_SIDE."""
    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity)
        image = image[0]
    pil = PIL.Image.fromarray(np.asarray(image)[..., :3])
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


def examples() -> dict[str, dict[str, list[Example]]]:
    """Dataset name -> split -> examples, with PNG-encoded images."""
    photos = {
        "train": {n: load_photo(n) for n in TRAIN_IMAGES},
        "test": {n: _centre(load_photo(n), TEST_CROP) for n in TEST_IMAGES},
    }
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
    return {"synthetic_clean": clean, "synthetic": paired}


def is_built(data_dir: str) -> bool:
    """Whether both synthetic datasets exist under `data_dir`."""
    return all(builders.splits(data_dir, name) for name in ("synthetic_clean", "synthetic"))


def build(data_dir: str, overwrite: bool = True) -> None:
    """Builds both synthetic datasets into `data_dir` (a few seconds, offline)."""
    for name, splits in examples().items():
        builders.build(name, splits, data_dir, overwrite=overwrite, quiet=True)


def ensure_built(data_dir: str) -> None:
    """Builds the synthetic datasets unless they are already there.

    Several processes (hosts sharing a disk) may call this at once: each
    builds privately, and the first to finish wins; the build is deterministic.
    """
    if not is_built(data_dir):
        logging.info("Building the synthetic dataset in %s (seconds).", data_dir)
        build(data_dir, overwrite=False)
