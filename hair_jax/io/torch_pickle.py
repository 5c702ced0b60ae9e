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

Public API: :class:`CheckpointError` and :func:`load_state_dict`.
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

__all__ = ["CheckpointError", "load_state_dict"]

# A crafted tensor with zero strides can address a huge shape over a tiny
# storage; cap the element count so a bad file cannot exhaust memory.
_MAX_ELEMENTS = 2**31

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


class _Unpickler(pickle.Unpickler):
    """An unpickler that resolves globals only to inert stand-ins."""

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
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_TYPES:
            return _STORAGE_TYPES[name]
        if module == "torch" and name in _TORCH_DTYPES:
            return _TorchDtype(name)
        qualname = f"{module}.{name}"
        if qualname not in self._placeholders:
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


def _read_record(zf: zipfile.ZipFile, name: str, path: str, context: str = "") -> bytes:
    """Reads one zip record, turning damage into CheckpointError.

    Args:
        zf: the open archive.
        name: the record's name in the archive.
        path: the checkpoint file, for messages.
        context: prefix for messages, e.g. the tensor that needs the record.
    """
    try:
        return zf.read(name)
    except KeyError:
        raise _error(path, f"{context}missing record {name!r}") from None
    except _ZIP_ERRORS as e:
        raise _error(path, f"{context}corrupt record {name!r}: {e}") from None


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
    """Reads and caches storages (tensors may share one) from the zip."""

    def __init__(self, zf: zipfile.ZipFile, prefix: str, path: str) -> None:
        self._zf, self._prefix, self._path = zf, prefix, path
        self._cache: dict[str, np.ndarray] = {}
        byteorder = "little"
        if prefix + "byteorder" in zf.namelist():
            byteorder = (
                _read_record(zf, prefix + "byteorder", path).decode("ascii", "replace").strip()
            )
        if byteorder not in ("little", "big"):
            raise _error(path, f"unknown byteorder record {byteorder!r:.40}")
        self._byteorder = "<" if byteorder == "little" else ">"

    def storage(self, ref: _StorageRef, key_name: str) -> np.ndarray:
        """Returns the storage as a flat read-only array of its file dtype."""
        if ref.key not in self._cache:
            name = f"{self._prefix}data/{ref.key}"
            raw = _read_record(self._zf, name, self._path, f"tensor {key_name!r}: ")
            dtype = ref.storage_type.dtype.newbyteorder(self._byteorder)
            needed = ref.numel * dtype.itemsize
            if len(raw) < needed:
                raise _error(
                    self._path,
                    f"tensor {key_name!r}: storage record {name!r} has "
                    f"{len(raw)} bytes, needs {needed}",
                )
            self._cache[ref.key] = np.frombuffer(raw, dtype=dtype, count=ref.numel)
        return self._cache[ref.key]

    def tensor(self, ref: _TensorRef, key_name: str) -> np.ndarray:
        """Builds the contiguous array for a tensor view, in native order."""
        flat = self.storage(ref.storage, key_name)
        size, stride, offset = ref.size, ref.stride, ref.offset
        if len(size) != len(stride) or any(v < 0 for v in size + stride + (offset,)):
            raise _error(
                self._path,
                f"tensor {key_name!r}: bad size {size} / stride {stride} / offset {offset}",
            )
        count = int(np.prod(size, dtype=object)) if size else 1
        if count > _MAX_ELEMENTS:
            raise _error(
                self._path, f"tensor {key_name!r}: {count} elements is more than this reader allows"
            )
        if count == 0:
            out = np.zeros(size, dtype=flat.dtype)
        else:
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
            out = np.array(view, copy=True, order="C")
        return _to_output_dtype(out, ref.storage.storage_type)


def _to_output_dtype(array: np.ndarray, storage_type: _StorageType) -> np.ndarray:
    """Floats become float32 (the model's dtype); ints and bools are kept."""
    if storage_type.bfloat16:
        # bfloat16 is the high half of a float32's bits.
        bits = array.astype(np.uint32) << 16
        return bits.view(np.float32)
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    # Storages may be big-endian; callers expect native byte order.
    return array.astype(array.dtype.newbyteorder("="), copy=False)


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


def _strip_prefixes(names: list[str]) -> dict[str, str]:
    """Maps each name to itself less wrapper prefixes shared by all names."""
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

    Args:
        path: the checkpoint file.

    Returns:
        Parameter and buffer name -> contiguous numpy array in PyTorch layout
        (no transposes). Floating tensors are float32 (bfloat16, float16 and
        float64 are converted); integer and bool tensors keep their dtype.

    Raises:
        CheckpointError: the file is missing, not a torch zip checkpoint,
            damaged, or holds no state dict; the message is one line naming
            the file and, where relevant, the tensor key.
    """
    path = os.fspath(path)
    with _open_zip(path) as zf:
        prefix = _archive_prefix(zf, path)
        data = _read_record(zf, prefix + "data.pkl", path)
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
        state = _select_state_dict(root, path)

        for key, value in state.items():
            if not isinstance(key, str):
                raise _error(path, f"state dict key {key!r:.80} is not a string")
            if not isinstance(value, _TensorRef):
                raise _error(
                    path, f"state dict entry {key!r} is {_describe(value)}, not a readable tensor"
                )
        reader = _StorageReader(zf, prefix, path)
        names = _strip_prefixes(list(state))
        return {names[k]: reader.tensor(v, k) for k, v in state.items()}
