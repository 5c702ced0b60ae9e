"""Tests of train.py, the training entry point, run as a subprocess."""

import os
import re
import subprocess
import sys

import train_helpers


def test_demo_config_through_train_py(tmp_path):
    """configs/demo.py (Res-HAIR on the synthetic data), shrunk to 3 steps."""
    workdir = tmp_path / "demo"
    cmd = [
        sys.executable,
        "train.py",
        f"--workdir={workdir}",
        "--config.model.overrides.num_blocks=(1,1,1,1)",
        "--config.train.num_steps=3",
        "--config.train.log_every=1",
        "--config.train.image_every=2",
        "--config.train.checkpoint_every=2",
        "--config.eval.max_images_per_set=1",
    ]
    proc = subprocess.run(
        cmd,
        env=train_helpers.subprocess_env(),
        cwd=train_helpers.ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"test set .* degraded PSNR .* restored PSNR", proc.stdout)
    assert "synthetic_derain" in proc.stdout
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
    events = os.listdir(workdir / "tb")
    assert events and all(e.startswith("events.out.tfevents") for e in events)
    assert (workdir / "config.json").exists()
    assert (workdir / "export" / "config.json").exists()
