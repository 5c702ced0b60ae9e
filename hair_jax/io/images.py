"""Image files: those `hair_jax.restore` reads and writes, and evaluation PNGs.

PNG, JPEG, BMP, TIFF and WebP, as Pillow reads them, with what a restoration
tool must not lose:
  * grayscale stays grayscale: the model sees the gray channel three times and
    the output is the mean of its three channels;
  * an alpha channel is kept as it was (it is not restored);
  * 16-bit PNG and TIFF stay 16-bit (Pillow keeps 16 bits only for grayscale,
    so 16-bit colour PNGs go through pypng and 16-bit colour TIFFs through
    tifffile);
  * EXIF orientation is applied to the pixels (`ImageOps.exif_transpose`),
    so the output is stored upright and carries no orientation tag;
  * an ICC colour profile is copied to 8-bit outputs.
"""

from __future__ import annotations

import dataclasses
import io
import os

import numpy as np
import PIL.Image
import PIL.ImageOps
import png
import tifffile

from hair_jax.io.files import write_atomic

EXTENSIONS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
# Restoration outputs should not lose much again when saved.
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}
_ICC_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")
_GRAY16 = ("I;16", "I;16L", "I;16B", "I;16N")
_ORIENTATION = 0x0112
# EXIF orientation -> the numpy version of ImageOps.exif_transpose's transpose.
_ORIENT = {
    2: lambda a: a[:, ::-1],  # FLIP_LEFT_RIGHT
    3: lambda a: a[::-1, ::-1],  # ROTATE_180
    4: lambda a: a[::-1],  # FLIP_TOP_BOTTOM
    5: lambda a: a.swapaxes(0, 1),  # TRANSPOSE
    6: lambda a: np.rot90(a, -1),  # ROTATE_270
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],  # TRANSVERSE
    8: lambda a: np.rot90(a, 1),  # ROTATE_90
}


class ImageError(ValueError):
    """An image that cannot be read or written as asked."""


@dataclasses.dataclass
class Picture:
    """A decoded image: model input plus what the output must keep.

    Attributes:
      pixels: float32 [H, W, 3] in [0, 1] (a gray image repeated 3 times).
      gray: the file was grayscale.
      alpha: [H, W] alpha channel in the file's integer dtype, or None.
      bits: 8 or 16 bits per sample.
      format: Pillow's format name of the file ("PNG", "JPEG", ...).
      icc_profile: the file's ICC profile, if any.
    """

    pixels: np.ndarray
    gray: bool
    alpha: np.ndarray | None
    bits: int
    format: str
    icc_profile: bytes | None = None


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Applies an EXIF orientation (1-8) to an [H, W, ...] array."""
    return np.ascontiguousarray(_ORIENT[orientation](array)) if orientation in _ORIENT else array


def _png_bit_depth(path: str) -> int:
    with open(path, "rb") as f:
        header = f.read(26)
    return header[24] if len(header) == 26 and header[12:16] == b"IHDR" else 8


def _needs_tifffile(im: PIL.Image.Image) -> bool:
    """A 16-bit colour TIFF, which Pillow would read as 8-bit."""
    bits = im.tag_v2.get(258, ())
    bits = bits if isinstance(bits, tuple) else (bits,)
    return 16 in bits and im.mode not in _GRAY16


def _read_png16(path: str) -> np.ndarray:
    width, height, rows, info = png.Reader(filename=path).read()
    planes = info["planes"]
    return np.vstack([np.asarray(r, np.uint16) for r in rows]).reshape(height, width, planes)


def _read_tiff(path: str) -> tuple[np.ndarray, int]:
    """(samples [H, W, C], EXIF orientation) of a TIFF's first page."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if page.photometric not in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.MINISBLACK):
            raise ImageError(f"unsupported TIFF colour space {page.photometric.name}")
        array = page.asarray()
        if page.axes.startswith("S"):  # planar: [C, H, W]
            array = np.moveaxis(array, 0, -1)
        orientation = page.tags.valueof(274, 1)
    return (array if array.ndim == 3 else array[..., None]), int(orientation)


def _picture(samples: np.ndarray, fmt: str, icc=None) -> Picture:
    """Builds a Picture from integer samples [H, W, 1|2|3|4]."""
    if samples.dtype == np.uint16:
        bits = 16
    elif samples.dtype == np.uint8:
        bits = 8
    else:
        raise ImageError(f"unsupported sample type {samples.dtype}")
    channels = samples.shape[-1]
    if channels not in (1, 2, 3, 4):
        raise ImageError(f"unsupported number of channels: {channels}")
    gray = channels in (1, 2)
    alpha = samples[..., -1].copy() if channels in (2, 4) else None
    color = samples[..., : 1 if gray else 3].astype(np.float32) / (2**bits - 1)
    pixels = np.repeat(color, 3, axis=-1) if gray else color
    return Picture(np.ascontiguousarray(pixels), gray, alpha, bits, fmt, icc)


def _from_pil(im: PIL.Image.Image, fmt: str) -> Picture:
    mode = im.mode
    if mode in _GRAY16:
        return _picture(np.asarray(im).astype(np.uint16)[..., None], fmt)
    if mode == "I":
        samples = np.asarray(im)
        if samples.min() < 0 or samples.max() > 65535:
            raise ImageError("unsupported 32-bit integer image")
        return _picture(samples.astype(np.uint16)[..., None], fmt)
    if mode == "F":
        raise ImageError("unsupported floating-point image")
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode in ("1", "La", "RGBa"):
        im = im.convert({"1": "L", "La": "LA", "RGBa": "RGBA"}[mode])
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        im = im.convert("RGB")  # CMYK, YCbCr, ...
    samples = np.asarray(im)
    return _picture(
        samples if samples.ndim == 3 else samples[..., None], fmt, im.info.get("icc_profile")
    )


def read_image(path: str) -> Picture:
    """Decodes an image file, upright (EXIF orientation applied).

    Raises:
      OSError: the file cannot be read, or a damaged file makes a decoder
        raise it; callers report the file and go on (as for the others).
      ValueError: an undecodable or unsupported image (`ImageError` included).
    """
    try:
        im = PIL.Image.open(path)
    except PIL.UnidentifiedImageError:
        if EXTENSIONS.get(_ext(path)) != "TIFF":
            raise
        samples, orientation = _read_tiff(path)  # e.g. 16-bit gray + alpha
        return _picture(orient(samples, orientation), "TIFF")
    with im:
        fmt = im.format
        orientation = im.getexif().get(_ORIENTATION, 1)
        if fmt == "PNG" and _png_bit_depth(path) == 16:
            return _picture(orient(_read_png16(path), orientation), fmt)
        if fmt == "TIFF" and _needs_tifffile(im):
            samples, orientation = _read_tiff(path)
            return _picture(orient(samples, orientation), fmt)
        im.load()
        return _from_pil(PIL.ImageOps.exif_transpose(im), fmt)


def image_size(path: str) -> tuple[int, int]:
    """(height, width) of the upright image, from the header where possible."""
    try:
        with PIL.Image.open(path) as im:
            w, h = im.size
            if im.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8):
                w, h = h, w
            return h, w
    except PIL.UnidentifiedImageError:
        if EXTENSIONS.get(_ext(path)) != "TIFF":
            raise
        samples, orientation = _read_tiff(path)
        h, w = samples.shape[:2]
        return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


def _ext(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def encode(restored: np.ndarray, like: Picture) -> np.ndarray:
    """Integer samples [H, W, C] of a restored image in the format of `like`.

    Gray images become the mean of the three restored channels; the alpha
    channel of `like` is appended unchanged.
    """
    x = np.clip(np.asarray(restored, np.float32), 0.0, 1.0)
    if like.gray:
        x = x.mean(axis=-1, keepdims=True)
    dtype = np.uint16 if like.bits == 16 else np.uint8
    samples = np.round(x * (2**like.bits - 1)).astype(dtype)
    if like.alpha is not None:
        samples = np.concatenate([samples, like.alpha[..., None].astype(dtype)], axis=-1)
    return samples


def write_image(path: str, restored: np.ndarray, like: Picture, fmt: str) -> None:
    """Writes `restored` (float [H, W, 3]) to `path` as `fmt`, kept like `like`.

    Raises:
      ImageError: `fmt` cannot store the image (16-bit outside PNG/TIFF).
    """
    samples = encode(restored, like)
    h, w, c = samples.shape
    if like.bits == 16:
        if fmt == "PNG":
            writer = png.Writer(w, h, greyscale=c < 3, alpha=c in (2, 4), bitdepth=16)
            with open(path, "wb") as f:
                writer.write(f, samples.reshape(h, w * c))
        elif fmt == "TIFF":
            extra = {"extrasamples": ["unassalpha"]} if c in (2, 4) else {}
            photometric = "rgb" if c >= 3 else "minisblack"
            tifffile.imwrite(
                path, samples if c > 1 else samples[..., 0], photometric=photometric, **extra
            )
        else:
            raise ImageError(f"{fmt} cannot store 16-bit images; use --format png")
        return
    im = PIL.Image.fromarray(samples[..., 0] if c == 1 else samples)
    options = dict(_SAVE_OPTIONS.get(fmt, {}))
    if like.icc_profile and fmt in _ICC_FORMATS:
        options["icc_profile"] = like.icc_profile
    im.save(path, format=fmt, **options)


def save_png(path: str, image) -> None:
    """Writes a float [H, W, 3] image in [0, 1] as an 8-bit PNG, atomically."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.round(np.clip(np.asarray(image, np.float32), 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())
