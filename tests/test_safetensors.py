""".safetensors out (`hair-export ... OUT.safetensors`) and in (`load_model`).

There is no torch here, so strict loading into the reference PyTorch models
is shown by a chain over the fixtures, which the reference code made:
  * the model read from the reference `.ckpt` exports exactly its state
    dict (names, shapes, dtypes, values): `load_state_dict(strict=True)`
    then gets the tensors the fixture's model had, so it gives the
    fixture's outputs;
  * that state dict saved as `safetensors.torch.save_file` would (no
    metadata) loads here and restores the fixture's outputs;
  * the same both ways for the official NAFNet fixtures.
benchmarks/torch_roundtrip.py does the PyTorch side for real where torch
and the reference code are at hand.
"""

import json
import os
import re
import stat
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
import safetensors.numpy
from flax import nnx
from PIL import Image
from safetensors_writer import entries, write_raw

from hair_jax import convert, export, loading, restore
from hair_jax.commands import evaluate
from hair_jax.io import files, safetensors_file, torch_import
from hair_jax.io.torch_pickle import CheckpointError, load_state_dict
from hair_jax.nn import models

DATA = Path(__file__).parent / "data"
CKPT = DATA / "hair_dim16_ref.ckpt"
NAF_FIXTURES = ("w8_2lvl", "w4_3lvl")
PROG = "python -m hair_jax.export"


def _flat(model) -> dict[str, np.ndarray]:
    return {
        ".".join(map(str, k)): np.asarray(v.get_value())
        for k, v in nnx.to_flat_state(nnx.state(model))
    }


def _nhwc(a):
    return a.transpose(0, 2, 3, 1)


def _metadata(path) -> dict:
    with safetensors.safe_open(str(path), framework="numpy") as f:
        return f.metadata()


# --------------------------------------------------------------------------
# Out: the reference state dict, names, layouts and values.
# --------------------------------------------------------------------------


def test_fixture_exports_exactly_the_reference_state_dict(tmp_path, capsys):
    out = tmp_path / "hair16.safetensors"
    assert export.main([str(CKPT), str(out)]) == 0
    assert "max difference from the model 0" in capsys.readouterr().out
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~files.umask()  # as open() makes it
    # Read by safetensors alone, as safetensors.torch.load_file would.
    got = safetensors.numpy.load_file(str(out))
    want = load_state_dict(CKPT)  # the .ckpt's state dict, less its Lightning "net."
    assert len(want) == 271 and sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].shape == value.shape and got[key].dtype == np.float32, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    meta = _metadata(out)
    assert (meta["names"], meta["architecture"]) == ("pytorch", "HAIR")
    assert meta["reference_code"] == "toummHus/HAIR net/HAIR.py"
    assert json.loads(meta["constructor_args"]) == {
        "inp_channels": 3,
        "out_channels": 3,
        "dim": 16,
        "num_blocks": [1, 2, 2, 1],
        "num_refinement_blocks": 1,
        "heads": [1, 2, 4, 8],
        "ffn_expansion_factor": 2.66,
        "bias": False,
        "LayerNorm_type": "WithBias",
    }
    # The fixture's model was built with reduce_chan_level3 for dim 16.
    assert "reduce_chan_level3 takes 6*dim channels" in meta["constructor_note"]
    assert models.ModelConfig(**json.loads(meta["model_config"])).dim == 16
    assert meta["hair_jax_version"]


def test_reference_state_dict_in_safetensors_restores_the_fixture_outputs(tmp_path):
    sd = load_state_dict(CKPT)
    plain = tmp_path / "plain.safetensors"  # safetensors.torch.save_file(net.state_dict(), ...)
    safetensors.numpy.save_file(sd, str(plain))
    lightning = tmp_path / "lightning.safetensors"  # ... of the LightningModule: "net." keys
    safetensors.numpy.save_file({f"net.{k}": v for k, v in sd.items()}, str(lightning))
    loaded = loading.load_model(plain)
    assert loaded.kind == loading.SAFETENSORS
    assert loaded.describe() == f"{plain} (safetensors file)"
    io = np.load(DATA / "hair_dim16_io.npz")
    y = nnx.jit(lambda m, x: m(x))(loaded.model, jnp.asarray(_nhwc(io["input"])))
    np.testing.assert_allclose(np.asarray(y), _nhwc(io["output"]), atol=1e-4, rtol=0)
    a, b = _flat(loading.load_model(lightning).model), _flat(loaded.model)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", NAF_FIXTURES)
def test_nafnet_fixtures_both_ways(tmp_path, name):
    sd = load_state_dict(DATA / f"nafnet_{name}.pth")
    # Out: the official state dict exactly, and the official constructor's arguments.
    model = torch_import.state_dict_to_model(sd)
    out = tmp_path / "out.safetensors"
    out.write_bytes(safetensors_file.to_bytes(model))
    got = safetensors.numpy.load_file(str(out))
    assert sorted(got) == sorted(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    meta = _metadata(out)
    args = json.loads(meta["constructor_args"])
    assert (meta["names"], meta["architecture"], args["width"]) == (
        "pytorch",
        "NAFNet",
        model.config.dim,
    )
    assert (args["enc_blk_nums"], args["dec_blk_nums"]) == (
        list(model.config.enc_blocks),
        list(model.config.dec_blocks),
    )
    # In: the official state dict, saved without metadata, restores the official outputs.
    path = tmp_path / "official.safetensors"
    safetensors.numpy.save_file(sd, str(path))
    loaded = loading.load_model(path).model
    io = np.load(DATA / f"nafnet_{name}_io.npz")
    forward = nnx.jit(lambda m, x: m(x))
    for i in range(2):
        y = forward(loaded, jnp.asarray(io[f"input{i}"]))
        np.testing.assert_allclose(np.asarray(y), io[f"output{i}"], atol=1e-4, rtol=0)


# --------------------------------------------------------------------------
# Round trips: every built-in architecture, in its names.
# --------------------------------------------------------------------------

SMALL = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, dac_groups=4)
SMALL_NAF = dict(dim=8, enc_blocks=(1, 1), middle_blocks=1, dec_blocks=(1, 1), dac_groups=4)
ROUND_TRIPS = {
    "res_hair": (models.ModelConfig(**SMALL), "pytorch", "HAIR"),
    "restormer": (models.ModelConfig(arch="restormer", **SMALL), "pytorch", "Restormer"),
    "nafnet": (models.ModelConfig(arch="nafnet", **SMALL_NAF), "pytorch", "NAFNet"),
    "naf_hair": (models.ModelConfig(arch="naf_hair", **SMALL_NAF), "hair-jax", "naf_hair"),
    "adaptive": (models.ModelConfig(**SMALL, **models.ADAPTIVE), "hair-jax", "res_hair"),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_round_trip_restores_the_same(tmp_path, case):
    cfg, names, architecture = ROUND_TRIPS[case]
    model = models.build_model(cfg, rngs=nnx.Rngs(1))
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(safetensors_file.to_bytes(model))
    meta = _metadata(path)
    assert (meta["names"], meta["architecture"]) == (names, architecture)
    loaded = loading.load_model(path).model
    assert loaded.config == model.config
    a, b = _flat(loaded), _flat(model)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    graphdef = nnx.graphdef(model)
    run = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    x = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3)), jnp.float32)
    np.testing.assert_array_equal(run(nnx.state(loaded), x), run(nnx.state(model), x))


def test_constructor_note_names_what_the_released_hair_builds_differently():
    # dim 48 with the released rules: the released HAIR(**constructor_args) builds it as is.
    cfg = models.ModelConfig(num_blocks=(1, 1, 1, 1), num_refinement_blocks=1)
    assert safetensors_file.reference_class(cfg)[0] == "HAIR"
    assert safetensors_file._hair_differences(cfg) == []
    assert safetensors_file._hair_differences(models.ModelConfig(**SMALL)) == [
        "dac_groups (its GroupNorm groups) 4, it has 24",
        "reduce_chan_level3 takes 6*dim channels here, 2*dim+192 there (dim 48 only)",
    ]


def test_narrower_floats_are_read_as_float32(tmp_path):
    w = np.array([1.5, -2.25, 3.0], np.float32)
    path = tmp_path / "narrow.safetensors"
    bf16 = (w.view(np.uint32) >> 16).astype("<u2")  # exact: these need 8 mantissa bits
    header = {
        "a": {"dtype": "F16", "shape": [3], "data_offsets": [0, 6]},
        "b": {"dtype": "BF16", "shape": [3], "data_offsets": [6, 12]},
        "c": {"dtype": "F64", "shape": [1, 3], "data_offsets": [12, 36]},
    }
    data = w.astype("<f2").tobytes() + bf16.tobytes() + w.astype("<f8").tobytes()
    tensors, meta = safetensors_file.read_safetensors(write_raw(path, header, data))
    assert meta == {}
    for name, shape in (("a", (3,)), ("b", (3,)), ("c", (1, 3))):
        assert tensors[name].dtype == np.float32 and tensors[name].shape == shape
        np.testing.assert_array_equal(tensors[name].reshape(-1), w)


# --------------------------------------------------------------------------
# The commands: one line, exit 2, nothing written.
# --------------------------------------------------------------------------


def _damaged(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    header, data = entries({"w": np.zeros((2, 3), np.float32)})
    cases = {
        "truncated": (
            write_raw(tmp_path / "cut.safetensors", header, data[:-4]),
            "tensor 'w': data_offsets [0, 24] run past the data's 20 bytes",
        ),
        "header past the end": (
            write_raw(tmp_path / "long.safetensors", header, data, length=10**6),
            "header declares 1000000 bytes, the file holds",
        ),
        "not json": (write_raw(tmp_path / "text.safetensors", b"{oops", data), "not JSON"),
        "not a model": (write_raw(tmp_path / "other.safetensors", header, data), "not a HAIR"),
        "lying metadata": (
            write_raw(
                tmp_path / "meta.safetensors",
                {**header, "__metadata__": {"names": "hair-jax", "model_config": '{"dim": -1}'}},
                data,
            ),
            "invalid model config (dim must be an integer > 0",
        ),
    }
    return cases


def test_commands_refuse_damaged_files_in_one_line_and_write_nothing(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64)).save(photo)
    for case, (path, message) in _damaged(tmp_path).items():
        with pytest.raises((CheckpointError, ValueError), match=re.escape(message)):
            loading.load_model(path)
        out = tmp_path / "out.safetensors"
        existing = tmp_path / "kept.safetensors"
        existing.write_bytes(b"keep me")
        assert export.main([str(path), str(out)]) == 2, case
        assert export.main([str(path), str(existing), "--overwrite"]) == 2, case
        assert convert.main([str(path), str(tmp_path / "export")]) == 2, case
        restored = tmp_path / "restored"
        assert restore.main([str(photo), "--checkpoint", str(path), "--output", str(restored)]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 4 and all(str(path) in line for line in lines), (case, lines)
        assert not out.exists() and not (tmp_path / "export").exists(), case
        assert not restored.exists(), case
        assert existing.read_bytes() == b"keep me", case
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".safetensors")) == [
        "photo.png"
    ]


def test_existing_out_is_kept_without_overwrite(tmp_path, capsys):
    existing = tmp_path / "old.safetensors"
    existing.write_bytes(b"keep me")
    with pytest.raises(SystemExit) as e:
        export.main([str(CKPT), str(existing)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"{PROG}: error: {existing} exists; choose another OUT or pass --overwrite"
    assert existing.read_bytes() == b"keep me"


def test_a_file_that_differs_when_read_back_is_not_written(tmp_path, monkeypatch, capsys):
    model = models.build_model(models.ModelConfig(arch="nafnet", **SMALL_NAF), rngs=nnx.Rngs(0))
    honest = safetensors_file.tensors_and_metadata

    def one_weight_off(m):
        tensors, meta = honest(m)
        tensors["intro.bias"] = tensors["intro.bias"] + 1
        return tensors, meta

    monkeypatch.setattr(safetensors_file, "tensors_and_metadata", one_weight_off)
    out = tmp_path / "m.safetensors"
    with pytest.raises(export.ExportFailed, match="does not hold the model's intro.bias"):
        export.export(model, str(out), fmt="safetensors")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_readme_pytorch_snippet_loads_strictly(tmp_path, monkeypatch):
    """The README's snippet, run with stand-ins for torch's pieces.

    `net.HAIR.HAIR` builds our model from the constructor arguments as the
    released class reads them, and its `load_state_dict(strict=True)`
    demands exactly the reference state dict's names and shapes.
    """
    text = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use these weights in PyTorch", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "hair3d.safetensors").write_bytes(
        safetensors_file.to_bytes(torch_import.load_torch_checkpoint(CKPT))
    )

    class HAIR:
        def __init__(self, inp_channels, out_channels, LayerNorm_type, **kwargs):
            assert (inp_channels, out_channels) == (3, 3)
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
            cfg = models.ModelConfig(layer_norm=LayerNorm_type, **kwargs)
            reference = torch_import.torch_state_dict(models.build_model(cfg))
            self.shapes = {k: v.shape for k, v in reference.items()}

        def load_state_dict(self, state, strict):
            assert strict and {k: v.shape for k, v in state.items()} == self.shapes
            self.loaded = True

    torch_side = type(sys)("safetensors.torch")
    torch_side.load_file = safetensors.numpy.load_file
    hair_module = type(sys)("net.HAIR")
    hair_module.HAIR = HAIR
    monkeypatch.setitem(sys.modules, "safetensors.torch", torch_side)
    monkeypatch.setitem(sys.modules, "net", type(sys)("net"))
    monkeypatch.setitem(sys.modules, "net.HAIR", hair_module)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    assert scope["net"].loaded


def test_eval_results_go_beside_the_file():
    loaded = loading.LoadedModel(None, loading.SAFETENSORS, "weights/hair3d.safetensors")
    assert evaluate.default_output(loaded, "all_in_one_3d") == os.path.abspath(
        "weights/hair3d-eval/all_in_one_3d"
    )
