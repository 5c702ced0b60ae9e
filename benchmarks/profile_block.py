"""Where one TransformerBlock's forward+backward spends its time, op by op.

    python benchmarks/profile_block.py [--channels 96] [--size 128] [--top 20]

Traces a few runs of the jitted gradient with `jax.profiler` and prints the
compiled program's ops (XLA fusions) by mean time per run, each with its
output shape and the JAX operation it came from. The total is the sum over
ops (on CPU the two cores overlap some of them).
"""

import argparse
import collections
import glob
import gzip
import json
import re
import tempfile

import jax
import jax.numpy as jnp
from flax import nnx

from hair_jax.nn import restormer


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=96)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    block = restormer.TransformerBlock(args.channels, 1, 2.66, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(block)
    x = jax.random.normal(jax.random.key(0), (1, args.size, args.size, args.channels))
    loss = lambda s, x: jnp.sum(nnx.merge(graphdef, s)(x) ** 2)
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    hlo = grad.lower(state, x).compile().as_text()
    # op name -> (output shape, the JAX op it came from)
    origin = {
        m[1]: (m[2], m[3])
        for m in re.finditer(r"^\s*%?([\w.\-]+) = (\S+) .*?op_name=\"([^\"]+)\"", hlo, re.M)
    }
    jax.block_until_ready(grad(state, x))
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        for _ in range(args.runs):
            jax.block_until_ready(grad(state, x))
        jax.profiler.stop_trace()
        (path,) = glob.glob(f"{trace_dir}/**/*perfetto_trace.json.gz", recursive=True)
        events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    ms = collections.Counter()
    for e in events:
        if e.get("ph") == "X" and e.get("name") in origin:
            ms[e["name"]] += e.get("dur", 0) / 1000 / args.runs
    print(f"sum over ops: {sum(ms.values()):.1f} ms per forward+backward")
    for name, t in ms.most_common(args.top):
        shape, op = origin[name]
        print(f"{t:7.1f} ms  {name:28s} {shape:28s} {op.split('jit(<lambda>)/')[-1][:60]}")


if __name__ == "__main__":
    main()
