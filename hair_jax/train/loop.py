"""The training loop: `train_and_evaluate(config, workdir)` is the whole job.

It builds a device mesh, initialises a sharded functional train state,
restores the latest checkpoint in `workdir` if there is one, runs the jitted
`train_step`, logs, checkpoints (periodically and on SIGTERM/SIGINT), and
ends with an evaluation table on the test sets.
"""

import os
import shutil
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from hair_jax import data, inference
from hair_jax.evaluation import evaluators, protocol, report
from hair_jax.io.model_export import save_model
from hair_jax.train.build import setup
from hair_jax.train.checkpoints import (
    checkpoint_dir,
    checkpoint_manager,
    close_manager,
    remove_partial_saves,
    restore_checkpoint,
    save_checkpoint,
    saving,
)
from hair_jax.train.config import ConfigError, check_config, check_resume
from hair_jax.train.logs import Logger
from hair_jax.train.mesh import batch_sharding, check_batch_size, make_global_batch
from hair_jax.train.preemption import PreemptionGuard
from hair_jax.train.state import schedule_steps
from hair_jax.train.step import jit_train_step, make_predict


def default_loader(config, seed, process_batch_size):
    """The data package's training loader for this process.

    Raises:
      ConfigError: a dataset it needs has not been built.
    """
    try:
        return data.make_train_loader(
            config.data,
            global_batch_size=config.train.global_batch_size,
            patch_size=config.train.patch_size,
            seed=seed,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    except FileNotFoundError as e:  # the message says what to build and how
        raise ConfigError(f"config.data.name={config.data.name!r}: {e}") from None


def default_test_sets(config):
    sets = data.load_test_sets(config.data)
    missing = [name for name in data.test_sets_of(config.data) if name not in sets]
    if missing:
        logging.info("Not built in %s, skipped: %s", config.data.data_dir, ", ".join(missing))
    return sets


def host_model(graphdef, state, use_ema):
    """A local NNX model (numpy weights) from a possibly sharded state."""
    params = state.ema if use_ema and state.ema is not None else state.params
    gathered = multihost_utils.process_allgather((params, state.rest), tiled=True)
    return nnx.merge(graphdef, *gathered)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    make_loader: Callable[..., Any] | None = None,
    test_sets: dict | None = None,
):
    """Trains (resuming from `workdir` if possible), then evaluates.

    Before anything is written or restored, `config` is checked (names,
    built datasets, and against the config.json of a run already in
    `workdir`). Folders of saves that an earlier run left unfinished are then
    deleted (`checkpoints.remove_partial_saves`).

    Args:
      config: see configs/demo.py for the fields.
      workdir: checkpoints, TensorBoard events and config.json go here.
      make_loader: `(config, seed, process_batch_size) -> iterator` with
        `get_state()` / `set_state()`; defaults to `hair_jax.data`'s loader.
      test_sets: dict name -> list of TestImage; default
        `data.load_test_sets(config.data)`; `{}` skips evaluation.

    Returns:
      (final TrainState, evaluation rows). Returns early, after saving, if a
      signal or `train.max_steps_per_run` stops the run.

    Raises:
      ConfigError: a mistake in `config`, or a workdir holding another run.
      FloatingPointError: on a non-finite loss; the bad state is not saved.
    """
    check_config(config)
    check_resume(config, workdir)
    tc = config.train
    run = setup(config)
    mesh = run.mesh
    process_batch = check_batch_size(tc.global_batch_size, mesh)
    num_steps, warmup = schedule_steps(tc)
    if warmup != tc.warmup_steps:
        logging.warning(
            "warmup_steps=%d >= num_steps=%d; using %d.", tc.warmup_steps, num_steps, warmup
        )
    loader = (make_loader or default_loader)(config, tc.seed, process_batch)
    _check_epoch_size(tc, loader)
    remove_partial_saves(workdir)
    mngr = checkpoint_manager(workdir, tc)
    try:
        state = restore_checkpoint(mngr, run.shardings, run.abstract_state, loader)
    except BaseException:
        mngr.close()  # else its threads die noisily at interpreter exit
        raise
    if state is None:
        state = run.initialize()
    start = int(jax.device_get(state.step))
    devices, processes = jax.device_count(), jax.process_count()
    # The mesh is news only when there is one: several devices.
    layout = f" (mesh: data {mesh.shape['data']} x model {mesh.shape['model']})"
    logging.info(
        "Training steps %d -> %d in %s on %d %s device%s%s%s.",
        start,
        num_steps,
        workdir,
        devices,
        jax.devices()[0].platform.upper(),
        "s" if devices > 1 else "",
        f" of {processes} processes" if processes > 1 else "",
        layout if devices > 1 else "",
    )

    step_fn = jit_train_step(run.train_step, run.shardings, mesh)
    predict = make_predict(run.graphdef, mesh, min(4, tc.global_batch_size))
    logger = Logger(workdir, config, start, num_steps)
    evaluate = Evaluations(config, test_sets, run.graphdef, logger)
    stop_at = num_steps
    if tc.get("max_steps_per_run", 0) > 0:
        stop_at = min(num_steps, start + tc.max_steps_per_run)
    try:
        with PreemptionGuard() as guard:
            state, finished = _loop(
                state,
                step_fn,
                predict,
                evaluate,
                loader,
                mngr,
                logger,
                guard,
                mesh,
                tc,
                start,
                stop_at,
            )
        logger.close_bar()
        if not finished or stop_at < num_steps:
            return state, []
        rows = _final_evaluation(config, workdir, run, state, test_sets, logger)
    finally:
        try:
            with saving(mngr.directory, "a checkpoint"):
                mngr.wait_until_finished()
        finally:
            close_manager(mngr)
            logger.close()
    return state, rows


def _check_epoch_size(tc, loader):
    """Warns when a config's steps_per_epoch disagrees with the loader's."""
    examples = getattr(loader, "examples_per_epoch", None)
    if examples is None or "steps_per_epoch" not in tc:
        return
    actual = examples // tc.global_batch_size
    if actual != tc.steps_per_epoch:
        logging.warning(
            "config.train.steps_per_epoch=%d but one epoch of the "
            "data is %d examples = %d steps; the schedule follows the "
            "config.",
            tc.steps_per_epoch,
            examples,
            actual,
        )


class Evaluations:
    """The run's evaluators (`config.evals`), run on the host model when due.

    Test sets load on the first evaluation; one `Predictor` is kept, so each
    image size compiles once per run.
    """

    def __init__(self, config, test_sets, graphdef, logger):
        self.config, self.test_sets, self.graphdef, self.logger = (
            config,
            test_sets,
            graphdef,
            logger,
        )
        self.evals = config.get("evals", {})
        # Read once: the loop asks every step.
        self.every = [int(o.get("every", 0)) for o in self.evals.values() if o.get("every", 0)]
        self.evaluators, self.predictor = None, None

    def __call__(self, step, state) -> None:
        if not any(step % every == 0 for every in self.every):
            return
        if self.evaluators is None:
            sets = self.test_sets if self.test_sets is not None else default_test_sets(self.config)
            self.evaluators = evaluators.from_config(self.evals, sets)
        due = [e for e in self.evaluators if e.every and step % e.every == 0]
        if not due:
            return
        model = host_model(self.graphdef, state, state.ema is not None)
        if self.predictor is None:
            self.predictor = inference.Predictor(model)
        else:
            self.predictor.load(model)
        for evaluator in due:
            self.logger.evaluation(step, evaluator.name, evaluator.run(self.predictor))


def _loop(state, step_fn, predict, evaluate, loader, mngr, logger, guard, mesh, tc, start, stop_at):
    """Runs steps start..stop_at; returns (state, reached_stop_at)."""
    sharding = batch_sharding(mesh)
    logger.compiling()
    for step in range(start + 1, stop_at + 1):
        batch = make_global_batch(next(loader), sharding, tc.global_batch_size)
        state, metrics = step_fn(state, batch)
        log = step % tc.log_every == 0 or step == stop_at
        images = tc.image_every > 0 and (step % tc.image_every == 0 or step == stop_at)
        save = step % tc.checkpoint_every == 0 or step == stop_at
        stop = guard.should_stop(step)
        if log or images or save or stop:
            # Only these steps wait for the device; the others run ahead of it.
            # A non-finite loss is caught here at the latest, before any save.
            metrics = jax.device_get(metrics)
            if not np.isfinite(metrics["loss"]):
                with saving(mngr.directory, "a checkpoint"):
                    mngr.wait_until_finished()
                raise FloatingPointError(
                    f"Non-finite loss ({metrics['loss']}) at step {step}; stopping "
                    f"without saving. The last good checkpoint is step "
                    f"{mngr.latest_step()} in {mngr.directory}."
                )
        logger.step(step, metrics, log=log)
        if images:
            logger.images(step, *jax.device_get(predict(state.params, state.rest, batch)))
        if stop:
            logging.warning(
                "Received %s: saving a checkpoint at step %d and exiting.",
                guard.signal or "preemption",
                step,
            )
            with saving(mngr.directory, "a checkpoint"):
                save_checkpoint(mngr, state, loader, force=True)
            return state, False
        if save:
            # An async save's error surfaces here at the next save, or at the end.
            with saving(mngr.directory, "a checkpoint"):
                save_checkpoint(mngr, state, loader, force=step == stop_at)
        evaluate(step, state)
    return state, True


def _final_evaluation(config, workdir, run, state, test_sets, logger):
    """Evaluation table on the test sets, and the model export."""
    use_ema = state.ema is not None
    model = host_model(run.graphdef, state, use_ema)
    with saving(checkpoint_dir(workdir), "the export"):
        _export(model, os.path.join(workdir, "export"))
    if test_sets is None:
        test_sets = default_test_sets(config)
    if not test_sets:
        return []
    max_images = config.get("eval", {}).get("max_images_per_set", -1)
    rows = protocol.evaluate(model, test_sets, max_images=None if max_images < 0 else max_images)
    table = report.format_table(rows)
    step = int(jax.device_get(state.step))
    if jax.process_index() == 0:
        print(
            f"\nEvaluation after {step} steps{' (EMA of the weights)' if use_ema else ''}:\n{table}",
            flush=True,
        )
    logger.write_text("eval/table", table, step)
    return rows


def _export(model, directory):
    """Saves the final model with `hair_jax.io.model_export.save_model` (replacing old ones).

    Single-process runs only: `save_model` is not written for several
    processes; there, export from a checkpoint with `restore_train_state`.
    """
    if jax.process_count() > 1:
        logging.info("Several processes: no export (use restore_train_state).")
        return
    if os.path.isdir(directory):  # from an earlier, shorter run of this workdir
        shutil.rmtree(directory)
    save_model(model, directory)
    logging.info("Exported the final model to %s.", directory)
