"""NAFNet (exact to the official code) and NAF-HAIR, HAIR's second backbone.

The fixtures tests/data/nafnet_*.pth / *_io.npz were made by the official
PyTorch NAFNet (benchmarks/make_nafnet_fixtures.py, which needs torch and a
NAFNet checkout; not run here): random weights saved the way the official
training saves them ({"params": state_dict}), and its outputs at two odd
input sizes.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import train_helpers
from flax import nnx
from torch_writer import Global, Reduce, dumps, ordered_dict, tensor, write_torch_zip

from hair_jax import convert, loading
from hair_jax.io.torch_import import CheckpointError, load_torch_checkpoint
from hair_jax.nn import hyper, models, nafnet

DATA = Path(__file__).parent / "data"
FIXTURES = {
    "w8_2lvl": dict(dim=8, enc_blocks=(1, 2), middle_blocks=1, dec_blocks=(2, 1)),
    "w4_3lvl": dict(dim=4, enc_blocks=(1, 1, 2), middle_blocks=2, dec_blocks=(1, 1, 1)),
}
GENERATED = ("conv1", "conv2", "conv3", "conv4", "conv5", "sca")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_parity_with_official_pytorch_nafnet(name):
    path = DATA / f"nafnet_{name}.pth"
    io = np.load(DATA / f"nafnet_{name}_io.npz")
    model = load_torch_checkpoint(path)
    assert isinstance(model, nafnet.NAFNet)
    cfg = model.config
    assert cfg.arch == "nafnet"
    assert {k: getattr(cfg, k) for k in FIXTURES[name]} == FIXTURES[name]
    assert models.count_params(model) == int(io["param_count"])
    forward = nnx.jit(lambda m, x: m(x))
    for i in range(2):
        x = jnp.asarray(io[f"input{i}"])
        assert x.shape[1] % 2 and x.shape[1:3] != (16, 16)  # odd: pads and crops
        np.testing.assert_allclose(
            np.asarray(forward(model, x)), io[f"output{i}"], atol=1e-4, rtol=0, err_msg=f"{i}"
        )


# The official counts (sum of numel over the PyTorch model's parameters).
@pytest.mark.parametrize(
    "variant, count",
    [
        ("nafnet_sidd_32", 29_159_715),
        ("nafnet_sidd_64", 115_982_915),
        ("nafnet_gopro_32", 17_111_907),
        ("nafnet_gopro_64", 67_888_835),
        ("nafnet_tiny", 1_137_203),
        # NAF-HAIR, as docs/backbones.md's table gives them.
        ("naf_hair_sidd_32", 17_572_583),
        ("naf_hair_gopro_32", 22_698_930),
        ("naf_hair_tiny", 2_543_938),
    ],
)
def test_official_parameter_counts(variant, count):
    assert models.count_params(models.abstract_model(variant)) == count


def test_block_parameter_formula():
    c = 8
    block = nafnet.NAFBlock(c, rngs=nnx.Rngs(0))
    assert models.count_params(block) == nafnet.block_params(c) == 7 * c * c + 33 * c
    kernels = nnx.state(block, nnx.PathContains("kernel"))
    assert sum(x.size for x in jax.tree.leaves(kernels)) == nafnet.block_params(c, True)


def test_official_weights_file_loads_through_load_model():
    loaded = loading.load_model(DATA / "nafnet_w8_2lvl.pth")
    assert loaded.kind == loading.TORCH
    assert isinstance(loaded.model, nafnet.NAFNet)


def test_official_weights_convert_to_an_export_that_restores_the_same(tmp_path):
    out = tmp_path / "export"
    assert convert.main([str(DATA / "nafnet_w4_3lvl.pth"), str(out)]) == 0
    loaded = loading.load_model(out)
    assert loaded.kind == loading.EXPORT and isinstance(loaded.model, nafnet.NAFNet)
    io = np.load(DATA / "nafnet_w4_3lvl_io.npz")
    y = nnx.jit(lambda m, x: m(x))(loaded.model, jnp.asarray(io["input1"]))
    np.testing.assert_allclose(np.asarray(y), io["output1"], atol=1e-4, rtol=0)


def _params_file(tmp_path, params) -> Path:
    """A file laid out like the official saves: {"params": params}."""
    storages = {"0": np.zeros(4, "<f4").tobytes()}
    good = ordered_dict({"intro.weight": tensor("0", (4,))})
    obj = {"params": params if params is not None else good}
    return write_torch_zip(tmp_path / "evil.pth", dumps(obj), storages)


def test_malicious_params_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    payload = Reduce(Global("os", "system"), (f"touch {marker}",))
    path = _params_file(tmp_path, ordered_dict({"intro.weight": payload}))
    with pytest.raises(CheckpointError, match="evil.pth.*intro.weight"):
        loading.load_model(path)
    assert not marker.exists()
    # The payload as the whole 'params' entry.
    path = _params_file(tmp_path, payload)
    with pytest.raises(CheckpointError, match="evil.pth"):
        loading.load_model(path)
    assert not marker.exists()


def test_a_params_file_that_is_no_nafnet_is_refused_in_one_line(tmp_path):
    path = _params_file(tmp_path, None)  # intro.weight of shape (4,), nothing else
    with pytest.raises(CheckpointError, match="evil.pth: not a HAIR/Restormer/NAFNet") as e:
        load_torch_checkpoint(path)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------
# NAF-HAIR
# ---------------------------------------------------------------------------

SMALL_HAIR = dict(dim=8, enc_blocks=(1, 1), dec_blocks=(1, 1), dac_groups=4)


def test_naf_hair_generates_the_six_conv_kernels_and_keeps_the_rest_static():
    model = models.build_model("naf_hair_tiny", **SMALL_HAIR)
    assert model.config.boxes == (3, 3, 3)  # naf_num_box(1) for middle + 2 decoders
    bank = model.middle_blks.bank.weights
    assert sorted(bank) == sorted(GENERATED)
    assert all(sorted(bank[k]) == ["kernel"] for k in bank)
    static = nnx.to_flat_state(model.middle_blks.blocks[0].static)
    names = sorted(".".join(map(str, k)) for k, _ in static)
    assert names == sorted(
        [f"{c}.bias" for c in GENERATED]
        + ["norm1.scale", "norm1.bias", "norm2.scale", "norm2.bias", "beta", "gamma"]
    )


@pytest.mark.parametrize("n, boxes", [(1, 3), (2, 3), (3, 4), (4, 5), (12, 5), (28, 5)])
def test_naf_bank_size_rule(n, boxes):
    assert models.naf_num_box(n) == boxes


@pytest.mark.parametrize("name", GENERATED)
def test_proposition_1_per_generated_conv(name):
    """conv(x, sum_k s_k W_k) == sum_k s_k conv(x, W_k), per image, for each conv."""
    c, num_box = 8, 3
    make = lambda r: nafnet.NAFBlock(c, rngs=r)
    level = hyper.HyperLevel(make, 1, num_box, 16, nnx.PathContains("kernel"), rngs=nnx.Rngs(1))
    s = jax.nn.softmax(jax.random.normal(jax.random.key(2), (2, num_box)), axis=-1)
    mixed = level.bank.mix(s)[name]["kernel"]
    boxes = level.bank.weights[name]["kernel"]
    conv = getattr(make(nnx.Rngs(3)), name)
    x = jax.random.normal(jax.random.key(4), (2, 5, 6, conv.in_features))

    def run(kernel, xb):
        conv.kernel.set_value(kernel)
        return conv(xb[None])[0]

    for b in range(2):
        got = run(mixed[b], x[b])
        want = sum(s[b, k] * run(boxes[k], x[b]) for k in range(num_box))
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=0, err_msg=f"{name} image {b}")


def test_naf_hair_per_image_selectors_and_weights():
    model = models.build_model("naf_hair_tiny", **SMALL_HAIR)
    with pytest.raises(ValueError, match="at least 16x16 px"):
        model.giv(jnp.zeros((1, 12, 40, 3)))
    rng = np.random.default_rng(0)
    smooth = np.tile(np.linspace(0, 1, 32, dtype=np.float32)[None, :, None], (32, 1, 3))
    x = jnp.asarray(np.stack([smooth, rng.uniform(0, 1, (32, 32, 3)).astype(np.float32)]))
    giv, sel, both = nnx.jit(lambda m, x: (m.giv(x), m.selectors(m.giv(x)), m(x)))(model, x)
    assert giv.shape == (2, 16)
    assert sorted(sel) == ["decoders.0", "decoders.1", "middle_blks"]
    for name, s in sel.items():
        assert s.shape == (1, 2, 3)
        np.testing.assert_allclose(s.sum(-1), 1.0, atol=1e-6)
        assert np.abs(s[:, 0] - s[:, 1]).max() > 1e-4, name
    # Each image runs with its own weights: the batch equals the images alone.
    alone = [nnx.jit(lambda m, x: m(x))(model, x[i : i + 1])[0] for i in range(2)]
    np.testing.assert_allclose(both, np.stack(alone), atol=1e-5, rtol=0)


def test_naf_hair_trains_a_few_steps(tmp_path):
    from hair_jax import train  # noqa: PLC0415 - as in the other training tests

    config = train_helpers.tiny_config(num_steps=3, checkpoint_every=3, ema_decay=0.0)
    config.model.variant = "naf_hair_tiny"
    config.model.overrides = dict(SMALL_HAIR)
    before = models.build_model(models.get_config("naf_hair_tiny", **SMALL_HAIR))
    state, _ = train.train_and_evaluate(
        config, str(tmp_path), make_loader=train_helpers.fake_loader_factory(), test_sets={}
    )
    assert int(state.step) == 3
    trained = nnx.merge(nnx.graphdef(before), state.params, state.rest)
    moved = lambda get: not np.allclose(get(before), get(trained))
    assert moved(lambda m: m.middle_blks.bank.weights["conv1"]["kernel"][...])
    assert moved(lambda m: m.decoders[1].bank.weights["conv5"]["kernel"][...])
    assert moved(lambda m: m.middle_blks.hsns[0].layers[-1].kernel[...])
    assert moved(lambda m: m.dac.conv_out.kernel[...])
    assert moved(lambda m: m.encoders[0][0].conv1.kernel[...])


def test_guide_recipe_for_your_own_block_runs(capsys):
    """docs/backbones.md's "HAIR on your own block" snippet runs and prints what it says."""
    text = (Path(__file__).parent.parent / "docs" / "backbones.md").read_text(encoding="utf-8")
    section = text.split("## HAIR on your own block", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "backbones.md", "exec"), {})  # noqa: S102 - our own guide
    assert capsys.readouterr().out.strip() == "(4, 24, 24, 32) (2, 4, 3)"
