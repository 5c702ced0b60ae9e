"""Tests of hair_jax.train_lib: sharding, resume, preemption, schedule, CLI.

Multi-device runs happen in subprocesses (tests/train_helpers.py) so that
--xla_force_host_platform_device_count is set before jax is imported; this
process keeps the single CPU device of conftest.py.
"""

import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hair_jax import train_lib
import train_helpers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELPER = os.path.join(ROOT, "tests", "train_helpers.py")
# Every process of these tests shares one persistent compilation cache: the
# same train step is compiled by several tests and subprocesses.
jax.config.update("jax_compilation_cache_dir", train_helpers.CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1)


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, **train_helpers.cache_env())
    env.pop("XLA_FLAGS", None)
    return env


def _helper(*args, devices=1, timeout=300):
    cmd = [sys.executable, HELPER, "--devices", str(devices), *map(str, args)]
    proc = subprocess.run(
        cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _train(workdir, **train):
    config = train_helpers.tiny_config(**train)
    return train_lib.train_and_evaluate(
        config, str(workdir), make_loader=train_helpers.fake_loader_factory(), test_sets={}
    )


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


# --------------------------------------------------------------- schedule --
def test_schedule_warmup_cosine_values():
    config = train_helpers.tiny_config(num_steps=1000, warmup_steps=100, learning_rate=2e-4)
    lr = train_lib.make_schedule(config.train)
    np.testing.assert_allclose(float(lr(0)), 0.0)
    np.testing.assert_allclose(float(lr(50)), 1e-4, rtol=1e-6)  # mid-warmup
    np.testing.assert_allclose(float(lr(100)), 2e-4, rtol=1e-6)  # warmup end
    np.testing.assert_allclose(float(lr(550)), 1e-4, rtol=1e-5)  # cosine middle
    np.testing.assert_allclose(float(lr(1000)), 0.0, atol=1e-12)  # end


def test_epoch_configs_convert_to_steps():
    from configs import res_hair_3d  # pylint: disable=g-import-not-at-top

    config = res_hair_3d.get_config()
    assert train_lib.schedule_steps(config.train) == (150 * 3486, 15 * 3486)
    config.train.num_epochs = 10  # the steps follow the epochs
    assert config.train.num_steps == 10 * 3486
    lr = train_lib.make_schedule(config.train)
    # The cosine reaches 0 at the real end, not at a hard-coded epoch.
    np.testing.assert_allclose(float(lr(10 * 3486)), 0.0, atol=1e-12)
    assert float(lr(10 * 3486 - 100)) > 0


# ---------------------------------------------------------------- sharding --
def test_batch_size_must_divide_devices():
    assert train_lib.check_batch_size(8, train_lib.create_mesh()) == 8
    mesh8 = type("FakeMesh", (), {"shape": {"data": 8, "model": 1}})()
    with pytest.raises(ValueError, match="global_batch_size=12 must be divisible"):
        train_lib.check_batch_size(12, mesh8)


def test_cluster_detection():
    assert not train_lib.launched_as_cluster({})
    assert not train_lib.launched_as_cluster({"SLURM_STEP_NUM_TASKS": "1"})
    assert train_lib.launched_as_cluster({"SLURM_STEP_NUM_TASKS": "4"})
    assert train_lib.launched_as_cluster({"OMPI_COMM_WORLD_SIZE": "2"})
    assert train_lib.launched_as_cluster({"JAX_COORDINATOR_ADDRESS": "h:1"})
    assert not train_lib.maybe_initialize_distributed()  # single process


def test_param_spec_splits_largest_divisible_dim():
    P = jax.sharding.PartitionSpec
    assert train_lib.param_spec((3, 3, 64, 128), 4, 1000) == P(None, None, None, "model")
    assert train_lib.param_spec((6, 1024), 4, 1000) == P(None, "model")
    assert train_lib.param_spec((3, 5), 4, 1) == P()  # nothing divisible
    assert train_lib.param_spec((64, 128), 4, 10**6) == P()  # too small
    assert train_lib.param_spec((64, 128), 1, 1) == P()


def test_one_step_on_8_devices_equals_1_device(tmp_path):
    """Same init and batches: parameters agree to 1e-6 after the first update.

    (Two steps, since the warmup gives the first one lr 0.) Only the order of
    the gradient reductions differs between the two runs.
    """
    out = tmp_path / "onestep.npz"
    _helper("onestep", out, devices=8)
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


# --------------------------------------------------------- resume / signals --
def test_resume_is_bitwise_identical(tmp_path):
    straight, _ = _train(tmp_path / "a")
    first, _ = _train(tmp_path / "b", max_steps_per_run=2)
    assert int(first.step) == 2
    resumed, _ = _train(tmp_path / "b")
    assert int(resumed.step) == int(straight.step) == train_helpers.NUM_STEPS
    a = _leaves((straight.params, straight.opt_state, straight.rng, straight.ema))
    b = _leaves((resumed.params, resumed.opt_state, resumed.rng, resumed.ema))
    assert len(a) == len(b) > 20
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


# The loss turns NaN at step 3. With log_every=5 the loop syncs with the device
# only on log/save steps, so it notices at step 4, still before saving it.
@pytest.mark.parametrize("log_every,caught_at", [(1, 3), (5, 4)])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, log_every, caught_at):
    config = train_helpers.tiny_config(checkpoint_every=2, log_every=log_every)
    with pytest.raises(FloatingPointError, match=rf"Non-finite loss.*step {caught_at}"):
        train_lib.train_and_evaluate(
            config,
            str(tmp_path),
            test_sets={},
            make_loader=train_helpers.fake_loader_factory(nan_at=3),
        )
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
    _, state = train_lib.restore_train_state(config, str(tmp_path))
    assert int(state.step) == 2
    assert all(np.isfinite(x).all() for x in _leaves(state.params))


def test_sigterm_leaves_restorable_checkpoint_at_current_step(tmp_path):
    # From batch 3 on the loader sleeps 5 s, so the run is still going when
    # the signal comes right after checkpoint 2 appears.
    cmd = [
        sys.executable,
        HELPER,
        "train",
        str(tmp_path),
        "--slow_from",
        "3",
        "--slow_seconds",
        "5",
    ]
    proc = subprocess.Popen(
        cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
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
    _, state = train_lib.restore_train_state(train_helpers.tiny_config(), str(tmp_path))
    assert int(state.step) == step


# ----------------------------------------------------------- device counts --
def test_checkpoint_moves_between_8_devices_and_1(tmp_path):
    # 8 devices -> this process (1 device).
    _helper("train", tmp_path / "w8", devices=8)
    saved8 = np.load(tmp_path / "w8" / "params_0.npz")
    _, state = train_lib.restore_train_state(train_helpers.tiny_config(), str(tmp_path / "w8"))
    restored = train_helpers.params_dict(state)
    assert restored.keys() == set(saved8.keys())
    for k, v in restored.items():
        assert np.array_equal(v, saved8[k]), k
    # 1 device (this process) -> 8 devices.
    final1, _ = _train(tmp_path / "w1")
    out = tmp_path / "restored8.npz"
    _helper("restore", tmp_path / "w1", out, devices=8)
    restored8 = np.load(out)
    for k, v in train_helpers.params_dict(final1).items():
        assert np.array_equal(v, restored8[k]), k


# ------------------------------------------------------------ entry point --
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
    proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"test set .* degraded PSNR .* restored PSNR", proc.stdout)
    assert "synthetic_derain" in proc.stdout
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
    events = os.listdir(workdir / "tb")
    assert events and all(e.startswith("events.out.tfevents") for e in events)
    assert (workdir / "config.json").exists()
    assert (workdir / "export" / "config.json").exists()
