"""Fuzzing the torch and safetensors readers: damaged files end in one line or weights.

Random mutations of two valid checkpoints (a small synthetic Lightning file
with every storage type, and the reference fixture): bytes flipped, records
truncated, swapped, duplicated or inflated (deflated, declaring their real
size or the old one), pickle opcodes replaced, deleted or repeated, the
file itself cut or flipped. Each must end in ``CheckpointError`` with one
line naming the file, or a state dict of arrays; never another exception,
a hang (an alarm fails the example) or memory beyond the reader's bound
(tracemalloc, which counts numpy buffers).

The `.safetensors` reader gets the same promise: its header's fields
rewritten (dtypes, shapes, offsets swapped or moved, entries dropped,
metadata of the wrong type), its length field lying, bytes flipped or cut.

The seed is fixed and the count small for CI; a longer run:

    HAIR_FUZZ_EXAMPLES=3000 python -m pytest -q -n 0 tests/test_fuzz_checkpoints.py
"""

from __future__ import annotations

import json
import os
import pickletools
import signal
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch_writer import (
    Build,
    Global,
    NewObj,
    RawRecord,
    Reduce,
    SetItems,
    dumps,
    ordered_dict,
    records_of,
    tensor,
    write_raw_zip,
    write_torch_zip,
    zeros_deflated,
)

from hair_jax.io import safetensors_file, torch_import
from hair_jax.io.torch_pickle import CheckpointError, load_state_dict

FIXTURE = Path(__file__).parent / "data" / "hair_dim16_ref.ckpt"
EXAMPLES = int(os.environ.get("HAIR_FUZZ_EXAMPLES", "60"))
ALARM_S = 60  # an example that takes this long counts as a hang

# The reader's bound (load_state_dict's docstring): the returned arrays, the
# largest record, 256 bytes per data.pkl byte, 4 KiB per global (1024 at
# most), the zip directory and a chunk; 1 KiB per record and 8 MiB cover the
# last three with room.
PER_PICKLE_BYTE, GLOBALS, PER_RECORD, SLACK = 256, 4 * 2**20, 1024, 8 * 2**20


def _synthetic(tmp: Path) -> Path:
    f32 = np.arange(12, dtype="<f4")
    storages = {
        "f": f32.tobytes(),
        "h": np.arange(6, dtype="<f2").tobytes(),
        "b": (np.arange(4, dtype="<f4").view("<u4") >> 16).astype("<u2").tobytes(),
        "d": np.arange(3, dtype="<f8").tobytes(),
        "l": np.array([7], "<i8").tobytes(),
        "o": np.array([1, 0, 1], "|b1").tobytes(),
        "m": f32.tobytes(),
    }
    weights = ordered_dict(
        {
            "net.conv.weight": tensor("f", (3, 4)),
            "net.conv.t": tensor("f", (4, 3), stride=(1, 4)),
            "net.half": tensor("h", (2, 3), storage="HalfStorage"),
            "net.bf": tensor("b", (4,), storage="BFloat16Storage"),
            "net.dbl": tensor("d", (3,), storage="DoubleStorage"),
            "net.steps": tensor("l", (), storage="LongStorage"),
            "net.mask": tensor("o", (3,), storage="BoolStorage"),
            "net.tail": tensor("f", (2,), offset=10, numel=12),
        }
    )
    ckpt = {
        "epoch": 3,
        "state_dict": Build(weights, {"_metadata": ordered_dict({"": {"version": 1}})}),
        "optimizer_states": [{"state": {0: {"exp_avg": tensor("m", (12,))}}}],
        "hyper_parameters": SetItems(Reduce(Global("lightning", "AttributeDict"), ()), {"dim": 4}),
        "namespace": Build(NewObj(Global("argparse", "Namespace"), ()), {"lr": 2e-4}),
    }
    return write_torch_zip(tmp / "synthetic.ckpt", dumps(ckpt), storages)


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> list[tuple[list[RawRecord], dict]]:
    """(records, state dict) of each valid checkpoint."""
    out = []
    for path in (_synthetic(tmp_path_factory.mktemp("fuzz")), FIXTURE):
        out.append((records_of(path), load_state_dict(path)))
    return out


def _opcode_starts(data: bytes) -> list[int]:
    try:
        return [pos for _, _, pos in pickletools.genops(data)]
    except Exception:  # noqa: BLE001 - a mutated pickle: any byte will do
        return list(range(len(data)))


@st.composite
def mutations(draw, records: list[RawRecord]) -> tuple[list[RawRecord], list]:
    """1-3 mutations of ``records`` (copied), and file-level ones after."""
    records = [RawRecord(r.name, r.payload, r.method, r.file_size, r.crc) for r in records]
    pkl = next(i for i, r in enumerate(records) if r.name.endswith("/data.pkl"))
    index = st.integers(0, len(records) - 1)
    file_ops = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "flip",
                    "truncate",
                    "swap",
                    "duplicate",
                    "inflate",
                    "lie",
                    "bomb",
                    "opcode",
                    "file",
                ]
            )
        )
        i = pkl if kind == "opcode" or draw(st.booleans()) else draw(index)
        r = records[i]
        data = r.payload
        if kind == "flip" and data:
            pos = draw(st.integers(0, len(data) - 1))
            r.payload = (
                data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1 :]
            )
        elif kind == "truncate":
            r.payload = data[: draw(st.integers(0, max(len(data) - 1, 0)))]
        elif kind == "swap":
            j = draw(index)
            records[i].payload, records[j].payload = records[j].payload, records[i].payload
        elif kind == "duplicate":
            if draw(st.booleans()):
                records.append(RawRecord(r.name, data))  # same name twice
            else:
                records[draw(index)].payload = data
        elif kind in ("inflate", "lie") and r.method == zipfile.ZIP_STORED:
            grown = data + bytes(draw(st.integers(1, 2**18)))
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            r.payload, r.method = c.compress(grown) + c.flush(), zipfile.ZIP_DEFLATED
            if kind == "inflate":  # declares what it inflates to
                r.file_size, r.crc = len(grown), zlib.crc32(grown)
            else:  # declares its old size: zipfile stops there
                r.file_size, r.crc = len(data), zlib.crc32(data)
        elif kind == "bomb":
            r.payload, r.method = zeros_deflated(draw(st.integers(1, 64))), zipfile.ZIP_DEFLATED
            r.file_size = draw(st.sampled_from([len(data), 64 * 2**20, 2**32 - 1]))
            r.crc = (
                zlib.crc32(bytes(min(r.file_size, len(data)))) if r.file_size == len(data) else 0
            )
        elif kind == "opcode":
            starts = _opcode_starts(data) or [0]
            pos = draw(st.sampled_from(starts))
            end = next((s for s in starts if s > pos), len(data))
            how = draw(st.sampled_from(["replace", "delete", "repeat", "argument"]))
            if how == "replace":
                new = bytes([draw(st.integers(0, 255))])
                r.payload = data[:pos] + new + data[pos + 1 :]
            elif how == "delete":
                r.payload = data[:pos] + data[end:]
            elif how == "repeat":
                r.payload = data[:end] + data[pos:end] * draw(st.integers(1, 4)) + data[end:]
            elif end - pos > 1:
                at = draw(st.integers(pos + 1, end - 1))
                r.payload = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
        elif kind == "file":
            file_ops.append((draw(st.booleans()), draw(st.floats(0, 1)), draw(st.integers(1, 255))))
    return records, file_ops


def _declared(path: Path) -> tuple[int, int, int]:
    """(largest declared record, declared data.pkl size, record count) as zipfile sees them."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except Exception:  # noqa: BLE001 - the reader refuses it before reading records
        return 0, 0, 0
    pkl = [i.file_size for i in infos if i.filename.endswith("/data.pkl")]
    return max((i.file_size for i in infos), default=0), max(pkl, default=0), len(infos)


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang(f"no answer within {ALARM_S} s")


def _read_bounded(read, path: Path):
    """(read(path) or {} after a one-line CheckpointError, peak traced bytes), within ALARM_S."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(ALARM_S)
    tracemalloc.start()
    try:
        try:
            out = read(path)
        except CheckpointError as e:
            message = str(e)
            assert message.startswith(f"{path}: "), message
            assert "\n" not in message and "\r" not in message, message
            out = {}
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return out, peak


def _check(path: Path) -> None:
    out, peak = _read_bounded(load_state_dict, path)
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in out.items())
    largest, pkl, count = _declared(path)
    bound = (
        sum(a.nbytes for a in out.values())
        + largest
        + PER_PICKLE_BYTE * pkl
        + GLOBALS
        + PER_RECORD * count
        + SLACK
    )
    assert peak <= bound, (peak, bound)


@settings(
    max_examples=EXAMPLES,
    derandomize=True,  # a fixed seed: CI runs the same cases every time
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_mutated_checkpoints_end_in_one_line_or_weights(bases, tmp_path_factory, data):
    base, _ = bases[data.draw(st.sampled_from([0, 0, 0, 1]))]  # the fixture is slower
    records, file_ops = data.draw(mutations(base))
    path = write_raw_zip(tmp_path_factory.mktemp("case") / "mutated.ckpt", records)
    if file_ops:
        raw = bytearray(path.read_bytes())
        for cut, where, mask in file_ops:
            pos = int(where * (len(raw) - 1))
            if cut:
                del raw[pos:]
            elif raw:
                raw[pos] ^= mask
        path.write_bytes(bytes(raw))
    _check(path)


def test_unmutated_bases_and_lying_records_read_the_same(bases, tmp_path):
    # Control for the property above: the bases load, and a record deflated
    # from its bytes plus zeros but declaring its old size reads as before.
    for records, want in bases:
        lied = []
        for r in records:
            c = zlib.compressobj(9, zlib.DEFLATED, -15)
            payload = c.compress(r.payload + bytes(4096)) + c.flush()
            lied.append(
                RawRecord(
                    r.name, payload, zipfile.ZIP_DEFLATED, len(r.payload), zlib.crc32(r.payload)
                )
            )
        got = load_state_dict(write_raw_zip(tmp_path / "lied.ckpt", lied))
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)


# --------------------------------------------------------------------------
# .safetensors: the same promise from the header reader.
# --------------------------------------------------------------------------

NAF_FIXTURE = Path(__file__).parent / "data" / "nafnet_w4_3lvl.pth"
ST_DTYPES = ["F32", "F16", "BF16", "F64", "I64", "U8", "F8_E4M3", 7, None]


@pytest.fixture(scope="module")
def safetensors_bases() -> list[bytes]:
    """A small file of every dtype read, with metadata, and an exported NAFNet."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    header = {
        "__metadata__": {"names": "pytorch", "note": "x"},
        "a": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 48]},
        "b": {"dtype": "F16", "shape": [12], "data_offsets": [48, 72]},
        "c": {"dtype": "BF16", "shape": [2, 6], "data_offsets": [72, 96]},
        "d": {"dtype": "F64", "shape": [], "data_offsets": [96, 104]},
        "e": {"dtype": "F32", "shape": [0, 5], "data_offsets": [104, 104]},
    }
    bf16 = (w.view(np.uint32) >> 16).astype("<u2").tobytes()
    data = w.tobytes() + w.astype("<f2").tobytes() + bf16 + np.float64(7).tobytes()
    raw = json.dumps(header).encode()
    model = torch_import.load_torch_checkpoint(NAF_FIXTURE)
    return [len(raw).to_bytes(8, "little") + raw + data, safetensors_file.to_bytes(model)]


@st.composite
def safetensors_mutations(draw, raw: bytes) -> bytes:
    """1-3 mutations of a safetensors file: its header's fields, length or bytes."""
    for _ in range(draw(st.integers(1, 3))):
        n = int.from_bytes(raw[:8], "little")
        try:
            header = json.loads(raw[8 : 8 + n])
        except Exception:  # noqa: BLE001 - a mutated header: bytes only then
            header = None
        entries = {} if not isinstance(header, dict) else header
        # Entries a byte flip left as the writer made them.
        names = sorted(
            k
            for k, v in entries.items()
            if isinstance(v, dict)
            and isinstance(v.get("shape"), list)
            and isinstance(v.get("data_offsets"), list)
            and len(v["data_offsets"]) == 2
            and all(isinstance(x, int) for x in v["shape"] + v["data_offsets"])
        )
        kind = draw(st.sampled_from(["entry", "entry", "metadata", "length", "flip", "cut"]))
        if kind in ("entry", "metadata") and names:
            if kind == "metadata":
                header["__metadata__"] = draw(
                    st.sampled_from(
                        [{"a": 1}, [], "x", {"model_config": "{"}, {"names": "hair-jax"}]
                    )
                )
            else:
                entry = header[draw(st.sampled_from(names))]
                field = draw(st.sampled_from(["dtype", "shape", "data_offsets", "drop", "swap"]))
                if field == "dtype":
                    entry["dtype"] = draw(st.sampled_from(ST_DTYPES))
                elif field == "shape" and entry["shape"]:
                    i = draw(st.integers(0, len(entry["shape"]) - 1))
                    entry["shape"][i] += draw(st.sampled_from([-1, 1, 2**40, -(2**40)]))
                elif field == "data_offsets":
                    entry["data_offsets"][draw(st.integers(0, 1))] += draw(
                        st.sampled_from([-8, -1, 1, 4, 2**62])
                    )
                elif field == "drop":
                    del header[draw(st.sampled_from(names))]
                else:
                    other = header[draw(st.sampled_from(names))]
                    entry["data_offsets"], other["data_offsets"] = (
                        other["data_offsets"],
                        entry["data_offsets"],
                    )
            text = json.dumps(header).encode()
            new_n = len(text) if draw(st.booleans()) else n  # the length may lie
            raw = (new_n % 2**64).to_bytes(8, "little") + text + raw[8 + n :]
        elif kind == "length":
            n = draw(st.sampled_from([0, 1, n - 1, n + 1, len(raw), 2**20, 2**64 - 1]))
            raw = (n % 2**64).to_bytes(8, "little") + raw[8:]
        elif kind == "flip" and raw:
            pos = draw(st.integers(0, len(raw) - 1))
            raw = raw[:pos] + bytes([raw[pos] ^ draw(st.integers(1, 255))]) + raw[pos + 1 :]
        else:
            raw = raw[: len(raw) - 1 - draw(st.integers(0, max(len(raw) - 1, 0)))]  # from the end
    return raw


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_mutated_safetensors_end_in_one_line_or_weights(safetensors_bases, tmp_path_factory, data):
    raw = data.draw(safetensors_mutations(data.draw(st.sampled_from(safetensors_bases))))
    path = tmp_path_factory.mktemp("case") / "mutated.safetensors"
    path.write_bytes(raw)
    out, peak = _read_bounded(lambda p: safetensors_file.read_safetensors(p)[0], path)
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in out.values())
    # The file is read whole and decoded once; narrower floats double in float32.
    bound = 4 * len(raw) + 32 * safetensors_file.MAX_HEADER_BYTES + SLACK
    assert peak <= bound, (peak, bound)
