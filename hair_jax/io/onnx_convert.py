"""Converting a JAX function to ONNX with symbolic image sizes (jax2onnx 0.17.1).

An image's height and width are traced as `m*h` and `m*w` (`m` the model's
`multiple`: JAX can then prove every reshape of the U-Net exact). The ONNX
graph's input dims are named "8*h", "8*w" and the graph computes inner
sizes from the input's runtime shape. jax2onnx 0.17.1 finds a size such as
`h` or `4*h` by looking up where the symbol `h` itself enters the graph,
and only an input dim that *is* `h` counts: with `8*h` it raises "No
symbolic dim origin registered for 'h'". `to_onnx` below adds the missing
step while it converts: `h` is the input's dim `m*h` divided by `m`. After
converting, `fuse_layer_norms` writes each of our LayerNorms as one ONNX
`LayerNormalization` node.

jax2onnx is optional (docs/deployment.md) and pinned: the fix
reads its private `LowerDimExpr`, so a jax2onnx that moves it fails loudly
here rather than converting wrongly.
"""

from __future__ import annotations

import collections
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
    """`jax2onnx.to_onnx(fn, inputs, **kwargs)` -> ModelProto: `m*h` dims resolved, LayerNorms fused.

    `inputs` may hold symbolic shapes from `jax.export.symbolic_shape` (one
    scope for all). Raises ImportError without jax2onnx.
    """
    import jax2onnx  # optional: see the module docstring

    logging.getLogger("jax2onnx").setLevel(logging.ERROR)  # plugins of absent libraries
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)  # "value type ... not known" per shape
    with _multiples_resolved(), _linear_output_check():
        proto = jax2onnx.to_onnx(fn, list(inputs), **kwargs)
    fuse_layer_norms(proto.graph)
    return proto


# Our LayerNorm (`hair_jax.nn.layers.LayerNorm` with a bias) as jax2onnx
# writes it: y = (x - mean(x)) * (1 / sqrt(mean((x - mean(x))^2) + eps)) * scale + bias,
# means over the last axis, eps, 1, scale and bias constants.
_LAYER_NORM = ("ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Div", "Mul", "Mul", "Add")


def fuse_layer_norms(graph) -> int:
    """Rewrites each of our LayerNorms in `graph` as one ONNX LayerNormalization; how many.

    onnxruntime runs the ten nodes of `_LAYER_NORM` as ten passes over the
    feature map (it does not fuse this form itself); LayerNormalization is
    one. Only that exact chain is rewritten: each intermediate value used
    by the chain alone, both means over the last axis, eps, 1, scale and
    bias initializers. Anything else stays as it was.
    """
    from onnx import helper, numpy_helper  # onnx comes with jax2onnx

    inits = {t.name: t for t in graph.initializer}
    const = lambda name: numpy_helper.to_array(inits[name]) if name in inits else None
    outputs = {o.name for o in graph.output}
    users = collections.defaultdict(list)
    for node in graph.node:
        for name in dict.fromkeys(node.input):  # x * x uses x once
            users[name].append(node)

    def chain_from(mean):  # the ten nodes of _LAYER_NORM with their operands checked, or None
        nodes = [mean]
        for op in _LAYER_NORM[1:]:
            # Each node reads the one before, but the square and the
            # normalised value both read xc = x - mean(x).
            xc = nodes[1].output[0] if len(nodes) > 1 else None
            value = xc if len(nodes) in (2, 7) else nodes[-1].output[0]
            uses = [u for u in users[value] if u.op_type == op and all(u is not n for n in nodes)]
            if len(nodes) == 2:
                uses = [u for u in uses if list(u.input) == [xc, xc]]
            if len(uses) != 1 or nodes[-1].output[0] in outputs:
                return None
            nodes.append(uses[0])
        mean, sub, square, mean2, _, sqrt, div, scaled, _, _ = nodes
        xc = sub.output[0]
        expected = {
            id(sub): [mean.input[0], mean.output[0]],
            id(square): [xc, xc],
            id(div): [div.input[0], sqrt.output[0]],
            id(scaled): [xc, div.output[0]],
        }
        wired = all(list(n.input) == expected.get(id(n), list(n.input)) for n in nodes)
        once = (nodes[0], *nodes[2:-1])
        alone = len(users[xc]) == 2 and all(len(users[n.output[0]]) == 1 for n in once)
        return nodes if wired and alone else None

    fused, removed, replace = 0, set(), {}
    for mean in [n for n in graph.node if n.op_type == "ReduceMean"]:
        nodes = chain_from(mean)
        if nodes is None:
            continue
        _, _, _, mean2, add_eps, _, div, scaled, mul_scale, add_bias = nodes
        other = lambda node, value: next((i for i in node.input if i != value), None)
        eps, one, scale, bias = (
            const(other(node, value))
            for node, value in (
                (add_eps, mean2.output[0]),
                (div, div.input[1]),
                (mul_scale, scaled.output[0]),
                (add_bias, mul_scale.output[0]),
            )
        )
        if any(c is None for c in (eps, one, scale, bias)) or eps.size != 1 or one.size != 1:
            continue
        rank = scale.ndim
        last_axis = [const(n.input[1]) for n in (mean, mean2)]
        if (
            float(one.ravel()[0]) != 1.0
            or not all(a is not None and a.tolist() in ([-1], [rank - 1]) for a in last_axis)
            or scale.shape[:-1] != (1,) * (rank - 1)
            or bias.shape != scale.shape
        ):
            continue
        out = add_bias.output[0]
        for name, value in ((f"{out}/scale", scale), (f"{out}/bias", bias)):
            graph.initializer.append(numpy_helper.from_array(value.reshape(-1), name))
        replace[id(add_bias)] = helper.make_node(
            "LayerNormalization",
            [mean.input[0], f"{out}/scale", f"{out}/bias"],
            [out],
            name=f"{out}/layer_norm",
            axis=-1,
            epsilon=float(eps.ravel()[0]),
        )
        removed.update(id(n) for n in nodes[:-1])
        fused += 1
    if fused:
        kept = [replace.get(id(n), n) for n in graph.node if id(n) not in removed]
        del graph.node[:]
        graph.node.extend(kept)
        gone = removed | set(replace)
        unused = {  # constants that only the replaced nodes read
            name for name in inits if users[name] and all(id(u) in gone for u in users[name])
        }
        kept_inits = [t for t in graph.initializer if t.name not in unused]
        del graph.initializer[:]
        graph.initializer.extend(kept_inits)
    return fused
