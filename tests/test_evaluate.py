"""hair_jax.evaluation (protocol, report) and eval.py's default output paths."""

import collections
import csv
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hair_jax import evaluate, inference, loading
from hair_jax.evaluation import protocol, report

Image = collections.namedtuple("Image", "name degraded clean")


class _Scale(nnx.Module):
    """A one-parameter restorer (a `registry.Model`): enough to check the evaluation plumbing."""

    has_giv, multiple, min_size, level_names = False, 8, 8, ()

    def __init__(self, scale):
        self.scale = nnx.Param(jnp.asarray(scale, jnp.float32))

    def __call__(self, x):
        return x * self.scale


def _sets():
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.8, (3, 20, 24, 3)).astype(np.float32)
    return {
        "dark": [Image(f"d{i}", c * 0.5, c) for i, c in enumerate(clean)],
        "same": [Image("s0", clean[0], clean[0])],
        "sots": [Image("big", clean[1] * 0.9, clean[1])],
    }


def test_evaluate_rows_and_table():
    rows = protocol.evaluate(_Scale(2.0), _sets(), max_images=2)
    assert [r.name for r in rows] == ["dark", "same", "sots"]
    assert rows[0].num_images == 2 and rows[1].num_images == 1
    assert rows[0].restored_psnr > 90 > rows[0].degraded_psnr  # x2 undoes x0.5
    assert rows[1].restored_psnr < rows[1].degraded_psnr
    table = report.format_table(rows)
    assert "degraded PSNR" in table and "dark" in table


def test_metrics_follow_the_protocol_with_skimage():
    """Centre crop to 16 (20x24 -> 16x16), clip, RGB, skimage's PSNR/SSIM."""
    sets = _sets()
    row = protocol.evaluate(_Scale(1.3), {"sots": sets["sots"]})[0]
    image = sets["sots"][0]
    clean = image.clean[2:18, 4:20].astype(np.float64)
    restored = np.clip(image.degraded[2:18, 4:20] * np.float32(1.3), 0, 1).astype(np.float64)
    assert row.images[0]["height"] == row.images[0]["width"] == 16
    want_psnr = peak_signal_noise_ratio(clean, restored, data_range=1)
    want_ssim = structural_similarity(clean, restored, data_range=1, channel_axis=-1)
    assert row.restored_psnr == pytest.approx(want_psnr, abs=1e-4)
    assert row.restored_ssim == pytest.approx(want_ssim, abs=1e-4)
    assert not math.isnan(row.restored_psnr_y) and row.restored_psnr_y != row.restored_psnr


def test_one_compile_per_image_size():
    predictor = inference.Predictor(_Scale(1.0))
    rng = np.random.default_rng(1)
    sizes = [(32, 32), (32, 32), (48, 32), (32, 32)]
    sets = {
        "s": [
            Image(i, rng.uniform(size=(*s, 3)), rng.uniform(size=(*s, 3)))
            for i, s in enumerate(sizes)
        ]
    }
    protocol.evaluate_sets(predictor, sets)
    assert predictor.traces == 2


def test_paper_table_and_result_files(tmp_path):
    rows = protocol.evaluate(_Scale(2.0), _sets())
    table = report.paper_table(rows)
    header, columns = table.split("\nPSNR/SSIM")
    assert header.startswith("Protocol: full image") and "multiple of 16" in header
    assert "7x7 uniform window" in header and "data_range 1" in header
    lines = ("PSNR/SSIM" + columns).splitlines()
    assert lines[0].split() == ["PSNR/SSIM", "dark", "same", "SOTS", "Average"]
    assert lines[3].split() == ["images", "3", "1", "1", "5"]
    restored = lines[1].split()
    assert restored[0] == "restored" and len(restored) == 5
    average = protocol.average(rows)
    assert restored[-1] == f"{average.restored_psnr:.2f}/{average.restored_ssim:.4f}"
    assert average.restored_psnr == pytest.approx(np.mean([r.restored_psnr for r in rows]))
    assert "BT.601" in report.paper_table(rows, y_channel=True).split("PSNR/SSIM")[0]

    json_path, csv_path = report.write_results(str(tmp_path / "r"), rows, step=7)
    data = json.loads(open(json_path).read())
    assert data["step"] == 7 and data["protocol"] == protocol.PROTOCOL
    assert data["sets"]["dark"]["restored"]["psnr"] == rows[0].restored_psnr
    assert [im["name"] for im in data["sets"]["dark"]["images"]] == ["d0", "d1", "d2"]
    assert data["average"]["degraded"]["ssim"] == pytest.approx(average.degraded_ssim)
    table_rows = list(csv.DictReader(open(csv_path)))
    assert [r["set"] for r in table_rows] == ["dark", "same", "sots", "average"]
    assert float(table_rows[2]["psnr"]) == pytest.approx(rows[2].restored_psnr, abs=1e-6)


def test_default_output_by_checkpoint_kind(tmp_path):
    def loaded(kind, path, **kw):
        return loading.LoadedModel(None, kind, str(path), **kw)

    wd = loaded("workdir", tmp_path / "run", step=250, weights="ema")
    assert evaluate.default_output(wd, "synthetic") == str(tmp_path / "run/eval/250/synthetic")
    raw = loaded("workdir", tmp_path / "run", step=250, weights="raw")
    assert evaluate.default_output(raw, "all_in_one_3d").endswith("run/eval/250-raw/all_in_one_3d")
    export = loaded("export", tmp_path / "exports/hair3d")
    assert evaluate.default_output(export, "x") == str(tmp_path / "exports/hair3d-eval/x")
    ckpt = loaded("torch", tmp_path / "hair3d.ckpt")
    assert evaluate.default_output(ckpt, "x") == str(tmp_path / "hair3d-eval/x")


@pytest.mark.parametrize(
    "setting,names",
    [
        (
            "3d",
            "sots, rain100l, bsd68_15, bsd68_25, bsd68_50, urban100_15, urban100_25, urban100_50",
        ),
        ("5d", "sots, rain100l, bsd68_25, gopro, lol"),
    ],
)
def test_real_test_sets_of_each_setting(tmp_path, setting, names):
    # Nothing is built in an empty directory: the error lists the configured sets.
    with pytest.raises(ValueError, match=f"none of the test sets \\({names}\\) is built"):
        protocol.select_test_sets(data_dir=str(tmp_path), setting=setting)
