"""An exact, faster spelling of ``PRelu`` for onnxruntime's CPU provider, applied in memory at load.

onnxruntime's CPU ``PRelu`` kernel is slow, and it has no blocked-layout (NCHWc) form: each one makes
the optimiser reorder the tensor out of that layout and back around it. The rewrite computes the
same function from ops that stay in the blocked layout::

    r = Relu(x)
    m = Relu(DepthwiseConv1x1(x, -1))      # Relu(-x)
    y = DepthwiseConv1x1(m, -a) + r        # the Add fuses into the conv as its "sum" input

It is exact, not an approximation: a product by -1 is exact, and ``(-a)·(-x)`` rounds exactly as
``a·x`` does; for x > 0, m is 0 and y = r = x; for x ≤ 0, r is 0 and y = a·x. A fused multiply-add
over ``(-a)·m + r`` is also exact since one of its terms is zero. Still, whether an execution
provider keeps that promise is checked, not assumed: :func:`exact_session` runs both graphs on a
fixed input and keeps the rewrite only when every output is equal bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

# Set on a rewritten graph, so a session can be asked which graph it runs (custom_metadata_map).
METADATA_KEY = "kyc.exact_prelu_rewrite"

Rewrite = Callable[[onnx.ModelProto], tuple[onnx.ModelProto, int]]
BuildSession = Callable[[bytes], ort.InferenceSession]


def _channels(model: onnx.ModelProto) -> dict[str, int | None]:
    """The channel count of each rank-4 tensor whose shape inference knows it."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    found: dict[str, int | None] = {}
    for value in (*g.input, *g.value_info, *g.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            found[value.name] = dims[1].dim_value or None
    return found


def _channel_slope(slope: np.ndarray, channels: int) -> np.ndarray | None:
    """The per-channel slopes of a ``PRelu`` on an (N, C, H, W) input, or None if it is not one.

    ``[C, 1, 1]``, ``[1, C, 1, 1]`` and their one-channel forms broadcast along the channel axis;
    a ``[C]`` slope would broadcast along the width, which a depthwise conv cannot express.
    """
    shape = slope.shape
    if len(shape) not in (3, 4) or shape[-2:] != (1, 1) or (len(shape) == 4 and shape[0] != 1):
        return None
    if shape[-3] not in (1, channels):
        return None
    return np.broadcast_to(slope.reshape(-1), (channels,)).astype(np.float32)


def rewrite_prelu(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` with each per-channel, constant-slope ``PRelu`` spelled exactly as above.

    ``PRelu`` nodes the rewrite cannot express (a slope computed at run time, broadcast along
    another axis, or an input of unknown rank or channel count) are left as they are.

    Returns:
        The rewritten copy and the number of ``PRelu`` nodes replaced (0: ``model`` itself, as it was).
    """
    if not any(n.op_type == "PRelu" for n in model.graph.node):
        return model, 0
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    channels = _channels(out)
    taken = {name for n in graph.node for name in (*n.input, *n.output)} | set(inits)
    nodes: list[onnx.NodeProto] = []
    added: list[onnx.TensorProto] = []
    replaced = 0
    for node in graph.node:
        slope_name = node.input[1] if node.op_type == "PRelu" and len(node.input) == 2 else ""
        c = channels.get(node.input[0]) if slope_name in inits else None
        slope = _channel_slope(numpy_helper.to_array(inits[slope_name]), c) if c else None
        if slope is None or c is None:
            nodes.append(node)
            continue
        x, y = node.input[0], node.output[0]
        p = f"{y}/exact_prelu"
        if any(name.startswith(p) for name in taken):
            nodes.append(node)
            continue
        minus_one = numpy_helper.from_array(np.full((c, 1, 1, 1), -1.0, np.float32), f"{p}/minus_one")
        minus_slope = numpy_helper.from_array((-slope).reshape(c, 1, 1, 1), f"{p}/minus_slope")
        added += [minus_one, minus_slope]
        nodes += [
            helper.make_node("Relu", [x], [f"{p}/pos"], name=f"{p}/relu"),
            helper.make_node(
                "Conv", [x, minus_one.name], [f"{p}/negx"], name=f"{p}/negate", group=c, kernel_shape=[1, 1]
            ),
            helper.make_node("Relu", [f"{p}/negx"], [f"{p}/neg"], name=f"{p}/relu_neg"),
            helper.make_node(
                "Conv", [f"{p}/neg", minus_slope.name], [f"{p}/scaled"], name=f"{p}/slope", group=c, kernel_shape=[1, 1]
            ),
            helper.make_node("Add", [f"{p}/scaled", f"{p}/pos"], [y], name=f"{p}/sum"),
        ]
        replaced += 1
    del graph.node[:]
    graph.node.extend(nodes)
    # Slopes no other node reads would make onnxruntime warn about unused initializers at load
    # (and an old exporter's copy of them among the graph inputs would become a required input).
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    dropped = {i.name for i in graph.initializer} - used
    kept = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend([*kept, *added])
    inputs = [i for i in graph.input if i.name not in dropped]
    del graph.input[:]
    graph.input.extend(inputs)
    if replaced:
        props = {prop.key: prop.value for prop in out.metadata_props}
        onnx.helper.set_model_props(out, {**props, METADATA_KEY: str(replaced)})
    return out, replaced


def rewritten_nodes(session: ort.InferenceSession) -> int:
    """How many ``PRelu`` nodes the graph ``session`` runs had rewritten (0: the graph as pinned)."""
    return int(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, 0))


def _outputs(session: ort.InferenceSession, probe: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(o) for o in session.run(None, {session.get_inputs()[0].name: probe})]


def exact_session(
    model: onnx.ModelProto,
    original: ort.InferenceSession,
    probes: Sequence[np.ndarray],
    build: BuildSession,
    rewrite: Rewrite = rewrite_prelu,
    name: str = "",
) -> tuple[ort.InferenceSession, bool]:
    """A session on the rewritten graph if it answers ``probes`` exactly as ``original`` does.

    Args:
        model: the graph as loaded (already prepared for batching).
        original: a session on ``model`` itself, kept when the rewrite is refused.
        probes: fixed model inputs, one per batch size the caller will use.
        build: makes a session from a serialised graph, with the options ``original`` has.
        rewrite: the rewrite to try (a parameter so a test can hand in one that is wrong).
        name: the model's name, for the log.

    Returns:
        The session to use, and whether it runs the rewritten graph.
    """
    rewritten, replaced = rewrite(model)
    if not replaced:
        return original, False
    try:
        candidate = build(rewritten.SerializeToString())
        for probe in probes:
            want, got = _outputs(original, probe), _outputs(candidate, probe)
            if len(want) != len(got) or not all(np.array_equal(a, b) for a, b in zip(want, got, strict=True)):
                log.warning(
                    "model %s: the exact PRelu rewrite (%d nodes) changed the outputs at batch %d on "
                    "this execution provider; keeping the original graph",
                    name or model.graph.name,
                    replaced,
                    probe.shape[0],
                )
                return original, False
    except Exception as exc:  # onnxruntime's errors are pybind classes without a common public base
        log.warning(
            "model %s: the exact PRelu rewrite did not run (%s); keeping the original graph",
            name or model.graph.name,
            exc,
        )
        return original, False
    log.info("model %s: %d PRelu nodes rewritten exactly", name or model.graph.name, replaced)
    return candidate, True
