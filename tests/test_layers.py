"""Layer tests: fast conv paths equal lax.conv, PyTorch's pixel (un)shuffle order, norms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hair_jax import layers


def _x(shape, seed=0):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), jnp.float32)


@pytest.mark.parametrize(
    "cin,cout,k,groups", [(8, 12, 1, 1), (12, 12, 3, 12), (8, 6, 3, 1), (8, 8, 3, 2)]
)
def test_conv_fast_paths_equal_lax(cin, cout, k, groups):
    auto = layers.Conv2d(cin, cout, k, groups=groups, use_bias=True, rngs=nnx.Rngs(0))
    lax = layers.Conv2d(cin, cout, k, groups=groups, use_bias=True, impl="lax", rngs=nnx.Rngs(0))
    x = _x((2, 10, 12, cin))
    np.testing.assert_allclose(auto(x), lax(x), atol=1e-5)


def test_conv_matches_direct_sum():
    """A 3x3 conv with zero padding, written as an explicit correlation sum."""
    conv = layers.Conv2d(2, 3, 3, use_bias=True, rngs=nnx.Rngs(1))
    x = np.random.RandomState(2).randn(1, 5, 6, 2).astype(np.float32)
    w, b = np.asarray(conv.kernel[...]), np.asarray(conv.bias[...])
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    want = np.zeros((1, 5, 6, 3), np.float32) + b
    for i in range(3):
        for j in range(3):
            want += np.einsum("bhwc,co->bhwo", xp[:, i : i + 5, j : j + 6], w[i, j])
    np.testing.assert_allclose(conv(jnp.asarray(x)), want, atol=1e-5)


def test_pixel_unshuffle_matches_pytorch_channel_order():
    # PyTorch: out[c * 4 + i * 2 + j, y, x] = in[c, 2y + i, 2x + j] (NCHW).
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    y = np.asarray(layers.pixel_unshuffle(jnp.asarray(x), 2))
    assert y.shape == (2, 2, 3, 12)
    for c in range(3):
        for i in range(2):
            for j in range(2):
                np.testing.assert_array_equal(y[..., c * 4 + i * 2 + j], x[:, i::2, j::2, c])
    np.testing.assert_array_equal(layers.pixel_shuffle(jnp.asarray(y), 2), x)


@pytest.mark.parametrize("with_bias", [True, False])
def test_layernorm_matches_numpy(with_bias):
    ln = layers.LayerNorm(5, with_bias=with_bias)
    ln.scale[...] = jnp.arange(1.0, 6.0)
    if with_bias:
        ln.bias[...] = jnp.full((5,), 0.5)
    x = np.random.RandomState(3).randn(2, 3, 3, 5).astype(np.float32) * 4 + 1
    var = x.var(-1, keepdims=True)  # biased, like PyTorch's unbiased=False
    centred = x - x.mean(-1, keepdims=True) if with_bias else x
    want = centred / np.sqrt(var + 1e-5) * np.arange(1.0, 6.0) + (0.5 if with_bias else 0.0)
    np.testing.assert_allclose(ln(jnp.asarray(x)), want, rtol=1e-5, atol=1e-5)


def test_conv_rejects_bad_groups():
    with pytest.raises(ValueError, match="not divisible by groups=4"):
        layers.Conv2d(6, 8, 3, groups=4, rngs=nnx.Rngs(0))


def test_conv_bfloat16_compute_keeps_float32_params():
    conv = layers.Conv2d(4, 4, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    y = conv(_x((1, 8, 8, 4)))
    assert y.dtype == jnp.bfloat16 and conv.kernel[...].dtype == jnp.float32
    assert jax.tree.leaves(nnx.state(conv))[0].dtype == jnp.float32
