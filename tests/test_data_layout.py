"""Folder layout, pairing rules and the data configuration."""

import os

import data_helpers
import pytest

from hair_jax import data
from hair_jax.data.layout import (
    DATASETS_BY_NAME,
    DataError,
    clean_candidates,
    default_folders,
    resolve_folders,
    split_examples,
)


@pytest.mark.parametrize(
    "pairing,degraded,expected",
    [
        ("rain", "rain-12.png", ["norain-12", "rain-12"]),
        ("rain", "sub/rain-3.jpg", ["sub/norain-3", "sub/rain-3"]),
        ("rain", "0001.png", ["0001"]),  # same-name ground truth
        ("haze", os.path.join("part3", "0025_0.8_0.04.jpg"), ["0025"]),
        ("haze", "1400_0.9_0.2.png", ["1400"]),
        ("same", os.path.join("GOPR0384_11_00", "000001.png"), ["GOPR0384_11_00/000001"]),
    ],
)
def test_clean_candidates(pairing, degraded, expected):
    assert clean_candidates(pairing, degraded) == expected


def test_default_layout_is_the_reference_one():
    folders = default_folders("data/Train", "data/test")
    assert folders["rain100l_train_degraded"] == "data/Train/Derain/rainy"
    assert folders["rain100l_train_clean"] == "data/Train/Derain/gt"
    assert folders["reside_train_degraded"] == "data/Train/Dehaze/synthetic"
    assert folders["reside_train_clean"] == "data/Train/Dehaze/original"
    assert folders["denoise_clean_train_clean"] == "data/Train/Denoise"
    assert folders["bsd68_test_clean"] == "data/test/denoise/bsd68"
    assert folders["rain100l_test_degraded"] == "data/test/derain/Rain100L/input"
    assert folders["reside_test_clean"] == "data/test/dehaze/target"
    assert len(folders) == 3 + 2 * 8  # 3 clean-only sets, 4 paired sets x 2 splits
    assert set(data.default_config().folders) == set(folders)


def test_pairing_with_differing_extensions_and_duplicates(tmp_path):
    spec = DATASETS_BY_NAME["reside"]
    folders = resolve_folders(str(tmp_path), str(tmp_path / "t"))
    hazy, clean = folders["reside_train_degraded"], folders["reside_train_clean"]
    data_helpers.save(os.path.join(hazy, "p/0007_1_0.1.jpg"), data_helpers.image(8, 8, 0))
    data_helpers.save(os.path.join(clean, "0007.png"), data_helpers.image(8, 8, 1))
    [ex] = split_examples(spec, "train", folders)
    assert (ex.name, ex.clean, ex.degraded) == (
        "p/0007_1_0.1",
        os.path.join(clean, "0007.png"),
        os.path.join(hazy, "p/0007_1_0.1.jpg"),
    )
    data_helpers.save(os.path.join(clean, "0007.jpg"), data_helpers.image(8, 8, 1))
    with pytest.raises(
        DataError, match="two clean images with one name in .*: 0007.jpg and 0007.png"
    ):
        split_examples(spec, "train", folders)


def test_config_tasks_and_test_sets():
    cfg = data.default_config()
    assert cfg.name == "synthetic" and cfg.train_root == "data/Train"
    assert data.tasks_of(cfg) == data.TASKS[:5]
    cfg.synthetic_five_task = True
    assert data.tasks_of(cfg) == data.TASKS
    cfg.name = "all_in_one_5d"
    assert list(data.test_sets_of(cfg)) == ["sots", "rain100l", "bsd68_25", "gopro", "lol"]
    cfg.name = "all_in_one_3d"
    assert data.tasks_of(cfg) == data.TASKS[:5]
    assert list(data.test_sets_of(cfg)) == [
        "sots",
        "rain100l",
        "bsd68_15",
        "bsd68_25",
        "bsd68_50",
        "urban100_15",
        "urban100_25",
        "urban100_50",
    ]
    cfg.tasks = ("derain", "denoise_25")
    assert data.tasks_of(cfg) == ("denoise_25", "derain")  # TASKS order
    cfg.tasks = ("dehaze", "sharpen")
    with pytest.raises(ValueError, match="unknown tasks \\['sharpen'\\]"):
        data.tasks_of(cfg)
    cfg.name = "imagenet"
    with pytest.raises(ValueError, match="unknown data name 'imagenet'"):
        data.tasks_of(cfg)


def test_data_dir_defaults_to_the_environment(monkeypatch):
    monkeypatch.setenv("HAIR_DATA_DIR", "/somewhere/tfds")
    assert data.default_config().data_dir == "/somewhere/tfds"
    monkeypatch.delenv("HAIR_DATA_DIR")
    assert data.default_config().data_dir == os.path.expanduser("~/tensorflow_datasets")
