"""Image-quality metrics on RGB images with values in [0, 1].

`psnr` is a jnp function usable inside jitted train steps (one value per
image). `psnr_np` and `ssim_np` are the evaluation metrics of the paper's
protocol: float RGB images, clipped to [0, 1], data_range 1, scikit-image
SSIM with its default 7x7 uniform window over the colour channel axis.
"""

import jax.numpy as jnp
import numpy as np
from skimage import metrics as skm


def psnr(restored, clean, *, eps=1e-10):
    """Per-image PSNR in dB of [..., H, W, C] arrays; `restored` is clipped.

    Args:
      restored: predicted images, any float dtype; clipped to [0, 1] first.
      clean: ground-truth images in [0, 1], same shape.
      eps: floor on the mean squared error, so identical images give a large
        finite value instead of inf.

    Returns:
      float32 array with the leading (batch) dimensions of the inputs.
    """
    restored = jnp.clip(restored.astype(jnp.float32), 0.0, 1.0)
    mse = jnp.mean((restored - clean.astype(jnp.float32)) ** 2, axis=(-3, -2, -1))
    return -10.0 * jnp.log10(jnp.maximum(mse, eps))


def psnr_np(restored, clean):
    """PSNR in dB of one HxWx3 image pair (numpy), `restored` clipped.

    Identical images give inf (skimage's convention), without a warning.
    """
    restored = np.clip(np.asarray(restored, np.float64), 0.0, 1.0)
    clean = np.asarray(clean, np.float64)
    with np.errstate(divide="ignore"):
        return float(skm.peak_signal_noise_ratio(clean, restored, data_range=1.0))


def ssim_np(restored, clean):
    """SSIM of one HxWx3 image pair (numpy), `restored` clipped."""
    restored = np.clip(np.asarray(restored, np.float64), 0.0, 1.0)
    clean = np.asarray(clean, np.float64)
    return float(skm.structural_similarity(clean, restored, data_range=1.0, channel_axis=-1))
