"""Makes the NAFNet parity fixtures in tests/data/ by running the official PyTorch code.

A tool, not part of the package or the CI: it needs torch and numpy in a
side environment (never a hair-jax dependency) and a checkout of
megvii-research/NAFNet (the fixtures were made at commit
2b4af71ebe098a92a75910c233a3965a3e93ede4):

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy
    git clone https://github.com/megvii-research/NAFNet /tmp/NAFNet
    /tmp/torchenv/bin/python benchmarks/make_nafnet_fixtures.py --nafnet /tmp/NAFNet

For each config in `CONFIGS` it builds the official `NAFNet`, replaces every
parameter with random values (a fresh model's beta and gamma are zero, which
would make every block the identity and the comparison blind to them), and
writes:
  * tests/data/nafnet_<name>.pth: `torch.save({"params": state_dict})`, the
    layout of the official training's saves and released weights;
  * tests/data/nafnet_<name>_io.npz: two odd-sized inputs (NHWC) and the
    model's outputs for them, and the official parameter count.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"

# name: (width, enc_blk_nums, middle_blk_num, dec_blk_nums)
CONFIGS = {
    "w8_2lvl": (8, [1, 2], 1, [2, 1]),
    "w4_3lvl": (4, [1, 1, 2], 2, [1, 1, 1]),
}
SIZES = ((13, 19), (21, 10))  # odd, not multiples of 2^levels: padding and crop


def load_official(repo: Path) -> types.ModuleType:
    """Imports NAFNet_arch.py and its two helpers without basicsr's package imports.

    basicsr/__init__.py imports the whole training stack; the arch needs only
    `arch_util.LayerNorm2d` and `local_arch.Local_Base`.
    """
    archs = repo / "basicsr" / "models" / "archs"
    for pkg in ("basicsr", "basicsr.models", "basicsr.models.archs"):
        sys.modules[pkg] = types.ModuleType(pkg)
    utils = types.ModuleType("basicsr.utils")
    utils.get_root_logger = lambda *a, **k: None
    sys.modules["basicsr.utils"] = utils
    for name in ("arch_util", "local_arch", "NAFNet_arch"):
        spec = importlib.util.spec_from_file_location(
            f"basicsr.models.archs.{name}", archs / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["basicsr.models.archs.NAFNet_arch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nafnet", type=Path, required=True, help="a NAFNet checkout")
    args = parser.parse_args()
    arch = load_official(args.nafnet)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    for name, (width, enc, middle, dec) in CONFIGS.items():
        net = arch.NAFNet(
            img_channel=3, width=width, middle_blk_num=middle, enc_blk_nums=enc, dec_blk_nums=dec
        ).eval()
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn_like(p) * 0.3)
        count = sum(p.numel() for p in net.parameters())
        torch.save({"params": net.state_dict()}, OUT / f"nafnet_{name}.pth")
        arrays = {"param_count": np.array(count)}
        for i, (h, w) in enumerate(SIZES):
            x = rng.uniform(0, 1, (2, 3, h, w)).astype(np.float32)
            with torch.no_grad():
                y = net(torch.from_numpy(x)).numpy()
            arrays[f"input{i}"] = x.transpose(0, 2, 3, 1)
            arrays[f"output{i}"] = y.transpose(0, 2, 3, 1)
        np.savez_compressed(OUT / f"nafnet_{name}_io.npz", **arrays)
        print(f"{name}: {count} parameters, outputs for {SIZES}")


if __name__ == "__main__":
    main()
