"""Inference time of our NAFNet vs the official PyTorch NAFNet, and NAF-HAIR's overhead.

    python benchmarks/bench_nafnet.py                                    # ours only
    python benchmarks/bench_nafnet.py --nafnet NAFNET_CHECKOUT --torch_python TORCH_PYTHON

Prints one JSON line per measurement: `s` is the best of --repeats forward
passes after a warm-up (the compile is not included), batch 1, on
--sizes square images. Rows: ours (`nafnet`, jitted), NAF-HAIR on the same
U-Net (`naf_hair`, GIV computed from the image), and with --nafnet the
official `NAFNet` (torch.no_grad, eval mode, float32) run by --torch_python,
an interpreter with torch and numpy (a side environment; torch is never a
hair-jax dependency). Then one "ratio" line per size: official / ours and
NAF-HAIR / NAFNet. The same command at --sizes 64 --variant nafnet_tiny is
a quick check that it runs; its times mean nothing.
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

TORCH_BENCH = """
import json, sys, time, torch
sys.path.insert(0, {here!r})
from make_nafnet_fixtures import load_official
from pathlib import Path
arch = load_official(Path({repo!r}))
torch.set_num_threads({threads})
net = arch.NAFNet(width={width}, enc_blk_nums={enc}, middle_blk_num={middle},
                  dec_blk_nums={dec}).eval()
for size in {sizes}:
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        net(x)
        best = float("inf")
        for _ in range({repeats}):
            t = time.perf_counter(); net(x); best = min(best, time.perf_counter() - t)
    print(json.dumps({{"model": "official_nafnet", "size": size, "s": round(best, 4)}}))
"""


def ours(variant, sizes, repeats):
    """Best forward times of `variant` and its NAF-HAIR at each size."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from hair_jax.nn import models

    rows = []
    hair_variant = variant.replace("nafnet", "naf_hair")
    cfg = models.get_config(variant)
    for name, arch in (("nafnet", "nafnet"), ("naf_hair", "naf_hair")):
        model = models.build_model(cfg, arch=arch)
        forward = nnx.jit(lambda m, x: m(x))
        for size in sizes:
            x = jax.random.uniform(jax.random.key(0), (1, size, size, 3), jnp.float32)
            forward(model, x).block_until_ready()
            best = float("inf")
            for _ in range(repeats):
                t = time.perf_counter()
                forward(model, x).block_until_ready()
                best = min(best, time.perf_counter() - t)
            rows.append(
                {
                    "model": name,
                    "variant": variant if arch == "nafnet" else hair_variant,
                    "size": size,
                    "s": round(best, 4),
                }
            )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="nafnet_sidd_32", help="a NAFNet variant")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--nafnet", help="a megvii-research/NAFNet checkout (official rows)")
    parser.add_argument("--torch_python", default=sys.executable, help="python with torch")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    rows = ours(args.variant, args.sizes, args.repeats)
    if args.nafnet:
        from hair_jax.nn import models

        cfg = models.get_config(args.variant)
        code = TORCH_BENCH.format(
            here=HERE,
            repo=os.path.abspath(args.nafnet),
            threads=args.threads,
            width=cfg.dim,
            enc=list(cfg.enc_blocks),
            middle=cfg.middle_blocks,
            dec=list(cfg.dec_blocks),
            sizes=list(args.sizes),
            repeats=args.repeats,
        )
        out = subprocess.run(
            [args.torch_python, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    for row in rows:
        print(json.dumps(row))
    by = {(r["model"], r["size"]): r["s"] for r in rows}
    for size in args.sizes:
        ratio = {
            "ratio": True,
            "size": size,
            "naf_hair_over_nafnet": round(by[("naf_hair", size)] / by[("nafnet", size)], 3),
        }
        if ("official_nafnet", size) in by:
            ratio["official_over_ours"] = round(
                by[("official_nafnet", size)] / by[("nafnet", size)], 3
            )
        print(json.dumps(ratio))


if __name__ == "__main__":
    main()
