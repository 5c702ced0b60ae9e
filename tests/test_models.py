"""Res-HAIR and Restormer: parity with the published PyTorch model, sizes, API."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hair_jax.io import torch_import
from hair_jax.nn import models

DATA = Path(__file__).parent / "data"
# Activations named in the fixture -> our feature names (NCHW there, NHWC here).
FIXTURE_ACTS = {
    "giv": "giv",
    "act_encoder_level1": "encoder_level1",
    "act_latent": "latent",
    "act_decoder_level1": "decoder_level1",
    "output": "output",
}


@pytest.fixture(scope="module")
def fixture_io():
    return dict(np.load(DATA / "hair_dim16_io.npz"))


@pytest.fixture(scope="module")
def ref_model():
    return torch_import.load_torch_checkpoint(DATA / "hair_dim16_ref.ckpt")


@pytest.fixture(scope="module")
def traced_features(ref_model):
    """A jitted `features` that counts how often it is traced."""
    graphdef, state = nnx.split(ref_model)
    traces = []

    @jax.jit
    def features(state, x):
        traces.append(x.shape)
        return nnx.merge(graphdef, state).features(x)

    return lambda x: features(state, x), traces


def _nhwc(a):
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def test_parity_with_published_pytorch_model(fixture_io, traced_features):
    features, _ = traced_features
    f = features(jnp.asarray(_nhwc(fixture_io["input"])))
    for ref_name, ours in FIXTURE_ACTS.items():
        np.testing.assert_allclose(f[ours], _nhwc(fixture_io[ref_name]), atol=1e-4, err_msg=ours)


def test_selectors_match_and_differ_between_images(ref_model, fixture_io):
    sel = ref_model.selectors(jnp.asarray(fixture_io["giv"]))
    for level in models.HYPER_LEVELS:
        for i, s in enumerate(np.asarray(sel[level])):
            np.testing.assert_allclose(s, fixture_io[f"sel_{level}_{i}"], atol=1e-4)
    spread = max(np.abs(s[:, 0] - s[:, 1]).max() for s in map(np.asarray, sel.values()))
    assert spread > 0.1  # the two images run with clearly different weights


def test_jitted_forward_compiles_once_per_shape(fixture_io, traced_features):
    features, traces = traced_features
    x = jnp.asarray(_nhwc(fixture_io["input"]))
    features(x)
    n = len(traces)
    features(x * 0.5)
    features(1.0 - x)
    assert len(traces) == n
    features(x[:1])
    assert len(traces) == n + 1


def test_given_giv_replaces_computed_one(ref_model, fixture_io):
    graphdef, state = nnx.split(ref_model)
    run = jax.jit(lambda s, x, g: nnx.merge(graphdef, s)(x, giv=g))
    x = jnp.asarray(_nhwc(fixture_io["input"]))
    own = jnp.asarray(fixture_io["giv"])
    np.testing.assert_allclose(run(state, x, own), _nhwc(fixture_io["output"]), atol=1e-4)
    # Image 1 restored with image 0's GIV differs from its own restoration.
    swapped = run(state, x, own[jnp.array([0, 0])])
    np.testing.assert_allclose(swapped[0], _nhwc(fixture_io["output"])[0], atol=1e-4)
    assert np.abs(swapped[1] - _nhwc(fixture_io["output"])[1]).max() > 1e-3
    # use_giv chooses per image: image 0 runs with the given GIV (image 1's), image 1 its own.
    mixed = jax.jit(lambda s, x, g, u: nnx.merge(graphdef, s)(x, giv=g, use_giv=u))
    given = own[jnp.array([1, 1])]
    out = mixed(state, x, given, jnp.array([[1.0], [0.0]]))
    np.testing.assert_allclose(out[0], run(state, x, given)[0], atol=1e-5)
    np.testing.assert_allclose(out[1], _nhwc(fixture_io["output"])[1], atol=1e-4)
    assert np.abs(out[0] - _nhwc(fixture_io["output"])[0]).max() > 1e-3


def test_bad_shapes_raise_clear_errors(ref_model):
    # The tiny DAC has one channel per GroupNorm group: 64 px (models.min_size).
    with pytest.raises(ValueError, match="multiples of 8 and at least 64, got 40x36"):
        ref_model(jnp.zeros((1, 40, 36, 3)))
    with pytest.raises(ValueError, match="multiples of 8 and at least 64, got 16x32"):
        ref_model.giv(jnp.zeros((1, 16, 32, 3)))
    with pytest.raises(ValueError, match="multiples of 8 and at least 64, got 56x64"):
        ref_model(jnp.zeros((1, 56, 64, 3)))
    with pytest.raises(
        ValueError, match=r"expected images \[B, H, W, 3\], got shape \(1, 3, 16, 16\)"
    ):
        ref_model(jnp.zeros((1, 3, 16, 16)))
    with pytest.raises(ValueError, match=r"giv has shape \(1, 7\), expected \(1, 32\)"):
        ref_model(jnp.zeros((1, 64, 64, 3)), giv=jnp.zeros((1, 7)))
    with pytest.raises(ValueError, match=r"use_giv has shape \(1,\), expected \(1, 1\)"):
        ref_model(jnp.zeros((1, 64, 64, 3)), giv=jnp.zeros((1, 32)), use_giv=jnp.ones((1,)))


@pytest.mark.parametrize(
    "variant,count", [("res_hair", 28_559_846), ("restormer", 26_126_644), ("tiny", 2_048_498)]
)
def test_exact_parameter_counts_without_allocating(variant, count):
    model = models.abstract_model(variant)
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    assert models.count_params(model) == count


def test_res_hair_structure_matches_released_code():
    model = models.abstract_model("res_hair")
    assert models.VARIANTS["res_hair"].boxes == (9, 6, 7, 5, 5)
    assert [len(getattr(model, n).blocks) for n in models.HYPER_LEVELS] == [8, 6, 6, 4, 4]
    latent_bank = sum(np.prod(x.shape) for x in jax.tree.leaves(model.latent.bank.weights))
    d, h = 384, int(384 * 2.66)  # six convs of a latent block, times 9 boxes ("16.15M")
    assert latent_bank == 9 * (3 * d * d + 3 * d * 9 + d * d + 2 * h * d + 2 * h * 9 + h * d)
    assert models.count_params(model.dac) == 1_457_160


def test_gradients_reach_bank_every_hsn_and_dac():
    model = models.build_model("tiny", num_blocks=(1, 1, 1, 1))
    graphdef, state = nnx.split(model)
    # 64 px: the DAC's last map is 2x2. At 1x1 the tiny DAC's GroupNorm (one
    # channel per group) would output a constant and cut the DAC's gradient.
    x = jnp.asarray(np.random.RandomState(0).rand(2, 64, 64, 3), jnp.float32)
    loss = lambda s: jnp.mean(jnp.abs(nnx.merge(graphdef, s)(x) - 0.5))
    grads = jax.jit(jax.grad(loss))(state)
    flat = {
        ".".join(map(str, k)): np.abs(np.asarray(v.get_value())).max()
        for k, v in nnx.to_flat_state(grads)
    }
    for level in models.HYPER_LEVELS:
        assert flat[f"{level}.bank.weights.attn.qkv.kernel"] > 0, level
        assert flat[f"{level}.hsns.0.layers.0.kernel"] > 0, level
    assert flat["dac.conv_in.kernel"] > 0 and flat["dac.mid_attn_1.q.kernel"] > 0
    assert all(np.isfinite(v) for v in flat.values())


def test_restormer_forward_and_config_errors():
    model = models.build_model("restormer", dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
    graphdef, state = nnx.split(model)
    y = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.full((1, 16, 8, 3), 0.5))
    assert y.shape == (1, 16, 8, 3) and bool(jnp.isfinite(y).all())
    with pytest.raises(ValueError, match="unknown model variant 'big'"):
        models.build_model("big")
    with pytest.raises(ValueError, match="num_box needs 5 entries"):
        models.get_config("tiny", num_box=(3, 3))


def test_remat_and_scan_keep_parity_and_parameter_layout(ref_model, fixture_io):
    """The authors' weights load into every remat/scan setting (same parameter
    tree) and give the published outputs."""
    x = jnp.asarray(_nhwc(fixture_io["input"]))
    for remat, scan in [("none", False), ("block", True)]:
        model = models.build_model(
            dataclasses.replace(ref_model.config, remat=remat, scan_blocks=scan)
        )
        nnx.update(model, nnx.state(ref_model))
        graphdef, state = nnx.split(model)
        y = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, x)
        np.testing.assert_allclose(y, _nhwc(fixture_io["output"]), atol=1e-4)


def test_bfloat16_compute_error_bound(ref_model, fixture_io):
    """bf16 compute, float32 parameters: measured max |error| 6.6e-3, mean
    1.5e-3 against float32 on the fixture's images (outputs in [0, 1])."""
    model = models.build_model(dataclasses.replace(ref_model.config, dtype="bfloat16"))
    nnx.update(model, nnx.state(ref_model))
    assert {l.dtype for l in jax.tree.leaves(nnx.state(model))} == {jnp.dtype(jnp.float32)}
    graphdef, state = nnx.split(model)
    x = jnp.asarray(_nhwc(fixture_io["input"]))
    f = jax.jit(lambda s, x: nnx.merge(graphdef, s).features(x))(state, x)
    assert f["latent"].dtype == jnp.bfloat16 and f["giv"].dtype == jnp.float32
    err = np.abs(np.asarray(f["output"], np.float32) - _nhwc(fixture_io["output"]))
    assert f["output"].dtype == jnp.float32
    assert err.max() < 1.5e-2 and err.mean() < 3e-3, (err.max(), err.mean())
