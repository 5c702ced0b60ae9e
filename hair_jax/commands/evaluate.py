"""`python eval.py`: load a checkpoint of any kind, evaluate it, write the result files.

`evaluate_checkpoint` does the command's work (eval.py parses the flags):
it loads the model (`hair_jax.loading`), picks the test sets, measures
(`hair_jax.evaluation.measure`: the paper's protocol and, if asked, the GIV
picture and the selection measures) and writes results.json / results.csv
(`hair_jax.evaluation.report`) and, if asked, the restored images.
"""

from __future__ import annotations

import dataclasses
import os

from hair_jax import inference, loading
from hair_jax.commands import common
from hair_jax.evaluation import giv, measure, protocol, report


@dataclasses.dataclass
class Report:
    """What `evaluate_checkpoint` did."""

    rows: list[protocol.Row]
    loaded: loading.LoadedModel
    data_name: str
    data_dir: str
    output: str
    files: tuple[str, ...]
    compiles: int
    seconds: float
    giv_summary: str | None = None


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
    path = os.path.abspath(loaded.path)
    if loaded.kind == loading.WORKDIR:
        step = f"{loaded.step}-raw" if loaded.weights == "raw" else str(loaded.step)
        return os.path.join(path, "eval", step, data_name)
    is_file = loaded.kind in (loading.TORCH, loading.SAFETENSORS, loading.ARTIFACT)
    stem = os.path.splitext(path)[0] if is_file else path.rstrip(os.sep)
    return os.path.join(f"{stem}-eval", data_name)


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
    selection_measures: bool = False,
    progress: bool = True,
    log=print,
) -> Report:
    """Loads a checkpoint, evaluates it and writes the result files.

    Args:
      path: a training workdir, a model export or a PyTorch .ckpt
        (`hair_jax.loading.load_model`).
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
      selection_measures: also measure whether the model selects
        (`selection.on_test_sets` on these test sets; HAIR models, not
        artifacts) and put the measures into results.json.
      progress: tqdm bars.
      log: called with progress lines.

    Returns:
      A `Report`.
    """
    loaded = loading.load_model(path, step=step, raw_weights=raw_weights)
    predictor = inference.as_predictor(loaded.model)
    if giv_plot and not predictor.has_giv:
        raise ValueError(f"--giv_plot needs a HAIR model; {loaded.describe()} has no GIV")
    if selection_measures and not (
        isinstance(predictor, inference.Predictor) and predictor.has_giv
    ):
        raise ValueError(f"--selection needs a HAIR model; {loaded.describe()} has no selectors")
    log(f"Model: {loaded.describe()}")
    setting = setting or _setting_of(loaded)
    data_cfg, sets = protocol.select_test_sets(
        data_dir=data_dir, setting=setting, names=test_sets, log=log
    )
    log(
        f"Test sets in {data_cfg.data_dir}: {', '.join(f'{k} ({len(v)})' for k, v in sets.items())}"
    )
    output = output or default_output(loaded, data_cfg.name)
    common.check_output(output)
    probes = None
    if giv_plot:
        probes = giv.probes_for(
            data_dir=data_dir, setting=setting, test_sets=test_sets, max_images=max_images
        )
    measured = measure.measure(
        predictor,
        sets,
        max_images=max_images,
        progress=progress,
        image_dir=os.path.join(output, "images") if save_images else None,
        giv_probes=probes,
        giv_plot=giv_plot,
        title=loaded.describe(),
        selection_measures=selection_measures,
    )
    files = report.write_results(
        output,
        measured.rows,
        checkpoint=loaded.path,
        kind=loaded.kind,
        step=loaded.step,
        weights=loaded.weights,
        model=loaded.model.manifest.model
        if loaded.kind == loading.ARTIFACT
        else dataclasses.asdict(loaded.model.config),
        data={"name": data_cfg.name, "data_dir": data_cfg.data_dir},
        max_images=max_images,
        compiles=measured.compiles,
        seconds=round(measured.seconds, 3),
        **measured.extra,
    )
    return Report(
        measured.rows,
        loaded,
        data_cfg.name,
        data_cfg.data_dir,
        output,
        files,
        measured.compiles,
        measured.seconds,
        giv_summary=measured.summary,
    )
