"""Tests of hair_jax.train.checkpoints: other device counts, unfinished saves.

Multi-device runs happen in subprocesses (tests/train_helpers.py) so that
--xla_force_host_platform_device_count is set before jax is imported; this
process keeps the single CPU device of conftest.py.
"""

import logging
import os

import numpy as np
import train_helpers

from hair_jax import train
from hair_jax.train import checkpoints

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


def test_unfinished_saves_are_removed_and_the_last_good_step_resumed(tmp_path, caplog):
    workdir = tmp_path / "w"
    train_helpers.train_tiny(workdir)  # checkpoints 2 and 4
    ckpts = workdir / "checkpoints"
    suffix = checkpoints.PARTIAL_SAVE_SUFFIX
    assert suffix == ".orbax-checkpoint-tmp"  # the name orbax 0.12.8 saves under
    # Step 4 killed after writing everything but before orbax's final rename.
    os.rename(ckpts / "4", ckpts / f"4{suffix}")
    # Step 6 killed early: a few bytes of one array.
    (ckpts / f"6{suffix}" / "state").mkdir(parents=True)
    (ckpts / f"6{suffix}" / "state" / "ocdbt.process_0").write_bytes(b"\0" * 8)
    with caplog.at_level(logging.WARNING):
        state, _ = train_helpers.train_tiny(workdir, max_steps_per_run=1)
    assert int(state.step) == 3  # resumed from step 2, then one step
    assert sorted(os.listdir(ckpts)) == ["2", "3"]
    removed = [r.getMessage() for r in caplog.records if "unfinished save" in r.getMessage()]
    assert len(removed) == 2
    assert f"4{suffix}" in removed[0] and f"6{suffix}" in removed[1]
