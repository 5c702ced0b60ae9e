"""Roofline on paper: ideal images/s of Res-HAIR on named accelerators.

    python benchmarks/roofline.py                  # Res-HAIR, train 128 px, inference 512/1024 px
    python benchmarks/roofline.py --variant tiny --train_size 32 --infer 64   # a quick check

XLA's cost analysis of the compiled train step (value_and_grad of the L1
loss plus AdamW, batch 1) and of inference (batch 1) gives FLOPs and bytes
accessed per image. For each accelerator the ideal time per image is
max(FLOPs / peak FLOP/s, bytes / memory bandwidth); the larger term names
the bound (compute or memory). Prints a Markdown table, one row per
(function, dtype, accelerator), and, with --json, the counts as JSON.

What the counts are: XLA:CPU's analysis of the program after its fusion
passes, compiled here (the counts do not depend on the machine's speed, so
they are deterministic). FLOPs are the model's own arithmetic, nearly the
same on any backend; bytes are what XLA:CPU's analysis counts its fused
ops reading and writing, which is more than a GPU/TPU program moves to and
from HBM (their compilers fuse more, and a cache or VMEM absorbs repeated
reads of one operand), so the memory-bound rates are pessimistic. The
compute-only ceiling (peak FLOP/s / FLOPs) is the other end. The model
is built with remat "none" and unrolled levels: XLA's analysis counts a
while loop's body once, so a scan would hide work, and remat "block"
(the TPU and CPU default) adds one more forward of every transformer block
to the train step. The roofline ignores kernel
launch and communication costs: real figures are lower.
"""

import argparse
import json
import os

# Dense peaks (no structured sparsity) and HBM bandwidth, from the vendors'
# datasheets. "f32" is what JAX runs float32 matmuls with at its default
# precision: TF32 tensor cores on NVIDIA Ampere and later, one bf16 pass on
# the TPU MXU. Elementwise work runs on slower vector units on both, so these
# are upper bounds.
ACCELERATORS = {
    # NVIDIA A100 Tensor Core GPU datasheet (SXM 80GB): BF16 312 TFLOPS,
    # TF32 156 TFLOPS, HBM2e 2,039 GB/s.
    "A100 SXM 80GB": {"bfloat16": 312e12, "float32": 156e12, "hbm": 2.039e12},
    # NVIDIA H100 Tensor Core GPU datasheet (SXM): BF16 989 TFLOPS, TF32
    # 494 TFLOPS (half the with-sparsity figures 1,979 / 989), HBM3 3.35 TB/s.
    "H100 SXM": {"bfloat16": 989e12, "float32": 494e12, "hbm": 3.35e12},
    # NVIDIA H200 Tensor Core GPU datasheet (SXM): the H100's compute, HBM3e
    # 4.8 TB/s.
    "H200 SXM": {"bfloat16": 989e12, "float32": 494e12, "hbm": 4.8e12},
    # Google Cloud TPU v5e documentation: 197 TFLOPS bf16, 819 GB/s HBM2.
    "TPU v5e": {"bfloat16": 197e12, "float32": 197e12, "hbm": 0.819e12},
    # Google Cloud TPU v6e (Trillium) documentation: 918 TFLOPS bf16,
    # 1,640 GB/s HBM.
    "TPU v6e": {"bfloat16": 918e12, "float32": 918e12, "hbm": 1.64e12},
}
SOURCES = {
    "A100 SXM 80GB": "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
    "H100 SXM": "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
    "H200 SXM": "https://www.nvidia.com/en-us/data-center/h200/",
    "TPU v5e": "https://cloud.google.com/tpu/docs/v5e",
    "TPU v6e": "https://cloud.google.com/tpu/docs/v6e",
}


def _cost(compiled):
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0]
    return float(cost["flops"]), float(cost["bytes accessed"])


def analyse(variant, dtype, what, size):
    """(FLOPs, bytes accessed) per image of one function at batch 1."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from hair_jax.nn import models

    overrides = {"dtype": dtype, "remat": "none", "scan_blocks": False, "conv_impl": "fast"}
    model = models.build_model(variant, **overrides)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    forward = lambda p, x: nnx.merge(graphdef, p, rest)(x)
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    if what == "infer":
        lowered = jax.jit(forward).lower(params, x)
    else:
        opt = optax.adamw(2e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)

        def step(p, o, x, y):
            loss, grads = jax.value_and_grad(lambda p: jnp.mean(jnp.abs(forward(p, x) - y)))(p)
            updates, o = opt.update(grads, o, p)
            return optax.apply_updates(p, updates), o, loss

        lowered = jax.jit(step).lower(params, jax.eval_shape(opt.init, params), x, x)
    return _cost(lowered.compile())


def roofline(flops, bytes_, peak, hbm):
    """(ideal images/s, bound) of one image's work on one accelerator."""
    compute, memory = flops / peak, bytes_ / hbm
    return 1.0 / max(compute, memory), "compute" if compute >= memory else "memory"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="res_hair")
    parser.add_argument("--train_size", type=int, default=128)
    parser.add_argument("--infer", nargs="*", type=int, default=[512, 1024])
    parser.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    parser.add_argument("--json", action="store_true", help="also print the counts as JSON")
    args = parser.parse_args()
    # Set before jax is imported. Compile time, not run time, matters here:
    # XLA's fusion passes (what the counts depend on) run at every backend
    # optimisation level.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()
    jobs = [("train", args.train_size)] + [("infer", s) for s in args.infer]
    rows = []
    for what, size in jobs:
        for dtype in args.dtypes:
            flops, bytes_ = analyse(args.variant, dtype, what, size)
            row = {"what": what, "size": size, "dtype": dtype, "flops": flops, "bytes": bytes_}
            rows.append(row)
            if args.json:
                print(json.dumps(rows[-1]), flush=True)
    print("\n".join(table(rows, args.variant)))


def table(rows, variant):
    """The Markdown table of `rows` (dicts with what, size, dtype, flops, bytes)."""
    names = list(ACCELERATORS)
    lines = [
        f"{variant}, per image (batch 1). Each cell: ideal images/s (the bound); "
        "in brackets, the compute-only ceiling FLOP/s / FLOPs.",
        "",
        "| function | dtype | GFLOP | GB accessed | " + " | ".join(names) + " |",
        "|---|---|---|---|" + "---|" * len(names),
    ]
    for r in rows:
        cells = []
        for name in names:
            spec = ACCELERATORS[name]
            rate, bound = roofline(r["flops"], r["bytes"], spec[r["dtype"]], spec["hbm"])
            ceiling = spec[r["dtype"]] / r["flops"]
            cells.append(f"{rate:,.0f} ({bound}) [{ceiling:,.0f}]")
        label = "train step" if r["what"] == "train" else "inference"
        lines.append(
            f"| {label} {r['size']}x{r['size']} | {r['dtype']} | {r['flops'] / 1e9:,.1f} | "
            f"{r['bytes'] / 1e9:,.2f} | " + " | ".join(cells) + " |"
        )
    lines += ["", "Sources: " + "; ".join(f"{k}: {v}" for k, v in SOURCES.items())]
    return lines


if __name__ == "__main__":
    main()
