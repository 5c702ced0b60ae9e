"""Training loop for Res-HAIR and the Restormer baseline.

`train_and_evaluate(config, workdir)` is the whole job: it builds a device
mesh, initialises a sharded functional train state, restores the latest
checkpoint in `workdir` if there is one, runs the jitted `train_step`, logs,
checkpoints (periodically and on SIGTERM/SIGINT), and ends with an evaluation
table on the test sets.

Design (big_vision / flax-examples style):
  * The NNX model is split once into a static `graphdef` and pure state; the
    train state is a pytree (`TrainState`) and `train_step` is a pure function
    of it, jitted ONCE with explicit in/out shardings and a donated state.
  * Sharding: a `Mesh` with axes ('data', 'model'). Batches are split over
    'data'; parameters are replicated, or, when the 'model' axis is larger
    than 1, their largest divisible dimension is split over it.
  * Batch sizes are global; each process loads global / process_count images
    and the global array is assembled with
    `jax.make_array_from_process_local_data`.
  * Checkpoints (orbax CheckpointManager) hold the state and, as JSON, every
    process's data-iterator state. They are restored onto whatever mesh the
    current run has, so device counts may change between runs.
"""

import dataclasses
import json
import os
import shutil
import signal
import threading
import time
from typing import Any, Callable

from absl import logging
import flax
from flax import nnx
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from hair_jax import evaluate as evaluate_lib
from hair_jax import metrics as metrics_lib
from hair_jax import models

P = jax.sharding.PartitionSpec
NamedSharding = jax.sharding.NamedSharding
BATCH_KEYS = ("degraded", "clean", "task")


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree of arrays."""

    step: jax.Array  # int32 scalar: number of optimizer updates done.
    params: nnx.State  # trainable variables (nnx.Param).
    rest: nnx.State  # other model variables, carried unchanged.
    opt_state: optax.OptState
    rng: jax.Array  # uint32[2]; per-step keys are fold_in(rng, step).
    ema: nnx.State | None  # EMA of params, or None when disabled.


# ---------------------------------------------------------------------------
# Multi-host set-up, mesh and shardings.
# ---------------------------------------------------------------------------
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
        raise ValueError(
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
        raise ValueError(
            f"global_batch_size={global_batch_size} must be divisible by the "
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


# ---------------------------------------------------------------------------
# Model, optimizer and state.
# ---------------------------------------------------------------------------
def model_config(config):
    """The `models.ModelConfig` named by config.model (variant + overrides)."""
    overrides = dict(config.model.get("overrides", {}))
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return models.get_config(config.model.variant, **overrides)


def schedule_steps(train_cfg):
    """(num_steps, warmup_steps) actually used, validated.

    Configs written in epochs set `num_steps` and `warmup_steps` as
    ml_collections references to `num_epochs * steps_per_epoch`, so the cosine
    always ends at the real end of training.
    """
    num_steps = int(train_cfg.num_steps)
    if num_steps <= 0:
        raise ValueError(f"config.train.num_steps must be positive: {num_steps}")
    warmup = int(train_cfg.warmup_steps)
    if warmup >= num_steps:
        clipped = num_steps // 10
        logging.warning("warmup_steps=%d >= num_steps=%d; using %d.", warmup, num_steps, clipped)
        warmup = clipped
    return num_steps, warmup


def make_schedule(train_cfg):
    """Linear warmup from 0 to the peak lr, then cosine decay to end_lr."""
    num_steps, warmup = schedule_steps(train_cfg)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=train_cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=num_steps,
        end_value=train_cfg.get("end_learning_rate", 0.0),
    )


def make_optimizer(train_cfg, schedule):
    """AdamW (the reference's torch defaults), optionally after clipping."""
    adamw = optax.adamw(
        schedule,
        b1=train_cfg.b1,
        b2=train_cfg.b2,
        eps=train_cfg.eps,
        weight_decay=train_cfg.weight_decay,
    )
    if train_cfg.grad_clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(train_cfg.grad_clip_norm), adamw)
    return adamw


def make_init_fn(model_cfg, tx, use_ema):
    """Returns (graphdef, init_fn: rng -> TrainState) for `model_cfg`."""

    def build(rng):
        model = models.build_model(model_cfg, rngs=nnx.Rngs(params=rng))
        return nnx.split(model, nnx.Param, ...)

    abstract_model = nnx.eval_shape(lambda: models.build_model(model_cfg, rngs=nnx.Rngs(0)))
    graphdef, _, _ = nnx.split(abstract_model, nnx.Param, ...)

    def init_fn(rng):
        _, params, rest = build(jax.random.fold_in(rng, 0))
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            rest=rest,
            opt_state=tx.init(params),
            rng=rng,
            ema=params if use_ema else None,
        )

    return graphdef, init_fn


_INIT_COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 0}}


def abstract_train_state(init_fn, mesh, min_size):
    """(abstract TrainState, its shardings) via jax.eval_shape: no compute."""
    abstract = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
    return abstract, state_shardings(abstract, mesh, min_size)


def init_train_state(init_fn, shardings, seed):
    """Initialises the state directly onto the mesh (no host copy)."""
    rng = jax.random.PRNGKey(seed)
    # The init runs once but holds one RNG call per parameter, which XLA:CPU
    # is slow to optimise (~0.3 s each); unoptimised code halves the compile.
    init = (
        jax.jit(init_fn, out_shardings=shardings)
        .lower(rng)
        .compile(compiler_options=_INIT_COMPILER_OPTIONS.get(jax.default_backend(), {}))
    )
    return init(rng)


# ---------------------------------------------------------------------------
# The train step.
# ---------------------------------------------------------------------------
def l1_loss(restored, clean):
    return jnp.mean(jnp.abs(restored.astype(jnp.float32) - clean))


def make_train_step(graphdef, tx, schedule, ema_decay=0.0):
    """Returns the pure `train_step(state, batch) -> (state, metrics)`."""

    def loss_fn(params, rest, batch):
        model = nnx.merge(graphdef, params, rest)
        restored = model(batch["degraded"])
        return l1_loss(restored, batch["clean"]), restored

    def train_step(state, batch):
        (loss, restored), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.rest, batch
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema
        if ema is not None:
            ema = optax.incremental_update(params, ema, 1.0 - ema_decay)
        metrics = {
            "loss": loss,
            "psnr": jnp.mean(metrics_lib.psnr(restored, batch["clean"])),
            "lr": schedule(state.step),
            "grad_norm": optax.tree.norm(grads),
        }
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, ema=ema)
        return new_state, metrics

    return train_step


def jit_train_step(train_step, shardings, mesh):
    """Jits the step once with explicit shardings and a donated state."""
    data = batch_sharding(mesh)
    batch = {k: data for k in BATCH_KEYS}
    replicated = NamedSharding(mesh, P())
    return jax.jit(
        train_step,
        in_shardings=(shardings, batch),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )


def make_predict(graphdef, mesh, num_images):
    """Jitted restore of the first images of a batch, replicated for logging."""
    replicated = NamedSharding(mesh, P())

    def predict(params, rest, batch):
        model = nnx.merge(graphdef, params, rest)
        x = batch["degraded"][:num_images]
        return x, model(x), batch["clean"][:num_images]

    return jax.jit(predict, out_shardings=replicated)


# ---------------------------------------------------------------------------
# Checkpoints.
# ---------------------------------------------------------------------------
def checkpoint_manager(workdir, train_cfg):
    """An async orbax CheckpointManager in `<workdir>/checkpoints`."""
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=train_cfg.checkpoint_every,
        max_to_keep=train_cfg.keep_checkpoints,
        create=True,
        enable_async_checkpointing=True,
    )
    return ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), "checkpoints"), options=options
    )


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


class PreemptionGuard:
    """Turns SIGTERM/SIGINT into a flag the loop polls between steps.

    With several processes, SIGTERM is left to JAX's coordination service,
    and `reached_preemption_sync_point` makes all processes agree on the step
    to stop at (SIGINT then keeps its default, KeyboardInterrupt).
    """

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        # With several processes JAX's coordination service owns SIGTERM; a
        # Python handler would replace its notifier.
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        del frame
        self.signal = signal.Signals(signum).name
        # A second signal interrupts at once.
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def should_stop(self, step):
        if jax.process_count() > 1:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        return self.signal is not None


# ---------------------------------------------------------------------------
# Logging.
# ---------------------------------------------------------------------------
class Logger:
    """tqdm bar + TensorBoard scalars/images; silent on processes other than 0."""

    def __init__(self, workdir, config, start_step, num_steps):
        self.active = jax.process_index() == 0
        self.writer = self.bar = None
        self._last = (start_step, time.perf_counter())
        if not self.active:
            return
        import tensorboardX  # pylint: disable=g-import-not-at-top
        import tqdm  # pylint: disable=g-import-not-at-top

        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        self.writer = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"))
        self.bar = tqdm.tqdm(
            total=num_steps, initial=start_step, unit="step", dynamic_ncols=True, smoothing=0.1
        )

    def step(self, step, metrics, log):
        """Advances the bar; on `log` steps writes scalars and steps/s."""
        if not self.active:
            return
        self.bar.update(1)
        if not log:
            return
        now = time.perf_counter()
        last_step, last_time = self._last
        self._last = (step, now)
        scalars = dict(metrics)
        scalars["steps_per_sec"] = (step - last_step) / max(now - last_time, 1e-9)
        for k, v in scalars.items():
            self.writer.add_scalar(f"train/{k}", float(v), step)
        self.bar.set_postfix(
            loss=f"{scalars['loss']:.4f}",
            psnr=f"{scalars['psnr']:.2f}",
            lr=f"{scalars['lr']:.2e}",
            sps=f"{scalars['steps_per_sec']:.2f}",
        )

    def images(self, step, degraded, restored, clean):
        """One grid image: a row per example, degraded | restored | clean."""
        if not self.active:
            return
        grid = np.concatenate([degraded, np.clip(restored, 0, 1), clean], axis=2)
        grid = np.concatenate(list(grid), axis=0)  # [n*H, 3*W, 3]
        self.writer.add_image("train/degraded_restored_clean", grid, step, dataformats="HWC")

    def write_text(self, tag, text, step):
        if self.active:
            self.writer.add_text(tag, f"<pre>{text}</pre>", step)

    def close_bar(self):
        if self.active:
            self.bar.close()

    def close(self):
        if self.active:
            self.bar.close()
            self.writer.close()


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


def setup(config, mesh=None):
    """Builds mesh, model and optimizer; the state stays abstract."""
    tc = config.train
    mesh = mesh or create_mesh(tc.get("model_axis_size", 1))
    schedule = make_schedule(tc)
    tx = make_optimizer(tc, schedule)
    mcfg = model_config(config)
    graphdef, init_fn = make_init_fn(mcfg, tx, tc.ema_decay > 0)
    abstract, shardings = abstract_train_state(init_fn, mesh, tc.get("shard_min_size", 2**18))
    step = make_train_step(graphdef, tx, schedule, tc.ema_decay)
    return Setup(mesh, mcfg, graphdef, schedule, step, abstract, shardings, init_fn, tc.seed)


def restore_train_state(config, workdir, *, mesh=None, step=None):
    """(graphdef, TrainState) of a run's checkpoint, on `mesh` (default: all).

    The mesh may differ from the one that wrote the checkpoint (e.g. 8
    devices -> 1). Raises FileNotFoundError if there is no checkpoint.
    """
    run = setup(config, mesh)
    mngr = checkpoint_manager(workdir, config.train)
    try:
        state = restore_checkpoint(mngr, run.shardings, run.abstract_state, step=step)
    finally:
        mngr.close()
    if state is None:
        raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints.")
    return run.graphdef, state


# ---------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------
def default_loader(config, seed, process_batch_size):
    """The data package's training loader for this process."""
    from hair_jax import data  # pylint: disable=g-import-not-at-top

    return data.make_train_loader(
        config.data,
        global_batch_size=config.train.global_batch_size,
        patch_size=config.train.patch_size,
        seed=seed,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )


def default_test_sets(config):
    from hair_jax import data  # pylint: disable=g-import-not-at-top

    return data.load_test_sets(config.data)


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
      FloatingPointError: on a non-finite loss; the bad state is not saved.
    """
    tc = config.train
    run = setup(config)
    mesh = run.mesh
    process_batch = check_batch_size(tc.global_batch_size, mesh)
    num_steps, _ = schedule_steps(tc)
    loader = (make_loader or default_loader)(config, tc.seed, process_batch)
    _check_epoch_size(tc, loader)
    mngr = checkpoint_manager(workdir, tc)
    state = restore_checkpoint(mngr, run.shardings, run.abstract_state, loader)
    if state is None:
        state = run.initialize()
    start = int(jax.device_get(state.step))
    logging.info("Mesh %s; training steps %d -> %d.", dict(mesh.shape), start, num_steps)

    step_fn = jit_train_step(run.train_step, run.shardings, mesh)
    predict = make_predict(run.graphdef, mesh, min(4, tc.global_batch_size))
    logger = Logger(workdir, config, start, num_steps)
    stop_at = num_steps
    if tc.get("max_steps_per_run", 0) > 0:
        stop_at = min(num_steps, start + tc.max_steps_per_run)
    try:
        with PreemptionGuard() as guard:
            state, finished = _loop(
                state, step_fn, predict, loader, mngr, logger, guard, mesh, tc, start, stop_at
            )
        logger.close_bar()
        if not finished or stop_at < num_steps:
            return state, []
        rows = _final_evaluation(config, workdir, run, state, test_sets, logger)
    finally:
        mngr.wait_until_finished()
        mngr.close()
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


def _loop(state, step_fn, predict, loader, mngr, logger, guard, mesh, tc, start, stop_at):
    """Runs steps start..stop_at; returns (state, reached_stop_at)."""
    sharding = batch_sharding(mesh)
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
            save_checkpoint(mngr, state, loader, force=True)
            return state, False
        if save:
            save_checkpoint(mngr, state, loader, force=step == stop_at)
    return state, True


def _final_evaluation(config, workdir, run, state, test_sets, logger):
    """Evaluation table on the test sets, and the model export."""
    use_ema = state.ema is not None
    model = host_model(run.graphdef, state, use_ema)
    _export(model, os.path.join(workdir, "export"))
    if test_sets is None:
        test_sets = default_test_sets(config)
    if not test_sets:
        return []
    max_images = config.get("eval", {}).get("max_images_per_set", -1)
    rows = evaluate_lib.evaluate(
        model, test_sets, max_images=None if max_images < 0 else max_images
    )
    table = evaluate_lib.format_table(rows)
    step = int(jax.device_get(state.step))
    if jax.process_index() == 0:
        print(
            f"\nEvaluation after {step} steps ({'EMA' if use_ema else 'raw'} weights):\n{table}",
            flush=True,
        )
    logger.write_text("eval/table", table, step)
    return rows


def _export(model, directory):
    """Saves the final model with `checkpoint.save_model` (replacing old ones).

    Single-process runs only: `save_model` is not written for several
    processes; there, export from a checkpoint with `restore_train_state`.
    """
    if jax.process_count() > 1:
        logging.info("Several processes: no export (use restore_train_state).")
        return
    from hair_jax import checkpoint  # pylint: disable=g-import-not-at-top

    if os.path.isdir(directory):  # from an earlier, shorter run of this workdir
        shutil.rmtree(directory)
    checkpoint.save_model(model, directory)
    logging.info("Exported the final model to %s.", directory)
