"""The generic HAIR mechanism: per-image weights, Proposition 1, genericity."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hair_jax.nn import hyper, layers, restormer

KERNELS = nnx.PathContains("kernel")


def _x(shape, seed=0):
    return jnp.asarray(np.random.RandomState(seed).rand(*shape), jnp.float32)


def _selector(b, n, seed=1):
    return jax.nn.softmax(jnp.asarray(np.random.RandomState(seed).randn(b, n) * 2, jnp.float32))


class ResBlock(nnx.Module):
    """A block that is not Restormer's: x + conv3x3(gelu(conv3x3(x)))."""

    def __init__(self, ch, *, impl="fast", rngs):
        self.conv1 = layers.Conv2d(ch, ch, 3, use_bias=True, impl=impl, rngs=rngs)
        self.conv2 = layers.Conv2d(ch, ch, 3, use_bias=True, impl=impl, rngs=rngs)

    def __call__(self, x):
        return x + self.conv2(jax.nn.gelu(self.conv1(x)))


def _per_image_loop(block: hyper.DynamicBlock, x, weights):
    """Reference: run image b alone with weights[b]."""
    outs = []
    for b in range(x.shape[0]):
        w_b = jax.tree.map(lambda w: w[b], weights)
        outs.append(nnx.merge(block.graphdef, w_b, block.static)(x[b : b + 1])[0])
    return jnp.stack(outs)


BLOCKS = {
    "restormer_auto": lambda r: restormer.TransformerBlock(8, 2, 2.66, rngs=r),
    "restormer_lax": lambda r: restormer.TransformerBlock(8, 2, 2.66, impl="lax", rngs=r),
    "resblock": lambda r: ResBlock(6, rngs=r),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_per_image_weights_equal_python_loop(name):
    make = BLOCKS[name]
    bank = hyper.WeightBank(make, 4, KERNELS, rngs=nnx.Rngs(0))
    block = hyper.DynamicBlock(make(nnx.Rngs(1)), KERNELS)
    x = _x((3, 8, 8, 8 if "restormer" in name else 6))
    weights = bank.mix(_selector(3, 4))
    got = jax.jit(lambda x, w: block(x, w))(x, weights)
    np.testing.assert_allclose(got, _per_image_loop(block, x, weights), atol=2e-5)
    # Different images really got different weights.
    assert not np.allclose(got[0], block(x[:1].repeat(3, 0), weights)[1], atol=1e-3)


def test_per_image_loop_equals_vmap_and_keeps_plain_convs():
    make = lambda r: restormer.TransformerBlock(8, 2, 2.66, impl="onnx", rngs=r)
    bank = hyper.WeightBank(make, 3, KERNELS, rngs=nnx.Rngs(0))
    block = make(nnx.Rngs(1))
    vmapped = hyper.DynamicBlock(block, KERNELS)
    looped = hyper.DynamicBlock(block, KERNELS, per_image="loop")
    x, weights = _x((3, 8, 8, 8)), bank.mix(_selector(3, 3))
    np.testing.assert_allclose(looped(x, weights), vmapped(x, weights), atol=2e-5)
    # At batch 1 the per-image depthwise convs are ordinary depthwise convs
    # (groups = channels), not the batch folded into the groups by vmap.
    jaxpr = str(jax.make_jaxpr(lambda x, w: looped(x, w))(x[:1], bank.mix(_selector(1, 3))))
    groups = re.findall(r"feature_group_count=(\d+)", jaxpr)
    assert sorted(groups) == ["21", "21", "8", "8", "8"]  # q, k, v of 8; the gate's 2 x 21
    with pytest.raises(ValueError, match="per_image must be one of"):
        hyper.DynamicBlock(block, KERNELS, per_image="map")


@pytest.mark.parametrize(
    "impl,k,groups",
    [("lax", 3, 1), ("fast", 1, 1), ("fast", 3, 6), ("fast_rows", 3, 6), ("lax", 3, 6)],
)
def test_proposition_1_mixed_conv_equals_mixture_of_convs(impl, k, groups):
    make = lambda r: layers.Conv2d(6, 6, k, groups=groups, impl=impl, rngs=r)
    bank = hyper.WeightBank(make, 5, KERNELS, rngs=nnx.Rngs(0))
    conv = hyper.DynamicBlock(make(nnx.Rngs(1)), KERNELS)
    x, sel = _x((2, 7, 9, 6)), _selector(2, 5)
    mixed = conv(x, bank.mix(sel))
    kernels = bank.weights["kernel"][...]  # [num_box, kh, kw, in/g, out]
    per_box = []
    for i in range(5):
        c = make(nnx.Rngs(2))
        c.kernel[...] = kernels[i]
        per_box.append(c(x))
    want = jnp.einsum("bn,nbhwc->bhwc", sel, jnp.stack(per_box))
    np.testing.assert_allclose(mixed, want, atol=1e-5)


def test_bank_boxes_are_independent_default_inits():
    make = lambda r: layers.Conv2d(16, 16, 3, rngs=r)
    bank = hyper.WeightBank(make, 3, KERNELS, rngs=nnx.Rngs(0))
    w = np.asarray(bank.weights["kernel"][...])
    assert w.shape == (3, 3, 3, 16, 16)
    bound = 1 / np.sqrt(16 * 9)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert not np.allclose(w[0], w[1])


def test_hsn_is_a_softmax_over_boxes():
    hsn = hyper.HSN(32, 7, rngs=nnx.Rngs(0))
    assert [layer.kernel.shape for layer in hsn.layers] == [(32, 16), (16, 8), (8, 4), (4, 7)]
    s = hsn(_x((5, 32)))
    assert s.shape == (5, 7)
    np.testing.assert_allclose(s.sum(-1), 1.0, atol=1e-6)


def test_hyper_level_with_second_block_type_trains_every_part():
    level = hyper.HyperLevel(
        lambda r: ResBlock(6, rngs=r),
        num_blocks=2,
        num_box=3,
        giv_dim=16,
        dynamic=KERNELS,
        rngs=nnx.Rngs(0),
    )
    # Only the biases stay static in each block; the kernels live in the bank.
    static = nnx.to_flat_state(nnx.state(level.blocks[0], nnx.Param))
    assert sorted(".".join(map(str, k)) for k, _ in static) == [
        "static.conv1.bias",
        "static.conv2.bias",
    ]
    x, giv = _x((2, 8, 8, 6)), _x((2, 16), seed=5)
    graphdef, state = nnx.split(level)
    loss = lambda s: jnp.mean(nnx.merge(graphdef, s)(x, giv) ** 2)
    grads = jax.grad(loss)(state)
    flat = {".".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(grads)}
    for key in (
        "bank.weights.conv1.kernel",
        "bank.weights.conv2.kernel",
        "hsns.0.layers.0.kernel",
        "hsns.1.layers.3.kernel",
        "blocks.1.static.conv2.bias",
    ):
        assert np.abs(flat[key]).max() > 0, key


# ---------------------------------------------------------------------------
# The router and bank options (all off by default)
# ---------------------------------------------------------------------------
def test_hsn_options_are_off_by_default_and_shape_the_logits():
    giv = _x((5, 32), seed=3) * 0.1 + 0.3  # like a GIV: a constant plus small variation
    plain = hyper.HSN(32, 4, rngs=nnx.Rngs(0))
    assert plain.temperature is None and not plain.norm
    assert len(jax.tree.leaves(nnx.state(plain, nnx.Param))) == 8  # 4 Linear: kernels, biases
    np.testing.assert_allclose(plain(giv), jax.nn.softmax(plain.logits(giv)), atol=1e-7)
    normed = hyper.HSN(32, 4, norm=True, rngs=nnx.Rngs(0))
    assert normed.layers[-1].bias is None
    # The normalised router's logits spread about 1 over boxes, the paper's ~0.01.
    assert float(jnp.std(plain.logits(giv), -1).mean()) < 0.05
    assert 0.3 < float(jnp.std(normed.logits(giv), -1).mean()) < 3
    # A temperature divides the logits; a learned one starts at the same value.
    hot = hyper.HSN(32, 4, norm=True, temperature=0.25, rngs=nnx.Rngs(0))
    learned = hyper.HSN(
        32, 4, norm=True, temperature=0.25, learned_temperature=True, rngs=nnx.Rngs(0)
    )
    assert isinstance(hot.temperature, hyper.RouterTemperature)
    assert isinstance(learned.temperature, nnx.Param)
    np.testing.assert_allclose(hot.logits(giv), normed.logits(giv) / 0.25, rtol=1e-5)
    np.testing.assert_allclose(learned.logits(giv), hot.logits(giv), rtol=1e-5)


def test_bank_inits_scale_the_uniform_mix():
    make = lambda r: ResBlock(16, rngs=r)
    kernel = lambda bank: bank.weights["conv1"]["kernel"][...]  # [K, 3, 3, 16, 16]
    uniform = jnp.full((1, 4), 0.25)
    stds = {}
    for init in hyper.BANK_INITS:
        bank = hyper.WeightBank(make, 4, KERNELS, init=init, rngs=nnx.Rngs(0))
        stds[init] = float(jnp.std(bank.mix(uniform)["conv1"]["kernel"][...]))
    one = float(jnp.std(kernel(hyper.WeightBank(make, 1, KERNELS, rngs=nnx.Rngs(0)))))
    assert stds["independent"] == pytest.approx(one / 2, rel=0.05)  # 1/sqrt(4)
    assert stds["scaled"] == pytest.approx(one, rel=0.05)
    assert stds["shared"] == pytest.approx(one, rel=0.05)
    shared = kernel(hyper.WeightBank(make, 4, KERNELS, init="shared", rngs=nnx.Rngs(0)))
    residual = shared - shared.mean(0)
    assert float(jnp.std(residual)) == pytest.approx(hyper.SHARED_RESIDUAL * one, rel=0.15)
    with pytest.raises(ValueError, match="bank init must be one of"):
        hyper.WeightBank(make, 4, KERNELS, init="orthogonal", rngs=nnx.Rngs(0))


def test_selectors_are_the_weights_the_blocks_use_after_the_temperature():
    make = BLOCKS["resblock"]
    level = hyper.HyperLevel(
        make, 2, 3, 16, KERNELS, hsn_kw={"norm": True, "temperature": 0.2}, rngs=nnx.Rngs(0)
    )
    x, giv = _x((3, 8, 8, 6)), _x((3, 16), seed=5)
    selectors = level.selectors(giv)  # [blocks, B, boxes]
    np.testing.assert_allclose(selectors, jax.nn.softmax(level.logits(giv)), atol=1e-6)
    assert float(jnp.abs(selectors - 1 / 3).max()) > 0.1  # the temperature sharpened them
    y = x
    for block, weights in zip(level.blocks, selectors):
        y = block(y, level.bank.mix(weights))
    np.testing.assert_allclose(level(x, giv), y, atol=1e-5)


def test_type_bias_puts_each_types_weight_on_box_type_mod_k():
    types = jnp.array([[1.0, 0.0, 0.0, 0.0, 2.0], [0.0, 0.5, 0.5, 0.0, 0.0]])
    np.testing.assert_allclose(
        hyper.type_bias(types, 4), [[3.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0]]
    )
    np.testing.assert_allclose(hyper.type_bias(types, 5), types)


def test_type_routing_and_giv_skip_are_off_by_default_and_shape_the_model():
    from hair_jax.nn import models  # pylint: disable=g-import-not-at-top

    x = _x((2, 64, 64, 3))
    plain = models.build_model("tiny", rngs=nnx.Rngs(0))
    assert plain.giv_head is None and plain.type_routing is None and plain.giv_skip is None
    adaptive = models.build_model("tiny_adaptive", rngs=nnx.Rngs(0))
    assert adaptive.giv_logits(adaptive.giv(x)).shape == (2, 5)
    # The skip starts at zero: the same GIV as without it.
    no_skip = models.build_model("tiny_adaptive", giv_skip=False, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(adaptive.dac(adaptive.encoder(x)[1]), no_skip.giv(x), atol=1e-6)
    np.testing.assert_allclose(adaptive.giv(x), no_skip.giv(x), atol=1e-6)
    adaptive.giv_skip.proj.kernel[...] = jnp.ones_like(adaptive.giv_skip.proj.kernel[...])
    assert float(jnp.abs(adaptive.giv(x) - no_skip.giv(x)).max()) > 1e-3
    # A confident head sends an image to box (type mod K) of every bank.
    giv = adaptive.giv(x)
    head = adaptive.giv_head
    head.kernel[...] = jnp.zeros_like(head.kernel[...])
    head.bias[...] = jnp.array([0.0, 50.0, 0.0, 0.0, 0.0])  # every image: rain (type 1)
    for name, weights in adaptive.selectors(giv).items():
        assert (np.argmax(weights, -1) == 1).all(), name  # gain 3 over small HSN logits
        assert float(weights[..., 1].min()) > 0.6, name
    # The blocks run with those selectors: uniform ones change the output.
    from hair_jax.evaluation import selection  # pylint: disable=g-import-not-at-top

    assert float(jnp.abs(adaptive(x) - selection.uniform_model(adaptive)(x)).max()) > 1e-4
    with pytest.raises(ValueError, match="type_routing must be >= 0 and needs giv_classes > 0"):
        models.get_config("tiny", type_routing=1.0)
