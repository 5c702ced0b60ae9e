"""Restormer blocks: the fast MDTA form equals the textbook one, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hair_jax.nn import layers, restormer


def _textbook_mdta(attn: restormer.MDTA, x):
    """MDTA as the reference writes it: channel-major heads, F.normalize, q @ k^T."""
    b, h, w, c = x.shape
    n = attn.num_heads
    qkv = attn.qkv_dwconv(attn.qkv(x))  # [b, h, w, 3c]
    qkv = jnp.moveaxis(qkv.reshape(b, h * w, 3 * c), 1, -1)  # [b, 3c, hw]
    q, k, v = (t.reshape(b, n, c // n, h * w) for t in jnp.split(qkv, 3, axis=1))
    normalize = lambda t: t / jnp.maximum(jnp.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
    a = normalize(q) @ jnp.swapaxes(normalize(k), -1, -2) * attn.temperature[...][:, None, None]
    out = jax.nn.softmax(a, axis=-1) @ v  # [b, heads, c/heads, hw]
    return attn.project_out(jnp.moveaxis(out.reshape(b, c, h * w), 1, -1).reshape(b, h, w, c))


def test_mdta_pixel_major_gram_form_equals_textbook_values_and_gradients():
    attn = restormer.MDTA(8, 2, bias=True, rngs=nnx.Rngs(0))
    attn.temperature[...] = jnp.array([0.7, 1.9])
    graphdef, state = nnx.split(attn)
    x = jnp.asarray(np.random.RandomState(0).randn(2, 6, 5, 8), jnp.float32)
    weight = jnp.cos(jnp.arange(2 * 6 * 5 * 8, dtype=jnp.float32)).reshape(x.shape)

    def loss(state, x, f):
        return jnp.sum(f(nnx.merge(graphdef, state), x) * weight)

    got = jax.value_and_grad(loss, argnums=(0, 1))(state, x, lambda m, x: m(x))
    want = jax.value_and_grad(loss, argnums=(0, 1))(state, x, _textbook_mdta)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(got[1][0]["temperature"][...]).max()) > 0


def test_onnx_channel_major_blocks_equal_the_pixel_major_ones():
    """MDTA, GDFN and the resizes in the ONNX export's form (NCHW inside) give the same."""
    x = jnp.asarray(np.random.RandomState(1).randn(2, 6, 4, 8), jnp.float32)
    for make in (
        lambda impl: restormer.MDTA(8, 2, bias=True, impl=impl, rngs=nnx.Rngs(0)),
        lambda impl: restormer.GDFN(8, 2.66, bias=True, impl=impl, rngs=nnx.Rngs(0)),
        lambda impl: restormer.Downsample(8, impl=impl, rngs=nnx.Rngs(0)),
        lambda impl: restormer.Upsample(8, impl=impl, rngs=nnx.Rngs(0)),
    ):
        fast, onnx = make("fast"), make("onnx")
        convs = [m for _, m in nnx.iter_graph(onnx) if isinstance(m, layers.Conv2d)]
        assert convs and all(conv.channel_major for conv in convs)
        np.testing.assert_allclose(onnx(x), fast(x), rtol=1e-5, atol=1e-5)
