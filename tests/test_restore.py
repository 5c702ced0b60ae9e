"""hair_jax.restore: the `hair-restore` command on folders of real files.

Most tests run `restore.main` in-process with a pointwise stand-in model
(tests/fake_models.py), so every output pixel is known; one runs it with
the tiny Res-HAIR checkpoint of tests/data.
"""

import os
import re
from pathlib import Path

import numpy as np
import PIL.Image
import png
import pytest
import tifffile
from fake_models import PointwiseHAIR

from hair_jax import loading, restore

ROOT = Path(__file__).parent.parent
CKPT = ROOT / "tests" / "data" / "hair_dim16_ref.ckpt"


@pytest.fixture
def fake_checkpoint(monkeypatch):
    """`--checkpoint anything` loads the pointwise model: out = 0.5 x + 0.25."""
    model = PointwiseHAIR()
    monkeypatch.setattr(
        loading, "load_model", lambda path, **kw: loading.LoadedModel(model, "export", path)
    )
    return model


def _run(*args):
    return restore.main([*map(str, args), "--checkpoint", "fake", "--quiet"])


def _expected(samples, bits=8):
    x = samples.astype(np.float64) / (2**bits - 1)
    return np.round((0.5 * x + 0.25) * (2**bits - 1)).astype(samples.dtype)


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_every_format_keeps_mode_size_alpha_and_depth(tmp_path, fake_checkpoint):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    rgb = _rgb(21, 45, 0)
    PIL.Image.fromarray(rgb).save(src / "rgb.png")
    PIL.Image.fromarray(rgb).save(src / "rgb.bmp")
    PIL.Image.fromarray(rgb).save(src / "rgb.webp", lossless=True)
    gray = rgb[..., 1]
    PIL.Image.fromarray(gray).save(src / "sub" / "gray.png")
    rgba = np.dstack([rgb, _rgb(21, 45, 1)[..., 0]])
    PIL.Image.fromarray(rgba, "RGBA").save(src / "rgba.png")
    deep = np.random.default_rng(2).integers(0, 65536, (19, 23, 3), dtype=np.uint16)
    with open(src / "deep.png", "wb") as f:
        png.Writer(23, 19, greyscale=False, bitdepth=16).write(f, deep.reshape(19, -1))
    tifffile.imwrite(src / "deep.tif", deep, photometric="rgb")
    exif = PIL.Image.Exif()
    exif[0x0112] = 8  # rotate 90 counter-clockwise on display
    PIL.Image.fromarray(_rgb(16, 40, 3)).save(src / "rot.jpg", exif=exif, quality=95)
    (src / "notes.txt").write_text("not an image: ignored in folders")

    assert _run(src, "--output", out) == 0
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "deep.png",
        "deep.tif",
        "rgb.bmp",
        "rgb.png",
        "rgb.webp",
        "rgba.png",
        "rot.jpg",
        "sub/gray.png",
    ]
    for name in ("rgb.png", "rgb.bmp", "rgb.webp"):
        np.testing.assert_array_equal(np.asarray(PIL.Image.open(out / name)), _expected(rgb), name)
    g = PIL.Image.open(out / "sub" / "gray.png")
    assert g.mode == "L"
    np.testing.assert_array_equal(np.asarray(g), _expected(gray))
    a = np.asarray(PIL.Image.open(out / "rgba.png"))
    np.testing.assert_array_equal(a[..., 3], rgba[..., 3])  # alpha untouched
    np.testing.assert_array_equal(a[..., :3], _expected(rgb))
    _, _, rows, info = png.Reader(filename=str(out / "deep.png")).read()
    assert info["bitdepth"] == 16
    deep_png = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(19, 23, 3)
    np.testing.assert_array_equal(deep_png, _expected(deep, 16))
    np.testing.assert_array_equal(tifffile.imread(out / "deep.tif"), _expected(deep, 16))
    rot = PIL.Image.open(out / "rot.jpg")
    assert rot.size == (16, 40) and rot.getexif().get(0x0112) is None  # stored upright


def test_corrupt_file_is_named_and_skipped(tmp_path, fake_checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(2):
        PIL.Image.fromarray(_rgb(40, 40, i)).save(src / f"ok{i}.png")
    good = (src / "ok0.png").read_bytes()
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    (src / "garbage.jpg").write_bytes(b"\xff\xd8 this is not a JPEG")
    code = _run(src, tmp_path / "missing.png", "--output", tmp_path / "out")
    captured = capsys.readouterr()
    assert code == 1
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3 and "Traceback" not in captured.err
    for name in ("truncated.png", "garbage.jpg", "missing.png"):
        assert sum(name in line for line in errors) == 1
    assert sorted(os.listdir(tmp_path / "out")) == ["ok0.png", "ok1.png"]  # no temporary files
    assert "Restored 2 image(s)" in captured.out and "3 failed" in captured.out


def test_existing_outputs_and_inputs_are_never_overwritten(tmp_path, fake_checkpoint, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    PIL.Image.fromarray(_rgb(40, 40, 0)).save(src / "a.png")
    PIL.Image.fromarray(_rgb(40, 40, 1)).save(src / "b.png")
    (out / "a.png").write_bytes(b"old result")
    before = os.stat(out / "a.png").st_mtime_ns
    assert _run(src, "--output", out) == 0
    assert (out / "a.png").read_bytes() == b"old result"
    assert os.stat(out / "a.png").st_mtime_ns == before
    assert "skipped" in capsys.readouterr().err
    assert (out / "b.png").exists()
    # --overwrite replaces it.
    assert _run(src, "--output", out, "--overwrite") == 0
    assert PIL.Image.open(out / "a.png").size == (40, 40)
    # The input folder as output: refused per file, even with --overwrite.
    original = (src / "a.png").read_bytes()
    assert _run(src / "a.png", "--output", src, "--overwrite") == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert (src / "a.png").read_bytes() == original
    # Nor another input: b.jpg -> b.png (--format png) next to the input b.png.
    PIL.Image.fromarray(_rgb(40, 40, 2)).save(src / "b.jpg")
    original = (src / "b.png").read_bytes()
    assert (
        _run(src / "b.jpg", src / "b.png", "--output", src, "--format", "png", "--overwrite") == 1
    )
    assert (src / "b.png").read_bytes() == original


def test_mixed_sizes_compile_once_per_bucket(tmp_path, fake_checkpoint, capsys):
    src = tmp_path / "in"
    src.mkdir()
    # Five images, four sizes, two buckets of 64 px: 64x64 (three images, one
    # batch padded to 4) and 128x128 (two images, one batch of 2).
    for i, (h, w) in enumerate([(40, 50), (40, 50), (64, 33), (100, 70), (90, 120)]):
        PIL.Image.fromarray(_rgb(h, w, i)).save(src / f"{i}.png")
    assert _run(src, "--output", tmp_path / "out", "--batch_size", "4") == 0
    out = capsys.readouterr().out
    assert "Restored 5 image(s)" in out and "(2 compile(s))" in out
    # Exact 8 px padding: four sizes, four compiles.
    assert _run(src, "--output", tmp_path / "out8", "--bucket", "8") == 0
    assert "(4 compile(s))" in capsys.readouterr().out


def test_large_images_are_tiled_automatically(tmp_path, fake_checkpoint, capsys):
    image = _rgb(150, 90, 0)
    PIL.Image.fromarray(image).save(tmp_path / "big.png")
    code = _run(
        tmp_path / "big.png", "--output", tmp_path / "out", "--max_pixels", 64 * 64, "--overlap", 16
    )
    assert code == 0
    # Pointwise model: tiles blend back exactly (to 8-bit rounding).
    got = np.asarray(PIL.Image.open(tmp_path / "out" / "big.png")).astype(int)
    assert np.abs(got - _expected(image).astype(int)).max() <= 1


@pytest.mark.parametrize(
    "args",
    [
        ["x.png", "--output", "o"],  # no --checkpoint
        ["x.png", "--checkpoint", "c"],  # no --output
        ["x.png", "--checkpoint", "c", "--output", "o", "--bucket", "12"],
        ["x.png", "--checkpoint", "c", "--output", "o", "--tile", "60"],
        ["x.png", "--checkpoint", "c", "--output", "o", "--tile", "64", "--overlap", "64"],
    ],
)
def test_bad_arguments_exit_2(args, capsys):
    with pytest.raises(SystemExit) as e:
        restore.main(args)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_bad_checkpoint_exits_2_naming_it(tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"")
    code = restore.main(
        [
            str(tmp_path / "x.png"),
            "--checkpoint",
            str(tmp_path / "nothing"),
            "--output",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "nothing") in err and "Traceback" not in err


def test_console_script_is_declared():
    # (tomllib needs Python 3.11; the package supports 3.10.)
    text = (ROOT / "pyproject.toml").read_text()
    scripts = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    entry = re.search(r'^hair-restore\s*=\s*"([\w.]+):(\w+)"', scripts, re.M)
    assert entry and entry.groups() == ("hair_jax.commands.restore", "main")
    assert callable(getattr(restore, entry.group(2)))


def test_command_line_with_the_tiny_res_hair(tmp_path, capsys):
    """The real tiny Res-HAIR checkpoint; under-32 px gray input, one bad file."""
    src = tmp_path / "in"
    src.mkdir()
    PIL.Image.fromarray(_rgb(20, 13, 0)[..., 0]).save(src / "tiny_gray.png")
    PIL.Image.fromarray(_rgb(40, 50, 1)).save(src / "photo.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code = restore.main([str(src), "--checkpoint", str(CKPT), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.count("broken.png") == 1 and "Traceback" not in captured.err
    assert "Restored 2 image(s)" in captured.out and "(1 compile(s))" in captured.out
    gray = PIL.Image.open(tmp_path / "out" / "tiny_gray.png")
    assert (gray.mode, gray.size) == ("L", (13, 20))
    photo = np.asarray(PIL.Image.open(tmp_path / "out" / "photo.jpg"))
    assert photo.shape == (40, 50, 3) and photo.std() > 0
