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
from hair_jax.train.mesh import BATCH_KEYS, NamedSharding, P, batch_sharding


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
