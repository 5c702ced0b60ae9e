"""The train state, the optimizer and its schedule, and their initialisation.

The NNX model is split once into a static `graphdef` and pure state; the
train state is a pytree (`TrainState`), initialised from its abstract shape
(`jax.eval_shape`) directly onto the mesh.
"""

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hair_jax.nn import models
from hair_jax.train.config import ConfigError
from hair_jax.train.mesh import state_shardings


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree of arrays."""

    step: jax.Array  # int32 scalar: number of optimizer updates done.
    params: nnx.State  # trainable variables (nnx.Param).
    rest: nnx.State  # other model variables, carried unchanged.
    opt_state: optax.OptState
    rng: jax.Array  # uint32[2]; per-step keys are fold_in(rng, step).
    ema: nnx.State | None  # EMA of params, or None when disabled.


def schedule_steps(train_cfg):
    """(num_steps, warmup_steps) actually used, validated.

    Configs written in epochs set `num_steps` and `warmup_steps` as
    ml_collections references to `num_epochs * steps_per_epoch`, so the cosine
    always ends at the real end of training.
    """
    num_steps = int(train_cfg.num_steps)
    if num_steps <= 0:
        raise ConfigError(f"config.train.num_steps must be positive: {num_steps}")
    warmup = int(train_cfg.warmup_steps)
    if warmup >= num_steps:  # train_and_evaluate says so, once
        warmup = num_steps // 10
    return num_steps, warmup


def make_schedule(train_cfg):
    """Linear warmup from 0 to the peak lr, then cosine decay to end_lr."""
    num_steps, warmup = schedule_steps(train_cfg)
    peak, end = train_cfg.learning_rate, train_cfg.get("end_learning_rate", 0.0)
    if warmup == 0:  # the same values, without optax's log line about a 0-step warmup
        return optax.cosine_decay_schedule(peak, num_steps, alpha=end / peak if peak else 0.0)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak, warmup_steps=warmup, decay_steps=num_steps, end_value=end
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


def make_init_fn(model_cfg, tx, use_ema, platform=None):
    """Returns (graphdef, init_fn: rng -> TrainState) for `model_cfg`.

    `platform` (that of the mesh's devices) resolves the config's "auto"
    speed options; None means the default backend.
    """

    def build(rng):
        model = models.build_model(model_cfg, rngs=nnx.Rngs(params=rng), platform=platform)
        return nnx.split(model, nnx.Param, ...)

    abstract_model = models.abstract_model(model_cfg, platform=platform)
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
    # is slow to optimise; unoptimised code compiles much faster.
    init = (
        jax.jit(init_fn, out_shardings=shardings)
        .lower(rng)
        .compile(compiler_options=_INIT_COMPILER_OPTIONS.get(jax.default_backend(), {}))
    )
    return init(rng)
