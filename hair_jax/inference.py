"""Running a model on images of any size: padding, batching, tiling.

`Predictor` jits a model's forward pass, its GIV and its forward pass with a
given GIV once per input shape, with the weights as arguments (not baked-in
constants), and counts how often JAX traced them, i.e. compiled.

Sizes: each model names its `multiple` and `min_size` (`hair_jax.nn.registry.
Model`): Res-HAIR multiples of 8 and at least 32 px (the DAC halves H/8 twice
more; 64 px for a DAC with one channel per group), the Restormer multiples of
8, NAFNet multiples of 2^stages. Images are
reflect-padded at the bottom and right up to that (`padded_size`, `pad_to`)
and the output is cropped back. Padding up to coarser *bucket* sizes (e.g.
multiples of 64 px) lets images of different sizes share one compiled
function. The padding changes the result a little, since the channel
attention and the GIV see the whole padded image; evaluation therefore never
pads (test images are cropped to a multiple of 16 instead).

Tiling (`restore_tiled`) restores images too large for the device in
overlapping square tiles. Unlike the reference's demo.py, which recomputes
the GIV for every tile (so every tile gets different generated weights), the
GIV is computed ONCE from the whole image, downscaled first if the image is
larger than the pixel budget, and every tile is restored with it through
`model(tile, giv=giv)`. Tiles are blended with weights that ramp linearly
over the overlap.

How close tiling comes to a whole-image pass, measured with the tiny Res-HAIR
of tests/data (the reference's random initialisation, dim 16) on
scikit-image's astronaut photo resized to 128x128 with Gaussian noise (sigma
25/255): 64 px tiles with 16 px overlap differ from the untiled output by at
most 0.019 and on average 0.0029 (pixel values in [0, 1]); at 256x256 with
128 px tiles and 32 px overlap, at most 0.021 and on average 0.0027.
tests/test_inference.py keeps the first bound. The difference comes from the
channel attention, which averages over a tile instead of the whole image, and
from the receptive field at tile borders; the GIV itself is identical.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
from flax import nnx

from hair_jax.nn import models

MULTIPLE = 8  # the default padding multiple (Res-HAIR's and Restormer's)
DEFAULT_MAX_PIXELS = 1024 * 1024
DEFAULT_OVERLAP = 32


@contextlib.contextmanager
def first_call(bar, seen: set, key, what: str):
    """Marks a tqdm `bar` while the first call for `key` (a new shape: it compiles) runs.

    The bar says "compiling for <what>" meanwhile, and the time it took is
    left out of the bar's elapsed time, rate and ETA. Later calls with the
    same key pass straight through. `seen` holds the keys met so far.
    """
    if key in seen:
        yield
        return
    seen.add(key)
    bar.set_postfix_str(f"compiling for {what}")
    yield
    bar.set_postfix_str("", refresh=False)
    bar.unpause()  # restarts the clock at the last print: the compile is not counted


class Predictor:
    """A model's jitted inference functions, with their trace count (a `registry.Restorer`).

    Attributes:
      has_giv: the model computes a GIV (Res-HAIR); tiles then share one.
      level_names: a HAIR model's hyper levels in order (its selectors' keys).
      min_size: smallest input height/width the model accepts.
      multiple: input height and width are padded to multiples of this.
      traces: how many times JAX traced (and so compiled) one of the
        functions; one per new input shape and function.

    The standalone artifacts of `hair_jax.io.artifacts` have the same interface.
    """

    def __init__(self, model: nnx.Module):
        self.graphdef, self.state = nnx.split(model)
        self.has_giv, self.level_names = model.has_giv, tuple(model.level_names)
        self.min_size, self.multiple = model.min_size, model.multiple
        self.traces = 0
        self._forward = self.jit(lambda m, x: jnp.clip(m(x), 0.0, 1.0))
        if self.has_giv:
            self._giv = self.jit(lambda m, x: m.giv(x))
            self._forward_giv = self.jit(lambda m, x, g: jnp.clip(m(x, giv=g), 0.0, 1.0))
            self._selectors = self.jit(lambda m, g: m.selectors(g))

    def load(self, model: nnx.Module) -> None:
        """Runs `model`'s weights from now on; it must have the same graph (no recompile)."""
        self.state = nnx.split(model)[1]

    def jit(self, fn: Callable) -> Callable:
        """Jits `fn(model, *args)` into `f(*args)`, counting its traces."""

        def traced(state, *args):
            self.traces += 1  # runs only while JAX traces, i.e. per compile
            return fn(nnx.merge(self.graphdef, state), *args)

        jitted = jax.jit(traced)
        return lambda *args: jitted(self.state, *args)

    def restore(self, x, giv=None) -> jax.Array:
        """Restored images [B, H, W, 3] clipped to [0, 1]; `giv` [B, D] optional."""
        if giv is None:
            return self._forward(x)
        return self._forward_giv(x, giv)

    def giv(self, x) -> jax.Array:
        """The GIV [B, D] of images x [B, H, W, 3] (Res-HAIR only)."""
        return self._giv(x)

    def selectors(self, giv) -> dict[str, jax.Array]:
        """Each hyper level's HSN softmax [num_blocks, B, num_box] for `giv` [B, D]."""
        return self._selectors(giv)


def as_predictor(model_or_predictor):
    """A `Predictor` for an NNX model; a predictor or artifact as it is."""
    if isinstance(model_or_predictor, nnx.Module):
        return Predictor(model_or_predictor)
    return model_or_predictor


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def padded_size(
    h: int, w: int, *, min_size: int = MULTIPLE, bucket: int = MULTIPLE, multiple: int = MULTIPLE
):
    """The (H, W) an h x w image is padded to: multiples of `bucket`, >= `min_size`.

    `bucket` must be a multiple of 8; sizes are also multiples of the model's
    `multiple` (the least common multiple of both is the step).
    """
    if bucket % MULTIPLE:
        raise ValueError(f"bucket must be a multiple of {MULTIPLE}, got {bucket}")
    bucket = math.lcm(bucket, multiple)
    low = _round_up(min_size, bucket)
    return max(_round_up(h, bucket), low), max(_round_up(w, bucket), low)


def pad_to(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Reflect-pads an [H, W, C] image at the bottom and right to h x w.

    Pads wider than the image reflect repeatedly (numpy's 'reflect'); a
    1-pixel side is repeated.
    """
    dh, dw = h - image.shape[0], w - image.shape[1]
    if dh < 0 or dw < 0:
        raise ValueError(f"cannot pad {image.shape[:2]} down to {(h, w)}")
    return np.pad(image, ((0, dh), (0, dw), (0, 0)), mode="reflect")


def batch_sizes(n: int, batch: int) -> list[tuple[int, int]]:
    """Splits n items into (count, padded count) batches of at most `batch`.

    Full batches have `batch` items; a last, smaller one is padded to the next
    power of two (at most `batch`), so only a few batch shapes are compiled.
    """
    out = [(batch, batch)] * (n // batch)
    if n % batch:
        out.append((n % batch, padded_batch(n % batch, batch)))
    return out


def padded_batch(n: int, batch: int) -> int:
    """The batch size n <= `batch` items run as: `batch`, or a power of two below."""
    return min(batch, 1 << (n - 1).bit_length())


def restore_batch(
    predictor: Predictor, images: list[np.ndarray], size, *, batch: int | None = None, giv=None
) -> list[np.ndarray]:
    """Restores same-bucket images together: pad to `size`, run, crop back.

    Args:
      predictor: the model.
      images: float32 [H, W, 3] arrays in [0, 1], each at most `size`.
      size: (H, W) every image is padded to (see `padded_size`).
      batch: run this many images (>= len(images)) by repeating the last one,
        to reuse a compiled batch size (see `batch_sizes`).
      giv: optional [len(images), D] GIVs.

    Returns:
      The restored images, float32 [H, W, 3] in [0, 1], in input order.
    """
    x = np.stack([pad_to(im, *size) for im in images])
    extra = (batch or len(images)) - len(images)
    if extra > 0:
        x = np.concatenate([x, np.repeat(x[-1:], extra, axis=0)])
        giv = None if giv is None else np.concatenate([giv, np.repeat(giv[-1:], extra, axis=0)])
    out = np.asarray(predictor.restore(jnp.asarray(x), giv))
    return [o[: im.shape[0], : im.shape[1]] for o, im in zip(out, images)]


def _resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Antialiased bilinear resize of an [H, W, C] float image."""
    channels = [
        np.asarray(
            PIL.Image.fromarray(image[..., c], mode="F").resize(
                (w, h), PIL.Image.Resampling.BILINEAR
            )
        )
        for c in range(image.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def image_giv(predictor: Predictor, image: np.ndarray, max_pixels: int, bucket: int = MULTIPLE):
    """The GIV [1, D] of a whole image, downscaled first if it exceeds `max_pixels`.

    The image is padded like a whole-image pass would pad it (same `bucket`),
    so for an image that fits, tiles get exactly the GIV an untiled pass uses.
    Downscaling averages noise away, so the GIV of a downscaled noisy image
    sees it as less noisy: give `max_pixels` as much as the device allows.
    """
    h, w = image.shape[:2]
    scale = 1.0
    while True:
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        ph, pw = padded_size(
            sh, sw, min_size=predictor.min_size, bucket=bucket, multiple=predictor.multiple
        )
        if ph * pw <= max_pixels or max(sh, sw) == 1:
            break
        scale *= min(0.95, math.sqrt(max_pixels / (ph * pw)))
    small = image if (sh, sw) == (h, w) else _resize(image, sh, sw)
    return predictor.giv(jnp.asarray(pad_to(small, ph, pw)[None]))


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Offsets of tiles of `tile` px covering `size` px, overlapping >= `overlap`."""
    if size <= tile:
        return [0]
    return list(range(0, size - tile, tile - overlap)) + [size - tile]


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """[tile, tile] weights ramping linearly from ~0 to 1 over `overlap` px.

    Every weight is positive, so a pixel that only one tile covers (at the
    image border) keeps that tile's value after normalisation.
    """
    i = np.arange(tile)
    ramp = np.minimum(1.0, np.minimum(i + 1, tile - i) / (overlap + 1))
    return np.outer(ramp, ramp).astype(np.float32)


def restore_tiled(
    predictor: Predictor,
    image: np.ndarray,
    *,
    tile: int,
    overlap: int = DEFAULT_OVERLAP,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bucket: int = MULTIPLE,
) -> np.ndarray:
    """Restores one [H, W, 3] image in overlapping tiles sharing one GIV.

    Args:
      predictor: the model.
      image: float32 [H, W, 3] in [0, 1], any size.
      tile: tile side in px, a multiple of 8 and >= `predictor.min_size`.
      overlap: overlap of neighbouring tiles in px, < tile.
      max_pixels: pixels per model call: bounds the tiles run together and the
        size the GIV is computed at (see `image_giv`).
      bucket: padding granularity for the GIV input (see `padded_size`).

    Returns:
      The restored image, float32 [H, W, 3] in [0, 1].
    """
    check_tiling(tile, overlap, predictor.min_size, predictor.multiple)
    h, w = image.shape[:2]
    giv = image_giv(predictor, image, max_pixels, bucket) if predictor.has_giv else None
    step = predictor.multiple
    ph, pw = max(_round_up(h, step), tile), max(_round_up(w, step), tile)
    padded = pad_to(image, ph, pw)
    corners = [
        (y, x) for y in tile_starts(ph, tile, overlap) for x in tile_starts(pw, tile, overlap)
    ]
    window = blend_window(tile, overlap)[..., None]
    total = np.zeros((ph, pw, 3), np.float32)
    weight = np.zeros((ph, pw, 1), np.float32)
    per_call = max(1, min(len(corners), max_pixels // (tile * tile)))
    start = 0
    for count, run in batch_sizes(len(corners), per_call):
        batch = corners[start : start + count]
        start += count
        tiles = [padded[y : y + tile, x : x + tile] for y, x in batch]
        givs = None if giv is None else np.repeat(np.asarray(giv), count, axis=0)
        outs = restore_batch(predictor, tiles, (tile, tile), batch=run, giv=givs)
        for (y, x), out in zip(batch, outs):
            total[y : y + tile, x : x + tile] += out * window
            weight[y : y + tile, x : x + tile] += window
    return (total / weight)[:h, :w]


def check_tiling(
    tile: int, overlap: int, min_size: int = models.MIN_SIZE, multiple: int = MULTIPLE
) -> None:
    """Raises ValueError unless `tile`/`overlap` suit a model's `min_size` and `multiple`."""
    if tile % multiple or tile < min_size:
        raise ValueError(f"tile must be a multiple of {multiple} and >= {min_size}, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")


def auto_tile(max_pixels: int, min_size: int = models.MIN_SIZE, multiple: int = MULTIPLE) -> int:
    """The largest tile (multiple of 8) with tile * tile <= max_pixels."""
    step = math.lcm(MULTIPLE, multiple)
    return max(_round_up(min_size, step), math.isqrt(max_pixels) // step * step)


def restore_image(
    model_or_predictor,
    image: np.ndarray,
    *,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    bucket: int = MULTIPLE,
) -> np.ndarray:
    """Restores one float32 [H, W, 3] image in [0, 1] of any size.

    The whole image is restored at once (padded, then cropped back) when its
    padded size fits `max_pixels` and no `tile` is given; otherwise in tiles
    of `tile` px (default: the largest that fits `max_pixels`) sharing one GIV.
    """
    predictor = as_predictor(model_or_predictor)
    size = padded_size(
        *image.shape[:2], min_size=predictor.min_size, bucket=bucket, multiple=predictor.multiple
    )
    if tile is None and size[0] * size[1] <= max_pixels:
        return restore_batch(predictor, [image], size)[0]
    tile = tile or auto_tile(max_pixels, predictor.min_size, predictor.multiple)
    return restore_tiled(
        predictor, image, tile=tile, overlap=overlap, max_pixels=max_pixels, bucket=bucket
    )
