"""Two processes with jax.distributed on localhost (gloo CPU collectives).

Each process has 2 CPU devices (4 global), loads its half of the global
batch, and the run must end with identical parameters on both processes,
a single set of logs (process 0 only) and one shared checkpoint.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import train_helpers


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_to_identical_parameters(tmp_path):
    # No persistent XLA cache here: with cached executables the two processes
    # deadlocked in gloo's context set-up (seen with jax 0.10.2 on CPU).
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=train_helpers.ROOT)
    for k in ("XLA_FLAGS", *train_helpers.cache_env()):
        env.pop(k, None)
    address = f"127.0.0.1:{_free_port()}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                train_helpers.HELPER,
                "--devices",
                "2",
                "train",
                str(tmp_path),
                "--num_processes",
                "2",
                "--process_id",
                str(i),
                "--coordinator",
                address,
            ],
            env=env,
            cwd=train_helpers.ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    p0 = np.load(tmp_path / "params_0.npz")
    p1 = np.load(tmp_path / "params_1.npz")
    assert p0.keys() and set(p0.keys()) == set(p1.keys())
    for k in p0:
        assert np.array_equal(p0[k], p1[k]), k
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]
    assert len(os.listdir(tmp_path / "tb")) == 1  # process 0 only
