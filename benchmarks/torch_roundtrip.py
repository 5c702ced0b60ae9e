"""Our .safetensors in the reference PyTorch models with strict=True, and theirs back in ours.

A tool, not part of the package or the CI: the middle step needs torch,
einops and safetensors in a side environment (never a hair-jax dependency)
and checkouts of toummHus/HAIR, swz30/Restormer and megvii-research/NAFNet:

    python benchmarks/torch_roundtrip.py export DIR                  # hair-jax's environment
    TORCH_ENV/bin/python benchmarks/torch_roundtrip.py check DIR \\
        --hair HAIR_REPO --restormer RESTORMER_REPO --nafnet NAFNET_REPO
    python benchmarks/torch_roundtrip.py reimport DIR                # hair-jax's environment

`export` writes, for each case of `CASES`, `DIR/<case>.safetensors`
(`hair-export`'s writer, verified) and `DIR/<case>_io.npz` (inputs NHWC,
our outputs, and for the fixture the reference's outputs). `check` builds
the class and arguments each file's metadata names, loads it with
`load_state_dict(..., strict=True)`, restores the inputs and prints the max
difference from ours (and from the fixture's reference outputs); it then
saves the PyTorch model's own state dict with `safetensors.torch.save_file`
(`DIR/<case>_torch.safetensors`) and its outputs. `reimport` reads those
through `hair_jax.load_model` and prints the max difference from PyTorch's
outputs. Each step prints one JSON line per case and exits 1 if a
difference exceeds 1e-4.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "hair_dim16_ref.ckpt"
ATOL = 1e-4
# case -> ModelConfig fields (None: the reference .ckpt fixture, dim 16).
CASES = {
    "hair_fixture": None,
    "hair_dim48": dict(dim=48, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1),
    "restormer": dict(
        arch="restormer",
        dim=8,
        num_blocks=(1, 2, 1, 2),
        num_refinement_blocks=1,
        heads=(1, 2, 2, 4),
    ),
    "nafnet": dict(arch="nafnet", dim=8, enc_blocks=(1, 2), middle_blocks=1, dec_blocks=(2, 1)),
}


def _report(rows: list[dict]) -> int:
    for row in rows:
        print(json.dumps(row))
    worst = max(v for row in rows for k, v in row.items() if k.startswith("max_diff"))
    return 0 if worst <= ATOL else 1


def export(out: Path) -> int:
    """hair-jax side: the models, their .safetensors and our outputs."""
    import jax  # pylint: disable=g-import-not-at-top
    from flax import nnx  # pylint: disable=g-import-not-at-top

    from hair_jax.commands import export as export_command  # pylint: disable=g-import-not-at-top
    from hair_jax.io import torch_import  # pylint: disable=g-import-not-at-top
    from hair_jax.nn import models  # pylint: disable=g-import-not-at-top

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for case, fields in CASES.items():
        arrays = {}
        if fields is None:
            model = torch_import.load_torch_checkpoint(FIXTURE)
            io = np.load(FIXTURE.with_name("hair_dim16_io.npz"))
            x = io["input"].transpose(0, 2, 3, 1)
            arrays["reference"] = io["output"].transpose(0, 2, 3, 1)
        else:
            model = models.build_model(models.ModelConfig(**fields), rngs=nnx.Rngs(0))

            # Fresh NAFNet blocks have beta = gamma = 0 (each block the identity),
            # and fresh HSNs nearly uniform selectors: move every weight by a tenth
            # of its tensor's spread (a twentieth where all are equal).
            def noise(v):
                spread = float(np.std(v)) or 0.5
                return v + 0.1 * spread * rng.standard_normal(v.shape).astype(v.dtype)

            nnx.update(model, jax.tree.map(noise, nnx.state(model)))
            x = rng.uniform(0, 1, (2, 64, 64, 3)).astype(np.float32)
        path = out / f"{case}.safetensors"
        error = export_command.export(model, str(path), fmt="safetensors")
        ours = np.asarray(nnx.jit(lambda m, x: m(x))(model, x))
        np.savez(out / f"{case}_io.npz", input=x, ours=ours, **arrays)
        rows.append({"case": case, "wrote": path.name, "max_diff_read_back": error})
    return _report(rows)


def _reference_classes(args) -> dict:
    """The reference classes by the names the metadata's `architecture` uses."""
    sys.path.insert(0, str(args.hair))  # net/HAIR.py imports utils.ResNet
    from net.HAIR import HAIR  # pylint: disable=g-import-not-at-top

    arch = args.restormer / "basicsr" / "models" / "archs" / "restormer_arch.py"
    spec = importlib.util.spec_from_file_location("restormer_arch", arch)
    restormer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(restormer)
    from make_nafnet_fixtures import load_official  # pylint: disable=g-import-not-at-top

    return {
        "HAIR": HAIR,
        "Restormer": restormer.Restormer,
        "NAFNet": load_official(args.nafnet).NAFNet,
    }


def check(out: Path, args) -> int:
    """PyTorch side: strict loading, outputs, and the models' own state dicts saved."""
    import torch  # pylint: disable=g-import-not-at-top
    from safetensors import safe_open  # pylint: disable=g-import-not-at-top
    from safetensors.torch import load_file, save_file  # pylint: disable=g-import-not-at-top

    classes = _reference_classes(args)
    rows = []
    for case in CASES:
        path = out / f"{case}.safetensors"
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
        kwargs = json.loads(meta["constructor_args"])
        net = classes[meta["architecture"]](**kwargs)
        if "reduce_chan_level3" in meta.get("constructor_note", ""):
            # The change the note names (the fixture's model was built with it).
            dim, bias = kwargs["dim"], kwargs["bias"]
            net.reduce_chan_level3 = torch.nn.Conv2d(6 * dim, 4 * dim, 1, bias=bias)
        state = load_file(str(path))
        net.load_state_dict(state, strict=True)  # raises on any missing or extra key
        net.eval()
        io = np.load(out / f"{case}_io.npz")
        with torch.no_grad():
            y = net(torch.from_numpy(io["input"].transpose(0, 3, 1, 2).copy())).numpy()
        y = y.transpose(0, 2, 3, 1)
        row = {
            "case": case,
            "class": meta["architecture"],
            "strict_load": "ok",
            "tensors": len(state),
            "max_diff_vs_hair_jax": float(np.abs(y - io["ours"]).max()),
        }
        if "reference" in io:
            row["max_diff_vs_fixture"] = float(np.abs(y - io["reference"]).max())
        save_file(net.state_dict(), str(out / f"{case}_torch.safetensors"))
        np.save(out / f"{case}_torch_out.npy", y)
        rows.append(row)
    return _report(rows)


def reimport(out: Path) -> int:
    """hair-jax side: the PyTorch models' own safetensors, through load_model."""
    from flax import nnx  # pylint: disable=g-import-not-at-top

    from hair_jax import loading  # pylint: disable=g-import-not-at-top

    rows = []
    for case in CASES:
        loaded = loading.load_model(out / f"{case}_torch.safetensors")
        x = np.load(out / f"{case}_io.npz")["input"]
        y = np.asarray(nnx.jit(lambda m, x: m(x))(loaded.model, x))
        torch_out = np.load(out / f"{case}_torch_out.npy")
        rows.append(
            {
                "case": case,
                "loaded": loaded.describe(),
                "max_diff_vs_torch": float(np.abs(y - torch_out).max()),
            }
        )
    return _report(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("export", "check", "reimport"))
    parser.add_argument("dir", type=Path)
    parser.add_argument("--hair", type=Path, help="check: a toummHus/HAIR checkout")
    parser.add_argument("--restormer", type=Path, help="check: a swz30/Restormer checkout")
    parser.add_argument("--nafnet", type=Path, help="check: a megvii-research/NAFNet checkout")
    args = parser.parse_args()
    if args.step == "export":
        return export(args.dir)
    if args.step == "check":
        if not (args.hair and args.restormer and args.nafnet):
            parser.error("check needs --hair, --restormer and --nafnet")
        return check(args.dir, args)
    return reimport(args.dir)


if __name__ == "__main__":
    sys.exit(main())
