"""Speed of Res-HAIR forward passes and train steps; never part of the tests.

    python benchmarks/bench_model.py [--variant res_hair] [--conv_impl auto lax]

Prints one JSON line per measurement: best of --repeats runs after a
warm-up, compile time separately, and XLA's temporary-buffer estimate.
The reference PyTorch numbers on the same machine come from
../shared/tools/ref_bench.py (see BENCHMARKS.md).
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from hair_jax import models


def _best(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def _measure(what, jitted, args, repeats, **info):
    start = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))  # warm-up
    mem = compiled.memory_analysis()
    temp_mb = getattr(mem, "temp_size_in_bytes", 0) / 2**20 if mem else None
    row = dict(
        what=what,
        **info,
        s=round(_best(lambda: compiled(*args), repeats), 4),
        compile_s=round(compile_s, 1),
        temp_mb=temp_mb and round(temp_mb),
    )
    print(json.dumps(row), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="res_hair")
    parser.add_argument("--conv_impl", nargs="+", default=["auto", "lax"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--train_batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    for impl in args.conv_impl:
        model = models.build_model(args.variant, conv_impl=impl)
        graphdef, params = nnx.split(model, nnx.Param)
        info = dict(variant=args.variant, conv_impl=impl, device=jax.devices()[0].device_kind)
        forward = jax.jit(lambda p, x: nnx.merge(graphdef, p)(x))
        for hw in args.sizes:
            x = jnp.asarray(rng.rand(1, hw, hw, 3), jnp.float32)
            _measure(f"infer 1x{hw}x{hw}", forward, (params, x), args.repeats, **info)

        opt = optax.adamw(2e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)

        def step(p, o, x, y):
            loss = lambda p: jnp.mean(jnp.abs(nnx.merge(graphdef, p)(x) - y))
            grads = jax.grad(loss)(p)
            updates, o = opt.update(grads, o, p)
            return optax.apply_updates(p, updates), o

        b = args.train_batch
        x = jnp.asarray(rng.rand(b, 128, 128, 3), jnp.float32)
        y = jnp.asarray(rng.rand(b, 128, 128, 3), jnp.float32)
        _measure(
            f"train step {b}x128x128",
            jax.jit(step),
            (params, opt.init(params), x, y),
            args.repeats,
            **info,
        )


if __name__ == "__main__":
    main()
