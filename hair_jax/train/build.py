"""Everything a config determines before the first step (`setup`)."""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx

from hair_jax.train.config import model_config, objective
from hair_jax.train.mesh import create_mesh
from hair_jax.train.state import (
    TrainState,
    abstract_train_state,
    init_train_state,
    make_init_fn,
    make_optimizer,
    make_schedule,
)
from hair_jax.train.step import make_train_step


@dataclasses.dataclass
class Setup:
    """Everything derived from a config before the first step."""

    mesh: jax.sharding.Mesh
    model_config: Any
    graphdef: nnx.GraphDef
    schedule: optax.Schedule
    train_step: Callable[..., Any]  # pure, not yet jitted
    abstract_state: TrainState  # of jax.ShapeDtypeStruct
    shardings: Any  # TrainState of NamedSharding
    init_fn: Callable[..., TrainState]
    seed: int

    def initialize(self):
        """A freshly initialised TrainState, created on the mesh."""
        return init_train_state(self.init_fn, self.shardings, self.seed)


def setup(config, mesh=None, platform=None):
    """Builds mesh, model and optimizer; the state stays abstract.

    `platform` ("cpu", "gpu", "tpu") resolves the model's "auto" options;
    default: that of the mesh's devices. Another one is for lowering the step
    for a different accelerator (tests/test_lowering.py).
    """
    tc = config.train
    mesh = mesh or create_mesh(tc.get("model_axis_size", 1))
    schedule = make_schedule(tc)
    tx = make_optimizer(tc, schedule)
    mcfg = model_config(config)
    # "auto" model options follow the devices the step will run on.
    platform = platform or mesh.devices.flat[0].platform
    graphdef, init_fn = make_init_fn(mcfg, tx, tc.ema_decay > 0, platform)
    abstract, shardings = abstract_train_state(init_fn, mesh, tc.get("shard_min_size", 2**18))
    obj = objective(config)
    step = make_train_step(graphdef, tx, schedule, tc.ema_decay, obj, mcfg.router_temperature)
    return Setup(mesh, mcfg, graphdef, schedule, step, abstract, shardings, init_fn, tc.seed)
