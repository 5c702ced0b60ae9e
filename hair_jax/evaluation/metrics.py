"""PSNR and SSIM in JAX, equal to scikit-image's on images in [0, 1].

Both functions are jit-able and take one image [H, W, C] or a batch
[B, H, W, C]; they return one value per image. They are the evaluation
metrics of the paper's protocol (its test.py calls scikit-image's
`peak_signal_noise_ratio` and `structural_similarity` with data_range 1 and
`channel_axis`), computed on the device in float32. Against scikit-image in
float64 they agree to 1e-4 (tests/test_metrics.py checks random images and
photos).

`y_channel=True` measures the ITU-R BT.601 luma of common restoration code
instead, Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255 with RGB in
[0, 1] (so Y lies in [16/255, 235/255]), still with data range 1.

Both images are clipped to [0, 1] first, as the reference's evaluation does;
for images already in range this changes nothing.
"""

import jax.numpy as jnp

# scikit-image's SSIM defaults: 7x7 uniform window, K1, K2, and the sample
# covariance (N / (N - 1)) of the window's N = 49 pixels.
SSIM_WINDOW = 7
_K1, _K2 = 0.01, 0.03
_BT601 = (65.481 / 255.0, 128.553 / 255.0, 24.966 / 255.0)


def rgb_to_y(images):
    """ITU-R BT.601 luma of RGB images in [0, 1]: [..., 3] -> [..., 1]."""
    if images.shape[-1] != 3:
        raise ValueError(f"the Y channel needs RGB images [..., 3], got shape {images.shape}")
    # A weighted sum, not a matmul: matmuls may run at reduced precision on
    # accelerators, which would cost more than the 1e-4 this module promises.
    r, g, b = images[..., 0:1], images[..., 1:2], images[..., 2:3]
    return 16.0 / 255.0 + r * _BT601[0] + g * _BT601[1] + b * _BT601[2]


def _prepare(images, y_channel):
    images = jnp.clip(jnp.asarray(images, jnp.float32), 0.0, 1.0)
    if images.ndim not in (3, 4):
        raise ValueError(f"expected [H, W, C] or [B, H, W, C] images, got shape {images.shape}")
    return rgb_to_y(images) if y_channel else images


def _mean_hwc(x):
    """Mean over the last three axes, in two stages for float32 accuracy."""
    return jnp.mean(jnp.mean(x, axis=(-2, -1)), axis=-1)


def psnr(restored, clean, *, y_channel=False, eps=1e-10):
    """Peak signal-to-noise ratio in dB, data range 1.

    Equals `skimage.metrics.peak_signal_noise_ratio(clean, restored,
    data_range=1)` for images in [0, 1], except that identical images give
    `-10 log10(eps)` (100 dB) instead of inf, so means over a batch stay finite.

    Args:
      restored: predicted images [H, W, C] or [B, H, W, C], any float dtype.
      clean: ground-truth images of the same shape.
      y_channel: measure the BT.601 luma (Y) instead of RGB (C must be 3).
      eps: floor on the mean squared error.

    Returns:
      float32 scalar, or [B] for batches.
    """
    restored, clean = _prepare(restored, y_channel), _prepare(clean, y_channel)
    mse = _mean_hwc((restored - clean) ** 2)
    return -10.0 * jnp.log10(jnp.maximum(mse, eps))


def _box_mean(x):
    """Means over every full 7x7 window: [..., H, W, C] -> [..., H-6, W-6, C]."""
    n, (h, w) = SSIM_WINDOW, x.shape[-3:-1]
    rows = sum(x[..., i : h - n + 1 + i, :, :] for i in range(n))
    return sum(rows[..., j : w - n + 1 + j, :] for j in range(n)) / (n * n)


def ssim(restored, clean, *, y_channel=False):
    """Structural similarity, scikit-image's defaults, data range 1.

    Equals `skimage.metrics.structural_similarity(clean, restored,
    data_range=1, channel_axis=-1)`: per channel, the SSIM map from 7x7
    uniform-window means and sample (co)variances, averaged over the pixels
    whose window lies inside the image (scikit-image filters the whole image,
    then crops 3 pixels off every side before the mean; this computes only
    those pixels), then over channels.

    Args:
      restored: predicted images [H, W, C] or [B, H, W, C], H, W >= 7.
      clean: ground-truth images of the same shape.
      y_channel: measure the BT.601 luma (Y) instead of RGB (C must be 3).

    Returns:
      float32 scalar, or [B] for batches.
    """
    x, y = _prepare(restored, y_channel), _prepare(clean, y_channel)
    if min(x.shape[-3:-1]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least 7x7 pixels, got shape {x.shape}")
    # Variances are shift invariant: centring on 0.5 keeps E[x^2] - E[x]^2
    # from cancelling badly in float32; the means are shifted back.
    x, y = x - 0.5, y - 0.5
    ux, uy = _box_mean(x), _box_mean(y)
    cov_norm = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1.0)
    vx = cov_norm * (_box_mean(x * x) - ux * ux)
    vy = cov_norm * (_box_mean(y * y) - uy * uy)
    vxy = cov_norm * (_box_mean(x * y) - ux * uy)
    ux, uy = ux + 0.5, uy + 0.5
    c1, c2 = _K1**2, _K2**2  # (K * data_range)^2 with data_range 1
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return _mean_hwc(s)
