"""Trains Res-HAIR (or the Restormer baseline) and evaluates it.

  python train.py                                   # demo, ~4 min on CPU
  python train.py --config configs/res_hair_3d.py --workdir runs/hair3d
  python train.py --config.train.num_steps=100      # override any field

Several processes (one per host): pass --coordinator_address,
--num_processes and --process_id, or rely on JAX's cluster detection
(JAX_COORDINATOR_ADDRESS, SLURM, Open MPI; --distributed for TPU pods).
Rerunning with the same --workdir resumes from its latest checkpoint; the
config may then change only the run length, intervals, device layout, data
paths and evaluation (hair_jax.train.config.RESUMABLE_FIELDS).

A mistake (a misspelt field, an unknown model or data name, a dataset that
was not built, another run's workdir) ends with one line on stderr and exit
code 2, before anything is written. A save that fails (a full disk) ends
the same way, naming the last complete checkpoint, from which the rerun
resumes.
"""

import datetime
import importlib.util
import os
import re
import shlex

import jax
from absl import app, flags
from ml_collections import config_flags

from hair_jax.commands import common

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo.py")
# No default in the flag: with one, ml_collections applies the --config.<field>
# overrides while this file is imported, where a misspelt field can only end
# in a traceback. _parse_flags passes --config=DEFAULT_CONFIG instead.
_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    f"Training config file (ml_collections); default {DEFAULT_CONFIG}.",
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
_CONFIG_FILE_ARG = re.compile(r"--?config(=(.*))?$")
_OVERRIDE_ARG = re.compile(r"--?(?:no)?config\.([^=]+)")


def fail(message):
    """Ends the program with one line on stderr and exit code 2."""
    common.fail("train.py", message)


def _parse_flags(argv):
    """absl's flag parsing; a mistake ends with one line (`fail`)."""
    args = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    config_file = DEFAULT_CONFIG
    for i, arg in enumerate(args):
        found = _CONFIG_FILE_ARG.match(arg)
        if found:
            config_file = found.group(2) if found.group(1) else (args[i + 1 :] or [""])[0]
            break
    else:
        argv = [argv[0], f"--config={config_file}", *argv[1:]]
    if not os.path.isfile(config_file.split(":")[0]):
        fail(f"--config: no config file {config_file!r}; see configs/ for the configs")
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        name = re.match(r"Unknown command line flag '([\w.]+)'", str(e))
        if name and not name.group(1).startswith("config"):
            probe = flags.FlagValues()
            config_flags.DEFINE_config_file(
                "config", config_file, flag_values=probe, sys_argv=argv[:1], lock_config=False
            )
            hint = _config_hint(probe["config"].value, name.group(1))
            if hint:
                fail(f"{e}; did you mean --config.{hint}=...?")
        fail(f"{e} (see --helpshort)")
    except (AttributeError, KeyError):
        # ml_collections' way to say that a --config.<field> names no field
        # (imported only then: the training code takes seconds).
        from hair_jax.train import config as config_lib  # pylint: disable=g-import-not-at-top

        probe = flags.FlagValues()
        config_flags.DEFINE_config_file(
            "config", config_file, flag_values=probe, sys_argv=argv[:1], lock_config=False
        )
        for arg in args:
            found = _OVERRIDE_ARG.match(arg)
            why = found and config_lib.unknown_field(probe["config"].value, found.group(1))
            if why:
                fail(f"--config.{found.group(1)}: {why}; the fields are in {config_file}")
        raise


def _config_hint(config, name):
    """The dotted config field whose last part is `name` (e.g. train.num_steps), or None."""
    for key, value in config.items():
        if key == name:
            return key
        if hasattr(value, "items"):
            inner = _config_hint(value, name)
            if inner:
                return f"{key}.{inner}"
    return None


def default_workdir(name):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", f"{name}-{stamp}")


def next_steps(workdir, step, num_steps):
    """Where a run's files went and what to run next (or how to continue it)."""
    if step < num_steps:
        return (
            f"\nStopped at step {step} of {num_steps}; the checkpoint is in "
            f"{os.path.join(workdir, 'checkpoints')}. Run the same command again to continue."
        )
    export = os.path.join(workdir, "export")
    model = export if os.path.isdir(export) else workdir  # several processes: no export
    return (
        f"\nDone: {workdir} holds the checkpoints, the TensorBoard logs (tb/)"
        f"{' and the final model (export/)' if model == export else ''}. Next:\n"
        f"  python eval.py --checkpoint {shlex.quote(workdir)}   # PSNR/SSIM of the test sets\n"
        f"  python -m hair_jax.restore IMAGES --checkpoint {shlex.quote(model)} --output DIR\n"
        f"  {_tensorboard()} --logdir {shlex.quote(os.path.join(workdir, 'tb'))}"
    )


def _tensorboard():
    """The TensorBoard command, with its install when it is not installed (only tensorboardX is)."""
    if importlib.util.find_spec("tensorboard") is not None:
        return "tensorboard"
    return "pip install tensorboard && tensorboard"


def main(argv):
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; flags take the form --name=value")
    common.quiet_logs()
    # Imported once the flags parse: jax and the training code take seconds.
    from hair_jax import train  # pylint: disable=g-import-not-at-top

    train.maybe_initialize_distributed(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, force=_DISTRIBUTED.value
    )
    config = _CONFIG.value
    if jax.process_count() > 1 and _WORKDIR.value is None:
        fail("several processes need one shared --workdir")
    workdir = _WORKDIR.value or default_workdir(config.name)
    try:
        state, _ = train.train_and_evaluate(config, workdir)
    except (train.ConfigError, train.SaveFailed) as e:
        fail(e)
    step = int(jax.device_get(state.step))
    if jax.process_index() == 0:
        print(next_steps(workdir, step, int(config.train.num_steps)), flush=True)
    if jax.process_count() > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
