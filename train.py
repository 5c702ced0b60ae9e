"""Trains Res-HAIR (or the Restormer baseline) and evaluates it.

  python train.py                                   # demo, ~10 min on CPU
  python train.py --config configs/res_hair_3d.py --workdir runs/hair3d
  python train.py --config.train.num_steps=100      # override any field

Several processes (one per host): pass --coordinator_address,
--num_processes and --process_id, or rely on JAX's cluster detection
(JAX_COORDINATOR_ADDRESS, SLURM, Open MPI; --distributed for TPU pods).
Rerunning with the same --workdir resumes from its latest checkpoint.
"""

import datetime
import logging as std_logging
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(os.path.dirname(__file__), "configs", "demo.py"),
    "Training config file (ml_collections).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints and logs; default runs/<name>-<time>.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (multi-process)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process index.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize() with "
    "auto-detection even without cluster variables (TPU pods).",
)


class _QuietOrbax(std_logging.Filter):
    """Drops orbax's per-save INFO lines (dozens per checkpoint)."""

    def filter(self, record):
        return record.levelno >= std_logging.WARNING or (
            f"{os.sep}orbax{os.sep}" not in record.pathname
        )


def default_workdir(name):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{name}-{stamp}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietOrbax())
    from hair_jax import train  # pylint: disable=g-import-not-at-top

    train.maybe_initialize_distributed(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, force=_DISTRIBUTED.value
    )
    config = _CONFIG.value
    workdir = _WORKDIR.value or default_workdir(config.name)
    if jax.process_count() > 1 and _WORKDIR.value is None:
        raise app.UsageError("Several processes need a shared --workdir.")
    logging.info(
        "Workdir %s; %d devices in %d processes.", workdir, jax.device_count(), jax.process_count()
    )
    train.train_and_evaluate(config, workdir)
    if jax.process_count() > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    app.run(main)
