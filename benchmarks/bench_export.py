"""Inference time of the standalone artifacts vs the model in JAX, on this CPU.

    python benchmarks/bench_export.py                          # Res-HAIR (paper size), 256 and 512 px
    python benchmarks/bench_export.py --artifacts DIR --export_only  # write the artifacts only
    python benchmarks/bench_export.py --variant tiny --sizes 32 --repeats 1  # a quick check

Builds `--variant` with random weights (times do not depend on them) and
writes, with `hair_jax.export.export` (so each is first checked against the
model), one `.jaxexport` and per size an `.onnx` (batch 1) into --artifacts
(default: a temporary folder; artifacts already there are reused, so the
slow jax2onnx conversion can run apart from the timing). Then it times,
batch 1, the best of --repeats calls after a warm-up (compiles and session
creation not included):

  * `jax`: the NNX model through `inference.Predictor` (jitted, as eval.py
    and hair-restore run it; the CPU forms of `PLATFORM_DEFAULTS`);
  * `jaxexport`: the `.jaxexport` artifact (jax.export, `conv_impl="fast"`);
  * `onnxruntime`: the `.onnx` artifact in onnxruntime's CPU provider, with
    its default threads and graph optimisations.

Prints one JSON line per measurement, then per size the ratios
onnxruntime / jax and jaxexport / jax, then the versions.
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def best_of(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return round(best, 4)


def write_artifacts(model, variant, sizes, folder):
    """{"jax" or size: path}, exporting what `folder` does not hold yet."""
    from hair_jax import export

    paths = {"jax": os.path.join(folder, f"{variant}.jaxexport")}
    paths.update({size: os.path.join(folder, f"{variant}_{size}.onnx") for size in sizes})
    for key, path in paths.items():
        if not os.path.exists(path):
            if key == "jax":
                export.export(model, path, fmt="jax")
            else:
                export.export(model, path, fmt="onnx", batch=1, size=key)
            print(json.dumps({"wrote": os.path.basename(path)}), flush=True)
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
    parser.add_argument("--variant", default="res_hair", help="a model variant")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--artifacts", help="folder for the artifacts (kept and reused)")
    parser.add_argument("--export_only", action="store_true", help="write them, time nothing")
    args = parser.parse_args()
    model = models.build_model(args.variant, rngs=nnx.Rngs(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.artifacts or tmp
        os.makedirs(folder, exist_ok=True)
        paths = write_artifacts(model, args.variant, args.sizes, folder)
        if args.export_only:
            return
        predictor = inference.Predictor(model)
        lowered = artifacts.read_artifact(paths["jax"])
        rows = []
        for size in args.sizes:
            onnx = artifacts.read_artifact(paths[size])
            x = np.random.default_rng(size).uniform(0, 1, (1, size, size, 3)).astype(np.float32)
            runs = {
                "jax": lambda: jax.block_until_ready(predictor.restore(x)),
                "jaxexport": lambda: jax.block_until_ready(lowered.restore(x)),
                "onnxruntime": lambda: onnx.restore(x),
            }
            for name, fn in runs.items():
                s = best_of(fn, args.repeats)
                rows.append({"model": args.variant, "runtime": name, "size": size, "s": s})
                print(json.dumps(rows[-1]), flush=True)
    by = {(r["runtime"], r["size"]): r["s"] for r in rows}
    for size in args.sizes:
        ratio = {"ratio": True, "size": size}
        for name in ("onnxruntime", "jaxexport"):
            ratio[f"{name}_over_jax"] = round(by[(name, size)] / by[("jax", size)], 3)
        print(json.dumps(ratio))
    versions = {"jax": jax.__version__, "onnxruntime": ort.__version__, "cpus": os.cpu_count()}
    print(json.dumps(versions))


if __name__ == "__main__":
    main()
