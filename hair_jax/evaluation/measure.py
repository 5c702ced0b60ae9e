"""What eval.py measures on a model and its test sets (the library half of its command).

`measure` runs the paper's protocol on a predictor and, if asked, draws the
GIV picture and measures selection; `hair_jax.commands.evaluate` loads the
checkpoint, picks the sets and writes the result files around it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

from hair_jax import inference
from hair_jax.evaluation import evaluators, giv, protocol, selection


@dataclasses.dataclass
class Measured:
    """What `measure` found.

    Attributes:
      rows: one `protocol.Row` per test set.
      compiles: compilations during the protocol (the predictor's traces).
      seconds: how long the protocol took.
      extra: results.json's "giv" and "selection" entries, where measured.
      summary: their lines for the terminal, or None.
    """

    rows: list[protocol.Row]
    compiles: int
    seconds: float
    extra: dict
    summary: str | None


def measure(
    predictor,
    test_sets: Mapping[str, Sequence],
    *,
    max_images: int | None = None,
    progress: bool = False,
    image_dir: str | None = None,
    giv_probes: Sequence[giv.Probe] | None = None,
    giv_plot: str | None = None,
    title: str = "",
    selection_measures: bool = False,
) -> Measured:
    """The protocol on `test_sets`; with `giv_plot`, the GIVs of `giv_probes` drawn there.

    Args:
      predictor: a `Predictor` or a standalone artifact.
      image_dir: also write the restored images there (8-bit PNG).
      giv_probes, giv_plot, title: the GIV picture (HAIR models).
      selection_measures: also the held-out selection measures
        (`evaluators.Selection`; HAIR models, not artifacts).
    """
    start = time.perf_counter()
    rows = protocol.evaluate_sets(
        predictor, test_sets, max_images=max_images, progress=progress, image_dir=image_dir
    )
    seconds = time.perf_counter() - start
    compiles = predictor.traces  # of the protocol (an artifact's GIV plot adds its own)
    extra, lines = {}, []
    if giv_plot:
        gmap = giv.collect(predictor, giv_probes)
        giv.save_figure(giv.plot_givs(gmap, title=title), giv_plot)
        extra["giv"] = {"plot": giv_plot, **giv.separation(gmap), "warning": giv.flat_warning(gmap)}
        if isinstance(predictor, inference.Predictor):  # the model itself, not an artifact
            extra["giv"].update(selection.on_probes(predictor, gmap))
        lines.append(giv.summary(extra["giv"]))
    if selection_measures:
        extra["selection"] = evaluators.Selection(test_sets, max_images).run(predictor)
        lines.append(selection.summary(extra["selection"]))
    return Measured(rows, compiles, seconds, extra, "\n".join(lines) or None)
