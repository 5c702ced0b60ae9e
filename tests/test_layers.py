"""Layer tests: fast conv paths equal lax.conv, PyTorch's pixel (un)shuffle order, norms."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hair_jax.nn import layers


def _x(shape, seed=0):
    return jnp.asarray(np.random.RandomState(seed).randn(*shape), jnp.float32)


@pytest.mark.parametrize(
    "cin,cout,k,groups", [(8, 12, 1, 1), (12, 12, 3, 12), (8, 6, 3, 1), (8, 8, 3, 2)]
)
def test_conv_fast_paths_equal_lax(cin, cout, k, groups):
    auto = layers.Conv2d(cin, cout, k, groups=groups, use_bias=True, rngs=nnx.Rngs(0))
    lax = layers.Conv2d(cin, cout, k, groups=groups, use_bias=True, impl="lax", rngs=nnx.Rngs(0))
    onnx = layers.Conv2d(cin, cout, k, groups=groups, use_bias=True, impl="onnx", rngs=nnx.Rngs(0))
    x = _x((2, 10, 12, cin))
    np.testing.assert_allclose(auto(x), lax(x), atol=1e-5)
    np.testing.assert_allclose(onnx(x), lax(x), atol=1e-5)
    # The ONNX form: only 1x1 convs leave lax.conv (for a matmul).
    conv_ops = str(jax.make_jaxpr(onnx)(x)).count("conv_general_dilated")
    assert conv_ops == (0 if k == 1 else 1)


@pytest.mark.parametrize("k,groups", [(1, 1), (3, 12), (3, 1)])
def test_channels_first_forms_equal_the_conv(k, groups):
    """The ONNX export's NCHW forms: the same convolution, in and out channel-first."""
    conv = layers.Conv2d(12, 12, k, groups=groups, use_bias=True, impl="onnx", rngs=nnx.Rngs(0))
    x = _x((2, 10, 12, 12))
    want = conv(x).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(conv.channels_first(x.transpose(0, 3, 1, 2)), want, atol=1e-5)
    if k == 1:
        np.testing.assert_allclose(conv.to_channels_first(x)[0], want, atol=1e-5)
        np.testing.assert_allclose(
            conv.from_channels_first(x.transpose(0, 3, 1, 2)), conv(x), atol=1e-5
        )
    else:
        for form, arg in [
            (conv.to_channels_first, x),
            (conv.from_channels_first, x.transpose(0, 3, 1, 2)),
        ]:
            with pytest.raises(ValueError, match="needs a 1x1 convolution, got \\(3, 3, "):
                form(arg)
    # In chunks along the output channels (a depthwise conv's chunk reads its own inputs).
    if k == 1 or groups == 12:
        xt = x.transpose(0, 3, 1, 2)
        ins = [xt[:, 4 * i : 4 * i + 4] for i in range(3)] if k == 3 else [xt] * 3
        parts = [conv.channels_first(t, (i, 3)) for i, t in enumerate(ins)]
        np.testing.assert_allclose(np.concatenate(parts, axis=1), want, atol=1e-5)
    else:
        with pytest.raises(
            ValueError, match="only 1x1 and depthwise convs split in 3, got kernel \\(3, 3, 12"
        ):
            conv.channels_first(x.transpose(0, 3, 1, 2), (0, 3))
    if k == 1:
        np.testing.assert_allclose(np.concatenate(conv.to_channels_first(x, 3), 1), want, atol=1e-5)
        with pytest.raises(ValueError, match="split in 5, got kernel \\(1, 1, 12, 12\\)"):
            conv.to_channels_first(x, 5)  # 12 channels in 5 chunks


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


def _lax_conv(x, kernel, groups):
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (1, 1),
        ((1, 1), (1, 1)) if kernel.shape[0] == 3 else "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def _value_and_grads(f, x, kernel):
    # A loss that weights every output differently, so any misplaced term shows.
    weight = jnp.cos(jnp.arange(np.prod(f(x, kernel).shape), dtype=jnp.float32))
    loss = lambda x, k: jnp.sum(f(x, k).ravel() * weight)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, kernel)


@pytest.mark.parametrize("row_loop", [True, False])
@pytest.mark.parametrize("shape", [(2, 7, 9, 5), (1, 24, 16, 40)])
def test_depthwise_custom_vjp_equals_lax_conv_values_and_gradients(shape, row_loop):
    """The hand-written backward (row-blocked or whole-image kernel gradient)
    equals autodiff of lax.conv."""
    x, kernel = _x(shape), _x((3, 3, 1, shape[-1]), seed=1)
    fast = functools.partial(layers.depthwise_conv3x3, row_loop=row_loop)
    got = _value_and_grads(fast, x, kernel)
    want = _value_and_grads(lambda x, k: _lax_conv(x, k, shape[-1]), x, kernel)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)


def test_depthwise_row_blocks_cover_every_row():
    # H=24 rows of 16*40*4 bytes with a 4 KiB target: blocks of 1 row; 6 KiB: 2 rows.
    assert layers._row_block(24, 16 * 40 * 4, target_bytes=4096) == 1
    assert layers._row_block(24, 1000, target_bytes=6000) == 6
    assert layers._row_block(7, 1000, target_bytes=6000) == 1  # a prime height
    assert layers._row_block(4, 10, target_bytes=1 << 20) == 4


def test_pointwise_custom_vjp_equals_einsum_values_and_gradients():
    x, kernel = _x((2, 5, 6, 7)), _x((7, 3), seed=1)
    got = _value_and_grads(layers.pointwise_conv, x, kernel)
    want = _value_and_grads(lambda x, k: jnp.einsum("bhwc,co->bhwo", x, k), x, kernel)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,groups,row_loop", [(1, 1, False), (3, 6, True), (3, 6, False)])
def test_per_image_kernels_under_vmap_equal_a_loop(k, groups, row_loop):
    """Per-image (dynamic) kernels: vmapped fast paths and their gradients equal a loop."""
    x, kernels = _x((3, 6, 5, 6)), _x((3, k, k, 6 // groups, 6), seed=1)
    depthwise = functools.partial(layers.depthwise_conv3x3, row_loop=row_loop)
    fast = layers.pointwise_conv if k == 1 else depthwise
    fast_kernels = kernels[:, 0, 0] if k == 1 else kernels

    def loss_fast(x, ks):
        return jnp.sum(jnp.sin(jax.vmap(lambda xi, ki: fast(xi[None], ki)[0])(x, ks)))

    def loss_loop(x, ks):
        outs = [_lax_conv(x[i : i + 1], ks[i], groups) for i in range(3)]
        return jnp.sum(jnp.sin(jnp.concatenate(outs)))

    got = jax.grad(loss_fast, argnums=(0, 1))(x, fast_kernels)
    want = jax.grad(loss_loop, argnums=(0, 1))(x, kernels)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[1], want[1][:, 0, 0] if k == 1 else want[1], atol=1e-4)


def test_gelu_gate_equals_exact_gelu_values_and_gradients():
    x1, x2 = _x((2, 3, 4, 6)) * 3, _x((2, 3, 4, 6), seed=1)
    plain = lambda a, b: jax.nn.gelu(a, approximate=False) * b
    got = _value_and_grads(layers.gelu_gate, x1, x2)
    want = _value_and_grads(plain, x1, x2)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_bias", [True, False])
def test_layernorm_custom_vjp_equals_autodiff(with_bias):
    ln = layers.LayerNorm(5, with_bias=with_bias)
    ln.scale[...] = jnp.arange(1.0, 6.0)
    graphdef, state = nnx.split(ln)
    x = _x((2, 3, 4, 5)) * 3 + 1

    def plain(s, x):  # the textbook formula, differentiated by JAX
        p = nnx.merge(graphdef, s)
        var = jnp.var(x, axis=-1, keepdims=True)
        centred = x - x.mean(-1, keepdims=True) if with_bias else x
        y = centred / jnp.sqrt(var + 1e-5) * p.scale[...]
        return y + p.bias[...] if with_bias else y

    weight = jnp.cos(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape)
    grads = lambda f: jax.grad(lambda s, x: jnp.sum(f(s, x) * weight), argnums=(0, 1))(state, x)
    got, want = grads(lambda s, x: nnx.merge(graphdef, s)(x)), grads(plain)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
