"""The user guide builds, and the snippets of README and guide are valid.

test_docs.py checks the names the docs cite; this file builds the MkDocs site
(mkdocs.yml) with warnings as errors, parses every Python block, and runs the
README's Python example on a model export where it expects the demo's workdir.
"""

import ast
import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PYTHON_RE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _python_blocks(path):
    return PYTHON_RE.findall(path.read_text(encoding="utf-8"))


def test_site_builds_with_warnings_as_errors(tmp_path):
    """`mkdocs build --strict`: every page in the nav, links and anchors resolve, the API reference renders."""
    site = tmp_path / "site"
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # The reference is generated from the docstrings, not written by hand.
    for name in ("hair_jax.loading.load_model", "hair_jax.nn.hyper.HyperLevel", "restore_image"):
        assert name in api, name
    assert "Loads a model from a training workdir" in api
    home = (site / "index.html").read_text(encoding="utf-8")
    assert "How HAIR works" in home


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_parse(page):
    for block in _python_blocks(page):
        ast.parse(block, filename=str(page))  # raises SyntaxError naming the line


def test_every_page_has_python_or_none_misfenced():
    """A Python block fenced as plain text would escape the parse above."""
    bad = [
        p.name
        for p in PAGES
        if re.search(r"^```\n(import |from \w+ import )", p.read_text(encoding="utf-8"), re.M)
    ]
    assert not bad, bad
    assert len(_python_blocks(ROOT / "docs" / "backbones.md")) == 1  # the pattern finds blocks


def test_readme_python_example_runs(tmp_path, monkeypatch):
    """README's "Use a model in Python" on a tiny model saved where the demo's workdir would be."""
    import hair_jax  # pylint: disable=g-import-not-at-top

    (block,) = [
        b
        for b in _python_blocks(ROOT / "README.md")
        if "hair_jax.load_model" in b  # the one example with a model
    ]
    monkeypatch.chdir(tmp_path)
    os.makedirs("runs")
    hair_jax.save_model(hair_jax.build_model("tiny"), "runs/demo")
    os.symlink(ROOT / "docs", "docs")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - our own README
    printed = out.getvalue().strip()
    assert printed == block.split("# ")[-1].strip(), printed
