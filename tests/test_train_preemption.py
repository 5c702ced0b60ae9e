"""Tests of hair_jax.train.preemption: SIGTERM saves and stops a run."""

import re
import signal
import subprocess
import sys
import time

import train_helpers

from hair_jax import train

train_helpers.use_compilation_cache()


def test_sigterm_leaves_restorable_checkpoint_at_current_step(tmp_path):
    # From batch 3 on the loader sleeps 5 s, so the run is still going when
    # the signal comes right after checkpoint 2 appears.
    cmd = [
        sys.executable,
        train_helpers.HELPER,
        "train",
        str(tmp_path),
        "--slow_from",
        "3",
        "--slow_seconds",
        "5",
    ]
    proc = subprocess.Popen(
        cmd,
        env=train_helpers.subprocess_env(),
        cwd=train_helpers.ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while not (tmp_path / "checkpoints" / "2").exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr[-3000:]
    found = re.search(r"Received SIGTERM: saving a checkpoint at step (\d+)", stderr)
    assert found, stderr[-3000:]
    step = int(found.group(1))
    assert 2 < step <= train_helpers.NUM_STEPS
    _, state = train.restore_train_state(train_helpers.tiny_config(), str(tmp_path))
    assert int(state.step) == step
