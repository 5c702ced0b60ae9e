"""Full-image evaluation: one row of PSNR/SSIM numbers per test set.

Kept deliberately small; the paper's protocol (centre crop to a multiple of
16, batch 1, clip, RGB metrics) lives here so train.py and eval tools share it.
"""

import dataclasses

from flax import nnx
import jax
import numpy as np

from hair_jax import metrics
from hair_jax.data.degrade import crop_to_multiple


@dataclasses.dataclass(frozen=True)
class Row:
    """Mean metrics of one test set."""

    name: str
    num_images: int
    degraded_psnr: float
    restored_psnr: float
    degraded_ssim: float
    restored_ssim: float


def evaluate(model, test_sets, *, max_images=None, multiple=16):
    """Runs `model` on every image of every test set (batch 1, full image).

    Args:
      model: callable mapping f32 [1, H, W, 3] in [0, 1] to [1, H, W, 3], e.g.
        an NNX model; it is wrapped in `jax.jit` (one compile per image size).
      test_sets: dict name -> sequence of objects with `.degraded` and `.clean`
        HxWx3 float arrays (`hair_jax.data.TestImage`).
      max_images: evaluate at most this many images per set (None: all).
      multiple: centre-crop both images to a multiple of this size.

    Returns:
      A list of `Row`, one per test set, in the order of `test_sets`.
    """
    graphdef, state = nnx.split(model)
    # Weights as arguments, not closed-over constants, keep compiles small.
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    apply = lambda x: forward(state, x)
    rows = []
    for name, images in test_sets.items():
        images = list(images)[:max_images]
        scores = np.array([_score(apply, im, multiple) for im in images])
        rows.append(Row(name, len(images), *scores.mean(axis=0).tolist()))
    return rows


def _score(apply, image, multiple):
    degraded = crop_to_multiple(np.asarray(image.degraded, np.float32), multiple)
    clean = crop_to_multiple(np.asarray(image.clean, np.float32), multiple)
    restored = np.asarray(apply(degraded[None]))[0]
    return (
        metrics.psnr_np(degraded, clean),
        metrics.psnr_np(restored, clean),
        metrics.ssim_np(degraded, clean),
        metrics.ssim_np(restored, clean),
    )


def format_table(rows):
    """Formats `rows` as a fixed-width text table (PSNR dB / SSIM)."""
    header = (
        f"{'test set':<24} {'n':>4} {'degraded PSNR':>14} "
        f"{'restored PSNR':>14} {'gain':>7} {'deg SSIM':>9} {'res SSIM':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.name:<24} {r.num_images:>4} {r.degraded_psnr:>14.2f} "
            f"{r.restored_psnr:>14.2f} {r.restored_psnr - r.degraded_psnr:>+7.2f} "
            f"{r.degraded_ssim:>9.4f} {r.restored_ssim:>9.4f}"
        )
    return "\n".join(lines)
