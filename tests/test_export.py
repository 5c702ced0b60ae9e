"""Standalone artifacts (python -m hair_jax.export): equal to the model without its code."""

import collections
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import png
import pytest
import skimage.data
from flax import nnx

from hair_jax import export, inference, restore
from hair_jax.evaluation import giv, protocol
from hair_jax.io import artifacts, images, onnx_convert
from hair_jax.io.model_export import save_model
from hair_jax.nn import layers, models

# dac_groups 4: three of the DAC's 12 channels per group, so 32 px images give varied GIVs.
TINY = dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, dac_groups=4)

# Loads a .jaxexport with jax and numpy alone, as docs/deployment.md shows, and
# checks that nothing of hair_jax or flax was imported.
JAX_CONSUMER = """
import json, sys, zipfile
import numpy as np
from jax import export

path, inputs, outputs = sys.argv[1:]
with zipfile.ZipFile(path) as z:
    manifest = json.loads(z.read("manifest.json"))
    names = ["restore"] + (["giv", "restore_giv", "selectors"] if manifest["has_giv"] else [])
    programs = {n: export.deserialize(bytearray(z.read(n + ".bin"))) for n in names}
    with z.open("weights.npz") as f, np.load(f) as npz:
        weights = [npz[f"w{i}"] for i in range(len(npz.files))]
results = {}
with np.load(inputs) as data:
    for key in data.files:
        x = data[key]
        results[key] = np.asarray(programs["restore"].call(weights, x))
        if manifest["has_giv"]:
            giv = np.asarray(programs["giv"].call(weights, x))
            results[key + "/giv"] = giv
            donor = np.roll(giv, 1, axis=0)
            results[key + "/swapped"] = np.asarray(programs["restore_giv"].call(weights, x, donor))
            for level, s in programs["selectors"].call(weights, giv).items():
                results[key + "/selectors/" + level] = np.asarray(s)
assert not [m for m in sys.modules if m.split(".")[0] in ("hair_jax", "flax")]
np.savez(outputs, **results)
print(",".join(programs["restore"].platforms))
"""

# Runs an .onnx with onnxruntime and numpy alone.
ONNX_CONSUMER = """
import sys
import numpy as np
import onnxruntime as ort

path, inputs, outputs = sys.argv[1:]
session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
results = {}
batch = session.get_inputs()[0].shape[0]  # 1, or a name: any
with np.load(inputs) as data:
    for key in data.files:
        x = data[key]
        runs = []
        for part in [x[i : i + 1] for i in range(len(x))] if batch == 1 else [x]:
            feed = {"image": part}
            if len(session.get_inputs()) > 1:
                d = session.get_inputs()[1].shape[1]
                feed["given_giv"] = np.zeros((len(part), d), np.float32)
                feed["use_given_giv"] = np.zeros((len(part), 1), np.float32)
            runs.append(dict(zip(names, session.run(names, feed))))
        for name in names:  # selectors are [blocks, B, boxes]
            axis = 1 if name.startswith("selectors/") else 0
            results[key + "/" + name] = np.concatenate([r[name] for r in runs], axis=axis)
assert not [m for m in sys.modules if m.split(".")[0] in ("hair_jax", "flax", "jax")]
np.savez(outputs, **results)
"""


def _model(arch, seed=0):
    return models.build_model(models.ModelConfig(arch=arch, **TINY), rngs=nnx.Rngs(seed))


def _photos(batch, h, w, seed=0):
    """Real photos, cropped and noisy: [batch, h, w, 3] float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    sources = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    crops = []
    for i in range(batch):
        image = sources[i % len(sources)].astype(np.float32) / 255
        y, x = rng.integers(0, image.shape[0] - h), rng.integers(0, image.shape[1] - w)
        crops.append(image[y : y + h, x : x + w] + rng.normal(0, 25 / 255, (h, w, 3)))
    return np.clip(np.stack(crops), 0, 1).astype(np.float32)


def _consume(tmp_path, script, artifact, inputs):
    (tmp_path / "consumer.py").write_text(script)
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "consumer.py", str(artifact), "inputs.npz", "outputs.npz"],
        cwd=tmp_path,  # not the repository: hair_jax is importable from site-packages only
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    if not inputs:
        return {}, done.stdout.strip()
    with np.load(tmp_path / "outputs.npz") as out:
        return dict(out), done.stdout.strip()


def _close(a, b, atol):
    assert np.asarray(a).shape == np.asarray(b).shape
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=atol)


@pytest.mark.parametrize("arch", ["res_hair", "restormer"])
def test_jax_artifact_equals_the_model_in_a_fresh_process(tmp_path, arch):
    model = _model(arch)
    path = tmp_path / f"{arch}.jaxexport"
    assert export.export(model, str(path), fmt="jax") <= export.VERIFY_ATOL
    inputs = {"a": _photos(1, 64, 96), "b": _photos(3, 96, 64, seed=1)}
    out, platforms = _consume(tmp_path, JAX_CONSUMER, path, inputs)
    assert platforms == "cpu,cuda,tpu"
    predictor = inference.Predictor(model)
    for key, x in inputs.items():
        _close(out[key], predictor.restore(x), 1e-5)
        if arch == "res_hair":
            g = predictor.giv(x)
            _close(out[key + "/giv"], g, 1e-5)
            _close(out[key + "/swapped"], predictor.restore(x, np.roll(g, 1, axis=0)), 1e-5)
            for level, s in predictor.selectors(g).items():
                _close(out[f"{key}/selectors/{level}"], s, 1e-5)
    assert out.keys() == (
        {*inputs}
        if arch == "restormer"
        else {f"{k}/{s}" for k in inputs for s in ("giv", "swapped")}
        | {*inputs}
        | {f"{k}/selectors/{level}" for k in inputs for level in models.HYPER_LEVELS}
    )

    # Through hair_jax: a wrong size is one line, not an XLA trace.
    artifact = artifacts.read_artifact(path)
    min_size = (
        models.min_size(model.config) if arch == "res_hair" else 8
    )  # 64: one channel per DAC group
    with pytest.raises(ValueError) as e:
        artifact.restore(np.zeros((1, 40, 44, 3), np.float32))
    assert str(e.value) == (
        f"{path} takes images [B, H, W, 3] with H and W multiples of 8 and >= {min_size}, "
        "got shape (1, 40, 44, 3)"
    )

    # hair-restore (tiles sharing one GIV) and the eval protocol give what the model gives.
    photo = tmp_path / "photo.png"
    images.save_png(str(photo), _photos(1, 120, 100, seed=2)[0])
    save_model(model, tmp_path / "weights")
    for checkpoint, out_dir in ((path, "from_artifact"), (tmp_path / "weights", "from_model")):
        argv = [str(photo), "--checkpoint", str(checkpoint), "--output", str(tmp_path / out_dir)]
        assert restore.main([*argv, "--tile", "64", "--overlap", "16", "--quiet"]) == 0
    a, b = (
        images.read_image(str(tmp_path / d / "photo.png")).pixels
        for d in ("from_artifact", "from_model")
    )
    assert np.abs(a - b).max() <= 1 / 255
    sets = {"noisy": [protocol_image(_photos(1, 64, 80, seed=3)[0])]}
    ours = protocol.evaluate_sets(artifact, sets)[0]
    theirs = protocol.evaluate_sets(predictor, sets)[0]
    assert ours.restored_psnr == pytest.approx(theirs.restored_psnr, abs=1e-4)
    assert artifact.traces == 1 and ours.num_images == 1


def protocol_image(degraded):
    """A test image of the protocol: its clean version is the photo without noise."""
    return type("TestImage", (), {"degraded": degraded, "clean": np.clip(degraded * 0.9, 0, 1)})()


@pytest.mark.parametrize("arch", ["res_hair", "restormer"])
def test_onnx_artifact_equals_the_model_at_any_size(tmp_path, arch):
    pytest.importorskip(
        "jax2onnx", reason="docs/deployment.md: pip install --no-deps jax2onnx==0.17.1"
    )
    model = _model(arch)
    predictor = inference.Predictor(model)
    path = tmp_path / f"{arch}.onnx"
    assert export.export(model, str(path), fmt="onnx") <= 2e-4  # verified on 2 x 64 x 72
    # In onnxruntime alone, at sizes and batches the export never saw.
    inputs = {"a": _photos(1, 64, 96), "b": _photos(3, 104, 64, seed=1)}
    out, _ = _consume(tmp_path, ONNX_CONSUMER, path, inputs)
    for key, x in inputs.items():
        _close(out[f"{key}/restored"], predictor.restore(x), 2e-4)
        if arch == "res_hair":
            g = predictor.giv(x)
            _close(out[f"{key}/giv"], g, 2e-4)
            for level, s in predictor.selectors(g).items():
                _close(out[f"{key}/selectors/{level}"], s, 2e-4)
        else:
            assert [k for k in out if k.startswith(key)] == [f"{key}/restored"]

    # The graph: symbolic height and width; per-image kernels as Conv nodes.
    graph = onnx.load(str(path)).graph
    image = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert image == [1 if arch == "res_hair" else "b", "8*h", "8*w", 3]
    ops = collections.Counter(node.op_type for node in graph.node)
    assert ops["Conv"] >= 9 * (2 if arch == "res_hair" else 1)
    # Slices cut kernels only (static shapes), never a feature map (symbolic).
    shapes = {v.name: v.type.tensor_type.shape.dim for v in graph.value_info}
    shapes.update({t.name: t.dims for t in graph.initializer})
    sliced = [shapes[n.input[0]] for n in graph.node if n.op_type == "Slice"]
    assert all(isinstance(d, int) or d.HasField("dim_value") for s in sliced for d in s)
    # Products as MatMul (onnxruntime's Einsum is slow), every LayerNorm one node.
    assert ops["Einsum"] == 0 and ops["MatMul"] > 0
    consts = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in graph.initializer}
    channel_means = [
        n for n in graph.node if n.op_type == "ReduceMean" and consts.get(n.input[1]) == [3]
    ]
    assert not channel_means  # no LayerNorm left in pieces
    # Two per transformer block, each of TINY's 8 blocks once: the encoder
    # also gives the GIV, it does not run a second time for it.
    assert ops["LayerNormalization"] == 16

    # Through hair_jax: any batch (a batch-1 graph runs image by image), a GIV given.
    artifact = artifacts.read_artifact(path)
    x = _photos(2, 64, 72, seed=2)
    _close(artifact.restore(x), predictor.restore(x), 2e-4)
    if arch == "res_hair":
        donor = np.roll(np.asarray(predictor.giv(x)), 1, axis=0)
        _close(artifact.restore(x, donor), predictor.restore(x, donor), 2e-4)
        probes = [giv.Probe(_photos(1, h, 80, seed=h)[0], "denoise_25", 20.0) for h in (64, 120)]
        ours, theirs = giv.collect(artifact, probes), giv.collect(predictor, probes)
        _close(ours.givs, theirs.givs, 2e-4)
        for level in theirs.selectors:
            _close(ours.selectors[level], theirs.selectors[level], 2e-4)
    with pytest.raises(ValueError, match="H and W multiples of 8"):
        artifact.restore(np.zeros((1, 64, 60, 3), np.float32))

    # hair-restore on an odd-sized 16-bit PNG (padded to the model's
    # multiple) and the eval protocol give what the model gives.
    pixels = np.round(_photos(1, 83, 101, seed=3)[0] * 65535).astype(np.uint16)
    with open(tmp_path / "deep.png", "wb") as f:
        png.Writer(101, 83, greyscale=False, bitdepth=16).write(f, pixels.reshape(83, -1))
    save_model(model, tmp_path / "weights")
    for checkpoint, out_dir in ((path, "from_artifact"), (tmp_path / "weights", "from_model")):
        argv = [str(tmp_path / "deep.png"), "--checkpoint", str(checkpoint)]
        assert restore.main([*argv, "--output", str(tmp_path / out_dir), "--quiet"]) == 0
    a, b = (
        images.read_image(str(tmp_path / d / "deep.png")) for d in ("from_artifact", "from_model")
    )
    assert a.bits == b.bits == 16 and a.pixels.shape == (83, 101, 3)
    assert np.abs(a.pixels - b.pixels).max() <= 2e-4
    sets = {"noisy": [protocol_image(_photos(1, 72, 88, seed=4)[0])]}
    ours, theirs = (protocol.evaluate_sets(p, sets)[0] for p in (artifact, predictor))
    assert ours.restored_psnr == pytest.approx(theirs.restored_psnr, abs=1e-3)

    # The guide's onnxruntime example restores a PNG of any size as the model does.
    guide = (Path(__file__).parent.parent / "docs" / "deployment.md").read_text()
    snippet = guide.split("Restore a PNG with onnxruntime")[1].split("```python")[1].split("```")[0]
    os.replace(path, tmp_path / "res_hair.onnx")
    images.save_png(str(tmp_path / "noisy.png"), _photos(1, 77, 90, seed=5)[0])
    noisy = images.read_image(str(tmp_path / "noisy.png")).pixels
    _consume(tmp_path, snippet, "unused", {})
    want = inference.restore_image(predictor, noisy)
    got = images.read_image(str(tmp_path / "restored.png")).pixels
    assert got.shape == (77, 90, 3) and np.abs(got - want).max() <= 1 / 255 + 1e-6


def test_fixed_size_onnx_of_an_older_hair_jax_is_refused_in_one_line(tmp_path):
    pytest.importorskip(
        "jax2onnx", reason="docs/deployment.md: pip install --no-deps jax2onnx==0.17.1"
    )
    proto = onnx.ModelProto.FromString(export.export_onnx(_model("restormer")))
    manifest = json.loads(proto.metadata_props[0].value)
    proto.metadata_props[0].value = json.dumps({**manifest, "batch": 1, "size": 96})
    old = tmp_path / "old.onnx"
    old.write_bytes(proto.SerializeToString())
    with pytest.raises(artifacts.ArtifactError) as e:
        artifacts.read_artifact(old)
    assert str(e.value) == (
        f"{old}: an ONNX artifact of one fixed size (96 px) from an older hair_jax; "
        "export it again (any size now)"
    )


def test_onnx_sizes_that_are_multiples_convert_and_run_at_any_size():
    """The jax2onnx fix of `onnx_convert`: an inner size h/2 of an input dim 8*h."""
    jax2onnx = pytest.importorskip(
        "jax2onnx", reason="docs/deployment.md: pip install --no-deps jax2onnx==0.17.1"
    )
    ort = pytest.importorskip("onnxruntime")
    fn = lambda x: layers.pixel_unshuffle(x, 2) * 2.0  # [b, 4h, 4w, 12]: needs h itself
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, 8*h, 8*w, 3"), jnp.float32)
    with pytest.raises(ValueError, match="No symbolic dim origin registered for"):
        jax2onnx.to_onnx(fn, [spec])  # still needed: jax2onnx alone cannot
    session = ort.InferenceSession(onnx_convert.to_onnx(fn, [spec]).SerializeToString())
    for shape in ((1, 8, 16, 3), (3, 24, 8, 3)):
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        (got,) = session.run(None, {session.get_inputs()[0].name: x})
        np.testing.assert_array_equal(got, fn(jnp.asarray(x)))


def test_onnx_layer_norms_become_one_node_each():
    """`onnx_convert.fuse_layer_norms`: our LayerNorm's ten nodes -> one LayerNormalization."""
    pytest.importorskip(
        "jax2onnx", reason="docs/deployment.md: pip install --no-deps jax2onnx==0.17.1"
    )
    ort = pytest.importorskip("onnxruntime")
    spec = jax.ShapeDtypeStruct(jax.export.symbolic_shape("b, h, w") + (16,), jnp.float32)
    x = np.random.default_rng(0).normal(2.0, 3.0, (2, 5, 7, 16)).astype(np.float32)
    with_bias, bias_free = layers.LayerNorm(16), layers.LayerNorm(16, with_bias=False)
    for norm in (with_bias, bias_free):
        norm.scale[...] = jnp.linspace(0.5, 2.0, 16)
    with_bias.bias[...] = jnp.linspace(-1.0, 1.0, 16)
    cases = {
        "fused": (lambda x: with_bias(x) * 2.0, {"LayerNormalization": 1, "Mul": 1}),
        # x * rstd * scale (no centring, no bias) is not LayerNormalization.
        "bias_free": (bias_free, {"LayerNormalization": 0, "ReduceMean": 2}),
        # An intermediate used twice (here x - mean(x)) keeps the chain.
        "shared": (
            lambda x: with_bias(x) + jnp.mean(x, axis=-1, keepdims=True),
            {"LayerNormalization": 1, "ReduceMean": 1},
        ),
    }
    for name, (fn, counts) in cases.items():
        proto = onnx_convert.to_onnx(fn, [spec])
        ops = collections.Counter(node.op_type for node in proto.graph.node)
        assert {op: ops[op] for op in counts} == counts, (name, ops)
        read = {name for node in proto.graph.node for name in node.input}
        assert [t.name for t in proto.graph.initializer if t.name not in read] == []
        session = ort.InferenceSession(proto.SerializeToString())
        (got,) = session.run(None, {session.get_inputs()[0].name: x})
        np.testing.assert_allclose(got, fn(jnp.asarray(x)), atol=1e-5, err_msg=name)


def test_damaged_artifacts_are_one_line_and_exit_2(tmp_path, capsys):
    good = tmp_path / "good.jaxexport"
    good.write_bytes(export.export_jax(_model("restormer")))
    data = good.read_bytes()
    with zipfile.ZipFile(good) as z:
        program = z.getinfo("restore.bin")
    start = program.header_offset + 30 + len(program.filename)
    flipped = bytearray(data)
    flipped[start + 100 : start + 400] = bytes(300)
    no_manifest = tmp_path / "plain.jaxexport"
    with zipfile.ZipFile(no_manifest, "w") as z:
        z.writestr("restore.bin", b"")
    cases = {
        "truncated.jaxexport": data[: len(data) // 2],
        "flipped.jaxexport": bytes(flipped),
        "empty.onnx": b"",
        "noise.onnx": np.random.default_rng(0).bytes(5000),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    photo = tmp_path / "photo.png"
    images.save_png(str(photo), _photos(1, 40, 40)[0])
    for name in [*cases, "plain.jaxexport", "missing.onnx"]:
        out = tmp_path / f"out_{name}"
        code = restore.main(
            [str(photo), "--checkpoint", str(tmp_path / name), "--output", str(out)]
        )
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert err.count("\n") == 0 and str(tmp_path / name) in err, err
        assert not out.exists()
    # The intact one restores.
    assert (
        restore.main([str(photo), "--checkpoint", str(good), "--output", str(tmp_path / "ok")]) == 0
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["model.zip"], "OUT must end in .jaxexport, .onnx, .safetensors, got model.zip"),
        (["m.onnx", "--format", "jax"], "--format jax writes *.jaxexport, not m.onnx"),
    ],
)
def test_export_flags_are_checked_in_one_line(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        export.main([str(tmp_path / "ckpt"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"python -m hair_jax.export: error: {message}"


def test_export_command_errors_are_one_line(tmp_path, capsys, monkeypatch):
    save_model(_model("restormer"), tmp_path / "weights")
    existing = tmp_path / "old.jaxexport"
    existing.write_bytes(b"keep me")
    with pytest.raises(SystemExit):
        export.main([str(tmp_path / "weights"), str(existing)])
    assert "old.jaxexport exists; choose another OUT or pass --overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"

    assert export.main([str(existing), str(tmp_path / "again.onnx")]) == 2  # damaged input
    assert export.main([str(tmp_path / "nothing"), str(tmp_path / "x.jaxexport")]) == 2
    monkeypatch.setitem(sys.modules, "jax2onnx", None)  # as if not installed
    assert export.main([str(tmp_path / "weights"), str(tmp_path / "m.onnx")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": error: ")[0] for line in lines] == ["python -m hair_jax.export"] * 3
    assert lines[2].endswith("pip install --no-deps jax2onnx==0.17.1")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "x.jaxexport").exists()
    assert export.main([str(tmp_path / "weights"), str(tmp_path / "w.jaxexport")]) == 0
    assert "Wrote" in capsys.readouterr().out
    assert export.main([str(tmp_path / "w.jaxexport"), str(tmp_path / "v.jaxexport")]) == 2
    assert "is a standalone artifact already" in capsys.readouterr().err


@pytest.mark.parametrize("variant", ["nafnet_tiny", "naf_hair_tiny"])
def test_naf_models_export_to_onnx_at_any_size(tmp_path, variant):
    pytest.importorskip(
        "jax2onnx", reason="docs/deployment.md: pip install --no-deps jax2onnx==0.17.1"
    )
    model = models.build_model(variant)
    path = str(tmp_path / f"{variant}.onnx")
    assert export.export(model, path, fmt="onnx") <= 2e-4  # checked in onnxruntime
    artifact = artifacts.read_artifact(path)
    assert (artifact.multiple, artifact.level_names) == (16, model.level_names)
    # Two LayerNorms per block, each of the 9 blocks once (NAF-HAIR's encoder
    # also gives the GIV: it does not run twice).
    graph = onnx.load(path).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    assert ops["LayerNormalization"] == 18
    # Each channel attention's mean over H and W (layers.spatial_mean) is
    # two one-axis ReduceMeans, which onnxruntime runs far faster than one.
    consts = {t.name: onnx.numpy_helper.to_array(t).tolist() for t in graph.initializer}
    means = [consts[n.input[1]] for n in graph.node if n.op_type == "ReduceMean"]
    assert sorted(means) == [[1]] * 9 + [[2]] * 9
    image = _photos(1, 70, 93, seed=6)[0]  # padded to 80 x 96 (NAF-HAIR: its GIV at >= 64)
    _close(inference.restore_image(artifact, image), inference.restore_image(model, image), 2e-4)


@pytest.mark.parametrize("variant", ["nafnet_tiny", "naf_hair_tiny"])
def test_naf_models_export_to_jaxexport_at_their_multiple(tmp_path, variant):
    model = models.build_model(variant)
    path = str(tmp_path / f"{variant}.jaxexport")
    assert export.export(model, path, fmt="jax") <= 1e-4  # verified on 2 images, 64 x 80
    artifact = artifacts.read_artifact(path)
    assert (artifact.multiple, artifact.min_size) == (16, model.min_size)
    assert artifact.level_names == model.level_names
    # Another size and batch than the verification's: still the model's output.
    x = np.random.default_rng(1).uniform(0, 1, (3, 96, 112, 3)).astype(np.float32)
    want = np.clip(np.asarray(model(jnp.asarray(x))), 0, 1)
    np.testing.assert_allclose(np.asarray(artifact.restore(x)), want, atol=1e-4)
    with pytest.raises(ValueError, match="H and W multiples of 16"):
        artifact.restore(x[:, :88])
