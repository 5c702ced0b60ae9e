"""PyTorch checkpoint import, the convert CLI and the orbax model export."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from torch_writer import write_state_dict

from hair_jax import convert
from hair_jax.io import model_export, torch_import
from hair_jax.io.torch_pickle import CheckpointError, load_state_dict
from hair_jax.nn import models

DATA = Path(__file__).parent / "data"
CKPT = DATA / "hair_dim16_ref.ckpt"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def ref_sd():
    return load_state_dict(CKPT)


def _params(model):
    return {
        ".".join(map(str, k)): np.asarray(v.get_value())
        for k, v in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def test_infers_architecture_from_shapes(ref_sd):
    cfg = torch_import.infer_config(ref_sd)
    assert (cfg.arch, cfg.dim, cfg.num_blocks, cfg.num_refinement_blocks) == (
        "res_hair",
        16,
        (1, 2, 2, 1),
        1,
    )
    assert (cfg.heads, cfg.num_box, cfg.ffn_expansion_factor) == (
        (1, 2, 4, 8),
        (5, 4, 5, 5, 5),
        2.66,
    )
    assert (cfg.dac_channels, cfg.hsn_depth, cfg.bias, cfg.layer_norm) == (24, 3, False, "WithBias")


def test_kernel_box_split_follows_reference_order(ref_sd):
    model = torch_import.state_dict_to_model(ref_sd)
    box = ref_sd["latent.kernel_box"]  # [5, total], OIHW segments
    d, h = 128, int(128 * 2.66)
    qkv = np.asarray(model.latent.bank.weights["attn"]["qkv"]["kernel"][...])
    np.testing.assert_array_equal(
        qkv[:, 0, 0], box[:, : 3 * d * d].reshape(5, 3 * d, d).transpose(0, 2, 1)
    )
    out = np.asarray(model.latent.bank.weights["ffn"]["project_out"]["kernel"][...])
    np.testing.assert_array_equal(
        out[:, 0, 0], box[:, -h * d :].reshape(5, d, h).transpose(0, 2, 1)
    )


def test_cli_round_trip_gives_identical_model(tmp_path):
    out = tmp_path / "export"
    proc = subprocess.run(
        [sys.executable, "-m", "hair_jax.convert", str(CKPT), str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2,048,498 parameters" in proc.stdout
    assert sorted(os.listdir(out)) == ["config.json", "params"]
    restored = model_export.load_checkpoint(out)
    original = torch_import.load_torch_checkpoint(CKPT)
    assert restored.config == original.config
    a, b = _params(restored), _params(original)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    graphdef, _ = nnx.split(original)
    run = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    x = jnp.asarray(np.random.RandomState(0).rand(1, 64, 64, 3), jnp.float32)
    np.testing.assert_array_equal(run(nnx.state(restored), x), run(nnx.state(original), x))


def test_bare_state_dict_without_prefix_loads(tmp_path, ref_sd):
    path = write_state_dict(tmp_path / "bare.pth", ref_sd, lightning=False)
    a, b = (
        _params(torch_import.load_torch_checkpoint(path)),
        _params(torch_import.state_dict_to_model(ref_sd)),
    )
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _truncated(tmp_path, sd):
    path = tmp_path / "cut.ckpt"
    path.write_bytes(CKPT.read_bytes()[: CKPT.stat().st_size // 2])
    return path


def _not_zip(tmp_path, sd):
    path = tmp_path / "notes.ckpt"
    path.write_text("hello\n")
    return path


def _foreign_zip(tmp_path, sd):
    path = tmp_path / "other.ckpt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "not a checkpoint")
    return path


def _missing_key(tmp_path, sd):
    return write_state_dict(
        tmp_path / "m.ckpt", {k: v for k, v in sd.items() if k != "output.weight"}
    )


def _wrong_shape(tmp_path, sd):
    bad = dict(sd)
    bad["reduce_latent.bias"] = np.zeros(7, np.float32)
    return write_state_dict(tmp_path / "s.ckpt", bad)


def _extra_key(tmp_path, sd):
    return write_state_dict(
        tmp_path / "e.ckpt", {**sd, "decoder_level4.weight": np.zeros(3, np.float32)}
    )


def _short_bank(tmp_path, sd):
    bad = dict(sd)
    bad["refinement.kernel_box"] = sd["refinement.kernel_box"][:, :-5]
    return write_state_dict(tmp_path / "b.ckpt", bad)


def _other_model(tmp_path, sd):
    return write_state_dict(
        tmp_path / "resnet.ckpt", {"conv1.weight": np.zeros((4, 3, 3, 3), np.float32)}
    )


BAD = {
    "missing": (lambda tmp_path, sd: tmp_path / "nope.ckpt", "nope.ckpt: no such file"),
    "not_zip": (_not_zip, r"notes.ckpt: not a torch checkpoint \(not a zip archive\)"),
    "truncated": (_truncated, "cut.ckpt"),
    "foreign_zip": (_foreign_zip, "data.pkl"),
    "missing_key": (_missing_key, "missing tensor: output.kernel"),
    "wrong_shape": (
        _wrong_shape,
        r"reduce_latent.bias: shape \(7,\) does not match the architecture's \(64,\)",
    ),
    "extra_key": (_extra_key, "unexpected tensor for this architecture: decoder_level4.kernel"),
    "short_bank": (_short_bank, "refinement.kernel_box has 14645 weights per box, expected 14650"),
    "other_model": (
        _other_model,
        "not a HAIR/Restormer/NAFNet state_dict: no 'patch_embed.proj.weight'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_and_nothing_written(case, tmp_path, ref_sd, capsys):
    make, message = BAD[case]
    path = make(tmp_path, ref_sd)
    with pytest.raises(CheckpointError, match=message):
        torch_import.load_torch_checkpoint(path)
    out_dir = tmp_path / "out"
    assert convert.main([str(path), str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("python -m hair_jax.convert: error: ")
        and err.count("\n") == 1
        and path.name in err
    )
    assert not out_dir.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]


def test_existing_output_is_never_overwritten(tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    assert convert.main([str(CKPT), str(out_dir)]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert os.listdir(out_dir) == ["keep.txt"]


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(model_export.ExportError, match="config.json: not found"):
        model_export.load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"dim": 16, "colour": "red"}')
    with pytest.raises(
        model_export.ExportError, match=r"unknown model config fields: \['colour'\]"
    ):
        model_export.load_checkpoint(tmp_path)


def _to_torch_name(ours: str) -> str:
    """Inverse of torch_import.our_name for the static Restormer (test-only)."""
    name = re.sub(r"^encoder\.patch_embed\.", "patch_embed.proj.", ours)
    name = re.sub(r"^encoder\.levels\.(\d)\.", lambda m: f"encoder_level{int(m[1]) + 1}.", name)
    name = re.sub(
        r"^encoder\.downs\.(\d)\.conv\.",
        lambda m: f"down{int(m[1]) + 1}_{int(m[1]) + 2}.body.0.",
        name,
    )
    name = re.sub(r"^(up\d_\d)\.conv\.", r"\1.body.0.", name)
    name = re.sub(r"(norm\d)\.scale$", r"\1.body.weight", name)
    name = re.sub(r"(norm\d)\.bias$", r"\1.body.bias", name)
    return re.sub(r"\.kernel$", ".weight", name)


def test_restormer_state_dict_round_trip(tmp_path):
    model = models.build_model(
        "restormer",
        dim=8,
        num_blocks=(1, 2, 1, 2),
        num_refinement_blocks=1,
        heads=(1, 2, 2, 4),
        layer_norm="BiasFree",
    )
    sd = {}
    for name, value in _params(model).items():
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        elif name.endswith("temperature"):
            value = value.reshape(-1, 1, 1)
        sd[_to_torch_name(name)] = value
    assert "latent.1.attn.qkv_dwconv.weight" in sd and "down2_3.body.0.weight" in sd
    loaded = torch_import.load_torch_checkpoint(write_state_dict(tmp_path / "restormer.pth", sd))
    assert loaded.config == model.config
    a, b = _params(loaded), _params(model)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
