"""Tiny generated image folders in the reference layout, for the data tests."""

from __future__ import annotations

import os

import numpy as np
import PIL.Image


def image(h: int, w: int, seed: int) -> np.ndarray:
    """A random uint8 RGB image, different for every seed."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: str, array: np.ndarray, mode: str | None = None) -> np.ndarray:
    """Writes `array` (optionally converted to a PIL mode) and returns it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pil = PIL.Image.fromarray(array)
    if mode:
        pil = pil.convert(mode)
    pil.save(path)
    return array


def pair(degraded_path: str, clean_path: str, h: int, w: int, seed: int) -> None:
    """A degraded/clean pair where degraded = 255 - clean (PNG, lossless)."""
    clean = save(clean_path, image(h, w, seed))
    save(degraded_path, 255 - clean)


def reference_layout(root: str) -> tuple[str, str]:
    """Writes every dataset in the reference layout under `root`.

    Contents (all images 48x48 unless stated):
      Train/Denoise: 3 RGB PNGs and one grayscale BMP (as WED/BSD400 mix).
      Train/Derain: rainy/rain-1,2.png <-> gt/norain-1,2.png.
      Train/Dehaze: synthetic/part1/0001_0.8_0.04.jpg, 0001_0.9_0.08.jpg,
        synthetic/part2/0002_0.8_0.04.jpg <-> original/0001.jpg, 0002.jpg.
      Train/Deblur: blur/GOPR01/000001.png, 000002.png <-> sharp/GOPR01/...
      Train/Lowlight: low/1.png <-> high/1.png.
      test/denoise/bsd68: 2 images of 50x70 (not multiples of 16); urban100: 1.
      test/derain/Rain100L: input/rain-1.png <-> target/norain-1.png and the
        same-name pair input/x.png <-> target/x.png.
      test/dehaze: input/0003_0.8_0.2.png <-> target/0003.png.
      test/deblur/GoPro and test/lowlight/LOL: one same-name pair each.

    Returns:
      (train_root, test_root).
    """
    train, test = os.path.join(root, "Train"), os.path.join(root, "test")
    j = os.path.join
    for i in range(3):
        save(j(train, "Denoise", f"img{i}.png"), image(48, 48, i))
    save(j(train, "Denoise", "wed.bmp"), image(48, 48, 3), mode="L")
    for n in (1, 2):
        pair(
            j(train, "Derain/rainy", f"rain-{n}.png"),
            j(train, "Derain/gt", f"norain-{n}.png"),
            48,
            48,
            10 + n,
        )
    for n in (1, 2):
        save(j(train, "Dehaze/original", f"000{n}.jpg"), image(48, 48, 20 + n))
    for i, name in enumerate(("part1/0001_0.8_0.04", "part1/0001_0.9_0.08", "part2/0002_0.8_0.04")):
        save(j(train, "Dehaze/synthetic", name + ".jpg"), image(48, 48, 30 + i))
    for n in (1, 2):
        pair(
            j(train, "Deblur/blur/GOPR01", f"00000{n}.png"),
            j(train, "Deblur/sharp/GOPR01", f"00000{n}.png"),
            48,
            48,
            40 + n,
        )
    pair(j(train, "Lowlight/low/1.png"), j(train, "Lowlight/high/1.png"), 48, 48, 50)
    for i in range(2):
        save(j(test, "denoise/bsd68", f"{i}.png"), image(50, 70, 60 + i))
    save(j(test, "denoise/urban100", "u.png"), image(48, 48, 62))
    pair(
        j(test, "derain/Rain100L/input/rain-1.png"),
        j(test, "derain/Rain100L/target/norain-1.png"),
        48,
        48,
        70,
    )
    pair(
        j(test, "derain/Rain100L/input/x.png"), j(test, "derain/Rain100L/target/x.png"), 48, 48, 71
    )
    pair(j(test, "dehaze/input/0003_0.8_0.2.png"), j(test, "dehaze/target/0003.png"), 48, 48, 80)
    pair(j(test, "deblur/GoPro/input/a.png"), j(test, "deblur/GoPro/target/a.png"), 48, 48, 90)
    pair(j(test, "lowlight/LOL/input/1.png"), j(test, "lowlight/LOL/target/1.png"), 48, 48, 91)
    return train, test


def fake_test_sets(size: int = 64) -> dict:
    """Two random size x size test pairs for each of denoise_15, derain and dehaze."""
    from hair_jax.data.pipeline import TestImage  # pylint: disable=g-import-not-at-top

    rng = np.random.default_rng(0)
    sets = {}
    for task in ("denoise_15", "derain", "dehaze"):
        images = [rng.random((2, size, size, 3), np.float32) for _ in range(2)]
        sets[task] = [TestImage(f"{task}{i}", task, d, c) for i, (d, c) in enumerate(images)]
    return sets
