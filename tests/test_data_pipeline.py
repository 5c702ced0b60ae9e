"""The all-in-one training stream and the test-set protocol."""

import io
import json

import data_helpers
import numpy as np
import PIL.Image
import pytest

from hair_jax import data
from hair_jax.data import builders
from hair_jax.data.config import TRAIN_SOURCES
from hair_jax.data.degrade import add_gaussian_noise, flip_rot, name_key
from hair_jax.data.layout import Example
from hair_jax.data.pipeline import make_train_example, mixture_index

GREY = 128


def _png(array):
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _pairs(n, seed, size=48):
    """n examples whose degraded image is 255 - clean."""
    out = []
    for i in range(n):
        clean = data_helpers.image(size, size, seed + i)
        out.append(Example(f"{seed + i}", _png(clean), _png(255 - clean)))
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tfds"))
    grey = np.full((64, 64, 3), GREY, np.uint8)
    builders.build(
        "denoise_clean", {"train": [Example(f"g{i}", _png(grey)) for i in range(4)]}, out
    )
    builders.build("rain100l", {"train": _pairs(2, 10), "test": _pairs(1, 20)}, out)
    builders.build("reside", {"train": _pairs(3, 30)}, out)
    builders.build(
        "bsd68",
        {"test": [Example(f"b{i}", _png(data_helpers.image(50, 70, i))) for i in range(2)]},
        out,
    )
    return out


def _cfg(data_dir, **overrides):
    cfg = data.default_config()
    cfg.name = "all_in_one_3d"
    cfg.data_dir = data_dir
    cfg.num_threads = 2
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def _loader(cfg, batch=16, patch=32, seed=0, index=0, count=1):
    return data.make_train_loader(
        cfg,
        global_batch_size=batch,
        patch_size=patch,
        seed=seed,
        process_index=index,
        process_count=count,
    )


WEIGHTED = {"derain": 0.05, "dehaze": 4.0}  # per epoch: 4, 4, 4, 12, 12 examples


def test_reference_proportions_per_epoch(data_dir):
    sizes = {("denoise_clean", "train"): 4, ("rain100l", "train"): 2, ("reside", "train"): 3}
    keys, entries = mixture_index(data.TASKS[:5], TRAIN_SOURCES["all_in_one_3d"], sizes)
    assert keys == list(sizes)
    # Each clean image once per sigma, Rain100L x120, OTS once.
    assert np.bincount(entries[:, 2]).tolist() == [4, 4, 4, 240, 3]
    assert np.bincount(entries[entries[:, 2] == 3, 1]).tolist() == [120, 120]
    assert _loader(_cfg(data_dir)).examples_per_epoch == 255


def test_fractional_weight_takes_a_fixed_subset():
    sizes = {("rain100l", "train"): 4}
    tasks, sources = ("derain",), TRAIN_SOURCES["all_in_one_3d"]
    _, entries = mixture_index(tasks, sources, sizes, {"derain": 1.5 / 120})
    assert len(entries) == 6  # 4 once, plus half of them again
    assert sorted(np.bincount(entries[:, 1]).tolist()) == [1, 1, 2, 2]
    assert len(mixture_index(tasks, sources, sizes, {"dehaze": 3.0})[1]) == 480
    with pytest.raises(ValueError, match="weights for unknown tasks: \\['sharpen'\\]"):
        mixture_index(tasks, sources, sizes, {"sharpen": 1.0})
    with pytest.raises(ValueError, match="weight of derain must be >= 0, got -1.0"):
        mixture_index(tasks, sources, sizes, {"derain": -1})


def test_weighted_mixture_proportions_over_many_draws(data_dir):
    loader = _loader(_cfg(data_dir, weights=WEIGHTED))
    assert loader.examples_per_epoch == 36
    tasks = np.concatenate([next(loader)["task"] for _ in range(36)])  # 16 epochs
    assert np.bincount(tasks).tolist() == [64, 64, 64, 192, 192]


def test_batches_have_the_contract_shapes_and_ranges(data_dir):
    batch = next(_loader(_cfg(data_dir, weights=WEIGHTED), batch=8, patch=48))
    assert {k: (v.shape, v.dtype.name) for k, v in batch.items()} == {
        "degraded": ((8, 48, 48, 3), "float32"),
        "clean": ((8, 48, 48, 3), "float32"),
        "task": ((8,), "int32"),
    }
    assert batch["degraded"].min() >= 0 and batch["degraded"].max() <= 1


def test_same_crop_and_flip_rotation_on_both_images(data_dir):
    loader = _loader(_cfg(data_dir, tasks=("derain", "dehaze")))
    for _ in range(4):
        batch = next(loader)
        total = np.round(batch["degraded"] * 255) + np.round(batch["clean"] * 255)
        np.testing.assert_array_equal(total, 255)  # degraded = 255 - clean, pixelwise


def test_every_non_identity_flip_rotation_is_drawn():
    image = np.arange(32 * 32 * 3, dtype=np.uint32).reshape(32, 32, 3).astype(np.uint8)
    image[..., 0] = np.arange(32)[:, None] * 8  # rows and columns distinguishable
    image[..., 1] = np.arange(32)[None, :] * 8
    modes = []
    for i in range(200):
        out = make_train_example(image, 255 - image, 3, 32, np.random.default_rng(i))
        clean = np.round(out["clean"] * 255).astype(np.uint8)
        matches = [m for m in range(8) if np.array_equal(flip_rot(image, m), clean)]
        assert len(matches) == 1
        modes.append(matches[0])
    assert sorted(set(modes)) == [1, 2, 3, 4, 5, 6, 7]


def _expected_noise_moments(sigma):
    """Mean and std of uint8(clip(GREY + sigma * z, 0, 255)) - GREY, z ~ N(0, 1)."""
    z = np.linspace(-10, 10, 400001)
    pdf = np.exp(-(z**2) / 2) / np.sqrt(2 * np.pi) * (z[1] - z[0])
    x = np.floor(np.clip(GREY + sigma * z, 0, 255)) - GREY
    mean = np.sum(x * pdf)
    return mean, np.sqrt(np.sum((x - mean) ** 2 * pdf))


def test_noise_statistics_per_sigma(data_dir):
    loader = _loader(_cfg(data_dir, tasks=("denoise_15", "denoise_25", "denoise_50")))
    diffs = {t: [] for t in range(3)}
    for _ in range(24):
        batch = next(loader)
        np.testing.assert_array_equal(np.round(batch["clean"] * 255), GREY)
        for b, task in enumerate(batch["task"]):
            diffs[int(task)].append(np.round(batch["degraded"][b] * 255) - GREY)
    for task, sigma in enumerate((15, 25, 50)):
        d = np.concatenate(diffs[task]).ravel()
        assert d.size == 128 * 32 * 32 * 3  # 128 of 384 examples per sigma
        mean, std = _expected_noise_moments(sigma)
        # Standard error of the mean is sigma / sqrt(n) < 0.1 grey levels.
        assert abs(d.mean() - mean) < 0.3, (sigma, d.mean(), mean)
        assert abs(d.std() / std - 1) < 0.01, (sigma, d.std(), std)
    assert -0.51 < _expected_noise_moments(15)[0] < -0.49  # truncation, as the reference


def test_deterministic_for_a_seed_whatever_the_threads(data_dir):
    a = _loader(_cfg(data_dir, weights=WEIGHTED, num_threads=1))
    b = _loader(_cfg(data_dir, weights=WEIGHTED, num_threads=4))
    c = _loader(_cfg(data_dir, weights=WEIGHTED), seed=1)
    for _ in range(3):
        x, y, z = next(a), next(b), next(c)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
        assert not np.array_equal(x["degraded"], z["degraded"])


def test_saved_state_restores_the_next_batches_mid_epoch(data_dir):
    cfg = _cfg(data_dir, weights=WEIGHTED)
    loader = _loader(cfg, batch=8)
    for _ in range(3):  # 24 of 36 examples: mid-epoch
        next(loader)
    state = json.loads(json.dumps(loader.get_state()))
    expected = [next(loader) for _ in range(4)]  # crosses into the next epoch
    restored = _loader(cfg, batch=8)
    restored.set_state(state)
    for want in expected:
        got = next(restored)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    with pytest.raises(ValueError, match="does not match this loader"):
        _loader(cfg, batch=8, seed=3).set_state(state)


def test_two_processes_are_disjoint_and_cover_the_data(data_dir):
    cfg = _cfg(data_dir, weights=WEIGHTED)
    single = _loader(cfg, batch=12)
    shards = [_loader(cfg, batch=12, index=i, count=2) for i in range(2)]
    rows = []
    for k in range(3):  # 3 x 12 = one epoch of 36
        whole, parts = next(single), [next(s) for s in shards]
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
        rows += [s.batch_entries(k) for s in shards]
    _, entries = mixture_index(
        data.TASKS[:5],
        TRAIN_SOURCES["all_in_one_3d"],
        {("denoise_clean", "train"): 4, ("rain100l", "train"): 2, ("reside", "train"): 3},
        WEIGHTED,
    )
    # Same multiset: every entry once, so no example is seen by both processes.
    assert sorted(map(tuple, np.concatenate(rows))) == sorted(map(tuple, entries))


def test_bad_batch_and_small_images_raise(data_dir):
    with pytest.raises(
        ValueError, match="global_batch_size 10 is not divisible by process_count 4"
    ):
        _loader(_cfg(data_dir), batch=10, count=4)
    with pytest.raises(
        ValueError,
        match="image 'tiny' is 16x32 after cropping to a multiple "
        "of 16, smaller than the 32x32 patch",
    ):
        make_train_example(
            np.zeros((20, 40, 3), np.uint8), None, 0, 32, np.random.default_rng(0), name="tiny"
        )
    with pytest.raises(FileNotFoundError, match="hair_gopro split 'train' not found"):
        _loader(_cfg(data_dir, name="all_in_one_5d"))


def test_test_sets_follow_the_paper_protocol(data_dir):
    sets = data.load_test_sets(_cfg(data_dir))
    # Only what is built: no SOTS or Urban100 here.
    assert sorted(sets) == ["bsd68_15", "bsd68_25", "bsd68_50", "rain100l"]
    rain = sets["rain100l"][0]
    assert (rain.name, rain.task, rain.degraded.shape) == ("20", "derain", (48, 48, 3))
    np.testing.assert_allclose(rain.degraded, 1 - rain.clean, atol=1e-6)
    again = data.load_test_sets(_cfg(data_dir, test_sets=("bsd68_25",)))["bsd68_25"]
    for i in (1, 0):  # another order, another process: the same noise
        image = sets["bsd68_25"][i]
        assert image.clean.shape == (48, 64, 3)  # 50x70 cropped to multiples of 16
        clean_u8 = data_helpers.image(50, 70, int(image.name[1:]))[1:49, 3:67]
        np.testing.assert_array_equal(np.round(image.clean * 255), clean_u8)
        noisy = add_gaussian_noise(
            clean_u8, 25, np.random.default_rng(name_key("denoise_25", image.name))
        )
        np.testing.assert_array_equal(np.round(image.degraded * 255), noisy)
        np.testing.assert_array_equal(again[i].degraded, image.degraded)
    assert not np.array_equal(sets["bsd68_15"][0].degraded, sets["bsd68_50"][0].degraded)


def test_process_defaults_come_from_jax(data_dir):
    import jax

    assert (jax.process_index(), jax.process_count()) == (0, 1)
    cfg = _cfg(data_dir, weights=WEIGHTED)
    default = data.make_train_loader(cfg, global_batch_size=4, patch_size=32, seed=0)
    explicit = _loader(cfg, batch=4)
    np.testing.assert_array_equal(next(default)["degraded"], next(explicit)["degraded"])
    with pytest.raises(ValueError, match="process_index 2 not in \\[0, 2\\)"):
        _loader(cfg, batch=4, index=2, count=2)
