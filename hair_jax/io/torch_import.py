"""PyTorch HAIR, Restormer and official NAFNet weights, into hair-jax and back.

`load_torch_checkpoint(path)` reads a checkpoint without torch (see
`hair_jax.io.torch_pickle`), infers the architecture from tensor shapes and
returns an eval-ready model. `python -m hair_jax.convert` writes it as a
model export. `torch_state_dict(model)` is the inverse: the reference
state dict, names and layouts, that `state_dict_to_model` reads back.

Layouts: PyTorch convs are OIHW, ours HWIO; Linear weights are [out, in],
ours [in, out]; each level's flat `kernel_box` [num_box, sum of sizes] is
split into the six per-conv banks in the reference's order. A NAFNet state
dict (megvii-research/NAFNet, the `params` of its `.pth` files) is told
apart by its `intro.weight`; its names are ours but for `weight` ->
`kernel`, `sca.1` -> `sca`, `ups.<i>.0` -> `ups.<i>`, and beta/gamma are
stored [1, C, 1, 1].
"""

from __future__ import annotations

import math
import re

import numpy as np
from flax import nnx

from hair_jax.io.torch_pickle import CheckpointError, load_state_dict
from hair_jax.nn import models

# The reference flattens a block's six generated convs in this order.
BANK_ORDER = (
    "attn.qkv",
    "attn.qkv_dwconv",
    "attn.project_out",
    "ffn.project_in",
    "ffn.dwconv",
    "ffn.project_out",
)

# (torch pattern, our replacement), applied in order to each torch key.
_RENAMES = [
    (r"^patch_embed\.proj\.", "encoder.patch_embed."),
    (r"^encoder_level(\d)\.", lambda m: f"encoder.levels.{int(m[1]) - 1}."),
    (r"^down(\d)_\d\.body\.0\.", lambda m: f"encoder.downs.{int(m[1]) - 1}.conv."),
    (r"^(up\d_\d)\.body\.0\.", r"\1.conv."),
    (r"^(\w+)\.blocks\.(\d+)\.", r"\1.blocks.\2.static."),
    (
        r"^(\w+)\.extracts\.(\d+)\.net\.(\d+)\.",
        lambda m: f"{m[1]}.hsns.{m[2]}.layers.{int(m[3]) // 2}.",
    ),
    (r"^feature\.down\.(\d+)\.block\.", r"dac.stages.\1."),
    (r"^feature\.down\.(\d+)\.downsample\.", r"dac.downsamples.\1."),
    (r"^feature\.mid\.(block_1|attn_1|block_2)\.", r"dac.mid_\1."),
    (r"^feature\.", "dac."),
    (r"\.body\.(weight|bias)$", r".\1"),
    (r"(norm\w*)\.weight$", r"\1.scale"),
    (r"\.weight$", ".kernel"),
]


_NAF_RENAMES = [
    (r"^ups\.(\d+)\.0\.", r"ups.\1."),
    (r"\.sca\.1\.", ".sca."),
    (r"(norm\d)\.weight$", r"\1.scale"),
    (r"\.weight$", ".kernel"),
]


def is_nafnet(sd: dict) -> bool:
    """Whether a state dict is an official NAFNet's (by its intro conv)."""
    return "intro.weight" in sd


def our_name(torch_key: str, renames=None) -> str:
    """Maps a reference state_dict key to our flat parameter path."""
    name = torch_key
    for pattern, repl in renames or _RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def _to_ours(torch_key: str, value: np.ndarray) -> np.ndarray:
    if torch_key.endswith(("temperature", "beta", "gamma")):  # [heads, 1, 1], [1, C, 1, 1]
        return value.reshape(-1)
    if value.ndim == 4:  # conv OIHW -> HWIO
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:  # Linear [out, in] -> [in, out]
        return value.T
    return value


def _count(sd, pattern: str) -> int:
    idx = {int(m[1]) for k in sd if (m := re.match(pattern, k))}
    return max(idx) + 1 if idx else 0


def infer_config(sd: dict[str, np.ndarray]) -> models.ModelConfig:
    """Reads the architecture off tensor names and shapes."""
    if "patch_embed.proj.weight" not in sd:
        raise CheckpointError(
            "not a HAIR/Restormer/NAFNet state_dict: no 'patch_embed.proj.weight' "
            "and no 'intro.weight'"
        )
    dim = sd["patch_embed.proj.weight"].shape[0]
    res_hair = "latent.kernel_box" in sd
    blk = (lambda lvl: f"{lvl}.blocks.0.") if res_hair else (lambda lvl: f"{lvl}.0.")
    count = lambda lvl: _count(sd, rf"^{lvl}\.(?:blocks\.)?(\d+)\.")
    num_blocks = tuple(count(f"encoder_level{i}") for i in (1, 2, 3)) + (count("latent"),)
    heads = tuple(sd[f"encoder_level{i}.0.attn.temperature"].shape[0] for i in (1, 2, 3))
    heads += (sd[blk("latent") + "attn.temperature"].shape[0],)
    hidden = sd["encoder_level1.0.ffn.project_out.weight"].shape[1]
    kw = dict(
        arch="res_hair" if res_hair else "restormer",
        dim=dim,
        num_blocks=num_blocks,
        num_refinement_blocks=count("refinement"),
        heads=heads,
        ffn_expansion_factor=_ffn_factor(dim, hidden),
        bias="encoder_level1.0.attn.qkv.bias" in sd,
        layer_norm="WithBias" if "encoder_level1.0.norm1.body.bias" in sd else "BiasFree",
    )
    if res_hair:
        kw["num_box"] = tuple(sd[f"{lvl}.kernel_box"].shape[0] for lvl in models.HYPER_LEVELS)
        kw["dac_channels"] = sd["feature.conv_in.weight"].shape[0]
        kw["hsn_depth"] = _count(sd, r"^latent\.extracts\.0\.net\.(\d+)\.weight") // 2
    return models.ModelConfig(**kw)


def infer_nafnet_config(sd: dict[str, np.ndarray]) -> models.ModelConfig:
    """Reads a NAFNet's width and blocks per stage off its state dict."""
    stages = lambda name: _count(sd, rf"^{name}\.(\d+)\.")
    blocks = lambda name, n: tuple(_count(sd, rf"^{name}\.{i}\.(\d+)\.") for i in range(n))
    return models.ModelConfig(
        arch="nafnet",
        dim=sd["intro.weight"].shape[0],
        enc_blocks=blocks("encoders", stages("downs")),
        middle_blocks=stages("middle_blks"),
        dec_blocks=blocks("decoders", stages("ups")),
    )


def _ffn_factor(dim: int, hidden: int) -> float:
    # int(dim * f) must give the stored width; prefer Restormer's 2.66.
    for f in (2.66, hidden / dim):
        if int(dim * f) == hidden:
            return f
    return hidden / dim


def _split_bank(level: str, box: np.ndarray, model) -> dict[str, np.ndarray]:
    """[num_box, total] -> {our path: [num_box, H, W, I, O]} in BANK_ORDER."""
    bank = getattr(model, level).bank.weights
    shapes = [bank[m][a]["kernel"].shape[1:] for m, a in (c.split(".") for c in BANK_ORDER)]
    sizes = [math.prod(s) for s in shapes]
    if box.ndim != 2 or box.shape[1] != sum(sizes):
        raise CheckpointError(
            f"{level}.kernel_box has {box.shape[-1]} weights per box, expected {sum(sizes)}"
        )
    out, start = {}, 0
    for conv, (kh, kw, i, o), size in zip(BANK_ORDER, shapes, sizes):
        oihw = box[:, start : start + size].reshape(box.shape[0], o, i, kh, kw)
        out[f"{level}.bank.weights.{conv}.kernel"] = oihw.transpose(0, 3, 4, 2, 1)
        start += size
    return out


def state_dict_to_model(sd: dict[str, np.ndarray], cfg: models.ModelConfig | None = None):
    """Builds a model from a reference state_dict (PyTorch names and layouts)."""
    naf = is_nafnet(sd)
    cfg = cfg or (infer_nafnet_config(sd) if naf else infer_config(sd))
    abstract = models.abstract_model(cfg)
    values = {}
    for key, value in sd.items():
        if key.endswith("kernel_box"):
            values.update(_split_bank(key.rsplit(".", 1)[0], value, abstract))
        else:
            values[our_name(key, _NAF_RENAMES if naf else None)] = _to_ours(key, value)
    return merge_values(abstract, values)


def merge_values(abstract: nnx.Module, values: dict[str, np.ndarray]) -> nnx.Module:
    """`abstract` (`models.abstract_model`) with its variables set from `values`.

    Args:
      abstract: the model to fill, with shape-only leaves.
      values: our flat variable path ("latent.bank.weights.attn.qkv.kernel")
        -> array in our layout.

    Raises:
      CheckpointError: a name too many or missing, or a shape that differs
        (the message names the first).
    """
    graphdef, state = nnx.split(abstract)
    targets = {".".join(map(str, k)): v for k, v in nnx.to_flat_state(state)}
    unexpected = sorted(set(values) - set(targets))
    if unexpected:
        raise CheckpointError(
            f"unexpected tensor for this architecture: {unexpected[0]} ({len(unexpected)} in all)"
        )
    missing = sorted(set(targets) - set(values))
    if missing:
        raise CheckpointError(f"missing tensor: {missing[0]} ({len(missing)} in all)")
    for name, target in targets.items():
        if values[name].shape != target.shape:
            raise CheckpointError(
                f"{name}: shape {values[name].shape} does not match the "
                f"architecture's {target.shape}"
            )
    flat = [
        (k, v.replace(np.asarray(values[".".join(map(str, k))], target_dtype(v))))
        for k, v in nnx.to_flat_state(state)
    ]
    return nnx.merge(graphdef, nnx.from_flat_state(flat))


# The inverse of _RENAMES and _NAF_RENAMES: our path -> the reference's key.
_TORCH_NAMES = [
    (r"^encoder\.patch_embed\.", "patch_embed.proj."),
    (r"^encoder\.levels\.(\d)\.", lambda m: f"encoder_level{int(m[1]) + 1}."),
    (
        r"^encoder\.downs\.(\d)\.conv\.",
        lambda m: f"down{int(m[1]) + 1}_{int(m[1]) + 2}.body.0.",
    ),
    (r"^(up\d_\d)\.conv\.", r"\1.body.0."),
    (r"^(\w+)\.blocks\.(\d+)\.static\.", r"\1.blocks.\2."),
    (
        r"^(\w+)\.hsns\.(\d+)\.layers\.(\d+)\.",
        lambda m: f"{m[1]}.extracts.{m[2]}.net.{2 * int(m[3])}.",
    ),
    (r"^dac\.stages\.(\d+)\.", r"feature.down.\1.block."),
    (r"^dac\.downsamples\.(\d+)\.", r"feature.down.\1.downsample."),
    (r"^dac\.mid_(block_1|attn_1|block_2)\.", r"feature.mid.\1."),
    (r"^dac\.", "feature."),
    # The Restormer LayerNorm keeps its weights in a `body`; the DAC's GroupNorm does not.
    (r"^(?!feature\.)(.*norm\d)\.(scale|bias)$", r"\1.body.\2"),
    (r"\.(scale|kernel)$", ".weight"),
]
_NAF_TORCH_NAMES = [
    (r"^ups\.(\d+)\.", r"ups.\1.0."),
    (r"\.sca\.", ".sca.1."),
    (r"\.(scale|kernel)$", ".weight"),
]


def _to_torch(torch_key: str, value: np.ndarray) -> np.ndarray:
    if torch_key.endswith("temperature"):  # [heads] -> [heads, 1, 1]
        return value.reshape(-1, 1, 1)
    if torch_key.endswith(("beta", "gamma")):  # NAFNet's [C] -> [1, C, 1, 1]
        return value.reshape(1, -1, 1, 1)
    if value.ndim == 4:  # conv HWIO -> OIHW
        return value.transpose(3, 2, 0, 1)
    if value.ndim == 2:  # Linear [in, out] -> [out, in]
        return value.T
    return value


def torch_state_dict(model: nnx.Module) -> dict[str, np.ndarray]:
    """The reference PyTorch state_dict of a Res-HAIR, Restormer or NAFNet.

    The inverse of `state_dict_to_model`: reference names, OIHW convs,
    [out, in] Linear weights, each level's banks flattened into its
    `kernel_box` [num_box, sum of sizes] in BANK_ORDER, NAFNet's beta and
    gamma as [1, C, 1, 1]. Arrays may be transposed views.

    Raises:
      ValueError: a variable with no reference name, e.g. a NAF-HAIR bank
        (the message names it).
    """
    naf = model.config.arch == "nafnet"
    to_torch, to_ours = (_NAF_TORCH_NAMES, _NAF_RENAMES) if naf else (_TORCH_NAMES, _RENAMES)
    sd, banks = {}, {}
    for key, variable in nnx.to_flat_state(nnx.state(model)):
        name = ".".join(map(str, key))
        value = np.asarray(variable.get_value())
        if ".bank.weights." in name:
            level, conv = name.removesuffix(".kernel").split(".bank.weights.")
            banks.setdefault(level, {})[conv] = value
            continue
        torch_key = our_name(name, to_torch)
        if our_name(torch_key, to_ours) != name:  # the importer must read it back
            raise ValueError(f"{name} has no name in the reference PyTorch model")
        sd[torch_key] = _to_torch(torch_key, value)
    for level, convs in banks.items():
        if sorted(convs) != sorted(BANK_ORDER):
            raise ValueError(f"{level}: a bank of {sorted(convs)}, not the reference's six convs")
        # [num_box, H, W, I, O] -> [num_box, O * I * H * W], the six side by side.
        flat = [convs[c].transpose(0, 4, 3, 1, 2).reshape(len(convs[c]), -1) for c in BANK_ORDER]
        sd[f"{level}.kernel_box"] = np.concatenate(flat, axis=1)
    return sd


def target_dtype(variable):
    return variable.get_value().dtype


def load_torch_checkpoint(path) -> nnx.Module:
    """Reads a PyTorch HAIR, Restormer or NAFNet checkpoint without torch.

    Raises:
      CheckpointError: unreadable file, unsafe or foreign content, or tensors
        that do not fit a HAIR/Restormer/NAFNet architecture (the message
        names them).
    """
    sd = load_state_dict(path)
    try:
        return state_dict_to_model(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"{path}: not a HAIR/Restormer/NAFNet state_dict ({e})") from None
