"""Checkpoints: an orbax CheckpointManager in `<workdir>/checkpoints`.

A checkpoint holds the `TrainState` and, as JSON, every process's
data-iterator state. It is restored onto whatever mesh the current run has,
so device counts may change between runs.

orbax writes each save to `<step>.orbax-checkpoint-tmp` and renames it to
`<step>` once complete. A process killed mid-save (SIGKILL, out of memory, a
lost host) leaves that folder behind; orbax ignores it when resuming but never
deletes it, so `remove_partial_saves` does at start-up.

A save that fails for want of disk (or any OSError, surfacing at the save
or when an async save is waited for) becomes a `SaveFailed` naming the path
and the last complete step, which stays intact: the rerun resumes from it.
"""

import contextlib
import json
import os
import shutil
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from hair_jax.train.build import setup
from hair_jax.train.config import check_resume

# The name suffix of a save in progress (".orbax-checkpoint-tmp" in orbax 0.12.8).
PARTIAL_SAVE_SUFFIX = ocp.path.step.TMP_DIR_SUFFIX


def checkpoint_dir(workdir):
    """`<workdir>/checkpoints`, absolute (orbax needs absolute paths)."""
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def remove_partial_saves(workdir):
    """Deletes the folders of saves that never finished; process 0 only.

    Call it before a CheckpointManager opens the directory. orbax's own
    `cleanup_tmp_directories` option does the same asynchronously and without
    saying what it removed; here each removed folder gets a log line. Other
    processes need not wait: orbax never reads these folders.

    Returns:
      The removed paths (empty on processes other than 0).
    """
    directory = checkpoint_dir(workdir)
    if jax.process_index() != 0 or not os.path.isdir(directory):
        return []
    removed = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if PARTIAL_SAVE_SUFFIX in name and os.path.isdir(path):
            shutil.rmtree(path)
            logging.warning("Removed %s, an unfinished save of an earlier run.", path)
            removed.append(path)
    return removed


class SaveFailed(Exception):
    """Writing a checkpoint or export failed (disk full, ...); the message says what is safe."""


def complete_steps(directory) -> list[int]:
    """The steps saved completely in a checkpoint `directory` (folders named by step), sorted."""
    names = os.listdir(directory) if os.path.isdir(directory) else []
    return sorted(int(n) for n in names if n.isdigit())


def _os_error(error: BaseException) -> OSError | None:
    """`error` or the OSError it was raised from (orbax wraps its threads' errors)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


@contextlib.contextmanager
def saving(directory, what: str):
    """Turns an OSError inside into `SaveFailed`: one line, with the last complete step.

    Args:
      directory: the run's checkpoint directory (`checkpoint_dir`).
      what: what is being saved, for the message ("a checkpoint").
    """
    try:
        yield
    except Exception as e:
        os_error = _os_error(e)
        if os_error is None:
            raise
        steps = complete_steps(directory)
        safe = (
            f"the last complete checkpoint, step {steps[-1]}, is intact; free space and "
            "rerun the same command to resume from it"
            if steps
            else "no checkpoint was complete yet; free space and rerun the same command"
        )
        reason = os_error.strerror or str(os_error)
        where = f" ({os_error.filename})" if os_error.filename else ""
        raise SaveFailed(f"could not save {what} in {directory}: {reason}{where}; {safe}") from e


def checkpoint_manager(workdir, train_cfg):
    """An async orbax CheckpointManager in `<workdir>/checkpoints`."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=train_cfg.checkpoint_every,
        max_to_keep=train_cfg.keep_checkpoints,
        create=True,
        enable_async_checkpointing=True,
    )
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def close_manager(mngr) -> None:
    """Closes `mngr` once its background saves are over, even after one failed.

    A failed async save raises from the first wait while the save's other
    threads still run; they must end before the interpreter does, or they
    die at exit with tracebacks of their own.
    """
    try:
        mngr.wait_until_finished()
    except Exception:  # noqa: BLE001 - reported already, by the wait that raised it
        pass
    mngr.close()
    for thread in threading.enumerate():
        if (
            type(thread).__module__.startswith("orbax.")
            and thread is not threading.current_thread()
        ):
            thread.join(timeout=60)


def _allgather_json(obj):
    """The JSON-able `obj` of every process, as a list (index = process)."""
    if jax.process_count() == 1:
        return [obj]
    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.array([data.size]))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    every = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[: int(n)]).decode()) for row, n in zip(every, sizes.reshape(-1))]


def save_checkpoint(mngr, state, loader, force=False):
    """Saves the state and all processes' data-iterator states (async)."""
    step = int(jax.device_get(state.step))
    data_states = _allgather_json(loader.get_state())
    return mngr.save(
        step,
        force=force,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"process_count": len(data_states), "states": data_states}),
        ),
    )


def restore_checkpoint(mngr, shardings, abstract_state, loader=None, step=None):
    """Restores `step` (default: latest) onto `shardings`; None if none."""
    step = mngr.latest_step() if step is None else step
    if step is None:
        return None
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_state, shardings
    )
    restored = mngr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()
        ),
    )
    if loader is not None:
        _restore_loader(loader, restored["data"])
    return restored["state"]


def _restore_loader(loader, data):
    if data["process_count"] != jax.process_count():
        logging.warning(
            "Checkpoint written by %d processes, now %d: the data iterators start afresh.",
            data["process_count"],
            jax.process_count(),
        )
        return
    loader.set_state(data["states"][jax.process_index()])


def restore_train_state(config, workdir, *, mesh=None, step=None):
    """(graphdef, TrainState) of a run's checkpoint, on `mesh` (default: all).

    The mesh may differ from the one that wrote the checkpoint (e.g. 8
    devices -> 1).

    Raises:
      ConfigError: `config` differs from the run's config.json in a field
        that shapes the state (see `config.check_resume`).
      FileNotFoundError: there is no checkpoint.
    """
    check_resume(config, workdir)
    run = setup(config, mesh)
    mngr = checkpoint_manager(workdir, config.train)
    try:
        state = restore_checkpoint(mngr, run.shardings, run.abstract_state, step=step)
    finally:
        mngr.close()
    if state is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints.")
    return run.graphdef, state
