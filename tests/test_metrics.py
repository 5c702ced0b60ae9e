"""hair_jax.evaluation.metrics: JAX PSNR/SSIM equal to scikit-image's (float64) to 1e-4."""

import jax
import numpy as np
import pytest
import skimage.data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hair_jax.evaluation import metrics

TOL = 1e-4


def _y(rgb):
    """BT.601 luma in float64, as common restoration code computes it."""
    return 16 / 255 + rgb @ np.array([65.481, 128.553, 24.966]) / 255


def _sk(restored, clean, y_channel=False):
    """scikit-image's (PSNR, SSIM) in float64, restored clipped as the protocol does."""
    restored = np.clip(np.asarray(restored, np.float64), 0, 1)
    clean = np.asarray(clean, np.float64)
    if y_channel:
        restored, clean = _y(restored), _y(clean)
        kw = {}
    else:
        kw = {"channel_axis": -1}
    return (
        peak_signal_noise_ratio(clean, restored, data_range=1),
        structural_similarity(clean, restored, data_range=1, **kw),
    )


def _noisy(clean, sigma, seed):
    rng = np.random.default_rng(seed)
    return np.clip(clean + sigma * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("y_channel", [False, True])
def test_random_images_batched_and_unbatched(y_channel):
    rng = np.random.default_rng(0)
    clean = rng.uniform(0, 1, (3, 23, 30, 3)).astype(np.float32)
    # Different degradation strengths per image, some values out of range.
    restored = clean + np.array([0.02, 0.1, 0.4])[:, None, None, None] * rng.normal(
        size=clean.shape
    )
    restored = restored.astype(np.float32)
    batched_psnr = np.asarray(metrics.psnr(restored, clean, y_channel=y_channel))
    batched_ssim = np.asarray(metrics.ssim(restored, clean, y_channel=y_channel))
    assert batched_psnr.shape == batched_ssim.shape == (3,)
    for i in range(3):
        want_psnr, want_ssim = _sk(restored[i], clean[i], y_channel)
        assert abs(batched_psnr[i] - want_psnr) < TOL
        assert abs(batched_ssim[i] - want_ssim) < TOL
    # One image [H, W, C] gives a scalar, the same as in the batch.
    one_psnr = metrics.psnr(restored[1], clean[1], y_channel=y_channel)
    one_ssim = metrics.ssim(restored[1], clean[1], y_channel=y_channel)
    assert one_psnr.shape == one_ssim.shape == ()
    np.testing.assert_allclose([one_psnr, one_ssim], [batched_psnr[1], batched_ssim[1]], rtol=1e-6)


@pytest.mark.parametrize("name,sigma", [("astronaut", 0.01), ("coffee", 0.05), ("chelsea", 0.2)])
def test_real_photos_match_skimage_in_float64(name, sigma):
    clean = getattr(skimage.data, name)().astype(np.float32) / 255  # up to 400x600
    batch = _noisy(clean, sigma, 0)[None]
    psnr = jax.jit(metrics.psnr, static_argnames="y_channel")
    ssim = jax.jit(metrics.ssim, static_argnames="y_channel")
    for y_channel in (False, True):
        got_psnr = np.asarray(psnr(batch, clean[None], y_channel=y_channel))
        got_ssim = np.asarray(ssim(batch, clean[None], y_channel=y_channel))
        for i, restored in enumerate(batch):
            want_psnr, want_ssim = _sk(restored, clean, y_channel)
            np.testing.assert_allclose(got_psnr[i], want_psnr, atol=TOL, rtol=0)
            np.testing.assert_allclose(got_ssim[i], want_ssim, atol=TOL, rtol=0)


def test_y_channel_formula():
    black, white = np.zeros((1, 1, 3), np.float32), np.ones((1, 1, 3), np.float32)
    np.testing.assert_allclose(np.asarray(metrics.rgb_to_y(black)), [[[16 / 255]]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(metrics.rgb_to_y(white)), [[[235 / 255]]], rtol=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        metrics.rgb_to_y(np.zeros((8, 8, 1), np.float32))


def test_identical_images_and_clipping():
    clean = np.full((8, 8, 3), 0.5, np.float32)
    assert float(metrics.psnr(clean, clean)) == pytest.approx(100.0)  # eps floor, not inf
    assert float(metrics.ssim(clean, clean)) == pytest.approx(1.0, abs=1e-6)
    ones = np.ones((8, 8, 3), np.float32)
    # The restored image is clipped to [0, 1]: values above 1 cost nothing.
    assert float(metrics.psnr(ones + 0.5, ones)) == pytest.approx(100.0)
    assert float(metrics.ssim(ones * 0.5, ones)) < 1.0


def test_ssim_needs_7x7():
    with pytest.raises(ValueError, match="at least 7x7"):
        metrics.ssim(np.zeros((6, 9, 3), np.float32), np.zeros((6, 9, 3), np.float32))
