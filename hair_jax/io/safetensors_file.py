"""Weights as `.safetensors`: for PyTorch, in the reference code's names, and back.

    data = to_bytes(model)                 # what `hair-export CKPT OUT.safetensors` writes
    model = load_safetensors("hair3d.safetensors")

A safetensors file is an 8-byte little-endian header length, a JSON header
({name: {dtype, shape, data_offsets}, "__metadata__": {str: str}}) and the
tensors' bytes; it holds no code. `to_bytes` writes a Res-HAIR, Restormer
or NAFNet with the reference PyTorch state dict's names and layouts
(`torch_import.torch_state_dict`), so that

    model.load_state_dict(safetensors.torch.load_file(path), strict=True)

loads it into the reference class built with the arguments in the file's
metadata (`architecture`, `constructor_args`). A model the reference code cannot build
(NAF-HAIR, the selection options of `models.ADAPTIVE`, a registered
backbone) is written with hair-jax's own names and layouts instead, our
flat variable paths ("latent.bank.weights.attn.qkv.kernel", HWIO convs),
and says so in its metadata (`names: hair-jax`). Metadata keys:

  names             "pytorch" or "hair-jax"
  architecture      the reference class ("HAIR", "Restormer", "NAFNet"),
                    or our arch for hair-jax names
  reference_code    where that class is defined (pytorch names only)
  constructor_args  its keyword arguments, JSON (pytorch names only)
  constructor_note  what the released class builds differently, if anything
                    (e.g. HAIR hard-codes reduce_chan_level3 for dim 48)
  model_config      our `ModelConfig`, JSON: the model is rebuilt from it
  hair_jax_version  the package that wrote it

`load_safetensors` reads these and files saved from the reference models
(`safetensors.torch.save_file(model.state_dict(), path)`: no metadata, the
architecture inferred from the shapes as for a `.ckpt`, a Lightning `net.`
prefix removed). `read_header` validates the header in bounded memory
before any tensor is read: at most `MAX_HEADER_BYTES` of JSON, known
dtypes, each tensor's bytes exactly its shape times its item size, and
offsets that tile the data without gap or overlap, as the format requires.
Then safetensors itself decodes the file, which is read whole: memory is
about twice the file's size, plus float32 copies of narrower floats.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import os

import numpy as np
import safetensors
import safetensors.numpy
from flax import nnx

from hair_jax.io import model_export, torch_import
from hair_jax.io.files import error_line
from hair_jax.io.torch_pickle import CheckpointError, strip_wrapper_prefixes
from hair_jax.nn import models

SUFFIX = ".safetensors"
PYTORCH_NAMES, HAIR_JAX_NAMES = "pytorch", "hair-jax"
# The largest built-in model's header (NAF-HAIR SIDD, hair-jax names) is about 90 KiB.
MAX_HEADER_BYTES = 2**20
MAX_DIMS = 8
# The dtypes read, with their item size; all become float32, the model's dtype.
DTYPES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}
_NUMPY = {"F32": "<f4", "F16": "<f2", "F64": "<f8"}
# The options a Res-HAIR needs for the reference HAIR to compute what it computes.
_PAPER_SELECTION = {
    "giv_classes": 0,
    "router_norm": False,
    "router_temperature": None,
    "learned_temperature": False,
    "type_routing": 0.0,
    "giv_skip": False,
}


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether `path` names a `.safetensors` file (not a folder of that name)."""
    path = os.fspath(path)
    return path.endswith(SUFFIX) and not os.path.isdir(path)


def _error(path: str, detail: str) -> CheckpointError:
    return CheckpointError(" ".join(f"{path}: {detail}".splitlines()))


# --------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------


def reference_class(cfg) -> tuple[str, str, dict] | None:
    """The reference PyTorch model with the state dict of `cfg`'s model, if there is one.

    Returns:
      (class name, where it is defined, its keyword arguments), or None where
      no reference code builds the model (NAF-HAIR, the selection options).
    """
    if cfg.arch == "nafnet":
        args = dict(
            img_channel=3,
            width=cfg.dim,
            middle_blk_num=cfg.middle_blocks,
            enc_blk_nums=list(cfg.enc_blocks),
            dec_blk_nums=list(cfg.dec_blocks),
        )
        return "NAFNet", "megvii-research/NAFNet basicsr/models/archs/NAFNet_arch.py", args
    args = dict(
        inp_channels=3,
        out_channels=3,
        dim=cfg.dim,
        num_blocks=list(cfg.num_blocks),
        num_refinement_blocks=cfg.num_refinement_blocks,
        heads=list(cfg.heads),
        ffn_expansion_factor=cfg.ffn_expansion_factor,
        bias=cfg.bias,
        LayerNorm_type=cfg.layer_norm,
    )
    if cfg.arch == "restormer":
        where = "swz30/Restormer basicsr/models/archs/restormer_arch.py"
        return "Restormer", where, {**args, "dual_pixel_task": False}
    if cfg.arch == "res_hair" and all(getattr(cfg, k) == v for k, v in _PAPER_SELECTION.items()):
        return "HAIR", "toummHus/HAIR net/HAIR.py", args
    return None


def _hair_differences(cfg) -> list[str]:
    """What the released HAIR(**constructor_args) builds differently from `cfg`."""
    default_box = models.default_num_box(cfg.num_blocks, cfg.num_refinement_blocks)
    fields = {  # ours, the released code's
        "num_box": (list(cfg.boxes), list(default_box)),
        "hsn_depth (its mlp_depth)": (cfg.hsn_depth, 3),
        "dac_channels (its ResNet ch)": (
            cfg.dac_channels or int(1.5 * cfg.dim),
            int(1.5 * cfg.dim),
        ),
        "dac_groups (its GroupNorm groups)": (cfg.dac_groups, 24),
    }
    notes = [f"{k} {a}, it has {b}" for k, (a, b) in fields.items() if a != b]
    if cfg.dim != 48:
        notes.append("reduce_chan_level3 takes 6*dim channels here, 2*dim+192 there (dim 48 only)")
    return notes


def _version() -> str:
    try:
        return importlib.metadata.version("hair-jax")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def tensors_and_metadata(model: nnx.Module) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays (contiguous) and metadata `to_bytes` writes; see the module docstring."""
    cfg = model.config
    meta = {"model_config": json.dumps(dataclasses.asdict(cfg)), "hair_jax_version": _version()}
    reference = reference_class(cfg)
    if reference is None:
        meta |= {"names": HAIR_JAX_NAMES, "architecture": cfg.arch}
        tensors = {
            ".".join(map(str, k)): np.asarray(v.get_value())
            for k, v in nnx.to_flat_state(nnx.state(model))
        }
    else:
        name, where, args = reference
        meta |= {"names": PYTORCH_NAMES, "architecture": name, "reference_code": where}
        meta["constructor_args"] = json.dumps(args)
        notes = _hair_differences(cfg) if name == "HAIR" else []
        if notes:
            meta["constructor_note"] = "the released class differs: " + "; ".join(notes)
        tensors = torch_import.torch_state_dict(model)
    # order="C": contiguous (transposed views are copied), 0-d arrays kept 0-d.
    return {k: np.asarray(v, order="C") for k, v in tensors.items()}, meta


def to_bytes(model: nnx.Module) -> bytes:
    """The `.safetensors` file of `model`'s weights (safetensors' numpy API, no torch)."""
    return safetensors.numpy.save(*tensors_and_metadata(model))


# --------------------------------------------------------------------------
# Reading.
# --------------------------------------------------------------------------


def _unique_keys(pairs: list) -> dict:
    """A JSON object's pairs as a dict; ValueError on a repeated key (json would keep the last)."""
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"the key {k!r:.60} repeats")
        d[k] = v
    return d


def _is_count(v) -> bool:
    """A JSON size or offset: an int in [0, 2**63), as safetensors' own u64 fields."""
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


def _span(entry, data_size: int) -> tuple[int, int]:
    """[begin, end) of one tensor entry of the header; ValueError saying what is wrong."""
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
        raise ValueError("not a {dtype, shape, data_offsets} entry")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r:.20} is not read (only {', '.join(DTYPES)})")
    if not (isinstance(shape, list) and len(shape) <= MAX_DIMS and all(map(_is_count, shape))):
        raise ValueError(f"shape {shape!r:.80} is no list of at most {MAX_DIMS} sizes")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise ValueError(f"data_offsets {offsets!r:.80} are no [begin, end]")
    begin, end = offsets
    need = math.prod(shape) * DTYPES[dtype]
    if end - begin != need:
        raise ValueError(
            f"data_offsets {offsets} hold {end - begin} bytes, {shape} x {dtype} need {need}"
        )
    if end > data_size:
        raise ValueError(f"data_offsets {offsets} run past the data's {data_size} bytes")
    return begin, end


def read_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str]]:
    """The tensors' entries and the metadata of a `.safetensors` file, validated.

    Reads the 8-byte length and the JSON header only. Every entry must have a
    dtype of `DTYPES`, a shape of at most `MAX_DIMS` sizes and `data_offsets`
    [begin, end] with end - begin = its size x item size; the entries, in
    offset order, must cover the data exactly (no gap, no overlap, nothing
    past the file's end); the metadata must map strings to strings.

    Raises:
      CheckpointError: one line naming the file and what is wrong.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise _error(path, "no such file" if not os.path.exists(path) else "not a regular file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise _error(path, f"{size} bytes, too short for a safetensors file")
            length = int.from_bytes(f.read(8), "little")
            if length > MAX_HEADER_BYTES:
                raise _error(
                    path,
                    f"header declares {length} bytes, more than the {MAX_HEADER_BYTES} "
                    "this reader allows",
                )
            if 8 + length > size:
                raise _error(
                    path, f"header declares {length} bytes, the file holds {size - 8} after it"
                )
            raw = f.read(length)
    except OSError as e:
        raise _error(path, f"cannot read file ({error_line(e)})") from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _error(path, f"header is not JSON ({error_line(e)})") from None
    if not isinstance(header, dict):
        raise _error(path, "header is not a JSON object")
    metadata = header.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _error(path, "__metadata__ is not a mapping of strings to strings")
    data_size = size - 8 - length
    spans = []
    for name, entry in header.items():
        try:
            spans.append((*_span(entry, data_size), name))
        except ValueError as e:
            raise _error(path, f"tensor {name!r:.80}: {e}") from None
    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            what = (
                "overlap another tensor" if begin < covered else f"leave {covered}-{begin} unused"
            )
            raise _error(path, f"tensor {name!r:.80}: data_offsets [{begin}, {end}] {what}")
        covered = end
    if covered != data_size:
        raise _error(path, f"the tensors cover {covered} of the data's {data_size} bytes")
    return header, metadata


def _to_float32(dtype: str, data, shape: list[int]) -> np.ndarray:
    if dtype == "BF16":  # the high half of a float32's bits
        bits = np.frombuffer(data, "<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(data, _NUMPY[dtype]).astype(np.float32).reshape(shape)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors (float32, as stored: no renames or transposes) and the metadata of `path`.

    Raises:
      CheckpointError: one line naming the file (see `read_header`).
    """
    path = os.fspath(path)
    _, metadata = read_header(path)
    try:
        with open(path, "rb") as f:
            views = safetensors.deserialize(f.read())
        tensors = {name: _to_float32(v["dtype"], v["data"], v["shape"]) for name, v in views}
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError
        raise _error(path, f"safetensors cannot read it ({error_line(e)})") from None
    return tensors, metadata


def load_safetensors(path: str | os.PathLike) -> nnx.Module:
    """The model a `.safetensors` file holds: ours (by its metadata) or a reference state dict.

    Raises:
      CheckpointError, ExportError: one line naming the file.
    """
    path = os.fspath(path)
    tensors, metadata = read_safetensors(path)
    cfg = None
    if "model_config" in metadata:
        where = f"{path}: metadata model_config"
        try:
            d = json.loads(metadata["model_config"])
        except (ValueError, RecursionError) as e:
            raise _error(path, f"metadata model_config is not JSON ({error_line(e)})") from None
        if not isinstance(d, dict):
            raise _error(path, "metadata model_config is not a JSON object")
        cfg = model_export.config_from_dict(d, where)
    try:
        if metadata.get("names") == HAIR_JAX_NAMES:
            if cfg is None:
                raise CheckpointError("names: hair-jax needs the model_config metadata")
            return torch_import.merge_values(models.abstract_model(cfg), tensors)
        names = strip_wrapper_prefixes(list(tensors))
        return torch_import.state_dict_to_model({names[k]: v for k, v in tensors.items()}, cfg)
    except CheckpointError as e:
        raise _error(path, str(e)) from None
    except (KeyError, ValueError, IndexError) as e:
        raise _error(path, f"not a HAIR/Restormer/NAFNet state_dict ({error_line(e)})") from None
