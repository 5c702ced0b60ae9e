"""Speed and memory of Res-HAIR and the Restormer baseline, optionally side by
side with the published PyTorch code; never part of the tests' timings.

    python benchmarks/bench_model.py                       # ours only
    python benchmarks/bench_model.py --reference .ref      # + the reference, ratios

Prints one JSON line per measurement. Each measurement runs in a fresh
subprocess, so its `peak_rss_gb` (the process's peak resident memory, compile
included) is its own; `temp_gb` is XLA's estimate of the compiled program's
temporary buffers and `peak_gpu_gb` the device's peak on a GPU. `s` is the
best of --repeats runs after a warm-up; `compile_s` the cold compile (no
persistent cache). The train step is what users run: `jax.value_and_grad` of
the L1 loss plus `optax.adamw` (the reference hyperparameters) over
`hair_jax.build_model(variant)` with its defaults, jitted with donated state.

With --reference DIR (a folder with the reference's net/HAIR.py and
utils/ResNet.py, see BENCHMARKS.md) the same invocation then runs
../shared/tools/ref_bench.py on the same shapes and prints one "ratio" line
per shared measurement: speedup = reference time / our time, and
mem_ratio = our peak memory / the reference's.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_REF_BENCH = os.path.join(HERE, "..", "..", "shared", "tools", "ref_bench.py")


def _peak_memory(jax):
    device = jax.devices()[0]
    if device.platform == "cpu":
        return {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}
    stats = device.memory_stats() or {}
    return {"peak_gpu_gb": round(stats.get("peak_bytes_in_use", 0) / 2**30, 2)}


def measure(spec):
    """Runs one measurement described by `spec` (a dict) and returns its row."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from flax import nnx

    from hair_jax.nn import models, restormer

    overrides = dict(spec.get("overrides", {}))
    b, hw, what = spec["batch"], spec["size"], spec["what"]
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.rand(b, hw, hw, 3), jnp.float32)
    if what == "part":
        c = spec["channels"]
        # A bare block: of the model overrides only the compute dtype applies.
        kw = {"dtype": jnp.dtype(overrides["dtype"])} if "dtype" in overrides else {}
        block = restormer.TransformerBlock(c, 1, 2.66, rngs=nnx.Rngs(0), **kw)
        module = {"block": block, "attn": block.attn, "ffn": block.ffn}[spec["part"]]
        graphdef, params = nnx.split(module)
        x = jnp.asarray(rng.rand(b, hw, hw, c), jnp.float32)
        apply = lambda p, x: nnx.merge(graphdef, p)(x)
        if not spec["grad"]:
            fn, args = jax.jit(apply), (params, x)
        else:
            fn, args = jax.jit(jax.grad(lambda p, x: jnp.sum(apply(p, x)), (0, 1))), (params, x)
    else:
        model = models.build_model(spec["variant"], **overrides)
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        forward = lambda p, x: nnx.merge(graphdef, p, rest)(x)
        if what == "infer":
            fn, args = jax.jit(forward), (params, x)
        else:
            y = jnp.asarray(rng.rand(b, hw, hw, 3), jnp.float32)
            opt = optax.adamw(2e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)

            def step(p, o, x, y):
                loss, grads = jax.value_and_grad(lambda p: jnp.mean(jnp.abs(forward(p, x) - y)))(p)
                updates, o = opt.update(grads, o, p)
                return optax.apply_updates(p, updates), o, loss

            fn = jax.jit(step, donate_argnums=(0, 1))
            args = (params, opt.init(params), x, y)

    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    times = []
    for _ in range(spec["repeats"] + 1):  # the first run is a warm-up
        start = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - start)
        if what == "train":
            args = (out[0], out[1], *args[2:])
    s = min(times[1:])
    row = {
        "peer": "hair-jax",
        "device": jax.devices()[0].device_kind,
        "variant": spec.get("variant", "block"),
        "what": spec["name"],
        **overrides,
        "s": round(s, 4),
        "compile_s": round(compile_s, 1),
    }
    if what in ("infer", "train"):
        row["images_per_s"] = round(b / s, 2)
    if mem is not None:
        row["temp_gb"] = round(mem.temp_size_in_bytes / 2**30, 2)
    return {**row, **_peak_memory(jax)}


def _specs(args):
    for overrides in args.settings:
        for variant in args.variants:
            for hw in args.infer:
                yield dict(
                    variant=variant,
                    what="infer",
                    batch=1,
                    size=hw,
                    name=f"infer 1x{hw}x{hw}",
                    overrides=overrides,
                )
            for b in args.train:
                hw = args.train_size
                yield dict(
                    variant=variant,
                    what="train",
                    batch=b,
                    size=hw,
                    name=f"train step {b}x{hw}x{hw}",
                    overrides=overrides,
                )
        if args.block:
            c, hw = args.block
            for part, grad, name in (
                ("block", False, f"block C{c} 1x{hw}x{hw} fwd"),
                ("block", True, f"block C{c} 1x{hw}x{hw} fwd+bwd"),
                ("attn", True, f"block C{c} attn fwd+bwd"),
                ("ffn", True, f"block C{c} ffn fwd+bwd"),
            ):
                yield dict(
                    what="part",
                    part=part,
                    grad=grad,
                    channels=c,
                    batch=1,
                    size=hw,
                    name=name,
                    overrides=overrides,
                )


def _run_one(spec):
    """Measures `spec` in a fresh Python process; returns its row (or an error row)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode or not lines:
        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {
            "peer": "hair-jax",
            "what": spec["name"],
            "variant": spec.get("variant"),
            **spec.get("overrides", {}),
            "error": err[:300],
        }
    return json.loads(lines[-1])


def _reference_rows(args):
    cmd = [
        sys.executable,
        args.ref_bench,
        args.reference,
        "--sizes",
        *map(str, args.infer),
        "--train_batches",
        *map(str, args.train),
        "--train_size",
        str(args.train_size),
        "--repeats",
        str(args.repeats),
    ]
    if args.block:
        cmd += ["--block", *map(str, args.block)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        sys.exit(f"error: the reference benchmark failed (exit {proc.returncode}): {' '.join(cmd)}")
    return [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]


def _ratio(ours, ref):
    row = {
        "what": "ratio",
        "of": ours["what"],
        "variant": ours["variant"],
        "ours_s": ours["s"],
        "ref_s": ref["s"],
        "speedup": round(ref["s"] / ours["s"], 2),
    }
    # Peak memory compares whole models only: ref_bench reports its process's
    # peak so far, which for the block rows includes its train steps.
    for key in ("peak_rss_gb", "peak_gpu_gb") if ours["variant"] != "block" else ():
        if ours.get(key) and ref.get(key):
            row["mem_ratio"] = round(ours[key] / ref[key], 2)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="*", default=["res_hair", "restormer"])
    parser.add_argument(
        "--infer", nargs="*", type=int, default=[128, 256, 512], help="inference sizes (batch 1)"
    )
    parser.add_argument("--train", nargs="*", type=int, default=[1, 4], help="train batch sizes")
    parser.add_argument("--train_size", type=int, default=128)
    parser.add_argument(
        "--block",
        nargs=2,
        type=int,
        metavar=("C", "HW"),
        default=None,
        help="also time one TransformerBlock (e.g. 96 128)",
    )
    parser.add_argument(
        "--settings",
        type=json.loads,
        nargs="*",
        default=[{}],
        help='model overrides to compare, as JSON, e.g. \'{"remat": "none"}\'',
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference", metavar="DIR", help="also run the PyTorch reference")
    parser.add_argument("--ref_bench", default=DEFAULT_REF_BENCH, help="path of ref_bench.py")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(json.loads(args.one))), flush=True)
        return
    if args.reference and not os.path.isfile(args.ref_bench):
        sys.exit(f"error: {args.ref_bench} not found; pass --ref_bench PATH")
    ours = []
    for spec in _specs(args):
        spec["repeats"] = args.repeats
        ours.append(_run_one(spec))
        print(json.dumps(ours[-1]), flush=True)
    if not args.reference:
        return
    ref = {r["what"]: r for r in _reference_rows(args)}
    for r in ref.values():
        print(json.dumps(r), flush=True)
    for row in ours:
        if row.get("variant") in ("res_hair", "block") and row["what"] in ref and "s" in row:
            print(json.dumps(_ratio(row, ref[row["what"]])), flush=True)


if __name__ == "__main__":
    main()
