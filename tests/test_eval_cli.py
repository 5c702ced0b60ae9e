"""eval.py end to end on the synthetic test sets, for every checkpoint kind.

The same weights must give the same numbers whichever way they are stored:
a training workdir and its export; the authors' .ckpt (the tiny Res-HAIR
fixture) and its conversion to an export.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from hair_jax import checkpoint, convert, evaluate
from hair_jax import train as hair_train
from hair_jax.data import synthetic
import train_helpers

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
            for metric in evaluate.METRICS:
                assert got[metric] == pytest.approx(want[metric], abs=1e-6), (name, metric)


# One test for everything that needs the training run: pytest-xdist would
# build a module fixture once per worker, and training is the slow part.
def test_training_workdir_and_its_export(data_dir, tmp_path):
    workdir = tmp_path / "run"
    _train_workdir(workdir)

    # python eval.py on the workdir: table, files, images, compile count.
    env = dict(os.environ, PYTHONPATH=str(ROOT), **train_helpers.cache_env())
    cmd = [
        sys.executable,
        "eval.py",
        f"--checkpoint={workdir}",
        f"--test_sets={','.join(SETS)}",
        "--max_images=1",
        "--save_images",
        "--y_channel",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("Protocol: full image") for line in lines)
    header = [i for i, line in enumerate(lines) if line.startswith("PSNR/SSIM")][0]
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
    checkpoint.save_model(checkpoint.load_model(str(workdir)).model, export)
    report = _eval(export)
    assert report.output == str(tmp_path / "export-eval" / "synthetic")
    with open(report.files[0]) as f:
        from_export = json.load(f)
    assert from_export["kind"] == "export" and from_export["step"] is None
    _assert_same_numbers(_numbers(from_export), _numbers(results))

    # Raw instead of EMA weights, an earlier step, a step that is not there.
    ema = checkpoint.load_model(str(workdir))
    raw = checkpoint.load_model(str(workdir), raw_weights=True)
    earlier = checkpoint.load_model(str(workdir), step=2, raw_weights=True)
    assert [(m.step, m.weights) for m in (ema, raw, earlier)] == [
        (4, "ema"),
        (4, "raw"),
        (2, "raw"),
    ]
    kernels = [np.asarray(m.model.output.kernel[...]) for m in (ema, raw, earlier)]
    assert not np.array_equal(kernels[0], kernels[1])
    assert not np.array_equal(kernels[1], kernels[2])
    with pytest.raises(ValueError, match=r"no checkpoint of step 3 .* \(steps 2, 4\)"):
        checkpoint.load_model(str(workdir), step=3)


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


def test_not_a_checkpoint_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    for path, message in [
        (tmp_path / "missing", "no such file or directory"),
        (tmp_path / "empty", "is not a checkpoint: neither a training workdir"),
        (tmp_path / "notes.txt", "notes.txt"),
    ]:
        with pytest.raises(ValueError, match=message) as e:
            checkpoint.load_model(str(path))
        assert str(path) in str(e.value)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "eval.py", f"--checkpoint={tmp_path / 'empty'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert (
        f"{tmp_path / 'empty'} is not a checkpoint" in proc.stderr
        and "Traceback" not in proc.stderr
    )
