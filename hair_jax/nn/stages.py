"""Running a chain of same-shaped blocks: unrolled or scanned, with optional remat.

`run_stages(fn, x, stages)` computes fn(stages[n-1], ... fn(stages[0], x)),
where each stage is a module (or a tuple of modules) and all stages have the
same structure, like the transformer blocks of one U-Net level.

* `remat="block"` wraps each stage in `jax.checkpoint` with nothing saved:
  the backward pass recomputes a block's forward from its input, so only
  block inputs stay alive between the forward and backward passes (a
  block's internal maps are 5-6x its input). It costs one more forward
  of each block; BENCHMARKS.md has the measured trade-off.
* `scan=True` stacks the stages' states on a leading axis at call time and
  runs them with `jax.lax.scan`, so XLA compiles one block per level instead
  of all of them. The parameters keep their per-block layout (checkpoints,
  imports and exports are unchanged); only the small copy made by the stack
  is added.

Both give the same values and gradients as the plain loop (tests check it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

REMAT = ("none", "block")


def run_stages(
    fn: Callable[..., jax.Array],
    x: jax.Array,
    stages,
    *,
    shared: Any = None,
    remat: str = "none",
    scan: bool = False,
) -> jax.Array:
    """Applies `fn(stage, x)` (or `fn(stage, x, shared)`) for each stage in order.

    `fn` may read arrays from its closure (e.g. a GIV), but every module it
    uses must come through `stage` or `shared` (a module used by every stage,
    such as a weight bank, never stacked), so that its state is traced as an
    argument of the checkpointed or scanned function.
    """
    if remat not in REMAT:
        raise ValueError(f"remat must be one of {REMAT}, got {remat!r}")
    stages = list(stages)
    if not stages:
        return x
    shared_def, shared_state = nnx.split(shared) if shared is not None else (None, None)

    def make_body(graphdef):
        def body(state, shared_state, x):
            stage = nnx.merge(graphdef, state)
            if shared_def is None:
                return fn(stage, x)
            return fn(stage, x, nnx.merge(shared_def, shared_state))

        if remat == "block":
            return jax.checkpoint(body, policy=jax.checkpoint_policies.nothing_saveable)
        return body

    split = [nnx.split(s) for s in stages]
    if not scan or len(stages) == 1:
        for graphdef, state in split:
            x = make_body(graphdef)(state, shared_state, x)
        return x
    body = make_body(split[0][0])
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *(state for _, state in split))
    x, _ = jax.lax.scan(lambda x, state: (body(state, shared_state, x), None), x, stacked)
    return x
