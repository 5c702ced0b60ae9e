"""The benchmark script runs end to end and prints well-formed JSON lines
(a quick run on a tiny model; timings are never asserted)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

# Stands in for ../shared/tools/ref_bench.py: same command line, same rows.
FAKE_REF_BENCH = """
import argparse, json
p = argparse.ArgumentParser()
p.add_argument("ref_dir"); p.add_argument("--sizes", nargs="*"); p.add_argument("--train_batches", nargs="*")
p.add_argument("--train_size"); p.add_argument("--repeats"); p.add_argument("--block", nargs=2)
a = p.parse_args()
c, hw = a.block
for what in [f"block C{c} 1x{hw}x{hw} fwd", f"block C{c} 1x{hw}x{hw} fwd+bwd", "infer 1x64x64"]:
    print(json.dumps({"peer": "torch-ref", "what": what, "s": 2.0, "peak_rss_gb": 1.0}))
"""


def test_benchmark_prints_rows_and_ratios(tmp_path):
    fake = tmp_path / "ref_bench.py"
    fake.write_text(FAKE_REF_BENCH)
    cmd = [
        sys.executable,
        "benchmarks/bench_model.py",
        "--variants",
        "tiny",
        "--infer",
        "64",  # the tiny Res-HAIR's smallest size
        "--train",
        "1",
        "--train_size",
        "64",
        "--repeats",
        "1",
        "--block",
        "8",
        "16",
        "--reference",
        str(tmp_path),
        "--ref_bench",
        str(fake),
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    ours = [r for r in rows if r.get("peer") == "hair-jax"]
    assert [r["what"] for r in ours] == [
        "infer 1x64x64",
        "train step 1x64x64",
        "block C8 1x16x16 fwd",
        "block C8 1x16x16 fwd+bwd",
        "block C8 attn fwd+bwd",
        "block C8 ffn fwd+bwd",
    ]
    for r in ours:
        assert "error" not in r, r
        assert r["s"] > 0 and r["compile_s"] >= 0 and r["peak_rss_gb"] > 0 and "temp_gb" in r
    assert ours[1]["images_per_s"] == round(1 / ours[1]["s"], 2)
    assert len([r for r in rows if r.get("peer") == "torch-ref"]) == 3
    # Ratios for the rows both sides measured (the tiny model is not the reference's).
    ratios = {r["of"]: r for r in rows if r["what"] == "ratio"}
    assert sorted(ratios) == ["block C8 1x16x16 fwd", "block C8 1x16x16 fwd+bwd"]
    for of, r in ratios.items():
        mine = next(o for o in ours if o["what"] == of)
        assert r["speedup"] == round(2.0 / mine["s"], 2)
        assert "mem_ratio" not in r  # a block's peak is not comparable (see the script)


def test_benchmark_reports_a_missing_reference_script(tmp_path):
    cmd = [
        sys.executable,
        "benchmarks/bench_model.py",
        "--reference",
        str(tmp_path),
        "--ref_bench",
        str(tmp_path / "nope.py"),
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.strip().endswith(
        "nope.py not found; pass --ref_bench PATH"
    )


def test_roofline_bound_and_rate():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import roofline  # pylint: disable=g-import-not-at-top

    # 1 TFLOP on 100 TFLOP/s is 10 ms; 1 GB at 1 TB/s is 1 ms: compute-bound.
    assert roofline.roofline(1e12, 1e9, 100e12, 1e12) == (100.0, "compute")
    assert roofline.roofline(1e9, 1e10, 100e12, 1e12) == (100.0, "memory")
    assert set(roofline.ACCELERATORS) == set(roofline.SOURCES)
    for name, spec in roofline.ACCELERATORS.items():
        assert set(spec) == {"float32", "bfloat16", "hbm"}, name


def test_gpu_run_rejects_bad_arguments(tmp_path):
    script = str(ROOT / "benchmarks" / "gpu_run.sh")
    out = subprocess.run(["bash", script, "--fast"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "unknown argument --fast" in out.stderr
    out = subprocess.run(["bash", script, "--ref", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"--ref {tmp_path} has no net/HAIR.py" in out.stderr


def test_benchmark_imports_no_data_pipeline():
    """GPU images carry jax and torch but not grain or tensorflow-datasets."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import bench_model, roofline; "
        "from hair_jax.nn import models, restormer; "
        "print(sorted({m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = out.stdout
    assert "'jax'" in loaded and "'flax'" in loaded
    for heavy in ("grain", "tensorflow_datasets", "tensorflow", "orbax"):
        assert f"'{heavy}'" not in loaded, heavy


def test_export_benchmark_prints_rows_and_ratios(tmp_path):
    pytest.importorskip(
        "jax2onnx", reason="docs/deployment.md: pip install --no-deps jax2onnx==0.17.1"
    )
    cmd = [sys.executable, "benchmarks/bench_export.py", "--variant", "tiny", "--sizes", "64"]
    cmd += ["--repeats", "1", "--artifacts", str(tmp_path), "--profile"]
    # The tests' path (pyproject's pythonpath: .jax2onnx) for the script too.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["wrote"] for r in rows[:2]] == ["tiny.jaxexport", "tiny.onnx"]
    graph = rows[2]
    assert graph["onnx"] == "tiny.onnx" and graph["Conv"] > 0 and "Einsum" not in graph
    assert graph["nodes"] == sum(v for k, v in graph.items() if k not in ("onnx", "nodes"))
    assert [(r["runtime"], r["size"]) for r in rows[3:6]] == [
        ("jax", 64),
        ("jaxexport", 64),
        ("onnxruntime", 64),
    ]
    by = {r["runtime"]: r["s"] for r in rows[3:6]}
    profile = rows.pop(6)
    assert (profile["profile"], profile["size"]) == ("tiny", 64)
    shares = profile["kernel_time_pct"]
    assert len(shares) == 10 and "Conv" in shares and 0 < sum(shares.values()) <= 100.5
    assert list(shares.values()) == sorted(shares.values(), reverse=True)
    assert rows[6] == {
        "ratio": True,
        "model": "tiny",
        "size": 64,
        "onnxruntime_over_jax": round(by["onnxruntime"] / by["jax"], 3),
        "jaxexport_over_jax": round(by["jaxexport"] / by["jax"], 3),
    }
    assert set(rows[7]) == {"jax", "onnxruntime", "cpus"}
    assert sorted(os.listdir(tmp_path)) == ["tiny.jaxexport", "tiny.onnx"]  # kept
