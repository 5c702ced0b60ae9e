"""Converting a JAX function to ONNX with symbolic image sizes (jax2onnx 0.17.1).

An image's height and width are traced as `m*h` and `m*w` (`m` the model's
`multiple`: JAX can then prove every reshape of the U-Net exact). The ONNX
graph's input dims are named "8*h", "8*w" and the graph computes inner
sizes from the input's runtime shape. jax2onnx 0.17.1 finds a size such as
`h` or `4*h` by looking up where the symbol `h` itself enters the graph,
and only an input dim that *is* `h` counts: with `8*h` it raises "No
symbolic dim origin registered for 'h'". `to_onnx` below adds the missing
step while it converts: `h` is the input's dim `m*h` divided by `m`.

jax2onnx is optional (docs/deployment.md) and pinned: the fix
reads its private `LowerDimExpr`, so a jax2onnx that moves it fails loudly
here rather than converting wrongly.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence

import jax


@contextlib.contextmanager
def _multiples_resolved():
    """While active, jax2onnx lowers a symbol `h` that enters only as `m*h` as that dim / m."""
    from jax2onnx.converter import lower_dimexpr  # optional: see the module docstring

    cls = lower_dimexpr.LowerDimExpr
    original = cls._get_dim_value

    def get_dim_value(self, name):
        if name in self.compute_cache or self.ctx.get_symbolic_dim_origin(name) is not None:
            return original(self, name)
        for key in list(self.ctx._sym_origin_str):
            match = re.fullmatch(rf"(\d+)\*{re.escape(name)}", key.replace(" ", ""))
            if match:
                value = self.ctx.builder.Div(
                    original(self, key),
                    self._get_scalar(int(match.group(1))),
                    _outputs=[self.ctx.fresh_name("dimexpr_div")],
                )
                self._set_metadata(value)
                self.compute_cache[name] = value
                return value
        return original(self, name)

    cls._get_dim_value = get_dim_value
    try:
        yield
    finally:
        cls._get_dim_value = original


@contextlib.contextmanager
def _linear_output_check():
    """While active, jax2onnx checks that a lowered value is in the graph in O(1).

    After every equation jax2onnx 0.17.1 asks whether each output value is
    a graph input, an initializer or the output of a node, by comparing it
    with every node's outputs: quadratic in the graph, 75% of a tiny
    Res-HAIR's conversion and most of the paper-size model's 15 minutes.
    A value whose producing node belongs to the graph, or that is one of
    its initializers, answers yes at once; anything else takes the full
    check, so the answers do not change.
    """
    from jax2onnx.converter import output_binding  # optional: see the module docstring

    original = output_binding._value_is_graph_connected

    def is_graph_connected(ctx, value):
        graph = getattr(ctx.builder, "graph", None)
        producer = value.producer()
        if graph is not None and producer is not None and producer.graph is graph:
            return True
        if graph is not None and value.name and value.name in graph.initializers:
            return True
        return original(ctx, value)

    output_binding._value_is_graph_connected = is_graph_connected
    try:
        yield
    finally:
        output_binding._value_is_graph_connected = original


def to_onnx(fn, inputs: Sequence[jax.ShapeDtypeStruct], **kwargs):
    """`jax2onnx.to_onnx(fn, inputs, **kwargs)` -> ModelProto, with `m*h`-style dims resolved.

    `inputs` may hold symbolic shapes from `jax.export.symbolic_shape` (one
    scope for all). Raises ImportError without jax2onnx.
    """
    import jax2onnx  # optional: see the module docstring

    logging.getLogger("jax2onnx").setLevel(logging.ERROR)  # plugins of absent libraries
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)  # "value type ... not known" per shape
    with _multiples_resolved(), _linear_output_check():
        return jax2onnx.to_onnx(fn, list(inputs), **kwargs)
