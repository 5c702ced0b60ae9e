"""Tests of hair_jax.train.checkpoints: restoring onto another device count.

Multi-device runs happen in subprocesses (tests/train_helpers.py) so that
--xla_force_host_platform_device_count is set before jax is imported; this
process keeps the single CPU device of conftest.py.
"""

import numpy as np

from hair_jax import train
import train_helpers

train_helpers.use_compilation_cache()


def test_checkpoint_moves_between_8_devices_and_1(tmp_path):
    # 8 devices -> this process (1 device).
    train_helpers.run_helper("train", tmp_path / "w8", devices=8)
    saved8 = np.load(tmp_path / "w8" / "params_0.npz")
    _, state = train.restore_train_state(train_helpers.tiny_config(), str(tmp_path / "w8"))
    restored = train_helpers.params_dict(state)
    assert restored.keys() == set(saved8.keys())
    for k, v in restored.items():
        assert np.array_equal(v, saved8[k]), k
    # 1 device (this process) -> 8 devices.
    final1, _ = train_helpers.train_tiny(tmp_path / "w1")
    out = tmp_path / "restored8.npz"
    train_helpers.run_helper("restore", tmp_path / "w1", out, devices=8)
    restored8 = np.load(out)
    for k, v in train_helpers.params_dict(final1).items():
        assert np.array_equal(v, restored8[k]), k

