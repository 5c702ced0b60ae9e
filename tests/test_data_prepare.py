"""The prepare command: bad input gives one line and exit code 2, and no dataset."""

import os
import shutil
import subprocess
import sys

import data_helpers
import pytest

from hair_jax.data import builders, prepare

ERR = "python -m hair_jax.data.prepare: error: "  # how every mistake starts


@pytest.fixture
def layout(tmp_path):
    train, test = data_helpers.reference_layout(str(tmp_path / "data"))
    return train, test, str(tmp_path / "tfds")


def _run(capsys, train, test, data_dir, *extra):
    code = prepare.main(
        ["--train-root", train, "--test-root", test, "--data-dir", data_dir, *extra]
    )
    captured = capsys.readouterr()
    errors = [l for l in captured.err.splitlines() if l.startswith(ERR)]
    return code, errors, captured.out


def _built(data_dir):
    return {n for n in builders.BUILDERS if builders.splits(data_dir, n)}


def test_missing_subfolder_of_a_present_dataset(layout, capsys):
    train, test, data_dir = layout
    os.rename(os.path.join(train, "Derain/gt"), os.path.join(train, "Derain/groundtruth"))
    code, errors, _ = _run(capsys, train, test, data_dir)
    assert code == 2
    assert errors == [
        f"{ERR}missing folder {os.path.join(train, 'Derain/gt')}: "
        "download Rain100L (train: 200 rain-N/norain-N pairs; test: 100 "
        "pairs) and put it there"
    ]
    assert _built(data_dir) == set()  # Nothing is built before everything is scanned.


def test_missing_dataset_of_a_requested_task(tmp_path, capsys):
    train, test = str(tmp_path / "Train"), str(tmp_path / "test")
    code, errors, _ = _run(capsys, train, test, str(tmp_path / "o"), "--tasks", "dehaze")
    assert code == 2
    assert len(errors) == 1
    assert errors[0].startswith(f"{ERR}missing folder {train}/Dehaze/original: download RESIDE OTS")


def test_missing_datasets_are_skipped_without_tasks(layout, capsys):
    train, test, data_dir = layout
    shutil.rmtree(os.path.join(train, "Lowlight"))
    shutil.rmtree(os.path.join(test, "lowlight"))
    code, errors, out = _run(capsys, train, test, data_dir, "--tasks", "deblur", "derain")
    assert code == 0 and errors == []
    assert _built(data_dir) == {"rain100l", "gopro"}
    code, errors, out = _run(capsys, train, test, data_dir)
    assert code == 0
    assert "skipped: lol not found: download LOLv1" in out
    assert "lol" not in _built(data_dir)


def test_empty_folder(layout, capsys):
    train, test, data_dir = layout
    bsd68 = os.path.join(test, "denoise/bsd68")
    for f in os.listdir(bsd68):
        os.remove(os.path.join(bsd68, f))
    code, errors, _ = _run(capsys, train, test, data_dir)
    assert code == 2
    assert errors == [f"{ERR}empty folder {bsd68}: no .png/.jpg/.jpeg/.bmp/.tif/.tiff images"]


def test_degraded_image_without_clean_pair(layout, capsys):
    train, test, data_dir = layout
    os.remove(os.path.join(train, "Dehaze/original/0002.jpg"))
    code, errors, _ = _run(capsys, train, test, data_dir)
    assert code == 2
    hazy = os.path.join(train, "Dehaze/synthetic", "part2/0002_0.8_0.04.jpg")
    assert errors == [f"{ERR}no clean pair for {hazy} in {os.path.join(train, 'Dehaze/original')}"]


@pytest.mark.parametrize("corruption", ["truncated", "not_an_image"])
def test_corrupt_image_leaves_no_dataset(layout, capsys, corruption):
    train, test, data_dir = layout
    path = os.path.join(train, "Deblur/sharp/GOPR01/000002.png")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] if corruption == "truncated" else b"hello")
    code, errors, _ = _run(capsys, train, test, data_dir, "--tasks", "deblur")
    assert code == 2
    assert len(errors) == 1
    assert errors[0].startswith(f"{ERR}unreadable or corrupt image {path}: ")
    assert _built(data_dir) == set()
    assert not os.path.exists(os.path.join(data_dir, "hair_gopro"))
    assert [f for f in os.listdir(data_dir) if f.startswith(".tmp")] == []


def test_pair_of_different_sizes_keeps_the_previous_build(layout, capsys):
    train, test, data_dir = layout
    assert _run(capsys, train, test, data_dir, "--tasks", "lowlight")[0] == 0
    before = builders.splits(data_dir, "lol")
    low = os.path.join(train, "Lowlight/low/1.png")
    data_helpers.save(low, data_helpers.image(40, 48, 0))
    code, errors, _ = _run(capsys, train, test, data_dir, "--tasks", "lowlight")
    assert code == 2
    assert errors == [
        f"{ERR}size mismatch: {low} is 48x40 but its clean pair "
        f"{os.path.join(train, 'Lowlight/high/1.png')} is 48x48"
    ]
    assert builders.splits(data_dir, "lol") == before == {"train": 1, "test": 1}


def test_folder_override(layout, tmp_path, capsys):
    train, test, data_dir = layout
    moved = str(tmp_path / "elsewhere")
    os.rename(os.path.join(train, "Lowlight/high"), moved)
    code, errors, _ = _run(
        capsys, train, test, data_dir, "--tasks", "lowlight", "--folder", f"lol_train_clean={moved}"
    )
    assert code == 0 and errors == []
    code, errors, _ = _run(capsys, train, test, data_dir, "--folder", "nope=/x")
    assert code == 2 and errors[0].startswith(f"{ERR}unknown folder key 'nope'")


def test_success_prints_a_table_of_examples(layout, capsys):
    train, test, data_dir = layout
    code, errors, out = _run(capsys, train, test, data_dir, "--tasks", "derain", "lowlight")
    assert code == 0 and errors == []
    table = out.strip().splitlines()[-5:]
    assert [l.split() for l in table] == [
        ["dataset", "split", "examples"],
        ["hair_rain100l", "train", "2"],
        ["hair_rain100l", "test", "2"],
        ["hair_lol", "train", "1"],
        ["hair_lol", "test", "1"],
    ]


def test_command_line_exit_code(layout):
    train, test, data_dir = layout
    os.remove(os.path.join(test, "lowlight/LOL/target/1.png"))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "hair_jax.data.prepare",
            "--train-root",
            train,
            "--test-root",
            test,
            "--data-dir",
            data_dir,
            "--tasks",
            "lowlight",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 2
    target = os.path.join(test, "lowlight/LOL/target")
    assert bad.stderr.strip().splitlines() == [
        f"{ERR}empty folder {target}: no .png/.jpg/.jpeg/.bmp/.tif/.tiff images"
    ]
    assert not os.path.exists(data_dir)
