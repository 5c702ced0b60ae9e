"""Writes a standalone artifact: a model's program and weights, runnable without hair_jax.

    python -m hair_jax.export CHECKPOINT OUT.jaxexport     # jax.export, cpu/cuda/tpu
    python -m hair_jax.export CHECKPOINT OUT.onnx          # ONNX, opset 23
    python -m hair_jax.export CHECKPOINT OUT.safetensors   # weights only, for PyTorch
    hair-export ...                                         # the same, console script

CHECKPOINT is anything eval.py takes (a training workdir, a model export,
the authors' .ckpt). The format follows OUT's suffix (or `--format`); what
the files hold is in `hair_jax.io.artifacts`. Both take images of any
height and width the model takes (symbolic sizes). The programs run the
model with exact forward forms: for jax.export `conv_impl="fast"` (the
per-image 1x1 and depthwise convolutions as matmuls and shifted
multiply-adds, which need no batch-dependent `feature_group_count`, so the
batch stays symbolic too), for ONNX `conv_impl="onnx"` (see
`export_onnx`). Before anything is written the artifact is run once on
random images and compared with the model (`--no_verify` skips this).

`.safetensors` holds the weights alone, in the reference PyTorch code's
names and layouts where it has them (`hair_jax.io.safetensors_file`); before
it is written it is read back as `load_model` reads it, and the rebuilt
model must have the same weights and restore the same random images.

ONNX needs jax2onnx, installed without its dependencies, because jax2onnx
pins orbax-checkpoint < 0.11.37 and would downgrade hair_jax's (docs/deployment.md,
"Standalone artifacts"): `pip install 'hair-jax[onnx]' && pip install
--no-deps jax2onnx==0.17.1`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import tempfile
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hair_jax import inference, loading
from hair_jax.commands import common
from hair_jax.io import artifacts, onnx_convert, safetensors_file
from hair_jax.io.files import error_line, write_atomic
from hair_jax.io.torch_pickle import CheckpointError
from hair_jax.nn import models

PROG = "python -m hair_jax.export"
PLATFORMS = ("cpu", "cuda", "tpu")
ONNX_OPSET = 23
VERIFY_ATOL = 1e-4


class ExportFailed(ValueError):
    """The model could not be exported, or the artifact differs from it."""


def inference_model(model: nnx.Module, conv_impl: str = "fast") -> nnx.Module:
    """`model` with its weights, built with the forward-only forms an artifact runs.

    The conv forms are exact (`hair_jax.nn.layers`): "fast" for jax.export,
    "onnx" for ONNX; remat and scan only change how training differentiates
    and compiles, so they are left out.
    """
    forward_only = {"conv_impl": conv_impl, "remat": "none", "scan_blocks": False}
    names = {f.name for f in dataclasses.fields(model.config)}
    cfg = dataclasses.replace(model.config, **{k: v for k, v in forward_only.items() if k in names})
    return nnx.merge(nnx.graphdef(models.abstract_model(cfg)), nnx.state(model))


def manifest_of(model: nnx.Module, **fields) -> artifacts.Manifest:
    """The manifest of `model`: its config as given ("auto" kept), shapes, `fields`."""
    return artifacts.Manifest(
        model=dataclasses.asdict(model.config),
        has_giv=model.has_giv,
        min_size=model.min_size,
        multiple=model.multiple,
        giv_dim=model.config.giv_dim if model.has_giv else 0,
        levels=tuple(model.level_names),
        jax_version=jax.__version__,
        **fields,
    )


def _programs(model):
    """name -> (f(model, *args), arg kinds) of the artifact's functions."""
    clip = lambda y: jnp.clip(y, 0.0, 1.0)
    programs = {"restore": (lambda m, x: clip(m(x)), ("x",))}
    if model.has_giv:
        programs["giv"] = (lambda m, x: m.giv(x), ("x",))
        programs["restore_giv"] = (lambda m, x, g: clip(m(x, giv=g)), ("x", "g"))
        programs["selectors"] = (lambda m, g: m.selectors(g), ("g",))
    return programs


def export_jax(model: nnx.Module, *, platforms=PLATFORMS) -> bytes:
    """The `.jaxexport` file's bytes: every program for `platforms`, weights once."""
    manifest = manifest_of(model, platforms=tuple(platforms))  # the config as trained
    model = inference_model(model)
    graphdef, state = nnx.split(model)
    leaves, treedef = jax.tree.flatten(state)
    images = _symbolic_images(manifest, "b")
    x_spec = jax.ShapeDtypeStruct(images, jnp.float32)
    g_spec = jax.ShapeDtypeStruct((images[0], manifest.giv_dim), jnp.float32)
    # Every symbol must occur in a program's arguments: `selectors` has its own batch.
    g_alone = jax.ShapeDtypeStruct((*jax.export.symbolic_shape("b"), manifest.giv_dim), jnp.float32)
    weight_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:
        z.writestr(artifacts.MANIFEST, manifest.to_json())
        for name, (fn, kinds) in _programs(model).items():
            specs = {"x": x_spec, "g": g_spec} if "x" in kinds else {"g": g_alone}

            def program(weights, *args, fn=fn):
                return fn(nnx.merge(graphdef, jax.tree.unflatten(treedef, weights)), *args)

            try:
                exported = jax.export.export(jax.jit(program), platforms=platforms)(
                    weight_specs, *(specs[k] for k in kinds)
                )
            except Exception as e:  # noqa: BLE001 - lowering errors come in many types
                raise ExportFailed(
                    f"{model.config.arch} cannot be lowered with symbolic sizes ({error_line(e)})"
                ) from None
            z.writestr(f"{name}.bin", exported.serialize())
        weights = io.BytesIO()
        np.savez(weights, **{f"w{i}": np.asarray(x) for i, x in enumerate(leaves)})
        z.writestr(artifacts.WEIGHTS, weights.getvalue())
    return buffer.getvalue()


def _symbolic_images(manifest: artifacts.Manifest, batch: int | str) -> tuple:
    """The image shape (batch, m*h, m*w, 3), h and w symbolic and at least `min_size` / m."""
    m = manifest.multiple
    low = -(-manifest.min_size // m)
    return jax.export.symbolic_shape(
        f"{batch}, {m}*h, {m}*w, 3", constraints=(f"h >= {low}", f"w >= {low}")
    )


def export_onnx(model: nnx.Module) -> bytes:
    """The `.onnx` file's bytes: one graph for images of any size the model takes.

    Height and width are symbolic (multiples of the model's `multiple`, at
    least its `min_size`). The graph runs the model's ONNX form
    (`conv_impl="onnx"`: its convolutions as ONNX `Conv` nodes, 1x1 ones as
    matmuls). A model with per-image weights (a GIV) computes each image's
    kernels and runs them as an ordinary `Conv`, whose group count ONNX
    fixes in the graph, so its batch is 1 (`OnnxArtifact` runs a batch image
    by image); the others take any batch.
    """
    try:
        import jax2onnx  # noqa: F401 - optional: see the module docstring
    except ImportError:
        raise ExportFailed(
            "ONNX export needs jax2onnx: pip install 'hair-jax[onnx]' && "
            "pip install --no-deps jax2onnx==0.17.1"
        ) from None
    batch = 1 if model.has_giv else None
    manifest = manifest_of(model, batch=batch)
    model = inference_model(model, conv_impl="onnx")
    clip = lambda y: jnp.clip(y, 0.0, 1.0)
    images = _symbolic_images(manifest, batch or "b")
    inputs, names = [jax.ShapeDtypeStruct(images, jnp.float32)], ["image"]
    outputs = ["restored"]
    if manifest.has_giv:

        def fn(image, giv, use_giv):
            f = model.features(image, giv, use_giv)  # one encoder pass for both cases
            sel = model.selectors(f["giv"])
            return (clip(f["output"]), f["giv"], *(sel[k] for k in manifest.levels))

        inputs += [
            jax.ShapeDtypeStruct((batch, manifest.giv_dim), jnp.float32),
            jax.ShapeDtypeStruct((batch, 1), jnp.float32),
        ]
        names += ["given_giv", "use_given_giv"]
        outputs += ["giv", *(f"selectors/{k}" for k in manifest.levels)]
    else:
        fn = lambda image: clip(model(image))
    try:
        proto = onnx_convert.to_onnx(
            fn,
            inputs,
            opset=ONNX_OPSET,
            input_names=names,
            output_names=outputs,
            model_name=f"hair_jax_{model.config.arch}",
        )
    except Exception as e:  # noqa: BLE001 - converter errors come in many types
        raise ExportFailed(
            f"jax2onnx cannot convert {model.config.arch} ({error_line(e)})"
        ) from None
    entry = proto.metadata_props.add()
    entry.key, entry.value = artifacts.ONNX_METADATA_KEY, manifest.to_json()
    return proto.SerializeToString()


def verify(model: nnx.Module, path: str, *, seed: int = 0) -> float:
    """Runs the artifact at `path` and `model` on the same random images; the max difference.

    Raises ExportFailed if it exceeds VERIFY_ATOL.
    """
    artifact = artifacts.read_artifact(path)
    rng = np.random.default_rng(seed)
    m = artifact.multiple
    side = -(-max(artifact.min_size, 32) // m) * m
    shape = (2, side, side + m, 3)
    x = rng.uniform(0, 1, shape).astype(np.float32)
    reference = inference.Predictor(model)
    diffs = [
        np.abs(np.asarray(artifact.restore(x)) - np.asarray(reference.restore(jnp.asarray(x))))
    ]
    if artifact.has_giv:
        g = np.asarray(reference.giv(jnp.asarray(x)))
        diffs.append(np.abs(np.asarray(artifact.giv(x)) - g))
        donor = np.roll(g, 1, axis=0)
        diffs.append(
            np.abs(
                np.asarray(artifact.restore(x, donor))
                - np.asarray(reference.restore(jnp.asarray(x), jnp.asarray(donor)))
            )
        )
        ours, theirs = artifact.selectors(g), reference.selectors(jnp.asarray(g))
        diffs += [np.abs(np.asarray(ours[k]) - np.asarray(theirs[k])) for k in theirs]
    worst = float(max(d.max() for d in diffs))
    if not worst <= VERIFY_ATOL:
        raise ExportFailed(f"{path} differs from the model by {worst:.3g} (> {VERIFY_ATOL})")
    return worst


def verify_weights(model: nnx.Module, path: str, *, seed: int = 0) -> float:
    """Reads the `.safetensors` file at `path` back into a model, compares it with `model`.

    The weights must be equal and the restored random images within
    VERIFY_ATOL; returns the max difference of the images, else ExportFailed.
    """
    loaded = safetensors_file.load_safetensors(path)
    ours, theirs = (
        {".".join(map(str, k)): v.get_value() for k, v in nnx.to_flat_state(nnx.state(m))}
        for m in (model, loaded)
    )
    differ = sorted(ours.keys() ^ theirs.keys())
    differ = differ or [k for k in ours if not np.array_equal(ours[k], theirs[k])]
    if differ:
        raise ExportFailed(f"{path} does not hold the model's {differ[0]}")
    m = model.multiple
    side = -(-max(model.min_size, 32) // m) * m
    x = jnp.asarray(np.random.default_rng(seed).uniform(0, 1, (2, side, side + m, 3)), jnp.float32)
    a, b = inference.Predictor(model).restore(x), inference.Predictor(loaded).restore(x)
    worst = float(jnp.abs(a - b).max())
    if not worst <= VERIFY_ATOL:
        raise ExportFailed(f"{path} differs from the model by {worst:.3g} (> {VERIFY_ATOL})")
    return worst


def export(model: nnx.Module, out: str, *, fmt: str, check: bool = True) -> float | None:
    """Writes `model` as `out` (atomically) in format `fmt`; returns the verified error."""
    if fmt == "safetensors":
        data, check_file = safetensors_file.to_bytes(model), verify_weights
    elif fmt == "jax":
        data, check_file = export_jax(model), verify
    else:
        data, check_file = export_onnx(model), verify
    directory = os.path.dirname(os.path.abspath(out))
    with tempfile.TemporaryDirectory(dir=directory, prefix=".export-") as tmp:
        trial = os.path.join(tmp, os.path.basename(out))
        with open(trial, "wb") as f:
            f.write(data)
        error = check_file(model, trial) if check else None
    write_atomic(out, data)
    return error


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a standalone artifact (.jaxexport or .onnx) that runs without "
        "hair_jax, or the weights as .safetensors.",
        epilog="Exit codes: 0 written, 2 bad arguments, checkpoint or export.",
    )
    common.add_checkpoint_arguments(parser, positional=True)
    suffix = {
        "jax": artifacts.JAX_SUFFIX,
        "onnx": artifacts.ONNX_SUFFIX,
        "safetensors": safetensors_file.SUFFIX,
    }
    parser.add_argument("out", help=f"the file: *{', *'.join(suffix.values())}")
    parser.add_argument("--format", choices=tuple(suffix), help="default: from OUT's suffix")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("--no_verify", action="store_true", help="skip the check against the model")
    args = parser.parse_args(argv)
    by_suffix = {v: k for k, v in suffix.items()}.get(os.path.splitext(args.out)[1])
    if by_suffix is None:
        parser.error(f"OUT must end in {', '.join(suffix.values())}, got {args.out}")
    if args.format and args.format != by_suffix:
        parser.error(f"--format {args.format} writes *{suffix[args.format]}, not {args.out}")
    args.format = by_suffix
    if os.path.exists(args.out) and not args.overwrite:
        parser.error(f"{args.out} exists; choose another OUT or pass --overwrite")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    loaded = common.load_checkpoint(PROG, args)
    if loaded is None:
        return 2
    try:
        if loaded.kind == loading.ARTIFACT:
            raise ExportFailed(f"{args.checkpoint} is a standalone artifact already")
        print(f"Exporting {loaded.describe()} -> {args.out}", flush=True)
        error = export(loaded.model, args.out, fmt=args.format, check=not args.no_verify)
    except (loading.ExportError, CheckpointError, ExportFailed, OSError) as e:
        return common.error(PROG, e)
    checked = "" if error is None else f"; max difference from the model {error:.2g}"
    print(f"Wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB{checked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
