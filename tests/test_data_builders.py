"""Each TFDS builder on a generated folder in the reference layout."""

import os

import data_helpers
import numpy as np
import PIL.Image
import pytest

from hair_jax.data import builders, prepare
from hair_jax.data.layout import Example


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("layout")
    train, test = data_helpers.reference_layout(str(root))
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    code = prepare.main(["--train-root", train, "--test-root", test, "--data-dir", data_dir])
    assert code == 0
    return train, test, data_dir


def _records(data_dir, name, split):
    source = builders.data_source(data_dir, name, split)
    return {r["name"].decode(): r for r in (source[i] for i in range(len(source)))}


def test_every_dataset_and_split_has_the_exact_count(built):
    _, _, data_dir = built
    counts = {
        name: builders.splits(data_dir, name)
        for name in ("denoise_clean", "bsd68", "urban100", "rain100l", "reside", "gopro", "lol")
    }
    assert counts == {
        "denoise_clean": {"train": 4},
        "bsd68": {"test": 2},
        "urban100": {"test": 1},
        "rain100l": {"train": 2, "test": 2},
        "reside": {"train": 3, "test": 1},
        "gopro": {"train": 2, "test": 1},
        "lol": {"train": 1, "test": 1},
    }


def test_files_are_array_record_and_nothing_temporary_is_left(built):
    _, _, data_dir = built
    assert sorted(os.listdir(data_dir)) == sorted(
        b.name for n, b in builders.BUILDERS.items() if not n.startswith("synthetic")
    )
    files = os.listdir(builders.dataset_dir(data_dir, "rain100l"))
    assert "hair_rain100l-train.array_record-00000-of-00001" in files


def test_clean_only_set_converts_grayscale_bmp_to_rgb(built):
    train, _, data_dir = built
    records = _records(data_dir, "denoise_clean", "train")
    assert sorted(records) == ["img0", "img1", "img2", "wed"]
    gray = np.asarray(PIL.Image.open(os.path.join(train, "Denoise/wed.bmp")))
    np.testing.assert_array_equal(records["wed"]["clean"], np.stack([gray] * 3, -1))
    np.testing.assert_array_equal(records["img1"]["clean"], data_helpers.image(48, 48, 1))
    assert "degraded" not in records["img1"]


@pytest.mark.parametrize(
    "name,split,expected",
    [
        ("rain100l", "train", {"rain-1": 11, "rain-2": 12}),  # rain-N <-> norain-N
        ("rain100l", "test", {"rain-1": 70, "x": 71}),  # also the same name
        ("gopro", "train", {"GOPR01/000001": 41, "GOPR01/000002": 42}),  # blur <-> sharp
        ("gopro", "test", {"a": 90}),
        ("lol", "train", {"1": 50}),  # low <-> high
        ("lol", "test", {"1": 91}),
        ("reside", "test", {"0003_0.8_0.2": 80}),  # <id>_<A>_<beta> <-> <id>
    ],
)
def test_png_pairs_are_matched_by_the_pairing_rule(built, name, split, expected):
    records = _records(built[2], name, split)
    assert sorted(records) == sorted(expected)
    for key, seed in expected.items():
        clean = data_helpers.image(48, 48, seed)
        np.testing.assert_array_equal(records[key]["clean"], clean)
        np.testing.assert_array_equal(records[key]["degraded"], 255 - clean)


def test_ots_hazy_images_pair_with_original_id_across_subfolders(built):
    train, _, data_dir = built
    records = _records(data_dir, "reside", "train")
    assert sorted(records) == ["part1/0001_0.8_0.04", "part1/0001_0.9_0.08", "part2/0002_0.8_0.04"]
    # JPEGs are stored as they are, so records equal the decoded files exactly.
    for name, record in records.items():
        clean_id = name.split("/")[1].split("_")[0]
        for key, path in (
            ("clean", f"Dehaze/original/{clean_id}.jpg"),
            ("degraded", f"Dehaze/synthetic/{name}.jpg"),
        ):
            np.testing.assert_array_equal(
                record[key], np.asarray(PIL.Image.open(os.path.join(train, path)))
            )


def test_rebuilding_replaces_the_dataset(built, tmp_path):
    _, _, data_dir = built
    example = data_helpers.image(40, 40, 5)
    path = str(tmp_path / "a.png")
    data_helpers.save(path, example)
    out = str(tmp_path / "tfds")
    builders.build("bsd68", {"test": [Example("a", path)] * 2}, out)
    builders.build("bsd68", {"test": [Example("a", path)]}, out, overwrite=False)
    assert builders.splits(out, "bsd68") == {"test": 2}  # kept
    builders.build("bsd68", {"test": [Example("a", path)]}, out)
    assert builders.splits(out, "bsd68") == {"test": 1}  # replaced
    assert sorted(os.listdir(out)) == ["hair_bsd68"]
