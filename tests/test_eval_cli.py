"""eval.py end to end on the synthetic test sets, for every checkpoint kind.

The same weights must give the same numbers whichever way they are stored:
a training workdir and its export; the authors' .ckpt (the tiny Res-HAIR
fixture) and its conversion to an export. A mistake must end with one line
on stderr, exit code 2 and nothing written.
"""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import PIL.Image
import pytest
import train_helpers

from hair_jax import convert, evaluate, export, loading
from hair_jax import train as hair_train
from hair_jax.data import synthetic
from hair_jax.evaluation import protocol
from hair_jax.io import model_export
from hair_jax.nn import models

ROOT = Path(__file__).parent.parent
CKPT = ROOT / "tests" / "data" / "hair_dim16_ref.ckpt"
# One image of two sets keeps each evaluation to a few seconds on a CPU.
SETS = ["synthetic_denoise_25", "synthetic_derain"]
jax.config.update("jax_compilation_cache_dir", train_helpers.CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The synthetic sets, built once; found through $HAIR_DATA_DIR as by eval.py."""
    path = str(tmp_path_factory.mktemp("tfds"))
    synthetic.ensure_built(path)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HAIR_DATA_DIR", path)
        yield path


def _train_workdir(path):
    """A 4-step training run of the test Restormer (EMA on), as the training tests make."""
    hair_train.train_and_evaluate(
        train_helpers.tiny_config(),
        str(path),
        make_loader=train_helpers.fake_loader_factory(),
        test_sets={},
    )


def _eval(path, **kw):
    kw = {"test_sets": SETS, "max_images": 1, "progress": False, "log": lambda _: None, **kw}
    return evaluate.evaluate_checkpoint(str(path), **kw)


def _numbers(results):
    return {name: (s["restored"], s["degraded"]) for name, s in results["sets"].items()}


def _assert_same_numbers(a, b):
    assert a.keys() == b.keys() and a.keys() <= set(SETS)
    for name in a:
        for got, want in zip(a[name], b[name]):
            for metric in protocol.METRICS:
                assert got[metric] == pytest.approx(want[metric], abs=1e-6), (name, metric)


# One test for everything that needs the training run: pytest-xdist would
# build a module fixture once per worker, and training is the slow part.
def test_training_workdir_and_its_export(data_dir, tmp_path):
    workdir = tmp_path / "run"
    _train_workdir(workdir)

    # python eval.py on the workdir: table, files, images, compile count; no
    # library log lines, also while it builds the synthetic sets afresh.
    fresh = tmp_path / "fresh_tfds"
    env = dict(
        os.environ, PYTHONPATH=str(ROOT), HAIR_DATA_DIR=str(fresh), **train_helpers.cache_env()
    )
    env.pop("JAX_PLATFORMS")  # jax then probes for a TPU and logs that it found none
    cmd = [
        sys.executable,
        "eval.py",
        f"--checkpoint={workdir}",
        f"--test_sets={','.join(SETS)}",
        "--max_images=1",
        "--save_images",
        "--y_channel",
    ]
    proc = subprocess.run(
        cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    train_helpers.assert_quiet(proc.stdout + proc.stderr)
    built = [line for line in proc.stderr.splitlines() if "synthetic dataset" in line]
    assert len(built) == 1 and f"Building the synthetic dataset in {fresh}" in built[0]
    assert synthetic.is_built(str(fresh))
    lines = proc.stdout.splitlines()
    assert any(line.startswith("Protocol: full image") for line in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("PSNR/SSIM"))
    assert lines[header].split() == ["PSNR/SSIM", *SETS, "Average"]
    assert lines[header + 1].startswith("restored")
    assert any("BT.601 Y channel" in line for line in lines)  # --y_channel
    assert "1 compile(s) of the jitted forward pass" in proc.stdout
    out = workdir / "eval" / "4" / "synthetic"  # <workdir>/eval/<step>/<data>
    with open(out / "results.json") as f:
        results = json.load(f)
    assert (results["kind"], results["step"], results["weights"]) == ("workdir", 4, "ema")
    assert results["compiles"] == 1 and results["model"]["arch"] == "restormer"
    assert all(results["sets"][s]["num_images"] == 1 for s in SETS)
    assert (out / "results.csv").read_text().splitlines()[0].startswith("set,num_images,psnr,ssim")
    assert sorted(os.listdir(out / "images")) == sorted(SETS)
    assert os.listdir(out / "images" / "synthetic_derain") == ["astronaut_0.png"]

    # An export of the same (EMA) weights gives the same numbers.
    export = tmp_path / "export"
    model_export.save_model(loading.load_model(str(workdir)).model, export)
    report = _eval(export)
    assert report.output == str(tmp_path / "export-eval" / "synthetic")
    with open(report.files[0]) as f:
        from_export = json.load(f)
    assert from_export["kind"] == "export" and from_export["step"] is None
    _assert_same_numbers(_numbers(from_export), _numbers(results))

    # Raw instead of EMA weights, an earlier step, a step that is not there.
    ema = loading.load_model(str(workdir))
    raw = loading.load_model(str(workdir), raw_weights=True)
    earlier = loading.load_model(str(workdir), step=2, raw_weights=True)
    assert [(m.step, m.weights) for m in (ema, raw, earlier)] == [
        (4, "ema"),
        (4, "raw"),
        (2, "raw"),
    ]
    kernels = [np.asarray(m.model.output.kernel[...]) for m in (ema, raw, earlier)]
    assert not np.array_equal(kernels[0], kernels[1])
    assert not np.array_equal(kernels[1], kernels[2])
    with pytest.raises(ValueError, match=r"no checkpoint of step 3; --step can be one of 2, 4"):
        loading.load_model(str(workdir), step=3)

    # The Restormer has no GIV to draw.
    line = _fails_with_one_line(tmp_path, f"--checkpoint={workdir}", f"--giv_plot={tmp_path}/g.png")
    assert f"--giv_plot needs a HAIR model; {workdir} (training workdir" in line


def test_torch_ckpt_and_its_export_give_the_same_numbers(data_dir, tmp_path):
    ckpt_report = _eval(CKPT, output=str(tmp_path / "from_ckpt"), test_sets=SETS[-1:])
    assert ckpt_report.loaded.kind == "torch" and ckpt_report.compiles == 1
    assert convert.main([str(CKPT), str(tmp_path / "export")]) == 0
    export_report = _eval(tmp_path / "export", test_sets=SETS[-1:])
    results = []
    for report in (ckpt_report, export_report):
        with open(report.files[0]) as f:
            results.append(json.load(f))
    assert results[0]["model"]["arch"] == "res_hair" and results[0]["model"]["dim"] == 16
    _assert_same_numbers(_numbers(results[0]), _numbers(results[1]))


def test_standalone_artifact_gives_the_models_numbers(data_dir, tmp_path):
    """eval.py on a .jaxexport: the model's numbers, GIV plot included, one compile."""
    model = models.build_model(
        models.ModelConfig(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, dac_groups=12)
    )
    model_export.save_model(model, tmp_path / "weights")
    artifact = tmp_path / "model.jaxexport"
    artifact.write_bytes(export.export_jax(model))
    kw = {"test_sets": SETS[-1:], "giv_plot": str(tmp_path / "giv.png")}
    reports = [_eval(tmp_path / "weights", **kw), _eval(artifact, **kw)]
    assert reports[1].loaded.kind == "artifact" and reports[1].compiles == 1
    assert reports[1].output == str(tmp_path / "model-eval" / "synthetic")
    results = []
    for report in reports:
        with open(report.files[0]) as f:
            results.append(json.load(f))
    assert results[1]["model"] == results[0]["model"]
    assert results[1]["giv"]["type_accuracy"] == pytest.approx(results[0]["giv"]["type_accuracy"])
    _assert_same_numbers(_numbers(results[0]), _numbers(results[1]))


def test_giv_plot(data_dir, tmp_path):
    """--giv_plot: the PNG, the separation line, and the same numbers in results.json."""
    plot, out = tmp_path / "plots" / "giv.png", tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), **train_helpers.cache_env())
    cmd = [
        sys.executable,
        "eval.py",
        f"--checkpoint={CKPT}",
        "--test_sets=synthetic_derain",
        "--max_images=1",
        f"--output={out}",
        f"--giv_plot={plot}",
    ]
    proc = subprocess.run(
        cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with PIL.Image.open(plot) as im:
        assert im.format == "PNG" and im.width > 500
    with open(out / "results.json") as f:
        stats = json.load(f)["giv"]
    assert stats["plot"] == str(plot) and stats["num_images"] == 120  # 24 per task, 5 tasks
    assert stats["chance"] == pytest.approx(1 / 3) and stats["task_chance"] == pytest.approx(1 / 5)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("GIV nearest"))
    assert line == (
        "GIV nearest-centroid accuracy (balanced, leave-one-out, 120 images): "
        f"degradation type {stats['type_accuracy']:.1%} (chance 33.3%), "
        f"task with noise level {stats['task_accuracy']:.1%} (chance 20.0%)"
    )
    assert f"GIV plot: {plot}" in proc.stdout


def test_not_a_checkpoint_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    for path, message in [
        (tmp_path / "missing", "no such file or directory"),
        (tmp_path / "empty", "is not a checkpoint: neither a training workdir"),
        (tmp_path / "notes.txt", "notes.txt"),
    ]:
        with pytest.raises(ValueError, match=message) as e:
            loading.load_model(str(path))
        assert str(path) in str(e.value)
    line = _fails_with_one_line(tmp_path, f"--checkpoint={tmp_path / 'empty'}")
    assert f"{tmp_path / 'empty'} is not a checkpoint" in line


# ------------------------------------------------ mistakes: one line, exit 2 --
def _snapshot(top):
    """Every path under `top` with its modification time."""
    paths = [
        os.path.join(root, name) for root, dirs, files in os.walk(top) for name in dirs + files
    ]
    return {path: os.lstat(path).st_mtime_ns for path in [str(top), *paths]}


def _fails_with_one_line(tmp_path, *args):
    """Runs eval.py; asserts exit code 2, one stderr line and tmp_path unchanged."""
    before = _snapshot(tmp_path)
    # Sets that eval.py would build go here, where the snapshot sees them.
    env = dict(os.environ, PYTHONPATH=str(ROOT), HAIR_DATA_DIR=str(tmp_path / "tfds"))
    proc = subprocess.run(
        [sys.executable, "eval.py", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("eval.py: error: ")
    assert _snapshot(tmp_path) == before
    return lines[0]


@pytest.mark.parametrize(
    "args, words",
    [
        ([], ["--checkpoint is required"]),
        (["{ckpt}", "runs/demo"], ["unexpected arguments ['runs/demo']", "--checkpoint=PATH"]),
        (["{ckpt}", "--max_images=abc"], ["--max_images=abc", "invalid literal"]),
        (["{ckpt}", "--max_image=1"], ["'max_image'", "Did you mean: max_images"]),
        (["{ckpt}", "--setting=4d"], ["--setting=4d", "3d|5d"]),
        (["--checkpoint={tmp}/missing"], ["--checkpoint: {tmp}/missing: no such file"]),
        (["--checkpoint={tmp}/notes.txt"], ["{tmp}/notes.txt: not a torch checkpoint"]),
        (["{ckpt}", "--max_images=0"], ["--max_images must be at least 1, got 0"]),
        (["{ckpt}", "--data_dir={tmp}/nothere"], ["--data_dir: {tmp}/nothere: no such directory"]),
        (["{ckpt}", "--data_dir={tmp}"], ["none of the test sets", "is built in {tmp};"]),
        (["{ckpt}", "--output={tmp}/notes.txt"], ["{tmp}/notes.txt is a file", "--output"]),
        (["{ckpt}", "--output={tmp}/notes.txt/out"], ["{tmp}/notes.txt is a file", "--output"]),
        (
            ["{ckpt}", "--test_sets=synthetic_derian"],
            ["--test_sets", "'synthetic_derian'", "'synthetic_derain'"],
        ),
        (["{ckpt}", "--step=2"], ["hair.ckpt is a PyTorch checkpoint", "--step and --raw_weights"]),
        (
            ["{ckpt}", "--raw_weights"],
            ["hair.ckpt is a PyTorch checkpoint", "--step and --raw_weights"],
        ),
        (["{ckpt}", "--giv_plot={tmp}/giv.txt"], ["--giv_plot must name a .png file"]),
        (["{ckpt}", "--giv_plot={tmp}"], ["--giv_plot must name a .png file"]),
        (["{ckpt}", "--giv_plot={tmp}/notes.txt/giv.png"], ["notes.txt is a file", "--giv_plot"]),
    ],
)
def test_flag_mistake_is_one_line(tmp_path, args, words):
    # A link, so that a default output would appear in tmp_path (hair-eval/).
    (tmp_path / "hair.ckpt").symlink_to(CKPT)
    (tmp_path / "notes.txt").write_text("hello")
    fill = {"tmp": tmp_path, "ckpt": f"--checkpoint={tmp_path / 'hair.ckpt'}"}
    line = _fails_with_one_line(tmp_path, *(arg.format(**fill) for arg in args))
    for word in words:
        assert word.format(**fill) in line


@pytest.fixture
def fake_workdir(tmp_path):
    """A workdir with the tiny config and the folders of steps 2 and 4, both empty."""
    workdir = tmp_path / "run"
    (workdir / "checkpoints" / "2").mkdir(parents=True)
    (workdir / "checkpoints" / "4").mkdir()
    config = train_helpers.tiny_config().to_json_best_effort(indent=2, sort_keys=True)
    (workdir / "config.json").write_text(config)
    return workdir


def test_step_the_workdir_lacks_is_one_line(tmp_path, fake_workdir):
    line = _fails_with_one_line(tmp_path, f"--checkpoint={fake_workdir}", "--step=3")
    assert f"{fake_workdir}: no checkpoint of step 3; --step can be one of 2, 4" in line


def test_damaged_checkpoint_is_one_line(tmp_path, fake_workdir):
    line = _fails_with_one_line(tmp_path, f"--checkpoint={fake_workdir}")
    assert f"{fake_workdir}: cannot restore step 4" in line and "is it damaged?" in line


def test_damaged_export_is_one_line(tmp_path):
    export = tmp_path / "export"
    (export / "params").mkdir(parents=True)  # the parameters' files are gone
    (export / "config.json").write_text(models.VARIANTS["tiny"].to_json())
    line = _fails_with_one_line(tmp_path, f"--checkpoint={export}")
    assert f"{export / 'params'}: cannot read the parameters" in line


def test_lying_safetensors_is_one_line(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    lying = tmp_path / "w.safetensors"  # 16 bytes declared, 8 there
    lying.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    line = _fails_with_one_line(tmp_path, f"--checkpoint={lying}")
    assert f"{lying}: tensor 'w': data_offsets [0, 16] run past the data's 8 bytes" in line


def test_naf_hair_demo_workdir_draws_its_giv_picture_and_measures_selection(data_dir, tmp_path):
    """NAF-HAIR's GIV varies at its demo's 64 px, so t-SNE (scikit-learn is installed) runs."""
    from configs import naf_hair_demo  # pylint: disable=g-import-not-at-top

    config = naf_hair_demo.get_config()
    config.data.data_dir = data_dir
    t = config.train
    t.num_steps, t.warmup_steps, t.global_batch_size = 3, 1, 2
    t.log_every, t.image_every, t.checkpoint_every = 3, 0, 3
    workdir = tmp_path / "naf"
    hair_train.train_and_evaluate(config, str(workdir), test_sets={})
    plot, out = tmp_path / "giv.png", tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), **train_helpers.cache_env())
    cmd = [
        sys.executable,
        "eval.py",
        f"--checkpoint={workdir}",
        "--max_images=1",
        f"--output={out}",
        f"--giv_plot={plot}",
        "--selection",
    ]
    proc = subprocess.run(
        cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with PIL.Image.open(plot) as im:  # two rows: PCA and t-SNE
        assert im.format == "PNG" and im.height > 900
    with open(out / "results.json") as f:
        results = json.load(f)
    assert results["giv"]["warning"] is None and results["giv"]["num_images"] == 120
    selection = results["selection"]
    assert set(selection) == {
        "entropy",
        "type_mi",
        "logit_spread",
        "uniform_drop",
        "swap_drop",
        "selects",
    }
    line = next(line for line in proc.stdout.splitlines() if line.startswith("Selection on"))
    assert f"normalised entropy {selection['entropy']:.3f}" in line
    assert line.endswith("(entropy <= 0.8, type_mi >= 0.2, swap_drop >= 0.1, uniform_drop >= 0.1)")
