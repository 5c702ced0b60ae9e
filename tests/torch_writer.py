"""Writes torch.save's zip format without torch, for tests.

A tiny pickle emitter writes the opcodes torch.save produces (GLOBAL,
REDUCE, BINPERSID, ...) and `write_torch_zip` lays them out as torch's zip
format; `write_state_dict` saves a dict of numpy arrays as a checkpoint.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# --------------------------------------------------------------------------
# A minimal pickle emitter (protocol 2 opcodes, plus BINBYTES/STACK_GLOBAL).
# --------------------------------------------------------------------------


@dataclass
class Global:
    module: str
    name: str


@dataclass
class StackGlobal:  # protocol-4 form: module and name pushed as strings
    module: str
    name: str


@dataclass
class Inst:  # protocol-0 INST opcode: import module.name and call it
    module: str
    name: str
    args: tuple


@dataclass
class Ext:  # EXT1 opcode: global looked up in copyreg's extension registry
    code: int


@dataclass
class Reduce:
    fn: Any
    args: tuple


@dataclass
class NewObj:
    cls: Any
    args: tuple


@dataclass
class Build:
    obj: Any
    state: Any


@dataclass
class SetItems:  # SETITEMS on an arbitrary object
    obj: Any
    items: dict


@dataclass
class Appends:  # APPENDS on an arbitrary object
    obj: Any
    items: list


@dataclass
class PersId:
    pid: tuple


@dataclass
class Raw:  # bytes of one pickled object, without PROTO/STOP
    data: bytes


def emit(obj: Any) -> bytes:
    if obj is None:
        return b"N"
    if obj is True:
        return b"\x88"
    if obj is False:
        return b"\x89"
    if isinstance(obj, int):
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, float):
        return b"G" + struct.pack(">d", obj)
    if isinstance(obj, str):
        raw = obj.encode("utf-8")
        return b"X" + struct.pack("<I", len(raw)) + raw
    if isinstance(obj, bytes):
        return b"B" + struct.pack("<I", len(obj)) + obj
    if isinstance(obj, tuple):
        return b"(" + b"".join(emit(x) for x in obj) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(emit(x) for x in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(emit(k) + emit(v) for k, v in obj.items()) + b"u"
    if isinstance(obj, Global):
        return f"c{obj.module}\n{obj.name}\n".encode()
    if isinstance(obj, StackGlobal):
        return emit(obj.module) + emit(obj.name) + b"\x93"
    if isinstance(obj, Inst):
        return b"(" + b"".join(emit(x) for x in obj.args) + f"i{obj.module}\n{obj.name}\n".encode()
    if isinstance(obj, Ext):
        return b"\x82" + bytes([obj.code])
    if isinstance(obj, Reduce):
        return emit(obj.fn) + emit(obj.args) + b"R"
    if isinstance(obj, NewObj):
        return emit(obj.cls) + emit(obj.args) + b"\x81"
    if isinstance(obj, Build):
        return emit(obj.obj) + emit(obj.state) + b"b"
    if isinstance(obj, SetItems):
        return (
            emit(obj.obj) + b"(" + b"".join(emit(k) + emit(v) for k, v in obj.items.items()) + b"u"
        )
    if isinstance(obj, Appends):
        return emit(obj.obj) + b"(" + b"".join(emit(x) for x in obj.items) + b"e"
    if isinstance(obj, PersId):
        return emit(obj.pid) + b"Q"
    if isinstance(obj, Raw):
        return obj.data
    raise TypeError(type(obj))


def dumps(obj: Any) -> bytes:
    return b"\x80\x03" + emit(obj) + b"."


def ordered_dict(items: dict | None = None) -> Any:
    od = Reduce(Global("collections", "OrderedDict"), ())
    return SetItems(od, items) if items else od


def tensor(
    key: str,
    size: tuple,
    stride: tuple | None = None,
    offset: int = 0,
    numel: int | None = None,
    storage: str = "FloatStorage",
) -> Reduce:
    """A tensor as torch pickles it: _rebuild_tensor_v2 over a storage id."""
    if stride is None:  # C-contiguous
        stride, acc = [], 1
        for n in reversed(size):
            stride.insert(0, acc)
            acc *= n
        stride = tuple(stride)
    if numel is None:
        numel = offset + int(np.prod(size))
    pid = PersId(("storage", Global("torch", storage), key, "cpu", numel))
    return Reduce(
        Global("torch._utils", "_rebuild_tensor_v2"),
        (pid, offset, tuple(size), tuple(stride), False, ordered_dict()),
    )


def write_torch_zip(
    path: Path,
    data_pkl: bytes | None,
    storages: dict[str, bytes],
    archive: str = "archive",
    byteorder: str | None = "little",
) -> Path:
    """Writes torch.save's zip layout (stored, uncompressed, like torch)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        if data_pkl is not None:
            zf.writestr(f"{archive}/data.pkl", data_pkl)
        if byteorder is not None:
            zf.writestr(f"{archive}/byteorder", byteorder)
        for key, raw in storages.items():
            zf.writestr(f"{archive}/data/{key}", raw)
        zf.writestr(f"{archive}/version", "3\n")
    return path


def f32(values) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def write_state_dict(path: Path, sd: dict, lightning: bool = True) -> Path:
    """Saves float32 arrays as torch.save would, optionally Lightning-wrapped."""
    storages, entries = {}, {}
    for i, (name, value) in enumerate(sd.items()):
        value = np.ascontiguousarray(value, dtype=np.float32)
        storages[str(i)] = f32(value)
        entries[("net." if lightning else "") + name] = tensor(str(i), value.shape)
    obj = {"state_dict": ordered_dict(entries), "epoch": 0} if lightning else ordered_dict(entries)
    return write_torch_zip(path, dumps(obj), storages)


# --------------------------------------------------------------------------
# Hand-made zip archives, for records zipfile would not write (bombs, lies).
# --------------------------------------------------------------------------


@dataclass
class RawRecord:
    """A zip record as it goes into the file: name, payload and its claims."""

    name: str
    payload: bytes  # the bytes stored in the archive (compressed or not)
    method: int = zipfile.ZIP_STORED
    file_size: int | None = None  # declared inflated size; default: len(payload)
    crc: int | None = None  # default: CRC of the payload


def write_raw_zip(path: Path, records: list[RawRecord]) -> Path:
    """Writes a zip (no zip64: sizes below 4 GiB) trusting each record's claims."""
    out, central = bytearray(), bytearray()
    for r in records:
        name = r.name.encode()
        size = len(r.payload) if r.file_size is None else r.file_size
        crc = zlib.crc32(r.payload) if r.crc is None else r.crc
        fields = struct.pack("<HHHHHIII", 20, 0, r.method, 0, 0, crc, len(r.payload), size)
        offset = len(out)
        out += b"PK\x03\x04" + fields + struct.pack("<HH", len(name), 0) + name + r.payload
        central += (
            b"PK\x01\x02"
            + struct.pack("<H", 20)
            + fields
            + struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, offset)
            + name
        )
    end = struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central), len(out), 0
    )
    path.write_bytes(bytes(out + central + end))
    return path


def zeros_deflated(mib: int) -> bytes:
    """A raw deflate stream that inflates to `mib` MiB of zeros, built in a blink.

    After a full flush deflate forgets its history, so compressing the same
    MiB again gives the same bytes: the stream is one compressed MiB repeated.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(bytes(2**20)) + c.flush(zlib.Z_FULL_FLUSH)
    return block * mib + zlib.compressobj(9, zlib.DEFLATED, -15).flush()


def records_of(path: Path) -> list[RawRecord]:
    """The records of a zip file (stored ones as they are), for rewriting."""
    with zipfile.ZipFile(path) as zf:
        return [RawRecord(i.filename, zf.read(i)) for i in zf.infolist()]
