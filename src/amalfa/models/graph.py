"""Rewrites of a transformer encoder's ONNX graph: folding, attention fusion, int8 quantisation.

The embedded all-MiniLM-L6-v2 file is weight-only int8: every weight is stored as int8 and turned
back into fp32 by a ``Cast`` and a ``Mul`` in the graph, so onnxruntime folds it to an fp32 graph
at load. It saves disk, not time. Its attention was exported by torch's
``scaled_dot_product_attention``: Q, K and V projections, head reshapes, a scaled ``MatMul``, an
additive mask built from ``attention_mask``, ``Softmax`` guarded by ``IsNaN``/``Where``, and the
``MatMul`` with V. onnxruntime's transformer optimizer does not recognise that pattern (it fuses
the layer norms and GELUs, not the attention), so the 48 MatMuls stay.

Three steps, each a pure function of the graph (same input, same bytes out):

- :func:`fold_constants` evaluates every node whose inputs are all constants (the weight
  dequantisation above) once, with the ONNX reference evaluator, and stores the results.
- :func:`fuse_attention` finds each attention block by its structure (Softmax <- Add(mask) <-
  MatMul(Q, K^T); probabilities -> MatMul(V) -> head merge; Q, K, V each a MatMul + bias Add of
  the same input) and replaces it with onnxruntime's ``Attention`` operator: one QKV projection
  with the concatenated weights, the scale the graph used, the padding mask as ``mask_index``.
  Then :func:`transformer_fusions` runs onnxruntime's optimizer for the rest (BiasGelu; not
  SkipLayerNorm, whose CPU kernel measured slower than what it replaces).
- :func:`quantize_int8` (only for ``precision="int8"``) turns each remaining MatMul with a
  constant weight into ``MatMulInteger``: weights int8 per output channel, activations int8 per
  token (row), symmetric, with the common zero point 128. Per-token scales keep the few outlier
  channels of one token from flattening every other token (onnxruntime's dynamic quantisation
  uses one scale per tensor, which costs 0.08 of 10-NN overlap on the reference texts). The fused
  attention keeps fp32 weights: quantising Q and K moves the attention scores too much.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["FusionReport", "fold_constants", "fuse_attention", "prune", "quantize_int8",
           "transformer_fusions"]

log = logging.getLogger(__name__)

FusionReport = dict[str, int]

_MASK_INT32 = "amalfa_attention_mask_int32"
# Ops whose all-constant instances are folded: elementwise, shape and dequantisation ops.
_FOLDABLE = frozenset({"Cast", "Mul", "Add", "Sub", "Div", "DequantizeLinear", "Transpose",
                       "Reshape", "Unsqueeze", "Squeeze", "Concat", "Identity", "Neg", "Sqrt"})


def _numpy(tensor: Any) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor)


def _initializer(array: np.ndarray, name: str) -> Any:
    from onnx import numpy_helper

    return numpy_helper.from_array(array, name)


def prune(model: Any) -> None:
    """Drop nodes whose outputs nobody uses, then initializers nobody reads."""
    graph = model.graph
    while True:
        used = {output.name for output in graph.output}
        for node in graph.node:
            used.update(node.input)
        dead = [node for node in graph.node if not any(o in used for o in node.output)]
        for node in dead:
            graph.node.remove(node)
        if not dead:
            break
    read = {name for node in graph.node for name in node.input}
    read.update(output.name for output in graph.output)
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def fold_constants(model: Any) -> int:
    """Evaluate nodes whose inputs are all initializers; returns how many were folded."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    values = {init.name: init for init in graph.initializer}
    folded = 0
    for node in list(graph.node):
        if node.op_type not in _FOLDABLE or node.domain not in ("", "ai.onnx"):
            continue
        inputs = [name for name in node.input if name]
        if not inputs or not all(name in values for name in inputs):
            continue
        tiny = helper.make_model(
            helper.make_graph([node], "fold", [], [helper.make_tensor_value_info(o, 0, None)
                                                   for o in node.output],
                              initializer=[values[name] for name in inputs]),
            opset_imports=list(model.opset_import))
        results = ReferenceEvaluator(tiny).run(None, {})
        graph.node.remove(node)
        for name, result in zip(node.output, results):
            tensor = _initializer(np.asarray(result), name)
            graph.initializer.append(tensor)
            values[name] = tensor
        folded += 1
    prune(model)
    return folded


class _Graph:
    """Producer and consumer maps over a graph, and constant lookup."""

    def __init__(self, model: Any) -> None:
        graph = model.graph
        self.constants = {init.name: init for init in graph.initializer}
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)

    def const(self, name: str) -> np.ndarray | None:
        if name in self.constants:
            return _numpy(self.constants[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute:
            return _numpy(node.attribute[0].t)
        return None

    def only_consumer(self, name: str, op_type: str) -> Any | None:
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op_type else None

    def projection(self, name: str) -> dict[str, Any] | None:
        """Up from Q, K or V through constant Muls, Transposes and Reshapes to
        ``Add(MatMul(x, W), b)``: x, W, b, the product of the scalar Muls, the Reshape shapes."""
        scale, shapes = 1.0, []
        while True:
            node = self.producer.get(name)
            if node is None:
                return None
            if node.op_type == "Mul":
                factors = [self.const(i) for i in node.input]
                scalar = next((i for i, f in enumerate(factors) if f is not None and f.size == 1),
                              None)
                if scalar is None:
                    return None
                scale *= float(np.asarray(factors[scalar]).reshape(-1)[0])
                name = node.input[1 - scalar]
            elif node.op_type in ("Transpose", "Reshape"):
                if node.op_type == "Reshape":
                    shapes.append(node.input[1])
                name = node.input[0]
            elif node.op_type == "Add":
                biases = [i for i, x in enumerate(node.input) if self.const(x) is not None]
                if len(biases) != 1:
                    return None
                matmul = self.producer.get(node.input[1 - biases[0]])
                if matmul is None or matmul.op_type != "MatMul" \
                        or self.const(matmul.input[1]) is None:
                    return None
                return {"x": matmul.input[0], "w": self.const(matmul.input[1]),
                        "b": self.const(node.input[biases[0]]), "scale": scale, "shapes": shapes}
            else:
                return None

    def head_count(self, shape_names: Iterable[str], hidden: int) -> int | None:
        """Heads from a (batch, sequence, heads, head size) Reshape built by a Concat."""
        for shape_name in shape_names:
            node = self.producer.get(shape_name)
            shape = self.const(shape_name)
            parts: list[int | None]
            if shape is not None:
                parts = [int(v) for v in shape.reshape(-1)]
            elif node is not None and node.op_type == "Concat":
                consts = [self.const(i) for i in node.input]
                parts = [None if c is None else int(c.reshape(-1)[0]) for c in consts]
            else:
                continue
            if len(parts) != 4:
                continue
            heads, size = parts[2], parts[3]
            if heads is not None and heads > 0:
                return heads
            if size is not None and size > 0 and hidden % size == 0:
                return hidden // size
        return None


def _attention_block(graph: _Graph, softmax: Any) -> dict[str, Any] | None:
    """The parts of one attention block around ``softmax``, or None if it is not one."""
    add = graph.producer.get(softmax.input[0])
    if add is None or add.op_type != "Add":
        return None
    scores = next((graph.producer[i] for i in add.input
                   if i in graph.producer and graph.producer[i].op_type == "MatMul"), None)
    if scores is None:
        return None
    probabilities = softmax.output[0]
    guard = next((n for n in graph.consumers.get(probabilities, []) if n.op_type == "Where"),
                 None)
    if guard is not None:  # the IsNaN/Where guard of fully masked rows
        probabilities = guard.output[0]
    context = graph.only_consumer(probabilities, "MatMul")
    if context is None:
        return None
    transpose = graph.only_consumer(context.output[0], "Transpose")
    if transpose is None or [int(v) for v in transpose.attribute[0].ints] != [0, 2, 1, 3]:
        return None
    merge = graph.only_consumer(transpose.output[0], "Reshape")
    if merge is None:
        return None
    q = graph.projection(scores.input[0])
    k = graph.projection(scores.input[1])
    v = graph.projection(context.input[1])
    if not (q and k and v) or not q["x"] == k["x"] == v["x"] or v["scale"] != 1.0:
        return None
    hidden = int(q["w"].shape[1])
    heads = graph.head_count([*v["shapes"], *q["shapes"]], hidden)
    if heads is None or hidden % heads:
        return None
    return {"q": q, "k": k, "v": v, "heads": heads, "output": merge}


def fuse_attention(model: Any) -> int:
    """Replace each torch SDPA-style attention block with ``com.microsoft.Attention``; returns
    how many were fused. The padding mask is the graph's ``attention_mask`` input."""
    from onnx import TensorProto, helper

    graph_inputs = {i.name for i in model.graph.input}
    if "attention_mask" not in graph_inputs:
        return 0
    graph = _Graph(model)
    fused = 0
    for softmax in [n for n in model.graph.node if n.op_type == "Softmax"]:
        block = _attention_block(graph, softmax)
        if block is None:
            continue
        q, k, v = block["q"], block["k"], block["v"]
        prefix = f"amalfa_attention_{fused}"
        weight = np.concatenate([q["w"], k["w"], v["w"]], axis=1).astype(np.float32)
        bias = np.concatenate([q["b"], k["b"], v["b"]]).astype(np.float32)
        model.graph.initializer.extend([_initializer(weight, prefix + "_qkv_weight"),
                                        _initializer(bias, prefix + "_qkv_bias")])
        node = helper.make_node(
            "Attention", [q["x"], prefix + "_qkv_weight", prefix + "_qkv_bias", _MASK_INT32],
            [block["output"].output[0]], name=prefix, domain="com.microsoft",
            num_heads=block["heads"], scale=q["scale"] * k["scale"])
        nodes = model.graph.node
        position = list(nodes).index(block["output"])
        nodes.insert(position, node)
        nodes.remove(block["output"])
        fused += 1
    if fused:
        cast = helper.make_node("Cast", ["attention_mask"], [_MASK_INT32],
                                name="amalfa_attention_mask_cast", to=TensorProto.INT32)
        model.graph.node.insert(0, cast)
        if not any(o.domain == "com.microsoft" for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        prune(model)
    return fused


def transformer_fusions(model: Any) -> Any:
    """onnxruntime's transformer optimizer without its attention fusion (done above): GELU with
    its bias (BiasGelu), layer norms as LayerNormalization.

    Not SkipLayerNormalization: with onnxruntime 1.32 on the CPU its kernel took 22% of the
    fused fp32 graph's time where the plain residual Add and LayerNormalization take 4%
    (profiled on the reference texts), so the sessions also switch off onnxruntime's own
    SkipLayerNormFusion (:data:`amalfa.models._runtime.DISABLED_OPTIMIZERS`).
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_attention = False
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    options.enable_embed_layer_norm = False  # keeps the token_type_ids input as it is
    quiet = logging.getLogger("onnxruntime.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it logs every fusion it tries at WARNING
    try:
        optimized = optimize_model(model, model_type="bert", num_heads=0, hidden_size=0,
                                   optimization_options=options, opt_level=0)
    finally:
        quiet.setLevel(level)
    return optimized.model


def quantize_int8(model: Any) -> int:
    """MatMuls with a constant 2-D weight -> MatMulInteger with per-channel int8 weights and
    per-token int8 activations; returns how many were quantised."""
    from onnx import TensorProto, helper

    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    shared: dict[str, np.ndarray] = {
        "127": np.array(127.0, np.float32), "128.5": np.array(128.5, np.float32),
        "0": np.array(0.0, np.float32), "255.49": np.array(255.49, np.float32),
        "tiny": np.array(1e-8, np.float32), "zero_point": np.array(128, np.uint8)}
    graph.initializer.extend(_initializer(value, f"amalfa_q_{name}")
                             for name, value in shared.items())
    quantised_inputs: dict[str, tuple[str, str]] = {}
    count = 0
    for node in list(graph.node):
        if node.op_type != "MatMul" or node.input[1] not in constants:
            continue
        weight = _numpy(constants[node.input[1]]).astype(np.float32)
        if weight.ndim != 2:
            continue
        weight_scale = np.abs(weight).max(axis=0) / 127.0
        weight_scale[weight_scale == 0] = 1.0
        weight_q = np.clip(np.rint(weight / weight_scale), -127, 127).astype(np.int8)
        x, name = node.input[0], f"amalfa_q{count}"
        new: list[Any] = []
        if x not in quantised_inputs:  # one per-token quantisation per activation tensor
            q = f"{name}_x"
            # x * (127 / max|row|) + 128.5, truncated by the Cast: round half up to [1, 255]
            # (the Cast to uint8 truncates; a Round would be one more pass over the tensor)
            new += [
                helper.make_node("Abs", [x], [q + "_abs"]),
                helper.make_node("ReduceMax", [q + "_abs"], [q + "_max"], keepdims=1, axes=[-1]),
                helper.make_node("Max", [q + "_max", "amalfa_q_tiny"], [q + "_range"]),
                helper.make_node("Div", [q + "_range", "amalfa_q_127"], [q + "_scale"]),
                helper.make_node("Div", ["amalfa_q_127", q + "_range"], [q + "_inverse"]),
                helper.make_node("Mul", [x, q + "_inverse"], [q + "_scaled"]),
                helper.make_node("Add", [q + "_scaled", "amalfa_q_128.5"], [q + "_shifted"]),
                helper.make_node("Clip", [q + "_shifted", "amalfa_q_0", "amalfa_q_255.49"],
                                 [q + "_clipped"]),
                helper.make_node("Cast", [q + "_clipped"], [q + "_u8"], to=TensorProto.UINT8),
            ]
            quantised_inputs[x] = (q + "_u8", q + "_scale")
        x_u8, x_scale = quantised_inputs[x]
        graph.initializer.extend([_initializer(weight_q, name + "_w"),
                                  _initializer(weight_scale.astype(np.float32), name + "_ws")])
        new += [
            helper.make_node("MatMulInteger", [x_u8, name + "_w", "amalfa_q_zero_point"],
                             [name + "_i32"], name=name),
            helper.make_node("Cast", [name + "_i32"], [name + "_f32"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [name + "_f32", name + "_ws"], [name + "_wscaled"]),
            helper.make_node("Mul", [name + "_wscaled", x_scale], [node.output[0]]),
        ]
        position = list(graph.node).index(node)
        for offset, item in enumerate(new):
            graph.node.insert(position + offset, item)
        graph.node.remove(node)
        count += 1
    prune(model)
    return count
