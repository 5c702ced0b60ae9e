"""Hostile checkpoint files: sizes are checked before memory is spent.

The deflate bomb of the issue (a 4-byte tensor record that inflates to
4 GiB) is refused in a child process whose peak memory is measured; the
other tests pin each size check of ``hair_jax.torch_pickle`` and the cost
of unpickling ``data.pkl`` (tracemalloc counts numpy buffers too).
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

from hair_jax import torch_pickle
from hair_jax.torch_pickle import MAX_PICKLE_BYTES, CheckpointError, load_state_dict
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
from hair_jax.torch_pickle import CheckpointError, load_state_dict
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
        capture_output=True, text=True, env=env, timeout=300, check=False,
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
