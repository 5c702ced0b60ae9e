"""Tests of hair_jax.train.mesh: cluster detection, batch split, parameter specs."""

import jax
import pytest

from hair_jax.train import mesh as mesh_lib


def test_batch_size_must_divide_devices():
    assert mesh_lib.check_batch_size(8, mesh_lib.create_mesh()) == 8
    mesh8 = type("FakeMesh", (), {"shape": {"data": 8, "model": 1}})()
    with pytest.raises(ValueError, match="global_batch_size=12 must be divisible"):
        mesh_lib.check_batch_size(12, mesh8)


def test_cluster_detection():
    assert not mesh_lib.launched_as_cluster({})
    assert not mesh_lib.launched_as_cluster({"SLURM_STEP_NUM_TASKS": "1"})
    assert mesh_lib.launched_as_cluster({"SLURM_STEP_NUM_TASKS": "4"})
    assert mesh_lib.launched_as_cluster({"OMPI_COMM_WORLD_SIZE": "2"})
    assert mesh_lib.launched_as_cluster({"JAX_COORDINATOR_ADDRESS": "h:1"})
    assert not mesh_lib.maybe_initialize_distributed()  # single process


def test_param_spec_splits_largest_divisible_dim():
    P = jax.sharding.PartitionSpec
    assert mesh_lib.param_spec((3, 3, 64, 128), 4, 1000) == P(None, None, None, "model")
    assert mesh_lib.param_spec((6, 1024), 4, 1000) == P(None, "model")
    assert mesh_lib.param_spec((3, 5), 4, 1) == P()  # nothing divisible
    assert mesh_lib.param_spec((64, 128), 4, 10**6) == P()  # too small
    assert mesh_lib.param_spec((64, 128), 1, 1) == P()
