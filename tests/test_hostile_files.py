"""Hostile checkpoint files: sizes are checked before memory is spent.

The deflate bomb of the issue (a 4-byte tensor record that inflates to
4 GiB) is refused in a child process whose peak memory is measured; the
other tests pin each size check of ``hair_jax.io.torch_pickle`` and the cost
of unpickling ``data.pkl`` (tracemalloc counts numpy buffers too), and each
check of a ``.safetensors`` header (``hair_jax.io.safetensors_file``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors_writer import write_raw
from torch_writer import (
    Global,
    RawRecord,
    Reduce,
    StackGlobal,
    dumps,
    f32,
    ordered_dict,
    records_of,
    tensor,
    write_raw_zip,
    write_torch_zip,
    zeros_deflated,
)

from hair_jax.io import safetensors_file, torch_pickle
from hair_jax.io.torch_pickle import MAX_PICKLE_BYTES, CheckpointError, load_state_dict

FIXTURE = Path(__file__).parent / "data" / "hair_dim16_ref.ckpt"
BOMB_MIB = 4095  # 4 GiB less 1 MiB: the most a zip without zip64 declares


def _state_dict_storages(path: Path) -> dict[str, int]:
    """Storage record name -> numel, for the tensors of the state dict."""
    with zipfile.ZipFile(path) as zf:
        prefix = torch_pickle._archive_prefix(zf, str(path))
        root = torch_pickle._Unpickler(io.BytesIO(zf.read(prefix + "data.pkl"))).load()
    state = torch_pickle._select_state_dict(root, str(path))
    return {f"{prefix}data/{t.storage.key}": t.storage.numel for t in state.values()}


def _bomb(tmp_path: Path, honest: bool) -> tuple[Path, str]:
    """The fixture with one 4-byte weight record replaced by 4 GiB of zeros, deflated.

    honest: the record declares its inflated size (as `zip` would write it);
    otherwise it declares the 4 bytes its tensor needs and the CRC of 4 zeros.
    """
    storages = _state_dict_storages(FIXTURE)
    records = records_of(FIXTURE)
    i = next(i for i, r in enumerate(records) if storages.get(r.name) == 1)
    payload = zeros_deflated(BOMB_MIB)
    size, crc = (BOMB_MIB * 2**20, 0) if honest else (4, zipfile.crc32(bytes(4)))
    records[i] = RawRecord(records[i].name, payload, zipfile.ZIP_DEFLATED, size, crc)
    path = write_raw_zip(tmp_path / f"bomb-{'honest' if honest else 'lying'}.ckpt", records)
    return path, records[i].name


CHILD = """
import json, resource, sys
from hair_jax.io.torch_pickle import CheckpointError, load_state_dict
# A regression must fail here, not take the machine's memory.
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
load_state_dict(sys.argv[1])  # warm-up: imports, allocator pools
before = peak()
try:
    sd = load_state_dict(sys.argv[2])
    out = {"ok": sum(a.nbytes for a in sd.values()), "zero": float(sd[sys.argv[3]].sum())}
except CheckpointError as e:
    out = {"error": str(e)}
out["extra"] = peak() - before
print(json.dumps(out))
"""


def _child(reference: Path, path: Path, key: str = "") -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent.parent))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(reference), str(path), key],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_deflate_bomb_is_refused_before_it_inflates(tmp_path):
    path, record = _bomb(tmp_path, honest=True)
    assert path.stat().st_size < 20 * 2**20  # a small upload ...
    # ... whose one record declares 4 GiB for a 1-element float storage.
    out = _child(FIXTURE, path)
    assert out["error"] == (
        f"{path}: tensor {_weight_of(record)!r}: storage record {record!r} declares "
        f"{BOMB_MIB * 2**20} bytes, its 1 elements of torch.FloatStorage need 4"
    )
    # The fixture was loaded once already, so a refusal costs almost nothing.
    assert out["extra"] < 64 * 2**20, out


def test_deflate_bomb_declaring_four_bytes_is_read_as_four_bytes(tmp_path):
    path, record = _bomb(tmp_path, honest=False)
    key = _weight_of(record)
    out = _child(FIXTURE, path, key.removeprefix("net."))
    # zipfile stops inflating at the declared size; the weight reads as 0.
    assert out.get("zero") == 0.0, out
    assert out["extra"] < 64 * 2**20, out


def _weight_of(record: str) -> str:
    """The state dict key whose storage is ``record``."""
    with zipfile.ZipFile(FIXTURE) as zf:
        prefix = torch_pickle._archive_prefix(zf, str(FIXTURE))
        root = torch_pickle._Unpickler(io.BytesIO(zf.read(prefix + "data.pkl"))).load()
    state = torch_pickle._select_state_dict(root, str(FIXTURE))
    return next(k for k, t in state.items() if f"{prefix}data/{t.storage.key}" == record)


# --------------------------------------------------------------------------
# Each size check, one line naming the file.
# --------------------------------------------------------------------------

W = np.arange(6, dtype=np.float32)


def _zip(tmp_path: Path, sd, storages: dict[str, bytes], name: str = "x.ckpt") -> Path:
    return write_torch_zip(tmp_path / name, dumps(sd), storages)


def _record_too_big(tmp_path):
    return _zip(tmp_path, {"w": tensor("0", (6,))}, {"0": f32(W) + bytes(4)})


def _bzip2_record(tmp_path):
    path = tmp_path / "bz.ckpt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", dumps({"w": tensor("0", (6,))}))
        zf.writestr("archive/data/0", f32(W), compress_type=zipfile.ZIP_BZIP2)
    return path


def _pickle_too_big(tmp_path):
    big = dumps({"w": tensor("0", (6,)), "pad": "x" * MAX_PICKLE_BYTES})
    return write_torch_zip(tmp_path / "big.ckpt", big, {"0": f32(W)})


def _byteorder_too_big(tmp_path):
    return write_torch_zip(
        tmp_path / "bo.ckpt", dumps({"w": tensor("0", (6,))}), {"0": f32(W)}, byteorder="little" * 8
    )


def _expanded_view(tmp_path):  # torch's x.expand(4, 6): stride 0 over 6 elements
    return _zip(tmp_path, {"w": tensor("0", (4, 6), stride=(0, 1), numel=6)}, {"0": f32(W)})


def _two_declarations(tmp_path):
    sd = {"a": tensor("0", (6,)), "b": tensor("0", (3,), numel=3)}
    return _zip(tmp_path, sd, {"0": f32(W)})


def _ordered_dict_copy(tmp_path):
    sd = Reduce(Global("collections", "OrderedDict"), ({"w": tensor("0", (6,))},))
    return _zip(tmp_path, sd, {"0": f32(W)})


def _many_globals(tmp_path):
    sd = {"w": tensor("0", (6,)), "x": [StackGlobal("m", f"g{i}") for i in range(1025)]}
    return _zip(tmp_path, {"state_dict": sd}, {"0": f32(W)})


def _huge_memo_index(tmp_path):  # the C unpickler would allocate 32 GiB for it
    return write_torch_zip(tmp_path / "memo.ckpt", b"\x80\x02Nr\xf0\xff\xff\xff.", {})


def _huge_bytes8(tmp_path):  # ... and 10 GB here, before reading 3 bytes
    return write_torch_zip(
        tmp_path / "b8.ckpt", b"\x80\x04\x8e" + (10**10).to_bytes(8, "little") + b"abc", {}
    )


@pytest.mark.parametrize(
    "make, expect",
    [
        (
            _record_too_big,
            "storage record 'archive/data/0' declares 28 bytes, its 6 elements of "
            "torch.FloatStorage need 24",
        ),
        (_bzip2_record, "zip compression method 12; only stored and deflated records are read"),
        (_pickle_too_big, f"more than the {MAX_PICKLE_BYTES} this reader allows"),
        (_byteorder_too_big, "record 'archive/byteorder' declares 48 bytes, more than the 16"),
        (_expanded_view, "tensor 'w': 24 elements, more than its storage '0' has (6)"),
        (_two_declarations, "storage '0' is declared as both 6 x torch.FloatStorage and 3 x"),
        (_ordered_dict_copy, "OrderedDict called with arguments"),
        (_many_globals, "more than 1024 distinct globals"),
        (_huge_memo_index, "not a state dict"),
        (_huge_bytes8, "data.pkl is not a valid checkpoint pickle: EOFError"),
    ],
)
def test_size_checks_raise_one_line(tmp_path, make, expect):
    path = make(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as info:
            load_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert expect in message
    assert peak < 16 * MAX_PICKLE_BYTES  # none of them gets to spend memory


def test_shared_and_memoised_tensors_still_load(tmp_path):
    # One tensor object under two keys (pickle memo), and two views of one storage.
    t = tensor("0", (2, 3))
    sd = ordered_dict({"a": t, "b": t, "c": tensor("0", (3,), offset=3, numel=6)})
    out = load_state_dict(_zip(tmp_path, sd, {"0": f32(W)}))
    np.testing.assert_array_equal(out["a"], W.reshape(2, 3))
    np.testing.assert_array_equal(out["b"], W.reshape(2, 3))
    np.testing.assert_array_equal(out["c"], W[3:])


def test_deflated_records_within_their_size_are_read(tmp_path):
    # `zip -r` of an unpacked checkpoint deflates every record; that is fine.
    path = tmp_path / "deflated.ckpt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", dumps({"w": tensor("0", (2, 3))}))
        zf.writestr("archive/data/0", f32(W))
    np.testing.assert_array_equal(load_state_dict(path)["w"], W.reshape(2, 3))


# --------------------------------------------------------------------------
# The cost of data.pkl: the worst opcodes, per byte.
# --------------------------------------------------------------------------

N = 2**16
PICKLE_BOMBS = {
    "empty sets": b"\x8f" * N,
    "empty dicts": b"}" * N,
    "frozensets": b"(\x91" * N,
    "tuples of tuples": b"N" + b"\x85" * N,
    "placeholder instances": b"cfoo\nbar\nq\x00" + b"h\x00)R" * N,
    "OrderedDicts": b"ccollections\nOrderedDict\nq\x00" + b"h\x00)R" * N,
}
BYTES_PER_PICKLE_BYTE = 256
BYTES_PER_GLOBAL = 4096


@pytest.mark.parametrize("name", sorted(PICKLE_BOMBS))
def test_unpickling_costs_at_most_256_bytes_per_pickle_byte(tmp_path, name):
    data = b"\x80\x02" + PICKLE_BOMBS[name] + b"."
    path = write_torch_zip(tmp_path / "pkl.ckpt", data, {}, byteorder=None)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="not a state dict|not a checkpoint"):
            load_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= BYTES_PER_PICKLE_BYTE * len(data), (name, peak / len(data))


def test_each_distinct_global_costs_at_most_4_kib(tmp_path):
    # Memoised strings combine: 2 x 32 strings name 1024 globals.
    strings = [b"\x8c\x02m%c" % (65 + i) for i in range(32)] + [
        b"\x8c\x02g%c" % (65 + i) for i in range(32)
    ]
    memo = b"".join(s + bytes([0x71, i]) for i, s in enumerate(strings))  # BINPUT i
    names = b"".join(
        bytes([0x68, i, 0x68, 32 + j, 0x93, 0x30]) for i in range(32) for j in range(32)
    )  # BINGET module, BINGET name, STACK_GLOBAL, POP
    path = write_torch_zip(tmp_path / "g.ckpt", b"\x80\x04" + memo + names + b"N.", {})
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="not a state dict"):
            load_state_dict(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= BYTES_PER_GLOBAL * 1024, peak / 1024
    # One more distinct global is refused.
    extra = bytes([0x8C, 1, 0x7A, 0x8C, 1, 0x7A, 0x93, 0x30])
    path = write_torch_zip(tmp_path / "g2.ckpt", b"\x80\x04" + memo + names + extra + b"N.", {})
    with pytest.raises(CheckpointError, match="more than 1024 distinct globals"):
        load_state_dict(path)


# --------------------------------------------------------------------------
# .safetensors headers: refused before any tensor is read.
# --------------------------------------------------------------------------

SIX = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
SAFETENSORS_LIES = {
    "empty file": (b"", None, b"", "0 bytes, too short for a safetensors file"),
    "header past the end": ({"w": SIX}, 4096, f32(W), "header declares 4096 bytes, the file holds"),
    "huge header": ({"w": SIX}, 2**63, f32(W), "more than the 1048576 this reader allows"),
    "not JSON": (b"{'w': 1}", None, f32(W), "header is not JSON (JSONDecodeError"),
    "not UTF-8": (b'{"\xff": 1}', None, b"", "header is not JSON (UnicodeDecodeError"),
    "nested too deep": (b"[" * 100_000, None, b"", "header is not JSON (RecursionError"),
    "not an object": ([1, 2], None, b"", "header is not a JSON object"),
    "repeated key": (b'{"w": 1, "w": 2}', None, b"", "the key 'w' repeats"),
    "metadata not strings": ({"__metadata__": {"a": 1}}, None, b"", "__metadata__ is not a"),
    "unknown dtype": ({"w": {**SIX, "dtype": "F8_E4M3"}}, None, f32(W), "dtype 'F8_E4M3' is not"),
    "integer dtype": ({"w": {**SIX, "dtype": "I32"}}, None, f32(W), "dtype 'I32' is not read"),
    "extra field": ({"w": {**SIX, "device": "cuda"}}, None, f32(W), "not a {dtype, shape, data"),
    "negative size": ({"w": {**SIX, "shape": [-2, -3]}}, None, f32(W), "shape [-2, -3] is no"),
    "too many dims": ({"w": {**SIX, "shape": [1] * 9}}, None, f32(W), "at most 8 sizes"),
    "bool offsets": ({"w": {**SIX, "data_offsets": [False, 24]}}, None, f32(W), "are no [begin"),
    "size and shape disagree": (
        {"w": {**SIX, "shape": [2, 4]}},
        None,
        f32(W),
        "data_offsets [0, 24] hold 24 bytes, [2, 4] x F32 need 32",
    ),
    "offsets past the data": (
        {"w": {**SIX, "data_offsets": [8, 32]}},
        None,
        f32(W),
        "data_offsets [8, 32] run past the data's 24 bytes",
    ),
    "overlap": (
        {"a": SIX, "b": {**SIX, "data_offsets": [12, 36]}},
        None,
        f32(W) + bytes(12),
        "tensor 'b': data_offsets [12, 36] overlap another tensor",
    ),
    "gap": (
        {"a": SIX, "b": {**SIX, "data_offsets": [28, 52]}},
        None,
        f32(W) * 2 + bytes(4),
        "tensor 'b': data_offsets [28, 52] leave 24-28 unused",
    ),
    "bytes left over": ({"w": SIX}, None, f32(W) + bytes(8), "cover 24 of the data's 32 bytes"),
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_LIES))
def test_safetensors_header_lies_are_refused_before_any_tensor_is_read(tmp_path, monkeypatch, case):
    header, length, data, expect = SAFETENSORS_LIES[case]
    path = tmp_path / "lies.safetensors"
    if case == "empty file":
        path.write_bytes(b"")
    else:
        write_raw(path, header, data, length)

    def deserialize(*args):
        raise AssertionError("tensors were read")

    monkeypatch.setattr(safetensors_file.safetensors, "deserialize", deserialize)
    with pytest.raises(CheckpointError) as info:
        safetensors_file.read_safetensors(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert expect in message


def test_the_largest_safetensors_header_costs_little_to_parse(tmp_path):
    # The worst JSON per byte we found: empty objects (26 bytes of Python each
    # byte; empty lists 23, numbers 6, strings 5).
    n = (safetensors_file.MAX_HEADER_BYTES - 16) // 3
    path = write_raw(tmp_path / "objects.safetensors", b'{"a": [' + b"{}," * n + b"{}]}")
    assert path.stat().st_size <= 8 + safetensors_file.MAX_HEADER_BYTES
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="not a {dtype, shape, data_offsets} entry"):
            safetensors_file.read_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 32 * safetensors_file.MAX_HEADER_BYTES, peak / safetensors_file.MAX_HEADER_BYTES
