"""Tests of hair_jax.train.step: the sharded step equals the single-device one.

Multi-device runs happen in subprocesses (tests/train_helpers.py) so that
--xla_force_host_platform_device_count is set before jax is imported; this
process keeps the single CPU device of conftest.py.
"""

import numpy as np
import train_helpers


def test_one_step_on_8_devices_equals_1_device(tmp_path):
    """Same init and batches: parameters agree to 1e-6 after the first update.

    (Two steps, since the warmup gives the first one lr 0.) Only the order of
    the gradient reductions differs between the two runs.
    """
    out = tmp_path / "onestep.npz"
    train_helpers.run_helper("onestep", out, devices=8)
    d = np.load(out)
    names = [k[2:] for k in d if k.startswith("8/")]
    assert len(names) > 20
    np.testing.assert_allclose(d["8/loss"], d["1/loss"], rtol=1e-6)
    moved = 0
    for name in names:
        if name == "loss":
            continue
        np.testing.assert_allclose(d[f"8/{name}"], d[f"1/{name}"], atol=1e-6, rtol=0, err_msg=name)
        moved += not np.array_equal(d[f"8/{name}"], d[f"1/{name}"])
    assert moved  # the 8-device run really used a different reduction
