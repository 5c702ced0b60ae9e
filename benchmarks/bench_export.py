"""Inference time of the standalone artifacts vs the model in JAX, on this CPU.

    python benchmarks/bench_export.py                          # Res-HAIR (paper size), 256 and 512 px
    python benchmarks/bench_export.py --variant tiny res_hair nafnet_sidd_32  # the three models
    python benchmarks/bench_export.py --artifacts DIR --export_only  # write the artifacts only
    python benchmarks/bench_export.py --variant tiny --sizes 64 --repeats 1  # a quick check

Builds each `--variant` with random weights (times do not depend on them)
and writes, with `hair_jax.export.export` (so each is first checked against
the model), its `.jaxexport` and its `.onnx` (both take any size) into
--artifacts (default: a temporary folder; artifacts already there are
reused, so the jax2onnx conversion can run apart from the timing). Then it
times, per size, batch 1, the best of --repeats rounds after a warm-up
(compiles and session creation not included), each round one call of each:

  * `jax`: the NNX model through `inference.Predictor` (jitted, as eval.py
    and hair-restore run it; the CPU forms of `PLATFORM_DEFAULTS`);
  * `jaxexport`: the `.jaxexport` artifact (jax.export, `conv_impl="fast"`);
  * `onnxruntime`: the `.onnx` artifact in onnxruntime's CPU provider, with
    its default threads and graph optimisations.

Prints one JSON line per artifact written (with the ONNX graph's node
counts), one per measurement, then per variant and size the ratios
onnxruntime / jax and jaxexport / jax, then the versions. With --profile,
also one line per variant and size with the ten ONNX op types that took
most of onnxruntime's kernel time, in % (its profiler, over two calls).
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


SUFFIXES = {"jax": ".jaxexport", "onnx": ".onnx"}


def best_of(fns, repeats):
    """{name: best time in s}: after a warm-up call each, `repeats` rounds of one call each.

    In rounds, not one runtime after the other, so that a machine whose
    speed drifts over the minutes of a run slows them all alike.
    """
    best = {}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
    return {name: round(s, 4) for name, s in best.items()}


def onnx_ops(path):
    """{op type: count} of an ONNX graph, with the total under "nodes"."""
    import collections

    import onnx

    ops = collections.Counter(n.op_type for n in onnx.load(path).graph.node)
    return {"nodes": sum(ops.values()), **dict(ops.most_common())}


def onnx_profile(path, x):
    """{op type: % of onnxruntime's kernel time}, the top ten, over two calls on x."""
    import collections

    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {"image": x}
        for extra in session.get_inputs()[1:]:  # no GIV given: the image's own
            feed[extra.name] = np.zeros(extra.shape, np.float32)
        for _ in range(2):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    kernel = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            kernel[e["args"]["op_name"]] += e["dur"]
    total = sum(kernel.values())
    return {op: round(100 * t / total, 1) for op, t in kernel.most_common(10)}


def write_artifacts(model, variant, folder):
    """{"jax" or "onnx": path}, exporting what `folder` does not hold yet."""
    from hair_jax import export

    paths = {fmt: os.path.join(folder, variant + suffix) for fmt, suffix in SUFFIXES.items()}
    for fmt, path in paths.items():
        if not os.path.exists(path):
            t = time.perf_counter()
            export.export(model, path, fmt=fmt)
            line = {"wrote": os.path.basename(path), "s": round(time.perf_counter() - t, 1)}
            print(json.dumps(line), flush=True)
    print(json.dumps({"onnx": os.path.basename(paths["onnx"]), **onnx_ops(paths["onnx"])}))
    return paths


def main():
    import jax
    import numpy as np
    import onnxruntime as ort
    from flax import nnx

    from hair_jax import inference
    from hair_jax.io import artifacts
    from hair_jax.nn import models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", nargs="+", default=["res_hair"], help="model variants")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--artifacts", help="folder for the artifacts (kept and reused)")
    parser.add_argument("--export_only", action="store_true", help="write them, time nothing")
    parser.add_argument("--profile", action="store_true", help="onnxruntime's time per op type")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.artifacts or tmp
        os.makedirs(folder, exist_ok=True)
        for variant in args.variant:
            model = models.build_model(variant, rngs=nnx.Rngs(0))
            paths = write_artifacts(model, variant, folder)
            if args.export_only:
                continue
            predictor = inference.Predictor(model)
            lowered = artifacts.read_artifact(paths["jax"])
            onnx = artifacts.read_artifact(paths["onnx"])
            for size in args.sizes:
                shape = (1, size, size, 3)
                x = np.random.default_rng(size).uniform(0, 1, shape).astype(np.float32)
                runs = {
                    "jax": lambda: jax.block_until_ready(predictor.restore(x)),
                    "jaxexport": lambda: jax.block_until_ready(lowered.restore(x)),
                    "onnxruntime": lambda: onnx.restore(x),
                }
                for name, s in best_of(runs, args.repeats).items():
                    rows.append({"model": variant, "runtime": name, "size": size, "s": s})
                    print(json.dumps(rows[-1]), flush=True)
                if args.profile:
                    pct = onnx_profile(paths["onnx"], x)
                    print(json.dumps({"profile": variant, "size": size, "kernel_time_pct": pct}))
    by = {(r["model"], r["runtime"], r["size"]): r["s"] for r in rows}
    for variant in args.variant if rows else []:
        for size in args.sizes:
            ratio = {"ratio": True, "model": variant, "size": size}
            for name in ("onnxruntime", "jaxexport"):
                ratio[f"{name}_over_jax"] = round(
                    by[(variant, name, size)] / by[(variant, "jax", size)], 3
                )
            print(json.dumps(ratio))
    versions = {"jax": jax.__version__, "onnxruntime": ort.__version__, "cpus": os.cpu_count()}
    print(json.dumps(versions))


if __name__ == "__main__":
    main()
