"""The declared requirements admit the JAX stacks that current runtimes ship.

The package registry of the test machine may lag behind GPU images and
Colab, so these versions cannot be installed here; instead the requirements
in pyproject.toml are checked against them, and every upper bound must name
the break it guards against.
"""

import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parent.parent
PYPROJECT = ROOT / "pyproject.toml"

# What current accelerator runtimes ship (a CUDA image: jax 0.11.2; the
# public index: jax 0.12.0.1, flax 0.12.12).
RUNTIME_VERSIONS = [
    {"jax": "0.11.2", "jaxlib": "0.11.2"},
    {"jax": "0.12.0.1", "jaxlib": "0.12.0.1", "flax": "0.12.12"},
]


def _requirements():
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {Requirement(d).name.replace("_", "-"): Requirement(d) for d in deps}


def test_runtime_jax_versions_satisfy_the_requirements():
    reqs = _requirements()
    assert {"jax", "flax"} <= set(reqs)
    for versions in RUNTIME_VERSIONS:
        for name, version in versions.items():
            if name in reqs:
                assert reqs[name].specifier.contains(version), (name, version, reqs[name])


def test_the_check_rejects_a_capped_requirement():
    # The check above is only worth something if a cap would fail it.
    assert not Requirement("jax>=0.8.1,<0.11").specifier.contains("0.11.2")


def test_every_upper_bound_names_its_break():
    text = PYPROJECT.read_text()
    block = text[text.index("dependencies = [") : text.index("]", text.index("dependencies = ["))]
    for line in block.splitlines():
        m = re.match(r'\s*"([^"]+)",?\s*(#.*)?$', line)
        if m and re.search(r"<(?!=)|<=|~=|==", m.group(1)):
            assert m.group(2), f"upper bound without a comment naming the break: {line.strip()}"


def test_lowest_constraints_match_the_lower_bounds():
    lowest = {}
    for line in (ROOT / "constraints-lowest.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            lowest[name.strip().replace("_", "-")] = version.strip()
    for name, req in _requirements().items():
        assert name in lowest, f"{name} has no pinned lowest version"
        bounds = [Version(s.version) for s in req.specifier if s.operator == ">="]
        # The lower bound is exactly the version the lowest suite ran with.
        assert bounds == [Version(lowest[name])], (name, str(req.specifier), lowest[name])


def test_notebook_install_keeps_the_runtime_jax():
    nb = json.loads((ROOT / "notebooks" / "colab_eval.ipynb").read_text())
    setup = next("".join(c["source"]) for c in nb["cells"] if "keep-jax" in "".join(c["source"]))
    # The runtime's jax and jaxlib go to a constraints file passed to pip.
    assert 'f"jax=={jax.__version__}' in setup and "jaxlib==" in setup
    assert '"-c", keep_jax' in setup


def test_the_readme_test_command_leaves_a_consistent_environment():
    """jax2onnx (the ONNX tests) sits in .jax2onnx on the tests' path, so pip check is clean."""
    spec = importlib.util.find_spec("jax2onnx")
    assert spec is not None, "run the README's test command: it installs jax2onnx in .jax2onnx"
    assert Path(spec.origin).is_relative_to(ROOT / ".jax2onnx"), spec.origin
    check = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "No broken requirements found."
