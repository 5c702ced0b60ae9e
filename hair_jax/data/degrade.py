"""Degradation synthesis and pair augmentation on uint8 NHWC-style images.

Every function takes a `np.random.Generator` so that callers decide where the
randomness comes from: the training stream seeds one per example from
(seed, global index) and the test sets one per (image name, strength), which
keeps every result independent of worker timing and evaluation order.

Images are uint8 arrays of shape (H, W, 3); outputs are uint8 of the same shape.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy import ndimage

# The denoising task names and their noise strengths (pixel units, 0-255).
NOISE_SIGMAS = {"denoise_15": 15.0, "denoise_25": 25.0, "denoise_50": 50.0}


def name_key(*parts: str | int) -> list[int]:
    """Turns names and integers into a stable seed for `np.random.default_rng`.

    Python's `hash` of a string changes per process, so strings go through
    CRC32 instead: the same name gives the same noise on every machine.
    """
    return [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]


def add_gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Adds white Gaussian noise as the reference does.

    The reference computes `clip(x + sigma * N(0, 1), 0, 255).astype(uint8)`,
    so values are truncated, not rounded: the noisy image is on average 0.5
    grey levels darker. The port keeps that, since the published numbers were
    trained and evaluated that way.

    Args:
      image: uint8 (H, W, C) clean image.
      sigma: noise standard deviation in grey levels (15, 25 or 50 in HAIR).
      rng: the source of the noise.

    Returns:
      The noisy uint8 image.
    """
    noise = rng.standard_normal(image.shape, dtype=np.float32)
    noisy = np.clip(image.astype(np.float32) + sigma * noise, 0, 255)
    return noisy.astype(np.uint8)


def flip_rot(image: np.ndarray, mode: int) -> np.ndarray:
    """Applies one of the 8 flip/rot90 symmetries (mode 0 is the identity).

    Mode m rotates by (m // 2) quarter turns after a vertical flip when m is
    odd, which enumerates the dihedral group once. Training draws m in 1..7
    as the reference does (it never leaves a pair untouched).
    """
    if not 0 <= mode < 8:
        raise ValueError(f"flip/rot mode must be in 0..7, got {mode}")
    if mode % 2:
        image = image[::-1]
    return np.ascontiguousarray(np.rot90(image, mode // 2))


def crop_to_multiple(image: np.ndarray, base: int = 16) -> np.ndarray:
    """Centre-crops height and width down to a multiple of `base`.

    The odd leftover pixel goes to the bottom/right, as in the reference.
    """
    h, w = image.shape[:2]
    top, left = (h % base) // 2, (w % base) // 2
    return image[top : top + h - h % base, left : left + w - w % base]


def _line_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A length x length kernel with ones on a centred line at `angle_deg`."""
    kernel = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    t = np.linspace(-c, c, 4 * length)
    a = np.deg2rad(angle_deg)
    rows = np.round(c - t * np.cos(a)).astype(int)
    cols = np.round(c + t * np.sin(a)).astype(int)
    kernel[rows, cols] = 1.0
    return kernel


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def add_rain(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Adds bright, roughly parallel rain streaks (a Rain100L-like look).

    Sparse random seeds are smeared along one direction near the vertical and
    screen-blended over the image, so streaks brighten without saturating dark
    regions to white.
    """
    h, w = image.shape[:2]
    density = rng.uniform(0.002, 0.006)
    seeds = (rng.random((h, w)) < density) * rng.uniform(0.5, 1.0, (h, w))
    kernel = _line_kernel(int(rng.integers(11, 25)), rng.uniform(-25, 25))
    streaks = ndimage.convolve(seeds.astype(np.float32), kernel, mode="wrap")
    streaks = np.clip(streaks, 0, 1) * rng.uniform(0.6, 0.9)
    x = image.astype(np.float32) / 255.0
    return _to_uint8(1.0 - (1.0 - x) * (1.0 - streaks[..., None]))


def smooth_depth(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth random depth map in [0, 1], farther towards the top.

    Outdoor scenes tend to recede towards the horizon, so a vertical ramp is
    mixed with bicubically upsampled 4x4 noise.
    """
    h, w = shape
    coarse = rng.random((4, 4))
    blobs = ndimage.zoom(coarse, (h / 4, w / 4), order=3, mode="nearest")[:h, :w]
    ramp = np.linspace(1.0, 0.0, h)[:, None]
    depth = 0.6 * ramp + 0.4 * blobs
    depth -= depth.min()
    return (depth / max(depth.max(), 1e-6)).astype(np.float32)


def add_haze(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hazes an image with the atmospheric scattering model.

    I = J * t + A * (1 - t) with transmission t = exp(-beta * depth), a smooth
    random depth map, scattering coefficient beta in [0.8, 2.0] and a grey
    atmospheric light A in [0.7, 0.95] (the ranges RESIDE's OTS uses for A).
    """
    depth = smooth_depth(image.shape[:2], rng)
    t = np.exp(-rng.uniform(0.8, 2.0) * depth)[..., None]
    airlight = rng.uniform(0.7, 0.95)
    x = image.astype(np.float32) / 255.0
    return _to_uint8(x * t + airlight * (1.0 - t))


def add_motion_blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blurs with a straight motion kernel of random length and direction."""
    kernel = _line_kernel(int(rng.integers(9, 22)), rng.uniform(0, 180))
    kernel /= kernel.sum()
    x = image.astype(np.float32) / 255.0
    out = np.stack(
        [ndimage.convolve(x[..., c], kernel, mode="reflect") for c in range(x.shape[-1])], axis=-1
    )
    return _to_uint8(out)


def darken(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Simulates a low-light capture: gamma, exposure drop and sensor noise.

    Gamma in [1.5, 2.5] crushes shadows more than highlights, exposure is
    scaled by [0.15, 0.35] and a little Gaussian read noise (sigma 1-3 grey
    levels) is added, roughly the look of LOL's low-light images.
    """
    x = image.astype(np.float32) / 255.0
    x = rng.uniform(0.15, 0.35) * x ** rng.uniform(1.5, 2.5)
    x = x + rng.uniform(1.0, 3.0) / 255.0 * rng.standard_normal(x.shape)
    return _to_uint8(x)


# Synthetic paired degradations by task name (noise is added on the fly).
SYNTHESISERS = {
    "derain": add_rain,
    "dehaze": add_haze,
    "deblur": add_motion_blur,
    "lowlight": darken,
}
