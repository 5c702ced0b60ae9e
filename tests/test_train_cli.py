"""Tests of train.py, the training entry point, run as a subprocess.

Mistakes in a command line must end with one line on stderr, exit code 2
and the workdir as it was.
"""

import os
import re
import subprocess
import sys

import pytest
import train_helpers


def test_demo_config_through_train_py(tmp_path):
    """configs/demo.py (Res-HAIR on the synthetic data), shrunk to 3 steps."""
    workdir = tmp_path / "demo"
    env = train_helpers.subprocess_env()
    env.pop("JAX_PLATFORMS")  # jax then probes for a TPU and logs that it found none
    proc = _train_py(
        workdir,
        "--config.model.overrides.num_blocks=(1,1,1,1)",
        "--config.train.num_steps=3",
        "--config.train.log_every=1",
        "--config.train.image_every=2",
        "--config.train.checkpoint_every=2",
        "--config.eval.max_images_per_set=1",
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Quiet: no library lines; the warmup (20 of 3 steps) is clipped, said once.
    train_helpers.assert_quiet(proc.stdout + proc.stderr)
    assert proc.stderr.count("warmup_steps=20 >= num_steps=3; using 0.") == 1
    # Where the files went and what to run next.
    assert f"Done: {workdir} holds the checkpoints" in proc.stdout
    assert f"python eval.py --checkpoint {workdir}" in proc.stdout
    assert f"--checkpoint {workdir / 'export'} --output DIR" in proc.stdout
    assert f"tensorboard --logdir {workdir / 'tb'}" in proc.stdout
    assert re.search(r"test set .* degraded PSNR .* restored PSNR", proc.stdout)
    assert "synthetic_derain" in proc.stdout
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
    events = os.listdir(workdir / "tb")
    assert events and all(e.startswith("events.out.tfevents") for e in events)
    assert (workdir / "config.json").exists()
    assert (workdir / "export" / "config.json").exists()


# ------------------------------------------------ mistakes: one line, exit 2 --
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A workdir with a checkpoint of train_helpers' tiny config (2 steps)."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    train_helpers.use_compilation_cache()
    train_helpers.train_tiny(workdir, max_steps_per_run=2)
    assert os.listdir(workdir / "checkpoints") == ["2"]
    return workdir


def _train_py(workdir, *args, timeout, env=None):
    return subprocess.run(
        [sys.executable, "train.py", f"--workdir={workdir}", *args],
        check=False,
        env=env or train_helpers.subprocess_env(),
        cwd=train_helpers.ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _listing(workdir):
    return sorted(
        os.path.relpath(os.path.join(root, name), workdir)
        for root, dirs, files in os.walk(workdir)
        for name in dirs + files
    )


def _fails_with_one_line(workdir, *args):
    """Runs train.py; asserts exit code 2, one stderr line, workdir untouched."""
    before = _listing(workdir) if os.path.exists(workdir) else None
    config = (workdir / "config.json").read_bytes() if before else None
    proc = _train_py(workdir, *args, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if before is None:
        assert not os.path.exists(workdir)
    else:
        assert _listing(workdir) == before
        assert (workdir / "config.json").read_bytes() == config
    return lines[0]


def test_misspelt_config_field_is_one_line(tiny_run):
    # Without --config: demo.py, whose overrides ml_collections applies on import.
    line = _fails_with_one_line(tiny_run, "--config.train.log_evry=1")
    assert "--config.train.log_evry" in line and "did you mean 'log_every'" in line
    line = _fails_with_one_line(
        tiny_run, "--config=tests/train_helpers.py", "--config.train.nonexistent=1"
    )
    assert "config.train has no field 'nonexistent'" in line


def test_a_config_field_given_as_a_flag_gets_its_spelling(tiny_run):
    line = _fails_with_one_line(tiny_run, "--num_steps=20")
    assert line.endswith("did you mean --config.train.num_steps=...?")
    line = _fails_with_one_line(tiny_run, "--bogus=1")
    assert "Unknown command line flag 'bogus' (see --helpshort)" in line


def test_missing_config_file_is_one_line(tiny_run):
    line = _fails_with_one_line(tiny_run, "--config=configs/nothere.py")
    assert "--config" in line and "'configs/nothere.py'" in line


def test_unknown_model_name_is_one_line(tiny_run):
    line = _fails_with_one_line(
        tiny_run, "--config=tests/train_helpers.py", "--config.model.variant=res_hiar"
    )
    assert "config.model" in line and "'res_hiar'" in line and "'res_hair'" in line


def test_unknown_data_name_is_one_line(tiny_run):
    line = _fails_with_one_line(
        tiny_run, "--config=tests/train_helpers.py", "--config.data.name=synthetc"
    )
    assert "config.data" in line and "'synthetc'" in line and "'synthetic'" in line


def test_dataset_not_built_is_one_line(tmp_path):
    empty = tmp_path / "tfds"
    empty.mkdir()
    line = _fails_with_one_line(
        tmp_path / "new_run",
        "--config=tests/train_helpers.py",
        "--config.data.name=all_in_one_3d",
        f"--config.data.data_dir={empty}",
    )
    assert "all_in_one_3d" in line and str(empty) in line
    assert "python -m hair_jax.data.prepare" in line
    assert os.listdir(empty) == []


def test_resuming_another_model_is_one_line(tiny_run):
    # Res-HAIR's train step is never compiled: the check comes first.
    line = _fails_with_one_line(
        tiny_run,
        "--config=tests/train_helpers.py",
        "--config.model.overrides.dim=16",
        "--config.train.num_steps=8",  # may change on resume: not reported
    )
    assert f"{tiny_run}{os.sep}config.json" in line
    assert "model.dim (saved 8, now 16)" in line
    assert "num_steps" not in line and "new --workdir" in line


# ------------------------------------------------------------- a full disk --
# Loaded by the subprocess (PYTHONPATH): the save of step 4 meets a full disk
# where orbax writes the data iterators' JSON, in its async commit, after the
# state's arrays went into the unfinished folder.
_FULL_DISK = """
import errno, os
from orbax.checkpoint._src.handlers import json_checkpoint_handler as handler

_save = handler.JsonCheckpointHandler._save_fn

def _save_fn(self, x, directory):
    if os.sep + "4.orbax-checkpoint-tmp" in str(directory):
        path = str(directory / self._filename)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return _save(self, x, directory)

handler.JsonCheckpointHandler._save_fn = _save_fn
"""


def test_a_full_disk_mid_save_is_one_line_and_the_rerun_resumes(tmp_path):
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(_FULL_DISK)
    env = train_helpers.subprocess_env()
    full = dict(env, PYTHONPATH=os.pathsep.join([str(inject), env["PYTHONPATH"]]))
    workdir = tmp_path / "run"
    args = ("--config=tests/train_helpers.py", "--config.train.num_steps=6")
    proc = _train_py(workdir, *args, timeout=600, env=full)
    assert proc.returncode == 2, proc.stderr[-3000:]
    # Above the error only the progress bar: no traceback, no orbax thread dying at exit.
    assert "Traceback" not in proc.stderr and "\nE1" not in proc.stderr, proc.stderr[-3000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"train.py: error: could not save a checkpoint in {workdir}")
    assert "No space left on device" in line and "4.orbax-checkpoint-tmp" in line
    assert line.endswith(
        "the last complete checkpoint, step 2, is intact; "
        "free space and rerun the same command to resume from it"
    )
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4.orbax-checkpoint-tmp"]

    # The rerun removes the unfinished save, resumes from step 2 and finishes.
    proc = _train_py(workdir, *args, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| 3/6 [" in proc.stderr and "| 1/6 [" not in proc.stderr  # the progress bar
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6"]
