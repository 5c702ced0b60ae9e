"""Multi-host set-up, the ('data', 'model') device mesh and shardings.

Batch sizes are global: each process loads global / process_count images and
`make_global_batch` assembles the global array with
`jax.make_array_from_process_local_data`. Batches are split over 'data';
parameters are replicated, or, when the 'model' axis is larger than 1, their
largest divisible dimension is split over it.
"""

import os

import jax
import numpy as np
from absl import logging

from hair_jax.train.config import ConfigError

P = jax.sharding.PartitionSpec
NamedSharding = jax.sharding.NamedSharding
BATCH_KEYS = ("degraded", "clean", "task")


def launched_as_cluster(environ=os.environ):
    """True when cluster variables say this is one of several processes."""
    if "JAX_COORDINATOR_ADDRESS" in environ:
        return True
    sizes = (environ.get(k, "1") for k in ("SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"))
    return any(int(n) > 1 for n in sizes)


def maybe_initialize_distributed(
    coordinator_address=None, num_processes=None, process_id=None, force=False
):
    """Calls `jax.distributed.initialize` when launched as several processes.

    Explicit arguments win; otherwise JAX's own environment detection is used
    when a cluster variable (JAX_COORDINATOR_ADDRESS, SLURM, Open MPI) says
    there is more than one process, or when `force` is set (TPU pods).

    Returns:
      True if `jax.distributed.initialize` was called.
    """
    explicit = coordinator_address is not None or (num_processes or 1) > 1
    if not (explicit or force or launched_as_cluster()):
        return False
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )
    logging.info(
        "jax.distributed: process %d of %d, %d global devices.",
        jax.process_index(),
        jax.process_count(),
        jax.device_count(),
    )
    return True


def create_mesh(model_axis_size=1, devices=None):
    """A ('data', 'model') mesh over `devices` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) % model_axis_size:
        raise ConfigError(
            f"model_axis_size={model_axis_size} does not divide the device count {len(devices)}."
        )
    shape = (len(devices) // model_axis_size, model_axis_size)
    return jax.make_mesh(
        shape, ("data", "model"), devices=devices, axis_types=(jax.sharding.AxisType.Auto,) * 2
    )


def param_spec(shape, model_axis_size, min_size):
    """Spec for one parameter: split its largest dim divisible by 'model'."""
    if model_axis_size == 1 or int(np.prod(shape)) < min_size:
        return P()
    dims = [d for d in np.argsort(shape)[::-1] if shape[d] % model_axis_size == 0]
    if not dims:
        return P()
    spec = [None] * len(shape)
    spec[dims[0]] = "model"
    return P(*spec)


def state_shardings(abstract_state, mesh, min_size=2**18):
    """NamedShardings for every leaf of an abstract TrainState.

    Parameter-shaped leaves (params, optimizer moments, EMA) follow
    `param_spec`; scalars and the RNG are replicated.
    """
    model_size = mesh.shape["model"]

    def leaf(x):
        return NamedSharding(mesh, param_spec(x.shape, model_size, min_size))

    return jax.tree.map(leaf, abstract_state)


def batch_sharding(mesh):
    """Leading (batch) axis split over 'data', replicated over 'model'."""
    return NamedSharding(mesh, P("data"))


def check_batch_size(global_batch_size, mesh):
    """Raises unless the global batch splits evenly over devices and hosts."""
    n_data, n_proc = mesh.shape["data"], jax.process_count()
    if global_batch_size % n_data or global_batch_size % n_proc:
        raise ConfigError(
            f"config.train.global_batch_size={global_batch_size} must be divisible by the "
            f"number of data-parallel devices ({n_data}) and of processes "
            f"({n_proc}); per-device batch = global / device count."
        )
    return global_batch_size // n_proc


def make_global_batch(local_batch, sharding, global_batch_size):
    """Assembles per-process numpy batches into global jax.Arrays."""

    def one(x):
        x = np.asarray(x)
        shape = (global_batch_size,) + x.shape[1:]
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return {k: one(local_batch[k]) for k in BATCH_KEYS if k in local_batch}
