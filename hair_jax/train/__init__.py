"""Training Res-HAIR and the Restormer baseline: `train_and_evaluate(config, workdir)`.

Modules, in the order a run uses them:
  config.py       ConfigError; the model a config names; checks before a run starts
  mesh.py         multi-host set-up, the ('data', 'model') mesh, shardings, global batches
  state.py        TrainState, optimizer and schedule, initialisation onto the mesh
  step.py         the pure train step, jitted once with shardings and a donated state
  build.py        `setup(config)`: everything a config determines before the first step
  checkpoints.py  orbax CheckpointManager: save, restore (also onto another mesh)
  preemption.py   stopping cleanly on SIGTERM/SIGINT or a preemption notice
  logs.py         progress bar and TensorBoard (process 0 only)
  loop.py         `train_and_evaluate`: resume, loop, checkpoints, final evaluation

Design (big_vision / flax-examples style): the train state is a pytree and
`train_step` a pure function of it, jitted ONCE with explicit in/out
shardings; batch sizes are global; checkpoints restore onto whatever mesh the
current run has.
"""

from hair_jax.train.build import Setup, setup
from hair_jax.train.checkpoints import SaveFailed, restore_train_state
from hair_jax.train.config import ConfigError
from hair_jax.train.loop import train_and_evaluate
from hair_jax.train.mesh import create_mesh, maybe_initialize_distributed
from hair_jax.train.state import TrainState

__all__ = [
    "ConfigError",
    "SaveFailed",
    "Setup",
    "TrainState",
    "create_mesh",
    "maybe_initialize_distributed",
    "restore_train_state",
    "setup",
    "train_and_evaluate",
]
