"""The paper's evaluation protocol: per-set PSNR/SSIM of a model, and which sets.

`evaluate(model, test_sets)` gives one `Row` of mean metrics per test set
(hair_jax.train prints it at the end of training); `select_test_sets` picks
the sets of the paper's three- or five-task table, or the embedded synthetic
ones.

The protocol (`PROTOCOL`), as in the reference's test.py: the full image
(no tiling, batch 1), both images centre-cropped to a multiple of 16, the
output clipped to [0, 1], PSNR and SSIM on RGB with data range 1 and
scikit-image's SSIM defaults. Metrics run on the device
(`hair_jax.evaluation.metrics`, equal to scikit-image's to 1e-4). BT.601
Y-channel metrics are computed alongside and reported separately, never mixed
into the protocol's numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from hair_jax import data, inference
from hair_jax.data.degrade import crop_to_multiple
from hair_jax.evaluation import metrics
from hair_jax.io.images import save_png

PROTOCOL = (
    "full image (no tiling, batch 1); both images centre-cropped to a multiple of 16; "
    "output clipped to [0, 1]; PSNR and SSIM on RGB, data_range 1; SSIM as "
    "scikit-image's structural_similarity (7x7 uniform window, sample covariance, "
    "channel_axis); each set's mean over its images, the average over the sets"
)
Y_PROTOCOL = "as above, but on the ITU-R BT.601 Y channel (not the paper's protocol)"
METRICS = ("psnr", "ssim", "psnr_y", "ssim_y")
SETTINGS = ("3d", "5d")


@dataclasses.dataclass(frozen=True)
class Row:
    """Mean metrics of one test set (PSNR in dB), and each image's.

    `images` holds one dict per image: name, height, width and the
    `restored` / `degraded` metrics (keys of `METRICS`).
    """

    name: str
    num_images: int
    degraded_psnr: float
    restored_psnr: float
    degraded_ssim: float
    restored_ssim: float
    degraded_psnr_y: float = math.nan
    restored_psnr_y: float = math.nan
    degraded_ssim_y: float = math.nan
    restored_ssim_y: float = math.nan
    images: tuple = ()

    def metric(self, which: str, name: str) -> float:
        """`which` in ('restored', 'degraded'), `name` in METRICS."""
        return getattr(self, f"{which}_{name}")


@jax.jit
def _scores(restored, degraded, clean):
    """{which: {metric: value}} of restored and degraded images against clean ones."""
    out = {}
    for which, image in (("restored", restored), ("degraded", degraded)):
        out[which] = {
            "psnr": metrics.psnr(image, clean),
            "ssim": metrics.ssim(image, clean),
            "psnr_y": metrics.psnr(image, clean, y_channel=True),
            "ssim_y": metrics.ssim(image, clean, y_channel=True),
        }
    return out


def evaluate_sets(
    predictor: inference.Predictor,
    test_sets,
    *,
    max_images: int | None = None,
    multiple: int = 16,
    progress: bool = False,
    image_dir: str | None = None,
) -> list[Row]:
    """Evaluates `predictor` on every image of every test set (batch 1, full image).

    Args:
      predictor: the model (one compile per image size).
      test_sets: dict name -> sequence of objects with `.degraded`, `.clean`
        (HxWx3 float arrays in [0, 1]) and optionally `.name`
        (`hair_jax.data.TestImage`).
      max_images: evaluate at most this many images per set (None: all).
      multiple: centre-crop both images to a multiple of this size.
      progress: show a tqdm bar per set.
      image_dir: if set, write the restored images as 8-bit PNGs to
        `image_dir/<set>/<image name>.png`.

    Returns:
      A list of `Row`, one per test set, in the order of `test_sets`.
    """
    rows, seen = [], set()
    for set_name, images in test_sets.items():
        count = len(images) if max_images is None else min(len(images), max_images)
        per_image = []
        bar = tqdm.tqdm(range(count), desc=set_name, unit="img", disable=not progress)
        for i in bar:
            image = images[i]
            degraded = crop_to_multiple(np.asarray(image.degraded, np.float32), multiple)
            clean = crop_to_multiple(np.asarray(image.clean, np.float32), multiple)
            # The whole image at once: a multiple of 16 needs no padding.
            what = "{}x{} images".format(*degraded.shape[:2])
            with inference.first_call(bar, seen, degraded.shape, what):
                restored = inference.restore_image(predictor, degraded, max_pixels=degraded.size)
                values = _scores(*(jnp.asarray(a[None]) for a in (restored, degraded, clean)))
                values = jax.tree.map(lambda v: float(v[0]), jax.device_get(values))
            name = str(getattr(image, "name", i)).replace(os.sep, "_")
            per_image.append({"name": name, "height": clean.shape[0], "width": clean.shape[1]})
            per_image[-1].update(values)
            if image_dir is not None:
                save_png(os.path.join(image_dir, set_name, f"{name}.png"), restored)
        rows.append(_row(set_name, per_image))
    return rows


def _row(name: str, per_image: list[dict]) -> Row:
    means = {
        f"{which}_{m}": float(np.mean([im[which][m] for im in per_image]))
        if per_image
        else math.nan
        for which in ("restored", "degraded")
        for m in METRICS
    }
    return Row(name, len(per_image), images=tuple(per_image), **means)


def evaluate(model, test_sets, *, max_images=None, multiple=16) -> list[Row]:
    """`evaluate_sets` for an NNX model (see there); used after training."""
    return evaluate_sets(
        inference.Predictor(model), test_sets, max_images=max_images, multiple=multiple
    )


def average(rows: list[Row]) -> Row:
    """The mean of the per-set means (the paper's 'average' column)."""
    means = {
        f"{which}_{m}": float(np.mean([r.metric(which, m) for r in rows]))
        for which in ("restored", "degraded")
        for m in METRICS
    }
    return Row("average", sum(r.num_images for r in rows), **means)


def eval_data_config(*, data_dir=None, setting="3d", names=None):
    """The data config of `select_test_sets` (see there); loads nothing.

    Raises:
      ValueError: unknown setting or set names.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    cfg = data.default_config()
    if data_dir is None:
        cfg.synthetic_five_task = setting == "5d"
    else:
        cfg.name, cfg.data_dir = f"all_in_one_{setting}", os.path.expanduser(data_dir)
    cfg.test_sets = list(names) if names else None
    data.test_sets_of(cfg)  # checks the names
    return cfg


def select_test_sets(*, data_dir=None, setting="3d", names=None, log=print):
    """(data config, {name: TestSet}) of the sets to evaluate.

    Without `data_dir` these are the embedded synthetic sets (built in
    seconds into `$HAIR_DATA_DIR` or ~/tensorflow_datasets if missing); with
    it, the TFDS sets of the three-task ('3d': BSD68 sigma 15/25/50,
    Rain100L, SOTS, and Urban100 when built) or five-task ('5d': SOTS,
    Rain100L, BSD68 sigma 25, GoPro, LOLv1) tables of `hair_jax.data`. Sets
    that are not built are skipped (and named through `log`). `names` picks
    sets by name instead.

    Raises:
      ValueError: unknown setting or set names, or no set is built.
    """
    cfg = eval_data_config(data_dir=data_dir, setting=setting, names=names)
    sets = data.load_test_sets(cfg)
    missing = [name for name in data.test_sets_of(cfg) if name not in sets]
    if sets and missing:
        log(f"Not built in {cfg.data_dir}, skipped: {', '.join(missing)}")
    if not sets:
        wanted = ", ".join(data.test_sets_of(cfg))
        raise ValueError(
            f"none of the test sets ({wanted}) is built in {cfg.data_dir}; build them with "
            "`python -m hair_jax.data.prepare` (docs/data.md)"
        )
    return cfg, sets
