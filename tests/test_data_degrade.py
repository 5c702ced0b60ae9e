"""Degradation synthesis and the flip/rotation augmentation."""

import numpy as np
import pytest

from hair_jax.data import degrade


def test_flip_rot_enumerates_the_eight_symmetries():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    outs = [degrade.flip_rot(image, m) for m in range(8)]
    assert np.array_equal(outs[0], image)
    assert len({o.tobytes() for o in outs}) == 8
    assert np.array_equal(outs[1], image[::-1])
    assert np.array_equal(outs[2], np.rot90(image))
    with pytest.raises(ValueError, match="mode must be in 0..7, got 8"):
        degrade.flip_rot(image, 8)


def test_crop_to_multiple_is_centred_like_the_reference():
    image = np.arange(50 * 70).reshape(50, 70, 1)
    out = degrade.crop_to_multiple(image, 16)
    assert out.shape == (48, 64, 1)
    np.testing.assert_array_equal(out, image[1:49, 3:67])


def test_name_keys_are_stable_across_processes():
    # CRC32 values, not Python's per-process string hash.
    assert degrade.name_key("denoise_25", "img", 3) == [3569335409, 3150104748, 3]


@pytest.mark.parametrize("task", sorted(degrade.SYNTHESISERS))
def test_synthesisers_are_deterministic_per_key(task):
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    synth = degrade.SYNTHESISERS[task]
    a = synth(image, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == image.shape
    np.testing.assert_array_equal(a, synth(image, np.random.default_rng(1)))
    assert not np.array_equal(a, synth(image, np.random.default_rng(2)))


def test_haze_follows_the_scattering_model_ordering():
    # A black scene under haze shows the airlight: brighter where deeper (top).
    hazy = degrade.add_haze(np.zeros((64, 64, 3), np.uint8), np.random.default_rng(0))
    rows = hazy[..., 0].mean(axis=1)
    assert rows[:8].mean() > rows[-8:].mean() + 50
    assert hazy.max() <= 0.95 * 255 + 1


def test_low_light_darkens():
    image = np.full((32, 32, 3), 200, np.uint8)
    dark = degrade.darken(image, np.random.default_rng(0))
    assert dark.mean() < 0.35 * 200
