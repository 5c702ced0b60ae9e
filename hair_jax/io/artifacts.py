"""Standalone artifacts: a restoration program and its weights in one file.

Unlike a *model export* (`hair_jax.io.model_export`: `config.json` plus orbax
parameters, rebuilt with the model code), a standalone artifact carries the
computation itself, so the machine that runs it needs no `hair_jax` model
code. `python -m hair_jax.export` writes two kinds:

* `.jaxexport`: a zip of serialized `jax.export` programs (StableHLO) lowered
  for cpu, cuda and tpu, with the weights beside them in `weights.npz` (an
  argument of every program, so each is stored once). Height, width and
  batch are symbolic: any batch, any H and W that are multiples of the
  model's `multiple` (8; NAFNet's 2^stages) and at least `min_size`. Loading needs jax, jaxlib, numpy and flatbuffers. jax.export promises
  that an artifact keeps loading for 6 months of newer jaxlib releases
  (and 3 weeks of older ones); a jaxlib outside that window refuses it.
  Members:
    `manifest.json`  what `Manifest` reads (format, model config, shapes);
    `weights.npz`    the weights, `w0`, `w1`, ... in the programs' order;
    `restore.bin`    f(weights, images [B, H, W, 3]) -> restored, clipped to [0, 1];
  and for models with a GIV (Res-HAIR, NAF-HAIR):
    `giv.bin`        f(weights, images) -> GIV [B, D];
    `restore_giv.bin` f(weights, images, giv [B, D]) -> restored with that GIV;
    `selectors.bin`  f(weights, giv) -> {level: HSN softmax [blocks, B, boxes]}.
* `.onnx`: one ONNX graph (opset 23, written with jax2onnx) whose height and
  width are symbolic, as in `.jaxexport` (the input's dims read "8*h",
  "8*w"). Its batch is any for models without a GIV and 1 for those with
  one (their per-image kernels are `Conv` nodes, whose group count ONNX
  fixes); `OnnxArtifact` runs a larger batch image by image. Inputs
  `image` [B, H, W, 3] and, with a GIV, `given_giv` [B, D] and
  `use_given_giv` [B, 1] (1: restore with the given GIV, 0: with the
  image's own); outputs `restored`, `giv` (the one used) and one
  `selectors/<level>` per hyper level. The manifest is the model's
  `hair_jax` metadata entry.

`read_artifact` opens either as a predictor with the interface of
`hair_jax.inference.Predictor` (`hair_jax.nn.registry.Restorer`: `restore`,
`giv`, `selectors`, `has_giv`, `level_names`, `min_size`, `multiple`,
`traces`), for any batch and size either way.
Artifacts are programs: load only those you trust, as with any model file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zipfile

import jax
import numpy as np
from jax import export

from hair_jax.io.files import error_line

JAX_SUFFIX = ".jaxexport"
ONNX_SUFFIX = ".onnx"
FORMAT = "hair-jax standalone artifact"
VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
MAX_MANIFEST_BYTES = 2**20
ONNX_METADATA_KEY = "hair_jax"


class ArtifactError(ValueError):
    """A standalone artifact that cannot be read; the message names it."""


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What an artifact declares about its programs.

    Attributes:
      model: the model config (`ModelConfig` fields) it was exported from.
      has_giv: it computes a GIV and selectors.
      min_size: the smallest H and W it accepts.
      multiple: H and W must be multiples of this (artifacts written before
        the field existed were all 8).
      giv_dim: D, the GIV's length (0 without a GIV).
      levels: the hyper levels, input to output (selector names).
      platforms: what the programs were lowered for (`.jaxexport`).
      batch: the `.onnx` graph's fixed batch (1 with a GIV), else None (any).
      size: the fixed square size of an `.onnx` from an older hair_jax
        (no longer read), else None.
      jax_version: the jax that exported it.
    """

    model: dict
    has_giv: bool
    min_size: int
    giv_dim: int
    levels: tuple[str, ...]
    platforms: tuple[str, ...] = ()
    batch: int | None = None
    size: int | None = None
    jax_version: str = ""
    multiple: int = 8

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": VERSION, **dataclasses.asdict(self)})

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> Manifest:
        try:
            d = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise ArtifactError(f"{where}: manifest is not JSON ({error_line(e)})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ArtifactError(f"{where}: not a {FORMAT} (no manifest format entry)")
        if d.get("version") != VERSION:
            raise ArtifactError(
                f"{where}: artifact version {d.get('version')!r}; this hair_jax reads {VERSION}"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            m = cls(**{k: v for k, v in d.items() if k in fields})
            return dataclasses.replace(
                m,
                levels=tuple(m.levels),
                platforms=tuple(m.platforms),
                min_size=int(m.min_size),
                multiple=int(m.multiple),
            )
        except (TypeError, ValueError) as e:
            raise ArtifactError(f"{where}: bad manifest ({error_line(e)})") from None


def artifact_kind(path: str | os.PathLike) -> str | None:
    """JAX_SUFFIX or ONNX_SUFFIX for a file with that suffix, else None."""
    path = os.fspath(path)
    for suffix in (JAX_SUFFIX, ONNX_SUFFIX):
        if path.endswith(suffix) and not os.path.isdir(path):
            return suffix
    return None


def read_artifact(path: str | os.PathLike) -> JaxArtifact | OnnxArtifact:
    """Opens a `.jaxexport` or `.onnx` artifact; ArtifactError naming it if it cannot."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ArtifactError(f"{path}: no such file")
    kind = artifact_kind(path)
    if kind == JAX_SUFFIX:
        return JaxArtifact(path)
    if kind == ONNX_SUFFIX:
        return OnnxArtifact(path)
    raise ArtifactError(f"{path}: not a standalone artifact ({JAX_SUFFIX} or {ONNX_SUFFIX})")


class _Artifact:
    """What both kinds share: the manifest and the input checks."""

    def __init__(self, path: str, manifest: Manifest):
        self.path, self.manifest = path, manifest
        self.has_giv, self.level_names = manifest.has_giv, manifest.levels
        self.min_size, self.multiple = manifest.min_size, manifest.multiple
        self.traces = 0

    def describe(self) -> str:
        kind = "JAX" if isinstance(self, JaxArtifact) else "ONNX"
        return f"{self.path} ({kind} standalone artifact, {self.manifest.model['arch']})"

    def check_images(self, x) -> None:
        """ValueError in one line unless `x` is a batch of images this artifact takes."""
        shape = tuple(np.shape(x))
        if (
            len(shape) != 4
            or shape[-1] != 3
            or any(s % self.multiple or s < self.min_size for s in shape[1:3])
        ):
            raise ValueError(
                f"{self.path} takes images [B, H, W, 3] with H and W multiples of {self.multiple} "
                f"and >= {self.min_size}, got shape {shape}"
            )

    def _check_giv(self, giv=None, batch: int = 0) -> None:
        """ValueError unless the model has a GIV and `giv` (if given) is [batch, D]."""
        if not self.has_giv:
            raise ValueError(f"{self.path}: {self.manifest.model['arch']} has no GIV")
        if giv is not None and tuple(np.shape(giv)) != (batch, self.manifest.giv_dim):
            raise ValueError(
                f"giv has shape {tuple(np.shape(giv))}, expected {(batch, self.manifest.giv_dim)}"
            )


class JaxArtifact(_Artifact):
    """A `.jaxexport` file's programs, jitted per input shape."""

    def __init__(self, path: str):
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                if MANIFEST not in names:
                    raise ArtifactError(f"{path}: no {MANIFEST}; not a {FORMAT}")
                if z.getinfo(MANIFEST).file_size > MAX_MANIFEST_BYTES:
                    raise ArtifactError(f"{path}: {MANIFEST} is larger than {MAX_MANIFEST_BYTES}")
                manifest = Manifest.from_json(z.read(MANIFEST), path)
                wanted = ["restore"] + (
                    ["giv", "restore_giv", "selectors"] if manifest.has_giv else []
                )
                missing = [f"{n}.bin" for n in wanted if f"{n}.bin" not in names]
                if missing or WEIGHTS not in names:
                    raise ArtifactError(f"{path}: missing {(missing or [WEIGHTS])[0]}")
                programs = {n: export.deserialize(bytearray(z.read(f"{n}.bin"))) for n in wanted}
                with z.open(WEIGHTS) as f, np.load(f, allow_pickle=False) as npz:
                    weights = [npz[f"w{i}"] for i in range(len(npz.files))]
        except ArtifactError:
            raise
        except Exception as e:  # noqa: BLE001 - zip, flatbuffer and npz errors alike
            raise ArtifactError(
                f"{path}: cannot read the artifact, is it damaged? ({error_line(e)})"
            ) from None
        super().__init__(path, manifest)
        for name, program in programs.items():
            if len(program.in_avals) < len(weights):
                raise ArtifactError(f"{path}: {name}.bin does not take the stored weights")
        self.platforms = programs["restore"].platforms
        self._weights = [jax.device_put(w) for w in weights]
        self._programs = {n: self._jit(p) for n, p in programs.items()}

    def _jit(self, program):
        def traced(weights, *args):
            self.traces += 1  # runs only while JAX traces, i.e. per compile
            return program.call(weights, *args)

        jitted = jax.jit(traced)
        return lambda *args: jitted(self._weights, *args)

    def restore(self, x, giv=None):
        """Restored images [B, H, W, 3] clipped to [0, 1]; `giv` [B, D] optional."""
        self.check_images(x)
        if giv is None:
            return self._programs["restore"](x)
        self._check_giv(giv, np.shape(x)[0])
        return self._programs["restore_giv"](x, giv)

    def giv(self, x):
        """The GIV [B, D] of images x [B, H, W, 3]."""
        self.check_images(x)
        self._check_giv()
        return self._programs["giv"](x)

    def selectors(self, giv):
        """Each hyper level's HSN softmax [num_blocks, B, num_box] for `giv` [B, D]."""
        self._check_giv(giv, np.shape(giv)[0])
        return self._programs["selectors"](giv)


class OnnxArtifact(_Artifact):
    """An `.onnx` file run with onnxruntime (CPU unless its GPU package is installed)."""

    def __init__(self, path: str):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ArtifactError(
                f"{path}: reading ONNX artifacts needs onnxruntime (pip install 'hair-jax[onnx]')"
            ) from None
        try:
            session = ort.InferenceSession(path, providers=ort.get_available_providers())
            meta = session.get_modelmeta().custom_metadata_map
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own error types
            raise ArtifactError(
                f"{path}: cannot read the ONNX model, is it damaged? ({error_line(e)})"
            ) from None
        if ONNX_METADATA_KEY not in meta:
            raise ArtifactError(f"{path}: an ONNX model without hair_jax metadata")
        manifest = Manifest.from_json(meta[ONNX_METADATA_KEY], path)
        if manifest.size is not None:
            raise ArtifactError(
                f"{path}: an ONNX artifact of one fixed size ({manifest.size} px) from an older "
                "hair_jax; export it again (any size now)"
            )
        super().__init__(path, manifest)
        self._session = session
        self._outputs = [o.name for o in session.get_outputs()]

    def _run(self, x, giv=None) -> dict[str, np.ndarray]:
        """Every output for images x [B, H, W, 3] (and GIVs [B, D]); a batch-1 graph per image."""
        x = np.asarray(x, np.float32)
        if self.manifest.batch == 1 and len(x) > 1:
            runs = [
                self._run(x[i : i + 1], None if giv is None else giv[i : i + 1])
                for i in range(len(x))
            ]
            # Selectors are [num_blocks, B, num_box]: their batch is axis 1.
            return {
                k: np.concatenate([r[k] for r in runs], axis=1 if k.startswith("selectors/") else 0)
                for k in runs[0]
            }
        feed = {"image": x}
        if self.has_giv:
            b = len(x)
            feed["given_giv"] = (
                np.zeros((b, self.manifest.giv_dim), np.float32)
                if giv is None
                else np.asarray(giv, np.float32)
            )
            feed["use_given_giv"] = np.full((b, 1), 0.0 if giv is None else 1.0, np.float32)
        return dict(zip(self._outputs, self._session.run(self._outputs, feed)))

    def restore(self, x, giv=None):
        """Restored images [B, H, W, 3] clipped to [0, 1]; `giv` [B, D] optional."""
        self.check_images(x)
        if giv is not None:
            self._check_giv(giv, np.shape(x)[0])
        return self._run(x, giv)["restored"]

    def giv(self, x):
        """The GIV [B, D] of images x [B, H, W, 3]."""
        self.check_images(x)
        self._check_giv()
        return self._run(x)["giv"]

    def selectors(self, giv):
        """Each hyper level's HSN softmax [num_blocks, B, num_box] for `giv` [B, D].

        The graph computes them beside a restoration: this runs it on blank
        images of the smallest size with the GIVs given.
        """
        self._check_giv(giv, np.shape(giv)[0])
        s = -(-self.min_size // self.multiple) * self.multiple
        run = self._run(np.zeros((len(giv), s, s, 3), np.float32), np.asarray(giv, np.float32))
        return {level: run[f"selectors/{level}"] for level in self.manifest.levels}
