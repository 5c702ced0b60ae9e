"""notebooks/colab_eval.ipynb runs top to bottom on CPU and draws its figures.

The notebook is executed as it is, except for one parameter (papermill
style): the demo trains 6 steps instead of DEMO_STEPS, to keep CI short.
"""

import os
from pathlib import Path

import nbclient
import nbformat
import pytest
import train_helpers

NOTEBOOK = Path(__file__).parent.parent / "notebooks" / "colab_eval.ipynb"


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _text(output):
    return output.get("text", "") + output.get("data", {}).get("text/plain", "")


@pytest.mark.slow
def test_notebook_runs_on_cpu_and_draws_its_figures(tmp_path, monkeypatch):
    before = sorted(os.listdir(NOTEBOOK.parent))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not _outputs(nb), "commit the notebook without outputs"
    params = [c for c in nb.cells if "DEMO_STEPS = 60  # @param" in c.source]
    assert len(params) == 1
    params[0].source = params[0].source.replace("DEMO_STEPS = 60", "DEMO_STEPS = 6")
    # The kernel inherits these: synthetic data, demo workdir and XLA cache in tmp.
    monkeypatch.setenv("HAIR_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", train_helpers.CACHE_DIR)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    client = nbclient.NotebookClient(
        nb,
        timeout=1200,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError naming the cell on any error

    outputs = _outputs(nb)
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    # degraded | restored | clean, the GIV map, the selector heat maps.
    assert len(figures) == 3
    text = "".join(_text(o) for o in outputs)
    assert "devices: [CpuDevice(id=0)]" in text
    assert "Running on CPU only" in text
    assert "No CHECKPOINT: training the tiny demo for 6 steps" in text
    assert "(training workdir, step 6, raw weights)" in text
    assert "PSNR/SSIM" in text and "Average" in text
    assert "GIV nearest-centroid accuracy (balanced, leave-one-out, 120 images)" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("hair-demo-")]
    assert sorted(os.listdir(NOTEBOOK.parent)) == before  # nothing written next to it
