"""Chains of blocks: remat and scan give the plain loop's values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hair_jax.nn import hyper, restormer, stages

# (remat, scan) against the plain loop ("none", False).
SETTINGS = [("none", True), ("block", False), ("block", True)]


def _x(shape, seed=0):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), jnp.float32)


def _value_and_grads(module, loss, *args):
    graphdef, state = nnx.split(module)
    return jax.jit(jax.value_and_grad(lambda s, *a: loss(nnx.merge(graphdef, s), *a)))(state, *args)


def _assert_same(got, want):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_static_blocks_remat_and_scan_equal_plain_loop():
    blocks = nnx.List([restormer.TransformerBlock(8, 2, 2.66, rngs=nnx.Rngs(i)) for i in range(2)])
    x = _x((2, 8, 6, 8))

    def loss(blocks, x, **kw):
        return jnp.sum(jnp.sin(restormer.run_blocks(blocks, x, **kw)))

    want = _value_and_grads(blocks, loss, x)
    assert {remat for remat, _ in SETTINGS} == set(stages.REMAT)
    for remat, scan in SETTINGS:
        got = _value_and_grads(blocks, lambda b, x: loss(b, x, remat=remat, scan=scan), x)
        _assert_same(got, want)


def test_hyper_level_remat_and_scan_equal_plain_loop():
    make = lambda r: restormer.TransformerBlock(8, 2, 2.66, rngs=r)

    def level(remat, scan):
        return hyper.HyperLevel(
            make, 3, 4, 16, nnx.PathContains("kernel"), remat=remat, scan=scan, rngs=nnx.Rngs(0)
        )

    x, giv = _x((2, 8, 6, 8)), _x((2, 16), seed=1) * 3
    loss = lambda lvl, x, giv: jnp.sum(jnp.sin(lvl(x, giv)))
    want = _value_and_grads(level("none", False), loss, x, giv)
    _assert_same(_value_and_grads(level("block", True), loss, x, giv), want)
    # Every block's HSN and the shared bank receive gradient through the scan.
    grads = want[1]
    assert all(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["hsns"]))
    assert float(jnp.abs(grads["bank"]["weights"]["attn"]["qkv"]["kernel"][...]).max()) > 0


def test_scanned_remat_chain_keeps_less_memory():
    """Remat keeps only block inputs; on XLA:CPU that needs the scan (unrolled,
    its scheduler runs the recomputations early and nothing is saved)."""
    blocks = nnx.List([restormer.TransformerBlock(8, 1, 2.66, rngs=nnx.Rngs(i)) for i in range(4)])
    graphdef, state = nnx.split(blocks)
    x = _x((1, 32, 32, 8))

    def temp_bytes(**kw):
        f = lambda s, x: jnp.sum(restormer.run_blocks(nnx.merge(graphdef, s), x, **kw) ** 2)
        compiled = jax.jit(jax.grad(f)).lower(state, x).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    assert temp_bytes(remat="block", scan=True) < 0.5 * temp_bytes(remat="none", scan=False)


def test_bad_remat_is_rejected():
    with pytest.raises(ValueError, match="remat must be one of"):
        stages.run_stages(
            lambda b, x: x, jnp.zeros(2), [nnx.Linear(2, 2, rngs=nnx.Rngs(0))], remat="full"
        )
