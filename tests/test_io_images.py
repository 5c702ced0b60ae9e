"""hair_jax.io.images: every format keeps what it must (gray, alpha, 16 bits, orientation)."""

import io
import zlib

import numpy as np
import PIL.Image
import PIL.ImageOps
import png
import pytest
import tifffile

from hair_jax.io import images


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _restored(picture):
    """A stand-in restoration: 1 - x (so every sample changes)."""
    return 1.0 - picture.pixels


def test_8bit_rgb_formats_round_trip(tmp_path):
    rgb = _rgb(13, 17)
    for ext, lossless in (
        (".png", True),
        (".bmp", True),
        (".webp", True),
        (".tif", True),
        (".jpg", False),
    ):
        path = str(tmp_path / f"x{ext}")
        PIL.Image.fromarray(rgb).save(path, quality=98, lossless=True)
        pic = images.read_image(path)
        assert pic.pixels.shape == (13, 17, 3) and pic.pixels.dtype == np.float32
        assert (pic.gray, pic.alpha, pic.bits) == (False, None, 8)
        assert pic.format == images.EXTENSIONS[ext]
        if lossless:
            np.testing.assert_array_equal(np.round(pic.pixels * 255).astype(np.uint8), rgb)
        out = str(tmp_path / f"out{ext}")
        images.write_image(out, _restored(pic), pic, pic.format)
        back = np.asarray(PIL.Image.open(out))
        assert back.shape == (13, 17, 3)
        if lossless:  # WebP is written losslessly
            np.testing.assert_array_equal(back, 255 - np.round(pic.pixels * 255).astype(np.uint8))


def test_gray_stays_gray_and_is_averaged_back(tmp_path):
    gray = _rgb(9, 11)[..., 0]
    path = str(tmp_path / "g.png")
    PIL.Image.fromarray(gray).save(path)
    pic = images.read_image(path)
    assert pic.gray and pic.pixels.shape == (9, 11, 3)
    np.testing.assert_array_equal(pic.pixels[..., 0], pic.pixels[..., 2])  # replicated
    restored = pic.pixels * np.array([0.2, 0.5, 0.8], np.float32)  # channels differ
    images.write_image(str(tmp_path / "o.png"), restored, pic, "PNG")
    out = PIL.Image.open(tmp_path / "o.png")
    assert out.mode == "L"
    want = np.round(restored.mean(axis=-1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(out), want)
    np.testing.assert_allclose(want, pic.pixels[..., 0] * 0.5 * 255, atol=0.51)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_kept_unchanged(tmp_path, mode):
    rgb = _rgb(10, 12)
    alpha = np.random.default_rng(1).integers(0, 256, (10, 12), dtype=np.uint8)
    image = (
        PIL.Image.fromarray(np.dstack([rgb, alpha]), "RGBA").convert(mode)
        if mode == "LA"
        else (PIL.Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
    )
    image.save(tmp_path / "a.png")
    pic = images.read_image(str(tmp_path / "a.png"))
    np.testing.assert_array_equal(pic.alpha, np.asarray(image)[..., -1])
    images.write_image(str(tmp_path / "o.png"), _restored(pic), pic, "PNG")
    out = PIL.Image.open(tmp_path / "o.png")
    assert out.mode == mode
    np.testing.assert_array_equal(np.asarray(out)[..., -1], np.asarray(image)[..., -1])


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_stays_16bit(tmp_path, channels):
    rng = np.random.default_rng(channels)
    samples = rng.integers(0, 65536, (7, 9, channels), dtype=np.uint16)
    with open(tmp_path / "s.png", "wb") as f:
        png.Writer(9, 7, greyscale=channels < 3, alpha=channels in (2, 4), bitdepth=16).write(
            f, samples.reshape(7, -1)
        )
    pic = images.read_image(str(tmp_path / "s.png"))
    assert pic.bits == 16 and pic.gray == (channels < 3)
    np.testing.assert_array_equal(np.round(pic.pixels[..., 0] * 65535), samples[..., 0])
    images.write_image(str(tmp_path / "o.png"), _restored(pic), pic, "PNG")
    _, _, rows, info = png.Reader(filename=str(tmp_path / "o.png")).read()
    out = np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(7, 9, channels)
    assert info["bitdepth"] == 16 and info["planes"] == channels
    color = channels if channels in (1, 3) else channels - 1
    np.testing.assert_array_equal(out[..., :color], 65535 - samples[..., :color])
    if channels in (2, 4):
        np.testing.assert_array_equal(out[..., -1], samples[..., -1])


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_tiff_stays_16bit(tmp_path, channels):
    samples = np.random.default_rng(channels).integers(0, 65536, (6, 8, channels), dtype=np.uint16)
    extra = {"extrasamples": ["unassalpha"]} if channels in (2, 4) else {}
    photometric = "rgb" if channels >= 3 else "minisblack"
    tifffile.imwrite(
        tmp_path / "s.tif",
        samples if channels > 1 else samples[..., 0],
        photometric=photometric,
        **extra,
    )
    pic = images.read_image(str(tmp_path / "s.tif"))
    assert pic.bits == 16 and pic.format == "TIFF"
    images.write_image(str(tmp_path / "o.tif"), _restored(pic), pic, "TIFF")
    out = tifffile.imread(tmp_path / "o.tif").reshape(6, 8, channels)
    assert out.dtype == np.uint16
    color = channels if channels in (1, 3) else channels - 1
    np.testing.assert_array_equal(out[..., :color], 65535 - samples[..., :color])
    if channels in (2, 4):
        np.testing.assert_array_equal(out[..., -1], samples[..., -1])


def test_16bit_cannot_go_to_an_8bit_format(tmp_path):
    pic = images.Picture(np.zeros((4, 4, 3), np.float32), False, None, 16, "PNG")
    with pytest.raises(images.ImageError, match="16-bit"):
        images.write_image(str(tmp_path / "o.jpg"), pic.pixels, pic, "JPEG")


def _exif_jpeg(path, array, orientation):
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    PIL.Image.fromarray(array).save(path, quality=100, exif=exif)


def test_exif_orientation_is_applied(tmp_path):
    # Wide enough colour blocks to survive JPEG; orientation 6 = rotate 90 CW.
    array = np.zeros((16, 32, 3), np.uint8)
    array[:, :16] = (255, 0, 0)
    array[:, 16:] = (0, 0, 255)
    _exif_jpeg(tmp_path / "r.jpg", array, 6)
    assert images.image_size(str(tmp_path / "r.jpg")) == (32, 16)
    pic = images.read_image(str(tmp_path / "r.jpg"))
    assert pic.pixels.shape == (32, 16, 3)
    assert pic.pixels[2, 8, 0] > 0.9 and pic.pixels[30, 8, 2] > 0.9  # red on top
    images.write_image(str(tmp_path / "o.jpg"), pic.pixels, pic, "JPEG")
    out = PIL.Image.open(tmp_path / "o.jpg")
    assert out.size == (16, 32) and out.getexif().get(0x0112) is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_exif_transpose(tmp_path, orientation):
    # The numpy table used for 16-bit files must agree with Pillow's.
    array = _rgb(5, 7, seed=orientation)
    path = tmp_path / "o.png"
    exif = PIL.Image.Exif()
    exif[0x0112] = orientation
    PIL.Image.fromarray(array).save(path, exif=exif)
    want = np.asarray(PIL.ImageOps.exif_transpose(PIL.Image.open(path)))
    np.testing.assert_array_equal(images.orient(array, orientation), want)


def test_corrupt_and_foreign_files_raise(tmp_path):
    good = io.BytesIO()
    PIL.Image.fromarray(_rgb(32, 32)).save(good, format="PNG")
    (tmp_path / "cut.png").write_bytes(good.getvalue()[:200])
    (tmp_path / "text.jpg").write_text("not an image")
    bad_idat = bytearray(good.getvalue())
    bad_idat[60:80] = zlib.compress(b"x")[:20]
    (tmp_path / "bad.png").write_bytes(bytes(bad_idat))
    for name, message in [
        ("cut.png", "truncated"),
        ("text.jpg", "cannot identify image file"),
        ("bad.png", "unrecognized data stream"),
    ]:
        with pytest.raises(OSError, match=message):
            images.read_image(str(tmp_path / name))
