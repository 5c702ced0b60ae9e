"""Writes `.safetensors` files byte by byte, lies included, for the reader's tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_raw(path: Path, header, data: bytes = b"", length: int | None = None) -> Path:
    """8-byte little-endian `length` (default: the header's), the header, then `data`.

    `header` is a JSON value, or bytes written as they are.
    """
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    size = len(raw) if length is None else length
    path.write_bytes(size.to_bytes(8, "little") + raw + data)
    return path


def entries(tensors: dict[str, np.ndarray]) -> tuple[dict, bytes]:
    """The honest header entries and data of float32 `tensors`, in order."""
    header, data = {}, b""
    for name, value in tensors.items():
        raw = np.ascontiguousarray(value, "<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(value.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    return header, data
