"""hair_jax.metrics: PSNR (jnp and numpy) and SSIM on [0, 1] images."""

import numpy as np

from hair_jax import metrics


def test_psnr_matches_formula_and_skimage():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    noisy = np.clip(clean + 0.05 * rng.normal(size=clean.shape), 0, 1)
    noisy = noisy.astype(np.float32)
    got = np.asarray(metrics.psnr(noisy, clean))
    mse = ((noisy - clean) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(got, 10 * np.log10(1 / mse), rtol=1e-5)
    np.testing.assert_allclose(metrics.psnr_np(noisy[0], clean[0]), got[0], rtol=1e-5)


def test_psnr_clips_the_restored_image():
    clean = np.ones((4, 4, 3), np.float32)
    # Values above 1 are clipped, so they cost nothing.
    assert metrics.psnr_np(clean + 0.5, clean) > 90
    assert float(metrics.psnr(clean + 0.5, clean)) >= 99


def test_ssim_identity_and_degradation():
    rng = np.random.default_rng(1)
    clean = rng.uniform(0, 1, (16, 16, 3))
    assert metrics.ssim_np(clean, clean) == 1.0
    assert metrics.ssim_np(clean * 0.5, clean) < 1.0
