"""The pure train step, jitted once with explicit shardings.

`train_step(state, batch) -> (state, metrics)` is a pure function of the
`TrainState`; `jit_train_step` jits it with in/out shardings over the mesh
and a donated state.
"""

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hair_jax.evaluation import metrics as metrics_lib
from hair_jax.train import objective as objective_lib
from hair_jax.train.mesh import BATCH_KEYS, NamedSharding, P, batch_sharding


def make_train_step(graphdef, tx, schedule, ema_decay=0.0, objective=None, end_temperature=None):
    """Returns the pure `train_step(state, batch) -> (state, metrics)`.

    `objective` (`objective.Objective`, default: the paper's L1 loss) adds
    HAIR's selection losses; when it anneals the router temperature, each
    step first sets the model's `RouterTemperature`s to the schedule's value
    at that step, going to `end_temperature` (kept in the state's `rest`).
    """
    objective = objective or objective_lib.Objective()

    def loss_fn(params, rest, batch, step):
        model = nnx.merge(graphdef, params, rest)
        return objective_lib.loss_fn(model, batch, step, objective)

    def train_step(state, batch):
        rest = state.rest
        if objective.temperature_anneal_steps:
            tau = objective.temperature(state.step, end_temperature)
            rest = objective_lib.set_temperature(rest, tau)
        (loss, (restored, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, rest, batch, state.step
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
            **extra,
        }
        if objective.temperature_anneal_steps:
            metrics["router_temperature"] = tau
        new_state = state.replace(
            step=state.step + 1, params=params, rest=rest, opt_state=opt_state, ema=ema
        )
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
