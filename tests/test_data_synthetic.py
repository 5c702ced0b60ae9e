"""The embedded synthetic set: offline build, degradation strength, loaders."""

import os
import socket

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from hair_jax import data
from hair_jax.data import builders, synthetic

# PSNR (dB) of degraded vs clean over all stored pairs: (min, max, mean range).
# Every degradation changes the image visibly (well under 30 dB) without
# wiping it out; the means separate mild (blur, rain) from strong (haze, dark).
PSNR_RANGES = {
    "derain": (12.0, 28.0, (18.0, 23.0)),
    "dehaze": (6.0, 21.0, (10.0, 15.5)),
    "deblur": (15.0, 30.0, (20.0, 26.0)),
    "lowlight": (4.0, 22.0, (7.0, 12.5)),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tfds"))

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        synthetic.ensure_built(out)
    return out


def _cfg(data_dir, five=False):
    cfg = data.default_config()
    cfg.data_dir, cfg.synthetic_five_task, cfg.num_threads = data_dir, five, 2
    return cfg


def test_builds_offline_with_a_fixed_split_by_image(data_dir):
    assert builders.splits(data_dir, "synthetic_clean") == {"train": 6, "test": 2}
    paired = builders.splits(data_dir, "synthetic")
    assert paired == {
        f"{split}_{task}": 24 if split == "train" else 2
        for task in synthetic.PAIRED_TASKS
        for split in ("train", "test")
    }
    test = builders.data_source(data_dir, "synthetic_clean", "test")
    train = builders.data_source(data_dir, "synthetic_clean", "train")
    test_names = {test[i]["name"].decode() for i in range(len(test))}
    train_names = {train[i]["name"].decode() for i in range(len(train))}
    assert test_names == {"astronaut", "coffee"}
    assert train_names.isdisjoint(test_names) and len(train_names) == 6
    assert min(train[0]["clean"].shape[:2]) == synthetic.SHORT_SIDE


@pytest.mark.parametrize("task", sorted(PSNR_RANGES))
def test_each_degradation_visibly_changes_the_image(data_dir, task):
    low, high, (mean_low, mean_high) = PSNR_RANGES[task]
    values = []
    for split in ("train", "test"):
        source = builders.data_source(data_dir, "synthetic", f"{split}_{task}")
        for i in range(len(source)):
            r = source[i]
            values.append(peak_signal_noise_ratio(r["clean"], r["degraded"]))
    assert len(values) == 26
    assert low <= min(values) and max(values) <= high, (min(values), max(values))
    assert mean_low <= np.mean(values) <= mean_high, np.mean(values)


def test_noise_test_sets_have_the_expected_psnr(data_dir):
    sets = data.load_test_sets(_cfg(data_dir))
    for sigma in (15, 25, 50):
        for image in sets[f"synthetic_denoise_{sigma}"]:
            psnr = peak_signal_noise_ratio(image.clean, image.degraded, data_range=1)
            # 20 log10(255 / sigma), raised a little where clipping cuts the noise.
            expected = 20 * np.log10(255 / sigma)
            assert expected - 0.5 <= psnr <= expected + 1.5, (sigma, image.name, psnr)


def test_test_sets_are_small_and_cover_the_tasks(data_dir):
    three = data.load_test_sets(_cfg(data_dir))
    assert sorted(three) == sorted(f"synthetic_{t}" for t in data.TASKS[:5])
    five = data.load_test_sets(_cfg(data_dir, five=True))
    assert sorted(five) == sorted(f"synthetic_{t}" for t in data.TASKS)
    for name, images in five.items():
        assert len(images) == 2
        for image in images:
            assert image.degraded.shape == image.clean.shape == (192, 192, 3)
            assert image.task == name[len("synthetic_") :]


def test_train_loader_uses_the_built_set_with_small_patches(data_dir):
    stamp = os.path.getmtime(builders.dataset_dir(data_dir, "synthetic"))
    loader = data.make_train_loader(
        _cfg(data_dir, five=True),
        global_batch_size=8,
        patch_size=32,
        seed=0,
        process_index=0,
        process_count=1,
    )
    assert os.path.getmtime(builders.dataset_dir(data_dir, "synthetic")) == stamp
    # 6 clean photos x 3 sigmas + 24 pairs x 4 paired tasks.
    assert loader.examples_per_epoch == 18 + 96
    tasks = np.concatenate([next(loader)["task"] for _ in range(4)])
    assert tasks.shape == (32,) and set(tasks) <= set(range(7))
    counts = np.bincount(
        np.concatenate([loader.batch_entries(k)[:, 2] for k in range(0, 114 * 4 // 8)]), minlength=7
    )
    assert counts.tolist() == [24, 24, 24, 96, 96, 96, 96]  # 4 epochs exactly
