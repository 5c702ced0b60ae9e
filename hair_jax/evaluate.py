"""Evaluation after the paper's protocol: per-set PSNR/SSIM, tables, result files.

`evaluate(model, test_sets)` gives one `Row` of mean metrics per test set
(hair_jax.train prints it with `format_table` at the end of training).
`evaluate_checkpoint` is `python eval.py`: it loads any checkpoint kind,
picks the test sets, evaluates, and writes results.json / results.csv (and
optionally the restored images).

The protocol (`PROTOCOL`), as in the reference's test.py: the full image
(no tiling, batch 1), both images centre-cropped to a multiple of 16, the
output clipped to [0, 1], PSNR and SSIM on RGB with data range 1 and
scikit-image's SSIM defaults. Metrics run on the device (`hair_jax.metrics`,
equal to scikit-image's to 1e-4). BT.601 Y-channel metrics are computed
alongside and reported separately, never mixed into the protocol's numbers.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import tempfile
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import tqdm

from hair_jax import inference, metrics
from hair_jax.data.degrade import crop_to_multiple

PROTOCOL = (
    "full image (no tiling, batch 1); both images centre-cropped to a multiple of 16; "
    "output clipped to [0, 1]; PSNR and SSIM on RGB, data_range 1; SSIM as "
    "scikit-image's structural_similarity (7x7 uniform window, sample covariance, "
    "channel_axis); each set's mean over its images, the average over the sets"
)
Y_PROTOCOL = "as above, but on the ITU-R BT.601 Y channel (not the paper's protocol)"
METRICS = ("psnr", "ssim", "psnr_y", "ssim_y")
# Paper-style column titles; other set names are shown as they are.
DISPLAY_NAMES = {
    "sots": "SOTS",
    "rain100l": "Rain100L",
    **{f"bsd68_{s}": f"BSD68 s{s}" for s in (15, 25, 50)},
    **{f"urban100_{s}": f"Urban100 s{s}" for s in (15, 25, 50)},
    "gopro": "GoPro",
    "lol": "LOLv1",
}


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


def _score_fn(predictor: inference.Predictor):
    """Jitted (degraded, clean) -> (restored, {which: {metric: value}})."""

    def score(model, degraded, clean):
        restored = jnp.clip(model(degraded), 0.0, 1.0)
        out = {}
        for which, image in (("restored", restored), ("degraded", degraded)):
            out[which] = {
                "psnr": metrics.psnr(image, clean),
                "ssim": metrics.ssim(image, clean),
                "psnr_y": metrics.psnr(image, clean, y_channel=True),
                "ssim_y": metrics.ssim(image, clean, y_channel=True),
            }
        return restored, out

    return predictor.jit(score)


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
    score = _score_fn(predictor)
    rows = []
    for set_name, images in test_sets.items():
        count = len(images) if max_images is None else min(len(images), max_images)
        per_image = []
        bar = tqdm.tqdm(range(count), desc=set_name, unit="img", disable=not progress)
        for i in bar:
            image = images[i]
            degraded = crop_to_multiple(np.asarray(image.degraded, np.float32), multiple)
            clean = crop_to_multiple(np.asarray(image.clean, np.float32), multiple)
            restored, values = score(jnp.asarray(degraded[None]), jnp.asarray(clean[None]))
            values = jax.tree.map(lambda v: float(v[0]), jax.device_get(values))
            name = str(getattr(image, "name", i)).replace(os.sep, "_")
            per_image.append({"name": name, "height": clean.shape[0], "width": clean.shape[1]})
            per_image[-1].update(values)
            if image_dir is not None:
                _save_png(os.path.join(image_dir, set_name, f"{name}.png"), restored[0])
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


def format_table(rows: list[Row]) -> str:
    """Fixed-width text table, one line per set: degraded vs restored PSNR / SSIM."""
    header = (
        f"{'test set':<24} {'n':>4} {'degraded PSNR':>14} "
        f"{'restored PSNR':>14} {'gain':>7} {'deg SSIM':>9} {'res SSIM':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.name:<24} {r.num_images:>4} {r.degraded_psnr:>14.2f} "
            f"{r.restored_psnr:>14.2f} {r.restored_psnr - r.degraded_psnr:>+7.2f} "
            f"{r.degraded_ssim:>9.4f} {r.restored_ssim:>9.4f}"
        )
    return "\n".join(lines)


def paper_table(rows: list[Row], *, y_channel: bool = False, label: str = "restored") -> str:
    """The paper's layout: a PSNR/SSIM column per test set, then the average.

    The protocol is printed above the table; `y_channel` shows the BT.601 Y
    metrics instead of the protocol's RGB ones.
    """
    psnr, ssim = ("psnr_y", "ssim_y") if y_channel else ("psnr", "ssim")
    columns = [*rows, average(rows)] if rows else []
    titles = [DISPLAY_NAMES.get(r.name, r.name) for r in columns[:-1]] + ["Average"]
    protocol = f"Protocol: {Y_PROTOCOL if y_channel else PROTOCOL}."
    lines = textwrap.wrap(protocol, width=100, subsequent_indent="  ")
    cells = {
        which: [f"{r.metric(which, psnr):.2f}/{r.metric(which, ssim):.4f}" for r in columns]
        for which in ("restored", "degraded")
    }
    cells["images"] = [str(r.num_images) for r in columns]
    widths = [max(len(t), *(len(c[i]) for c in cells.values())) for i, t in enumerate(titles)]
    first = max(len(label), len("degraded input"), len("PSNR/SSIM"))

    def line(name, values):
        return "  ".join([f"{name:<{first}}"] + [f"{v:>{w}}" for v, w in zip(values, widths)])

    lines.append(line("PSNR/SSIM", titles))
    lines.append(line(label, cells["restored"]))
    lines.append(line("degraded input", cells["degraded"]))
    lines.append(line("images", cells["images"]))
    return "\n".join(lines)


def _save_png(path: str, image) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.round(np.clip(np.asarray(image, np.float32), 0, 1) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG")
    write_atomic(path, buffer.getvalue())


def write_atomic(path: str, data: bytes) -> None:
    """Writes under a temporary name in the same directory, then renames."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(path) or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def results_dict(rows: list[Row], **meta) -> dict:
    """The contents of results.json: `meta`, the protocol, per-set and average metrics."""

    def metrics_of(row):
        return {
            which: {m: row.metric(which, m) for m in METRICS} for which in ("restored", "degraded")
        }

    out = dict(meta)
    out["protocol"] = PROTOCOL
    out["y_channel"] = "ITU-R BT.601: Y = 16/255 + (65.481 R + 128.553 G + 24.966 B) / 255"
    out["sets"] = {
        r.name: {"num_images": r.num_images, **metrics_of(r), "images": list(r.images)}
        for r in rows
    }
    out["average"] = metrics_of(average(rows)) if rows else {}
    return out


def write_results(out_dir: str, rows: list[Row], **meta) -> tuple[str, str]:
    """Writes results.json and results.csv to `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, "results.json")
    csv_path = os.path.join(out_dir, "results.csv")
    text = json.dumps(results_dict(rows, **meta), indent=2, allow_nan=True)
    write_atomic(json_path, (text + "\n").encode())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    fields = [*METRICS, *(f"degraded_{m}" for m in METRICS)]
    writer.writerow(["set", "num_images", *fields])
    for r in [*rows, average(rows)] if rows else []:
        values = [r.metric("restored", m) for m in METRICS] + [
            r.metric("degraded", m) for m in METRICS
        ]
        writer.writerow([r.name, r.num_images, *(f"{v:.6f}" for v in values)])
    write_atomic(csv_path, buffer.getvalue().encode())
    return json_path, csv_path


# ---------------------------------------------------------------------------
# `python eval.py`: a checkpoint of any kind on the configured test sets.
# ---------------------------------------------------------------------------
SETTINGS = ("3d", "5d")


@dataclasses.dataclass
class Report:
    """What `evaluate_checkpoint` did."""

    rows: list[Row]
    loaded: object  # checkpoint.LoadedModel
    data_name: str
    data_dir: str
    output: str
    files: tuple[str, ...]
    compiles: int
    seconds: float
    giv_summary: str | None = None


def eval_data_config(*, data_dir=None, setting="3d", names=None):
    """The data config of `select_test_sets` (see there); loads nothing.

    Raises:
      ValueError: unknown setting or set names.
    """
    from hair_jax import data  # pylint: disable=g-import-not-at-top

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
    from hair_jax import data  # pylint: disable=g-import-not-at-top

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


def _setting_of(loaded) -> str:
    """'5d' for a workdir trained on five tasks, else '3d'."""
    cfg = loaded.data_config
    if cfg is not None and (cfg.get("name") == "all_in_one_5d" or cfg.get("synthetic_five_task")):
        return "5d"
    return "3d"


def default_output(loaded, data_name: str) -> str:
    """Where results go by default, by checkpoint kind.

    workdir -> <workdir>/eval/<step>[-raw]/<data>; export or .ckpt -> a
    sibling `<name>-eval/<data>` (e.g. exports/hair3d-eval/all_in_one_3d).
    """
    from hair_jax import checkpoint  # pylint: disable=g-import-not-at-top

    path = os.path.abspath(loaded.path)
    if loaded.kind == checkpoint.WORKDIR:
        step = f"{loaded.step}-raw" if loaded.weights == "raw" else str(loaded.step)
        return os.path.join(path, "eval", step, data_name)
    stem = os.path.splitext(path)[0] if loaded.kind == checkpoint.TORCH else path.rstrip(os.sep)
    return os.path.join(f"{stem}-eval", data_name)


def check_output(path: str, flag: str = "--output") -> None:
    """Raises ValueError unless directory `path` exists or can be made.

    Called before evaluating, so a bad output is reported before any work;
    the message tells to choose another `flag`.
    """
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"cannot write to {path}: {existing} is a file; choose another {flag}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(
            f"cannot write to {path}: {existing} is not writable; choose another {flag}"
        )


def evaluate_checkpoint(
    path: str,
    *,
    step: int | None = None,
    raw_weights: bool = False,
    data_dir: str | None = None,
    setting: str | None = None,
    test_sets=None,
    max_images: int | None = None,
    output: str | None = None,
    save_images: bool = False,
    giv_plot: str | None = None,
    progress: bool = True,
    log=print,
) -> Report:
    """Loads a checkpoint, evaluates it and writes the result files.

    Args:
      path: a training workdir, a model export or a PyTorch .ckpt
        (`checkpoint.load_model`).
      step, raw_weights: workdirs only: which step (default latest) and the
        raw instead of the EMA weights.
      data_dir, setting, test_sets: which sets (`select_test_sets`); the
        setting defaults to the run's ('5d' if it trained on five tasks).
      max_images: at most this many images per set.
      output: directory for results.json, results.csv and images/
        (default `default_output`).
      save_images: also write the restored images (8-bit PNG).
      giv_plot: also draw the GIVs in 2-D into this PNG (`hair_jax.giv`;
        Res-HAIR only) and put their separation into results.json.
      progress: tqdm bars.
      log: called with progress lines.

    Returns:
      A `Report`.
    """
    from hair_jax import checkpoint  # pylint: disable=g-import-not-at-top

    loaded = checkpoint.load_model(path, step=step, raw_weights=raw_weights)
    if giv_plot and not callable(getattr(loaded.model, "giv", None)):
        raise ValueError(f"--giv_plot needs a Res-HAIR model; {loaded.describe()} has no GIV")
    log(f"Model: {loaded.describe()}")
    setting = setting or _setting_of(loaded)
    data_cfg, sets = select_test_sets(data_dir=data_dir, setting=setting, names=test_sets, log=log)
    log(
        f"Test sets in {data_cfg.data_dir}: {', '.join(f'{k} ({len(v)})' for k, v in sets.items())}"
    )
    output = output or default_output(loaded, data_cfg.name)
    check_output(output)
    predictor = inference.Predictor(loaded.model)
    start = time.perf_counter()
    rows = evaluate_sets(
        predictor,
        sets,
        max_images=max_images,
        progress=progress,
        image_dir=os.path.join(output, "images") if save_images else None,
    )
    seconds = time.perf_counter() - start
    meta, giv_summary = {}, None
    if giv_plot:
        from hair_jax import giv  # pylint: disable=g-import-not-at-top

        probes = giv.probes_for(
            data_dir=data_dir, setting=setting, test_sets=test_sets, max_images=max_images
        )
        gmap = giv.collect(loaded.model, probes)
        giv.save_figure(giv.plot_givs(gmap, title=loaded.describe()), giv_plot)
        meta["giv"] = {"plot": giv_plot, **giv.separation(gmap)}
        giv_summary = giv.summary(meta["giv"])
    files = write_results(
        output,
        rows,
        checkpoint=loaded.path,
        kind=loaded.kind,
        step=loaded.step,
        weights=loaded.weights,
        model=dataclasses.asdict(loaded.model.config),
        data={"name": data_cfg.name, "data_dir": data_cfg.data_dir},
        max_images=max_images,
        compiles=predictor.traces,
        seconds=round(seconds, 3),
        **meta,
    )
    return Report(
        rows,
        loaded,
        data_cfg.name,
        data_cfg.data_dir,
        output,
        files,
        predictor.traces,
        seconds,
        giv_summary=giv_summary,
    )
