"""Evaluators: what is measured on held-out images, as objects built from a config.

Each has a `name`, runs every `every` train steps (0: only where asked, e.g.
by the study) and maps a predictor (`hair_jax.nn.registry.Restorer`) to a
dict of numbers (nested by one level at most). The train loop builds them
from `config.evals` (`from_config`) and logs them to TensorBoard, the
progress line and `<workdir>/evals.jsonl`; the study builds the same ones.

    config.evals.psnr = ml_collections.ConfigDict({"every": 500, "max_images": 8})
    config.evals.giv = ml_collections.ConfigDict({"every": 500, "max_images": 8})
    config.evals.selection = ml_collections.ConfigDict({"every": 2000, "max_images": 8})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from hair_jax.evaluation import giv, protocol, selection


class Evaluator(Protocol):
    name: str
    every: int

    def run(self, predictor) -> dict[str, Any]:
        """The measures of `predictor` (a model's jitted functions or an artifact)."""
        ...


@dataclasses.dataclass
class Psnr:
    """The paper's protocol (`protocol.evaluate_sets`): restored PSNR per set and their average."""

    test_sets: Mapping[str, Sequence]
    max_images: int | None = None
    every: int = 0
    name: str = "psnr"

    def run(self, predictor) -> dict[str, Any]:
        rows = protocol.evaluate_sets(predictor, self.test_sets, max_images=self.max_images)
        return {
            "psnr": {r.name: r.restored_psnr for r in rows},
            "average_psnr": protocol.average(rows).restored_psnr,
        }


@dataclasses.dataclass
class Giv:
    """GIV separation and the selectors' entropy, type information and logit spread on probes.

    Nothing for a model without a GIV.
    """

    probes: Sequence[giv.Probe]
    every: int = 0
    name: str = "giv"

    def run(self, predictor) -> dict[str, Any]:
        if not predictor.has_giv:
            return {}
        gmap = giv.collect(predictor, self.probes)
        return {"separation": giv.separation(gmap), **selection.on_probes(predictor, gmap)}


@dataclasses.dataclass
class Selection:
    """Every held-out selection measure (`selection.on_test_sets`), with the verdict.

    Restores each test image three more times (uniform selectors, a swapped
    GIV): the costliest evaluator. Nothing for a model without a GIV.
    """

    test_sets: Mapping[str, Sequence]
    max_images: int | None = None
    every: int = 0
    name: str = "selection"

    def run(self, predictor) -> dict[str, Any]:
        if not predictor.has_giv:
            return {}
        probes = giv.probes_from_test_sets(self.test_sets, self.max_images)
        gmap = giv.collect(predictor, probes)
        return selection.on_test_sets(predictor, self.test_sets, gmap, self.max_images)


KINDS = {"psnr": Psnr, "giv": Giv, "selection": Selection}


def from_config(evals: Mapping, test_sets: Mapping[str, Sequence]) -> list[Evaluator]:
    """The evaluators `config.evals` names: {kind: {"every": steps, "max_images": n}}.

    Raises:
      ValueError: an unknown kind or field, in one line.
    """
    out = []
    for kind, options in evals.items():
        if kind not in KINDS:
            raise ValueError(f"config.evals.{kind}: unknown evaluator; known: {sorted(KINDS)}")
        options = dict(options)
        unknown = sorted(set(options) - {"every", "max_images"})
        if unknown:
            raise ValueError(f"config.evals.{kind} has no field {unknown[0]!r} (every, max_images)")
        every, max_images = int(options.get("every", 0)), options.get("max_images")
        max_images = None if max_images is None or max_images < 0 else int(max_images)
        if kind == "giv":
            probes = giv.probes_from_test_sets(test_sets, max_images)
            out.append(Giv(probes, every=every))
        else:
            out.append(KINDS[kind](test_sets, max_images, every=every))
    return out


def flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """{"a/b": x} of the numbers in `values` (None and text left out), for logs."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat(value, f"{name}/"))
        elif isinstance(value, (bool, int, float, np.floating, np.integer)):
            out[name] = float(value)
    return out
