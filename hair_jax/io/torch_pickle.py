"""Safe, torch-free reader for PyTorch checkpoint files.

``torch.save`` (torch >= 1.6) writes a zip archive::

    <archive>/data.pkl      pickle of the saved object; tensors refer to
                            storages through pickle "persistent ids"
    <archive>/data/<key>    raw bytes of storage <key>
    <archive>/byteorder     "little" or "big" (absent in old files: little)
    <archive>/version       format version

Unpickling an untrusted file with the standard ``pickle`` module can run any
code. This module never imports or calls anything the pickle names, except a
short allow-list that it implements itself (tensor rebuilding, storage types,
dtypes, ``collections.OrderedDict``). Every other global becomes an inert
placeholder, so a PyTorch Lightning checkpoint whose optimizer state,
callbacks or hyper-parameters name arbitrary classes still yields its weights.

Hostile files: every size is checked before memory is spent on it.
A storage record must declare exactly the bytes its storage needs (numel x
item size) and is read in chunks into a buffer of that size, so a record
that inflates further (a deflate bomb) is refused before it is inflated;
``data.pkl`` may not declare more than ``MAX_PICKLE_BYTES``; the zip
methods are those torch and ``zip`` write (stored, deflated). The bound is
stated in :func:`load_state_dict`.

Public API: :class:`CheckpointError`, :func:`load_state_dict`,
``MAX_PICKLE_BYTES`` and :func:`strip_wrapper_prefixes` (which the
safetensors reader shares).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["CheckpointError", "MAX_PICKLE_BYTES", "load_state_dict", "strip_wrapper_prefixes"]

# A tensor view may not hold more elements than its storage (see
# _StorageReader.tensor); this caps the storage too.
_MAX_ELEMENTS = 2**31

# data.pkl is unpickled whole, into objects a few hundred times its size at
# worst (one empty set per opcode byte); the authors' checkpoints need a few
# hundred KiB of it.
MAX_PICKLE_BYTES = 4 * 2**20

# A pickle names few globals (a Lightning checkpoint: tens); each distinct
# one costs a class object (under 4 KiB), and memoised strings combine
# quadratically, so a few KiB of pickle could otherwise name millions.
_MAX_GLOBALS = 1024

# Storage records are inflated this much at a time into their buffer.
_CHUNK = 2**20

# Prefixes added by wrappers around the real network: Lightning modules keep
# the network as ``self.net`` and DataParallel as ``self.module``.
_WRAPPER_PREFIXES = ("net.", "module.")


class CheckpointError(ValueError):
    """A checkpoint file cannot be read; the message is one line naming it."""


def _error(path: str, detail: str) -> CheckpointError:
    """Builds a one-line CheckpointError naming ``path``."""
    # Keys and exception texts come from the file, so they may hold newlines.
    message = f"{path}: {detail}"
    return CheckpointError(" ".join(message.splitlines()))


# --------------------------------------------------------------------------
# Inert stand-ins for the objects a pickle may name.
# --------------------------------------------------------------------------


class _Placeholder:
    """An object standing in for a global that is never imported.

    Subclasses are made per qualified name (see ``_Unpickler.find_class``),
    so NEWOBJ, which requires a class, works too. Instances absorb every
    opcode that would call into the real object (REDUCE, BUILD, SETITEMS,
    APPENDS, ADDITEMS) and only record what they were given.
    """

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None
        self.items: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> _Placeholder:
        # A pickle may call the result of a call (e.g. a getattr chain).
        return type(self)(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def add(self, value: Any) -> None:
        self.items.append(value)

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualname}>"


class _Frozen:
    """Base for the loader's own objects: a pickle must not mutate them."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        # BUILD would otherwise overwrite attributes the loader relies on.
        raise pickle.UnpicklingError(f"BUILD applied to {self!r}")


class _OrderedDict(collections.OrderedDict):
    """``collections.OrderedDict`` as the pickle sees it.

    torch pickles an OrderedDict as a call without arguments, then SETITEMS,
    then BUILD with its ``_metadata`` attribute. A call with arguments (a
    copy of another mapping) or BUILD would let a few pickle bytes copy a
    large mapping again and again, so the first is refused and the second
    dropped: the reader needs neither.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            raise pickle.UnpicklingError("OrderedDict called with arguments")
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass


class _StorageType(_Frozen):
    """A torch storage class such as ``torch.FloatStorage``.

    Attributes:
        name: the class name, e.g. ``FloatStorage``.
        dtype: the little-endian numpy dtype of one stored element.
        bfloat16: whether the elements are bfloat16, read as raw uint16.
    """

    __slots__ = ("name", "dtype", "bfloat16")

    def __init__(self, name: str, dtype: str, bfloat16: bool = False) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)
        self.bfloat16 = bfloat16

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGE_TYPES = {
    t.name: t
    for t in (
        _StorageType("FloatStorage", "<f4"),
        _StorageType("DoubleStorage", "<f8"),
        _StorageType("HalfStorage", "<f2"),
        _StorageType("BFloat16Storage", "<u2", bfloat16=True),
        _StorageType("LongStorage", "<i8"),
        _StorageType("IntStorage", "<i4"),
        _StorageType("ShortStorage", "<i2"),
        _StorageType("CharStorage", "<i1"),
        _StorageType("ByteStorage", "<u1"),
        _StorageType("BoolStorage", "|b1"),
    )
}

_TORCH_DTYPES = frozenset(
    "float32 float float64 double float16 half bfloat16 int64 long int32 int "
    "int16 short int8 uint8 bool".split()
)


class _TorchDtype(_Frozen):
    """A ``torch.<dtype>`` value; only recorded, never used."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _Unreadable(_Frozen):
    """A tensor or storage this reader cannot decode; an error if it is a weight."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<{self.reason}>"


class _StorageRef(_Frozen):
    """A storage named by a persistent id; its bytes are read on demand."""

    __slots__ = ("storage_type", "key", "numel")

    def __init__(self, storage_type: _StorageType, key: str, numel: int) -> None:
        self.storage_type = storage_type
        self.key = key
        self.numel = numel

    def __repr__(self) -> str:
        return f"<{self.storage_type!r} {self.key}>"


class _TensorRef(_Frozen):
    """A tensor view (storage, offset, size, stride), materialised lazily.

    Lazy so that tensors outside the state dict (optimizer moments, callback
    state) are never read: faster, and damage there cannot block the weights.
    """

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    def __repr__(self) -> str:
        return f"<tensor {self.size} in {self.storage!r}>"


class _Function(_Frozen):
    """One of the loader's own functions, exposed to the pickle.

    Wrapped so that BUILD on it fails instead of setting attributes on a
    module-level function that later loads would share.
    """

    __slots__ = ("qualname", "fn")

    def __init__(self, qualname: str, fn: Any) -> None:
        self.qualname = qualname
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return self.qualname


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(_is_int(v) for v in value)


def _rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, *unused: Any
) -> Any:
    """Inert ``torch._utils._rebuild_tensor_v2``: records the view only.

    The trailing arguments (requires_grad, backward hooks, metadata) do not
    affect the values and are ignored.
    """
    if not isinstance(storage, _StorageRef):
        # Unsupported storage type or a forged argument: keep loading, and
        # report it only if this tensor is one of the weights.
        if isinstance(storage, _Unreadable):
            return storage
        return _Unreadable(f"tensor over {_describe(storage)}")
    if not (_is_int(storage_offset) and _int_tuple(size) and _int_tuple(stride)):
        return _Unreadable("tensor with malformed offset/size/stride")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *unused: Any) -> Any:
    """Inert ``torch._utils._rebuild_parameter(_with_state)``: the data."""
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, *unused: Any) -> Any:
    """Inert ``torch._tensor._rebuild_from_type_v2``: drops the subclass.

    ``func`` came out of this same unpickler, so it is one of the inert
    functions here or a placeholder; calling it runs no foreign code.
    """
    if not isinstance(args, tuple):
        raise pickle.UnpicklingError("_rebuild_from_type_v2 without argument tuple")
    return func(*args)


_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
}


class _Unpickler(pickle._Unpickler):  # pylint: disable=protected-access
    """An unpickler that resolves globals only to inert stand-ins.

    Built on the pure-Python unpickler: the C one allocates what an opcode
    declares before reading it (a memo index of 2**32, a BINBYTES8 length),
    so six bytes could claim tens of GiB; here the memo is a dict and reads
    return what the data holds.
    """

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        # Per-instance, so a pickle that mutates a placeholder class cannot
        # affect another load.
        self._placeholders: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        """Maps a GLOBAL to an allowed stand-in; never imports anything."""
        if (module, name) in _FUNCTIONS:
            return _Function(f"{module}.{name}", _FUNCTIONS[(module, name)])
        if module == "collections" and name == "OrderedDict":
            return _OrderedDict
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDtype(name)
        qualname = f"{module}.{name}"
        if qualname not in self._placeholders:
            if len(self._placeholders) >= _MAX_GLOBALS:
                raise pickle.UnpicklingError(f"more than {_MAX_GLOBALS} distinct globals")
            self._placeholders[qualname] = type(
                "Placeholder", (_Placeholder,), {"qualname": qualname}
            )
        return self._placeholders[qualname]

    def persistent_load(self, pid: Any) -> Any:
        """Resolves ``('storage', type, key, location, numel)`` lazily."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage id {pid!r:.80}")
        if not isinstance(storage_type, _StorageType):
            return _Unreadable(f"storage of unsupported type {_describe(storage_type)}")
        # The location (e.g. 'cuda:0') is ignored: everything lands in host RAM.
        return _StorageRef(storage_type, key, numel)


# --------------------------------------------------------------------------
# Zip handling and tensor materialisation.
# --------------------------------------------------------------------------

# Exceptions zipfile raises for damaged archives or records.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError)


def _open_zip(path: str) -> zipfile.ZipFile:
    """Opens ``path`` as a zip, explaining why if it is not one."""
    if not os.path.exists(path):
        raise _error(path, "no such file")
    if not os.path.isfile(path):
        raise _error(path, "not a regular file")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        pass
    except OSError as e:
        raise _error(path, f"cannot read file: {e}") from None
    if head.startswith(b"PK"):
        raise _error(path, "truncated or corrupt zip archive")
    if head[:1] == b"\x80":
        raise _error(
            path,
            "legacy (non-zip) torch.save file; only the zip format of "
            "torch>=1.6 is supported (re-save it with a recent torch)",
        )
    raise _error(path, "not a torch checkpoint (not a zip archive)")


def _record_info(zf: zipfile.ZipFile, name: str, path: str, context: str = "") -> zipfile.ZipInfo:
    """The zip entry ``name``, if it is one this reader will inflate."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise _error(path, f"{context}missing record {name!r}") from None
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        # bzip2 and lzma inflate a whole compressed chunk at once, unbounded.
        raise _error(
            path,
            f"{context}record {name!r} uses zip compression method "
            f"{info.compress_type}; only stored and deflated records are read",
        )
    return info


def _read_record(zf: zipfile.ZipFile, name: str, path: str, limit: int, context: str = "") -> bytes:
    """Reads a small zip record whose declared size is at most ``limit``.

    Args:
        zf: the open archive.
        name: the record's name in the archive.
        path: the checkpoint file, for messages.
        limit: the most bytes the record may declare.
        context: prefix for messages.
    """
    info = _record_info(zf, name, path, context)
    if info.file_size > limit:
        raise _error(
            path,
            f"{context}record {name!r} declares {info.file_size} bytes, "
            f"more than the {limit} this reader allows",
        )
    return bytes(_read_exactly(zf, info, path, context))


def _read_exactly(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, context: str = ""
) -> np.ndarray:
    """Inflates ``info`` into a buffer of its declared size, chunk by chunk.

    zipfile stops inflating at the declared size and checks the CRC there,
    so a record that inflates further is cut off and then refused, and the
    memory used is the buffer plus one chunk.
    """
    buf = np.empty(info.file_size, np.uint8)
    view = memoryview(buf)
    pos = 0
    try:
        with zf.open(info) as f:
            while pos < info.file_size:
                chunk = f.read(min(_CHUNK, info.file_size - pos))
                if not chunk:
                    break
                view[pos : pos + len(chunk)] = chunk
                pos += len(chunk)
    except _ZIP_ERRORS as e:
        raise _error(path, f"{context}corrupt record {info.filename!r}: {e}") from None
    if pos != info.file_size:
        raise _error(
            path, f"{context}record {info.filename!r} holds {pos} bytes, declares {info.file_size}"
        )
    return buf


def _archive_prefix(zf: zipfile.ZipFile, path: str) -> str:
    """Returns ``<archive>/``, the folder holding data.pkl."""
    prefixes = [
        n[: -len("data.pkl")]
        for n in zf.namelist()
        if n.endswith("/data.pkl") and n.count("/") == 1
    ]
    if not prefixes:
        raise _error(path, "no <archive>/data.pkl record; not a torch.save file")
    if len(prefixes) > 1:
        raise _error(path, f"several data.pkl records: {sorted(prefixes)}")
    return prefixes[0]


class _StorageReader:
    """Reads storages from the zip and tensor views out of them."""

    def __init__(self, zf: zipfile.ZipFile, prefix: str, path: str) -> None:
        self._zf, self._prefix, self._path = zf, prefix, path
        byteorder = "little"
        if prefix + "byteorder" in zf.namelist():
            raw = _read_record(zf, prefix + "byteorder", path, limit=16)
            byteorder = raw.decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise _error(path, f"unknown byteorder record {byteorder!r:.40}")
        self._byteorder = "<" if byteorder == "little" else ">"

    def storage(self, ref: _StorageRef, key_name: str) -> np.ndarray:
        """Returns the storage as a flat read-only array of its file dtype.

        The record must declare exactly ``numel`` x item size bytes, as
        torch writes it; that is checked before anything is inflated.
        """
        name = f"{self._prefix}data/{ref.key}"
        context = f"tensor {key_name!r}: "
        info = _record_info(self._zf, name, self._path, context)
        dtype = ref.storage_type.dtype.newbyteorder(self._byteorder)
        if ref.numel > _MAX_ELEMENTS:
            raise _error(
                self._path,
                f"{context}storage {ref.key!r} of {ref.numel} elements is more than this "
                "reader allows",
            )
        needed = ref.numel * dtype.itemsize
        if info.file_size != needed:
            raise _error(
                self._path,
                f"{context}storage record {name!r} declares {info.file_size} bytes, "
                f"its {ref.numel} elements of {ref.storage_type!r} need {needed}",
            )
        raw = _read_exactly(self._zf, info, self._path, context)
        flat = raw.view(dtype)
        flat.flags.writeable = False
        return flat

    def tensor(self, flat: np.ndarray, ref: _TensorRef, key_name: str) -> np.ndarray:
        """Builds the contiguous array for a tensor view of ``flat``, in native order."""
        size, stride, offset = ref.size, ref.stride, ref.offset
        if len(size) != len(stride) or any(v < 0 for v in size + stride + (offset,)):
            raise _error(
                self._path,
                f"tensor {key_name!r}: bad size {size} / stride {stride} / offset {offset}",
            )
        count = int(np.prod(size, dtype=object)) if size else 1
        if count > flat.size:
            # torch saves expanded (stride 0) views as such; refusing them
            # keeps every tensor within the bytes its storage holds.
            raise _error(
                self._path,
                f"tensor {key_name!r}: {count} elements, more than its storage "
                f"{ref.storage.key!r} has ({flat.size})",
            )
        out_dtype = _output_dtype(ref.storage.storage_type, flat.dtype)
        if count == 0:
            return np.zeros(size, dtype=out_dtype)
        # Last element addressed by the view must lie inside the storage.
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise _error(
                self._path,
                f"tensor {key_name!r}: storage {ref.storage.key!r} has "
                f"{flat.size} elements, too few for size {size}, stride "
                f"{stride}, offset {offset}",
            )
        item = flat.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * item for s in stride], writeable=False
        )
        # One allocation of the output's size per tensor (the bound relies on it).
        out = view.astype(out_dtype, order="C")
        if ref.storage.storage_type.bfloat16:
            # bfloat16 is the high half of a float32's bits.
            np.left_shift(out, 16, out=out)
            out = out.view(np.float32)
        return out


def _output_dtype(storage_type: _StorageType, dtype: np.dtype) -> np.dtype:
    """Floats become float32 (the model's dtype); ints and bools are kept.

    bfloat16 is widened to uint32 first, then shifted into float32 bits.
    Storages may be big-endian; callers expect native byte order.
    """
    if storage_type.bfloat16:
        return np.dtype(np.uint32)
    if dtype.kind == "f":
        return np.dtype(np.float32)
    return dtype.newbyteorder("=")


# --------------------------------------------------------------------------
# Picking the state dict.
# --------------------------------------------------------------------------


def _select_state_dict(root: Any, path: str) -> Mapping:
    """Finds the name -> tensor mapping inside the unpickled object."""
    if not isinstance(root, Mapping):
        raise _error(path, f"holds a {type(root).__name__}, not a state dict or checkpoint dict")
    # Lightning saves the weights under 'state_dict', BasicSR (NAFNet's
    # training and released weights) under 'params'.
    for entry in ("state_dict", "params"):
        if entry in root:
            state = root[entry]
            if not isinstance(state, Mapping):
                raise _error(path, f"{entry!r} is a {type(state).__name__}, not a mapping")
            return state
    if not any(isinstance(v, (_TensorRef, _Unreadable)) for v in root.values()):
        raise _error(path, "no 'state_dict' entry and no tensors; not a checkpoint")
    return root


def _describe(value: Any) -> str:
    """Short description of a non-tensor value for error messages."""
    if isinstance(value, type) and issubclass(value, _Placeholder):
        return f"the global {value.qualname}"
    if isinstance(value, _Placeholder):
        return f"an instance of {value.qualname}"
    if isinstance(value, _Unreadable):
        return value.reason
    return f"{type(value).__name__} {value!r:.60}"


def strip_wrapper_prefixes(names: list[str]) -> dict[str, str]:
    """Maps each name to itself less wrapper prefixes shared by all names.

    A Lightning module keeps the network as ``self.net`` (``net.``) and
    DataParallel as ``self.module`` (``module.``).
    """
    stripped = {n: n for n in names}
    changed = True
    while changed and stripped:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            # Never strip a name down to nothing.
            if all(s.startswith(prefix) and len(s) > len(prefix) for s in stripped.values()):
                stripped = {n: s[len(prefix) :] for n, s in stripped.items()}
                changed = True
    return stripped


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads the model weights from a torch.save zip checkpoint, without torch.

    Accepts a bare ``state_dict`` file, a PyTorch Lightning checkpoint (its
    ``state_dict`` entry) or a BasicSR one such as NAFNet's released weights
    (its ``params`` entry). A ``net.`` or ``module.`` prefix shared by every key
    is removed. No code named by the file is imported or run.

    Memory: the peak beyond the returned arrays is the largest storage
    record the state dict uses (at its declared size), one inflation chunk
    (1 MiB), the objects unpickled from ``data.pkl`` (at most
    ``MAX_PICKLE_BYTES`` of it) and the zip directory (proportional to its
    bytes in the file). Each returned array holds at most its storage's
    elements, so a file cannot make the result exceed what its records
    declare, whatever their compression; tensors outside the state dict
    (optimizer moments) are never read.

    Args:
        path: the checkpoint file.

    Returns:
        Parameter and buffer name -> contiguous numpy array in PyTorch layout
        (no transposes). Floating tensors are float32 (bfloat16, float16 and
        float64 are converted); integer and bool tensors keep their dtype.

    Raises:
        CheckpointError: the file is missing, not a torch zip checkpoint,
            damaged, over a size limit, or holds no state dict; the message
            is one line naming the file and, where relevant, the tensor key.
    """
    path = os.fspath(path)
    with _open_zip(path) as zf:
        prefix = _archive_prefix(zf, path)
        data = _read_record(zf, prefix + "data.pkl", path, limit=MAX_PICKLE_BYTES)
        try:
            root = _Unpickler(io.BytesIO(data)).load()
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure means a bad pickle
            # Nothing foreign runs during unpickling, so every exception here
            # comes from malformed data, not from code the file named.
            raise _error(
                path, f"data.pkl is not a valid checkpoint pickle: {type(e).__name__}: {e}"
            ) from None
        del data
        state = _select_state_dict(root, path)

        by_storage: dict[str, list[str]] = {}
        for key, value in state.items():
            if not isinstance(key, str):
                raise _error(path, f"state dict key {key!r:.80} is not a string")
            if not isinstance(value, _TensorRef):
                raise _error(
                    path, f"state dict entry {key!r} is {_describe(value)}, not a readable tensor"
                )
            keys = by_storage.setdefault(value.storage.key, [])
            keys.append(key)
            a, b = state[keys[0]].storage, value.storage
            if (a.storage_type, a.numel) != (b.storage_type, b.numel):
                raise _error(
                    path,
                    f"tensor {key!r}: storage {b.key!r} is declared as both "
                    f"{a.numel} x {a.storage_type!r} and {b.numel} x {b.storage_type!r}",
                )
        reader = _StorageReader(zf, prefix, path)
        arrays = {}
        # One storage in memory at a time: read it, cut its tensors, drop it.
        for keys in by_storage.values():
            flat = reader.storage(state[keys[0]].storage, keys[0])
            for key in keys:
                arrays[key] = reader.tensor(flat, state[key], key)
            del flat
        names = strip_wrapper_prefixes(list(state))
        return {names[k]: arrays[k] for k in state}
