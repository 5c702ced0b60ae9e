"""The package's layers hold (import-linter), the model loads alone, the code is ruff-clean."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Every import inside a function, and why it may stay there: an optional or
# slow library, or a command that checks its flags before loading code.
LAZY_IMPORTS = {
    # jax only for default arguments: `python -m hair_jax.data.prepare` stays jax-free.
    ("hair_jax/data/pipeline.py", "import jax"),
    # scikit-image, only when the synthetic set is asked for.
    ("hair_jax/commands/prepare.py", "from hair_jax.data import synthetic"),
    # Photos of synthetic_large that other wheels bundle (scikit-learn is optional).
    ("hair_jax/data/synthetic.py", "from matplotlib import cbook"),
    ("hair_jax/data/synthetic.py", "from sklearn.datasets import load_sample_image"),
    ("hair_jax/evaluation/giv.py", "from matplotlib.colors import TwoSlopeNorm"),  # the plots
    ("hair_jax/evaluation/giv.py", "from matplotlib.figure import Figure"),  # only the plots
    ("hair_jax/experiments/tables.py", "from matplotlib.figure import Figure"),
    ("hair_jax/evaluation/giv.py", "from sklearn.manifold import TSNE"),  # optional (t-SNE)
    # After a command's flags are checked: loading pulls in jax and the training code.
    ("hair_jax/commands/common.py", "from hair_jax import loading"),
    # Optional: ONNX artifacts (the onnx extra; jax2onnx installed apart, docs/deployment.md).
    ("hair_jax/commands/export.py", "import jax2onnx"),
    ("hair_jax/io/onnx_convert.py", "import jax2onnx"),
    ("hair_jax/io/onnx_convert.py", "from jax2onnx.converter import lower_dimexpr"),
    ("hair_jax/io/onnx_convert.py", "from jax2onnx.converter import output_binding"),
    ("hair_jax/io/onnx_convert.py", "from onnx import helper, numpy_helper"),
    ("hair_jax/io/artifacts.py", "import onnxruntime as ort"),
}


def _run(*args):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


def test_import_contracts_are_kept():
    result = _run(str(BIN / "lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_the_model_loads_without_files_data_training_or_evaluation():
    code = (
        "import json, sys; import hair_jax.nn; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith("
        "('hair_jax', 'orbax', 'grain', 'tensorflow_datasets', 'PIL', 'matplotlib')))))"
    )
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout)
    assert loaded == [
        "hair_jax",
        "hair_jax.nn",
        "hair_jax.nn.dac",
        "hair_jax.nn.hyper",
        "hair_jax.nn.layers",
        "hair_jax.nn.models",
        "hair_jax.nn.nafnet",
        "hair_jax.nn.registry",
        "hair_jax.nn.res_hair",
        "hair_jax.nn.restormer",
        "hair_jax.nn.stages",
    ]


def test_no_import_hides_in_a_function_but_the_listed_ones():
    found = set()
    for path in sorted((ROOT / "hair_jax").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    found.add((path.relative_to(ROOT).as_posix(), ast.unparse(node)))
    assert found == LAZY_IMPORTS


def test_ruff_check_and_format():
    env = {**os.environ, "RUFF_NO_CACHE": "true"}
    for args in (["check", "."], ["format", "--check", "."]):
        result = subprocess.run(
            [str(BIN / "ruff"), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert result.returncode == 0, f"ruff {' '.join(args)}:\n{result.stdout}{result.stderr}"
