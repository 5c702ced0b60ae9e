"""Tests for hair_jax.io.torch_pickle, the torch-free checkpoint reader.

Synthetic checkpoints are written without torch: a tiny pickle emitter below
writes the opcodes torch.save produces (GLOBAL, REDUCE, BINPERSID, ...), and
``_write_torch_zip`` lays them out as torch's zip format.
"""

from __future__ import annotations

import copyreg
import os
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from torch_writer import (
    Appends,
    Build,
    Ext,
    Global,
    Inst,
    NewObj,
    Raw,
    Reduce,
    SetItems,
    StackGlobal,
    dumps,
    emit,
    f32,
    ordered_dict,
    tensor,
    write_torch_zip,
)

from hair_jax.io.torch_pickle import CheckpointError, load_state_dict

DATA = Path(__file__).parent / "data"
FIXTURE = DATA / "hair_dim16_ref.ckpt"
FIXTURE_IO = DATA / "hair_dim16_io.npz"


# Storages shared by the synthetic checkpoints.
S_W = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
S_T = np.arange(6, dtype=np.float32) * 0.5  # viewed transposed
S_O = np.arange(10, dtype=np.float32) - 3.0  # viewed with an offset
STORAGES = {"0": f32(S_W), "1": f32(S_T), "2": f32(S_O), "3": np.array([7], "<i8").tobytes()}


def _sample_tensors(prefix: str = "") -> dict:
    return {
        prefix + "conv.weight": tensor("0", (2, 3, 4)),
        # Non-contiguous: the transpose of a (2, 3) row-major view.
        prefix + "proj.weight": tensor("1", (3, 2), stride=(1, 3)),
        # Same storage again, now contiguous (shared storages are legal).
        prefix + "proj.raw": tensor("1", (2, 3)),
        # Storage offset 4: elements 4..9 of storage "2".
        prefix + "norm.bias": tensor("2", (2, 3), offset=4, numel=10),
        # 0-d int64 buffer, like BatchNorm's num_batches_tracked.
        prefix + "norm.num_batches_tracked": tensor("3", (), storage="LongStorage"),
    }


EXPECTED = {
    "conv.weight": S_W,
    "proj.weight": S_T.reshape(2, 3).T,
    "proj.raw": S_T.reshape(2, 3),
    "norm.bias": S_O[4:].reshape(2, 3),
    "norm.num_batches_tracked": np.array(7, np.int64),
}


def _assert_expected(sd: dict) -> None:
    assert set(sd) == set(EXPECTED)
    for k, want in EXPECTED.items():
        assert sd[k].dtype == want.dtype, k
        assert sd[k].shape == want.shape, k
        assert sd[k].flags.c_contiguous, k
        np.testing.assert_array_equal(sd[k], want, err_msg=k)


# --------------------------------------------------------------------------
# 1. The reference fixture.
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_sd() -> dict:
    return load_state_dict(FIXTURE)


def test_fixture_loads_all_tensors(fixture_sd):
    sd = fixture_sd
    assert len(sd) == 271
    assert not any(k.startswith("net.") for k in sd)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in sd.values())
    # HAIR has no BatchNorm, so the state dict holds no buffers: the fixture README's
    # 2,048,498 parameters are exactly the elements of the 271 tensors.
    assert sum(v.size for v in sd.values()) == 2_048_498
    assert sd["patch_embed.proj.weight"].shape == (16, 3, 3, 3)
    # kernel_box has one row per box; the number of boxes is confirmed
    # independently by the selector widths recorded in the io fixture.
    sel = np.load(FIXTURE_IO)
    assert sd["latent.kernel_box"].shape == (5, 205672)
    assert sel["sel_latent_0"].shape == (2, 5)
    assert sd["decoder_level3.kernel_box"].shape[0] == sel["sel_decoder_level3_0"].shape[1] == 4
    for k in ("latent.kernel_box", "patch_embed.proj.weight"):
        assert np.isfinite(sd[k]).all()
        assert np.abs(sd[k]).max() > 0


def test_fixture_values_match_raw_storage_and_reread(fixture_sd):
    # Independent of the pickle path: the first tensor in data.pkl is
    # patch_embed.proj.weight, contiguous in storage "0" at offset 0.
    with zipfile.ZipFile(FIXTURE) as zf:
        raw = zf.read("hair_dim16_ref/data/0")
    direct = np.frombuffer(raw, "<f4").reshape(16, 3, 3, 3)
    np.testing.assert_array_equal(fixture_sd["patch_embed.proj.weight"], direct)
    again = load_state_dict(str(FIXTURE))  # str path works as well as Path
    assert list(again) == list(fixture_sd)
    for k in fixture_sd:
        np.testing.assert_array_equal(again[k], fixture_sd[k], err_msg=k)


# --------------------------------------------------------------------------
# 2. Bare and prefixed state dicts, views, dtypes, byte order.
# --------------------------------------------------------------------------


def test_bare_and_module_prefixed_state_dicts_load_identically(tmp_path):
    bare = write_torch_zip(tmp_path / "bare.pt", dumps(ordered_dict(_sample_tensors())), STORAGES)
    dp = write_torch_zip(
        tmp_path / "dp.pt", dumps(ordered_dict(_sample_tensors("module."))), STORAGES, archive="dp"
    )
    sd_bare, sd_dp = load_state_dict(bare), load_state_dict(dp)
    _assert_expected(sd_bare)
    _assert_expected(sd_dp)
    assert list(sd_bare) == list(sd_dp)


def test_lightning_net_prefix_and_plain_dict_load(tmp_path):
    ckpt = {"epoch": 3, "state_dict": _sample_tensors("net.")}
    _assert_expected(load_state_dict(write_torch_zip(tmp_path / "l.ckpt", dumps(ckpt), STORAGES)))


def test_prefix_kept_unless_every_key_has_it(tmp_path):
    sd = {"net.a": tensor("0", (24,)), "b": tensor("1", (6,))}
    out = load_state_dict(write_torch_zip(tmp_path / "m.pt", dumps(sd), STORAGES))
    assert set(out) == {"net.a", "b"}


def test_other_dtypes_and_big_endian(tmp_path):
    values = np.array([1.5, -2.25, 3.0, 0.0], np.float32)
    bf16 = (values.view(np.uint32) >> 16).astype("<u2")  # exact in bfloat16
    storages = {
        "h": values.astype("<f2").tobytes(),
        "bf": bf16.tobytes(),
        "d": values.astype("<f8").tobytes(),
        "i": np.array([1, -2], "<i4").tobytes(),
        "b": np.array([True, False, True], "|b1").tobytes(),
    }
    sd = {
        "h": tensor("h", (4,), storage="HalfStorage"),
        "bf": tensor("bf", (2, 2), storage="BFloat16Storage"),
        "d": tensor("d", (4,), storage="DoubleStorage"),
        "i": tensor("i", (2,), storage="IntStorage"),
        "b": tensor("b", (3,), storage="BoolStorage"),
        # nn.Parameter pickles as _rebuild_parameter around the tensor.
        "p": Reduce(
            Global("torch._utils", "_rebuild_parameter"),
            (tensor("h", (4,), storage="HalfStorage"), True, ordered_dict()),
        ),
        # A tensor subclass pickles through _rebuild_from_type_v2.
        "sub": Reduce(
            Global("torch._tensor", "_rebuild_from_type_v2"),
            (
                Global("torch._utils", "_rebuild_tensor_v2"),
                Global("torch.nn.parameter", "Parameter"),
                tensor("d", (4,), storage="DoubleStorage").args,
                {},
            ),
        ),
    }
    out = load_state_dict(write_torch_zip(tmp_path / "dt.pt", dumps(sd), storages))
    for k in ("h", "d", "p", "sub"):
        assert out[k].dtype == np.float32
        np.testing.assert_array_equal(out[k], values)
    assert out["bf"].dtype == np.float32
    np.testing.assert_array_equal(out["bf"], values.reshape(2, 2))
    assert out["i"].dtype == np.int32 and out["i"].tolist() == [1, -2]
    assert out["b"].dtype == np.bool_ and out["b"].tolist() == [True, False, True]

    # The same tensors written big-endian, with a 'big' byteorder record.
    big = {
        "h": values.astype(">f2").tobytes(),
        "bf": bf16.astype(">u2").tobytes(),
        "d": values.astype(">f8").tobytes(),
        "i": np.array([1, -2], ">i4").tobytes(),
        "b": storages["b"],
    }
    out_big = load_state_dict(write_torch_zip(tmp_path / "be.pt", dumps(sd), big, byteorder="big"))
    for k in out:
        assert out_big[k].dtype == out[k].dtype and out_big[k].dtype.isnative, k
        np.testing.assert_array_equal(out_big[k], out[k], err_msg=k)


# --------------------------------------------------------------------------
# 3. Malicious pickles: nothing named by the file is imported or called.
# --------------------------------------------------------------------------


class _SystemCall:
    """Pickles (with the real pickle module) as os.system(command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def _load_outcome(path: Path) -> dict | None:
    """Loads; returns the state dict, or None if it raised CheckpointError."""
    try:
        return load_state_dict(path)
    except CheckpointError as e:
        assert path.name in str(e) and "\n" not in str(e)
        return None


def _check_payload(tmp_path: Path, payload: Any, marker: Path) -> None:
    """The payload, next to genuine tensors and in place of one, does nothing."""
    good = ordered_dict(_sample_tensors())
    beside = write_torch_zip(
        tmp_path / "beside.ckpt", dumps({"state_dict": good, "callbacks": payload}), STORAGES
    )
    out = _load_outcome(beside)
    assert not marker.exists()
    assert out is not None  # the payload sits outside the weights
    _assert_expected(out)

    inside = dict(_sample_tensors())
    inside["evil"] = payload
    inside_path = write_torch_zip(tmp_path / "inside.ckpt", dumps(inside), STORAGES)
    with pytest.raises(CheckpointError, match="evil"):
        load_state_dict(inside_path)
    assert not marker.exists()


def test_os_system_reduce_is_not_called(tmp_path):
    marker = tmp_path / "pwned"
    command = f"touch {marker}"
    real = pickle.dumps(_SystemCall(command), protocol=2)  # GLOBAL 'posix system'
    assert b"system" in real
    _check_payload(tmp_path, Raw(real[2:-1]), marker)
    _check_payload(tmp_path, Reduce(Global("os", "system"), (command,)), marker)
    _check_payload(
        tmp_path, Reduce(StackGlobal("subprocess", "call"), (["touch", str(marker)],)), marker
    )
    _check_payload(tmp_path, Inst("os", "system", (command,)), marker)


def test_arbitrary_module_is_not_imported(tmp_path, monkeypatch):
    mod = f"evil_ckpt_mod_{os.getpid()}"
    marker = tmp_path / "imported"
    (tmp_path / f"{mod}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef run(*a):\n    open({str(marker)!r}, 'w').close()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        _check_payload(tmp_path, Reduce(Global(mod, "run"), ()), marker)
        _check_payload(tmp_path, NewObj(StackGlobal(mod, "run"), ()), marker)
        _check_payload(
            tmp_path, Reduce(Global("webbrowser", "open"), ("http://example.com",)), marker
        )
        # EXT1 resolves through copyreg's registry; it must still not import.
        copyreg.add_extension(mod, "run", 0xE1)
        try:
            _check_payload(tmp_path, Reduce(Ext(0xE1), ()), marker)
        finally:
            copyreg.remove_extension(mod, "run", 0xE1)
        assert mod not in sys.modules
        assert not marker.exists()
    finally:
        sys.modules.pop(mod, None)


def test_builtins_eval_and_getattr_chains_do_nothing(tmp_path):
    marker = tmp_path / "evaled"
    py_write = f"open({str(marker)!r}, 'w').close()"
    os_module = Reduce(Global("builtins", "__import__"), ("os",))
    system = Reduce(Global("builtins", "getattr"), (os_module, "system"))
    for payload in (
        Reduce(Global("builtins", "eval"), (py_write,)),
        Reduce(Global("__builtin__", "exec"), (py_write,)),
        Reduce(system, (f"touch {marker}",)),
        # getattr on one of the allowed objects must not reach real attributes.
        Reduce(
            Reduce(
                Global("builtins", "getattr"), (Global("collections", "OrderedDict"), "fromkeys")
            ),
            ([1],),
        ),
        Reduce(Global("numpy.testing._private.utils", "runstring"), (py_write, {})),
    ):
        _check_payload(tmp_path, payload, marker)


def test_payloads_are_live_under_plain_pickle(tmp_path, monkeypatch):
    """Control: the payloads above really run code when unpickled naively,
    so the tests that show the loader ignores them are meaningful."""
    mod = f"evil_ckpt_ctl_{os.getpid()}"
    imported = tmp_path / "imported"
    (tmp_path / f"{mod}.py").write_text(f"open({str(imported)!r}, 'w').close()\ndef run(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        pickle.loads(dumps(Reduce(Global(mod, "run"), ())))
        assert imported.exists() and mod in sys.modules
    finally:
        sys.modules.pop(mod, None)

    marks = [tmp_path / f"m{i}" for i in range(4)]
    os_module = Reduce(Global("builtins", "__import__"), ("os",))
    payloads = [
        Raw(pickle.dumps(_SystemCall(f"touch {marks[0]}"), protocol=2)[2:-1]),
        Reduce(Global("os", "system"), (f"touch {marks[1]}",)),
        Reduce(Global("builtins", "eval"), (f"open({str(marks[2])!r}, 'w').close()",)),
        Reduce(
            Reduce(Global("builtins", "getattr"), (os_module, "system")), (f"touch {marks[3]}",)
        ),
    ]
    for payload, mark in zip(payloads, marks):
        pickle.loads(dumps(payload))
        assert mark.exists(), payload


def test_loader_objects_cannot_be_mutated_by_build(tmp_path):
    # BUILD on the loader's own function would change it for later loads.
    sd = dict(_sample_tensors())
    sd["x"] = Build(Global("torch._utils", "_rebuild_tensor_v2"), {"__defaults__": (1,)})
    with pytest.raises(CheckpointError, match="x.pt"):
        load_state_dict(write_torch_zip(tmp_path / "x.pt", dumps(sd), STORAGES))
    good = write_torch_zip(tmp_path / "good.pt", dumps(_sample_tensors()), STORAGES)
    _assert_expected(load_state_dict(good))


# --------------------------------------------------------------------------
# 4. A Lightning checkpoint naming many foreign classes.
# --------------------------------------------------------------------------


def test_lightning_checkpoint_with_foreign_objects(tmp_path):
    np_dtype = Reduce(Global("numpy", "dtype"), ("f8", False, True))
    np_dtype_built = Build(np_dtype, (3, "<", None, None, None, -1, -1, 0))
    attr_dict = SetItems(
        Reduce(Global("lightning.fabric.utilities.data", "AttributeDict"), ()),
        {"dim": 16, "lr": 2e-4, "dtype": Global("torch", "float32")},
    )
    namespace = Build(NewObj(Global("argparse", "Namespace"), ()), {"lr": 2e-4, "epochs": 3})
    np_array = Build(
        Reduce(
            Global("numpy.core.multiarray", "_reconstruct"),
            (Global("numpy", "ndarray"), (0,), b"b"),
        ),
        (1, (2,), np_dtype_built, False, b"\x00" * 16),
    )
    state_dict = Build(
        ordered_dict(_sample_tensors("net.")), {"_metadata": ordered_dict({"": {"version": 1}})}
    )
    ckpt = {
        "epoch": 0,
        "global_step": 1,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": state_dict,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': None}": {
                "best_model_score": tensor("2", (), offset=1, numel=10),
                "dirpath": Reduce(Global("pathlib", "PosixPath"), ("/tmp", "x")),
            }
        },
        "optimizer_states": [
            {
                "state": {
                    0: {
                        "step": tensor("3", (), storage="LongStorage"),
                        "exp_avg": tensor("0", (2, 3, 4)),
                        "missing_storage": tensor("99", (5,)),
                        "bad_view": _malformed_tensor(),
                    }
                },
                "param_groups": [
                    {"lr": 2e-4, "betas": (0.9, 0.999), "params": [0, 1], "foreach": None}
                ],
            }
        ],
        "lr_schedulers": [
            Appends(Reduce(Global("torch.optim.lr_scheduler", "LambdaLR"), ()), [1, 2])
        ],
        "hparams_name": "hparams",
        "hyper_parameters": attr_dict,
        "namespace": namespace,
        "np_scalar": Reduce(
            Global("numpy.core.multiarray", "scalar"), (np_dtype_built, b"\x00" * 8)
        ),
        "np_array": np_array,
        "device": Reduce(Global("torch", "device"), ("cuda", 0)),
    }
    path = write_torch_zip(tmp_path / "lightning.ckpt", dumps(ckpt), STORAGES)
    _assert_expected(load_state_dict(path))
    assert "lightning" not in sys.modules


# --------------------------------------------------------------------------
# 5. Bad inputs: CheckpointError with a one-line message naming the file.
# --------------------------------------------------------------------------


def _missing(tmp_path):
    return tmp_path / "absent.ckpt"


def _text(tmp_path):
    p = tmp_path / "notes.ckpt"
    p.write_text("this is not a checkpoint\nsecond line\n")
    return p


def _legacy(tmp_path):  # pre-1.6 torch.save: a bare pickle stream
    p = tmp_path / "legacy.pth"
    p.write_bytes(pickle.dumps({"magic": 0x1950A86A20F9469CFC6C}, protocol=2))
    return p


def _truncated(tmp_path):
    p = tmp_path / "half.ckpt"
    raw = FIXTURE.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    return p


def _no_data_pkl(tmp_path):
    return write_torch_zip(tmp_path / "nopkl.ckpt", None, STORAGES)


def _missing_storage(tmp_path):
    storages = {k: v for k, v in STORAGES.items() if k != "2"}
    return write_torch_zip(tmp_path / "nostorage.ckpt", dumps(_sample_tensors()), storages)


def _storage_too_small(tmp_path):
    sd = {"w": tensor("2", (4, 4), numel=10)}  # needs 16 elements, has 10
    return write_torch_zip(tmp_path / "small.ckpt", dumps(sd), STORAGES)


def _stride_out_of_bounds(tmp_path):
    sd = {"w": tensor("2", (3, 3), stride=(4, 1), numel=10)}  # last index 10
    return write_torch_zip(tmp_path / "stride.ckpt", dumps(sd), STORAGES)


def _short_storage_record(tmp_path):
    storages = dict(STORAGES, **{"2": STORAGES["2"][:20]})  # 5 of 10 floats
    return write_torch_zip(tmp_path / "short.ckpt", dumps(_sample_tensors()), storages)


def _crc_error(tmp_path):
    p = write_torch_zip(tmp_path / "crc.ckpt", dumps(_sample_tensors()), STORAGES)
    raw = bytearray(p.read_bytes())
    i = raw.index(STORAGES["0"])  # stored uncompressed, so findable
    raw[i + 5] ^= 0xFF
    p.write_bytes(bytes(raw))
    return p


def _list_of_ints(tmp_path):
    return write_torch_zip(tmp_path / "list.ckpt", pickle.dumps([1, 2, 3], protocol=2), {})


def _dict_without_tensors(tmp_path):
    return write_torch_zip(tmp_path / "epoch.ckpt", dumps({"epoch": 3}), {})


def _bad_protocol(tmp_path):
    return write_torch_zip(tmp_path / "proto.ckpt", b"\x80\x09" + emit({}) + b".", {})


def _cut_pickle(tmp_path):
    data = dumps(_sample_tensors())
    return write_torch_zip(tmp_path / "cutpkl.ckpt", data[: len(data) // 2], STORAGES)


def _non_tensor_entry(tmp_path):
    sd = dict(_sample_tensors())
    sd["hparams\nsecond line"] = NewObj(Global("argparse", "Namespace"), ())
    return write_torch_zip(tmp_path / "hp.ckpt", dumps(sd), STORAGES)


def _malformed_tensor() -> Reduce:
    good = tensor("2", (2,))
    return Reduce(good.fn, (good.args[0], 0, (2.5,), (1,), False, ordered_dict()))


def _malformed_view(tmp_path):
    return write_torch_zip(tmp_path / "view.ckpt", dumps({"w.x": _malformed_tensor()}), STORAGES)


def _unsupported_storage(tmp_path):
    sd = {"w": tensor("0", (2,), storage="ComplexFloatStorage")}
    return write_torch_zip(tmp_path / "complex.ckpt", dumps(sd), STORAGES)


def _directory(tmp_path):
    p = tmp_path / "dir.ckpt"
    p.mkdir()
    return p


@pytest.mark.parametrize(
    "make, expect",
    [
        (_missing, "no such file"),
        (_text, "not a zip"),
        (_legacy, "torch>=1.6"),
        (_truncated, "truncated or corrupt zip"),
        (_no_data_pkl, "data.pkl"),
        (_missing_storage, "missing record 'archive/data/2'"),
        (_storage_too_small, "16 elements, more than its storage '2' has (10)"),
        (_stride_out_of_bounds, "too few"),
        (_short_storage_record, "norm.bias"),
        (_crc_error, "CRC"),
        (_list_of_ints, "not a state dict"),
        (_dict_without_tensors, "no 'state_dict'"),
        (_bad_protocol, "protocol"),
        (_cut_pickle, "not a valid checkpoint pickle"),
        (_non_tensor_entry, "argparse.Namespace"),
        (_unsupported_storage, "ComplexFloatStorage"),
        (_malformed_view, "'w.x' is tensor with malformed"),
        (_directory, "not a regular file"),
    ],
)
def test_bad_inputs_raise_one_line_checkpoint_error(tmp_path, make, expect):
    path = make(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_state_dict(path)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert path.name in message
    assert "\n" not in message and "\r" not in message
    assert expect in message
