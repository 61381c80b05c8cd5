"""Rewrites of a transformer encoder's ONNX graph: folding, attention fusion, int8 quantisation.

The embedded all-MiniLM-L6-v2 file is weight-only int8: every weight is stored as int8 and turned
back into fp32 by a ``Cast`` and a ``Mul`` in the graph, so onnxruntime folds it to an fp32 graph
at load. It saves disk, not time. Its attention was exported by torch's
``scaled_dot_product_attention``: Q, K and V projections, head reshapes, a scaled ``MatMul``, an
additive mask built from ``attention_mask``, ``Softmax`` guarded by ``IsNaN``/``Where``, and the
``MatMul`` with V. onnxruntime's transformer optimizer does not recognise that pattern (it fuses
the layer norms and GELUs, not the attention), so the 48 MatMuls stay.

The steps, each a pure function of the graph (and, for the smoothing, of the calibration maxima):

- :func:`fold_constants` evaluates every node whose inputs are all constants (the weight
  dequantisation above) once, with the ONNX reference evaluator, and stores the results.
- :func:`fuse_attention` finds each attention block by its structure (Softmax <- Add(mask) <-
  MatMul(Q, K^T); probabilities -> MatMul(V) -> head merge; Q, K, V each a MatMul + bias Add of
  the same input) and replaces it with onnxruntime's ``Attention`` operator: one QKV projection
  with the concatenated weights, the scale the graph used, the padding mask as ``mask_index``.
  Then :func:`transformer_fusions` runs onnxruntime's optimizer for the rest (BiasGelu; not
  SkipLayerNorm, whose CPU kernel measured slower than what it replaces).
- For ``precision="int8"`` (numbers in docs/benchmarks/embeddings.md):
  :func:`separate_qkv` splits each ``Attention`` back into Q, K and V MatMuls feeding
  ``MultiHeadAttention``, so the projections can be quantised too;
  :func:`smooth_activations` divides each layer-norm output that feeds MatMuls by a per-channel
  power of two, sqrt(max|x| / max|W|), and multiplies the weights' rows by it (SmoothQuant with
  alpha 0.5; the activation maxima come from running :func:`calibration_graph` on the probe
  texts): a few channels 15x larger than the median no longer set every token's int8 scale;
  :func:`quantize_int8` turns each MatMul with a constant weight into ``MatMulIntegerToFloat``:
  weights int8 per output channel, activations int8 per token (row), quantised by opset 21's
  blocked ``QuantizeLinear``. Per-token scales keep one token's outliers from flattening the
  others and make a text's vector independent of the batch it runs in (onnxruntime's dynamic
  quantisation uses one scale per tensor, which cost 0.08 of 10-NN overlap). Without the
  smoothing, quantising Q/K/V cost 0.015 of 10-NN overlap; with it every projection is int8
  and the overlap stays that of the earlier int8 graph, which kept Q/K/V in fp32 (0.960).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["FusionReport", "calibration_graph", "fold_constants", "fuse_attention", "prune",
           "quantize_int8", "separate_qkv", "smooth_activations", "transformer_fusions"]

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


def _replace(graph: Any, node: Any, nodes: list[Any]) -> None:
    """Put ``nodes`` where ``node`` stands (keeping the topological order) and drop it."""
    position = list(graph.node).index(node)
    for offset, item in enumerate(nodes):
        graph.node.insert(position + offset, item)
    graph.node.remove(node)


def separate_qkv(model: Any) -> int:
    """Each fused ``Attention`` -> three MatMuls (Q, K, V) feeding ``MultiHeadAttention`` (the
    biases, the scale and the padding mask move with them), so :func:`quantize_int8` can
    quantise the projections; returns how many were split."""
    from onnx import helper

    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    split = 0
    for node in [n for n in graph.node if n.op_type == "Attention" and n.domain == "com.microsoft"]:
        if len(node.input) != 4 or node.input[1] not in constants or node.input[2] not in constants:
            continue
        x, weight_name, bias_name, mask = node.input
        weight, bias = _numpy(constants[weight_name]), _numpy(constants[bias_name])
        width = weight.shape[1] // 3
        prefix = f"amalfa_mha_{split}"
        nodes = []
        for index, part in enumerate("qkv"):
            part_weight = np.ascontiguousarray(weight[:, index * width:(index + 1) * width])
            graph.initializer.append(_initializer(part_weight, f"{prefix}_{part}_weight"))
            nodes.append(helper.make_node("MatMul", [x, f"{prefix}_{part}_weight"],
                                          [f"{prefix}_{part}"], name=f"{prefix}_{part}"))
        graph.initializer.append(_initializer(bias, f"{prefix}_bias"))
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute
                      if a.name in ("num_heads", "scale")}
        nodes.append(helper.make_node(
            "MultiHeadAttention", [f"{prefix}_q", f"{prefix}_k", f"{prefix}_v", f"{prefix}_bias",
                                   mask], list(node.output), name=prefix, domain="com.microsoft",
            **attributes))
        _replace(graph, node, nodes)
        split += 1
    prune(model)
    return split


def _use_opset(model: Any, version: int) -> None:
    """Raise the default domain's opset to ``version`` (the int8 rewrite needs opset 21's blocked
    QuantizeLinear; the graphs it runs on use no operator whose form changed since 17)."""
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version < version:
            opset.version = version


def _smoothable(model: Any) -> dict[str, list[Any]]:
    """LayerNormalization outputs read by MatMuls with a constant 2-D weight: output -> them."""
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    norms = {node.output[0] for node in graph.node if node.op_type == "LayerNormalization"}
    readers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[0] in norms and node.input[1] in constants:
            readers[node.input[0]].append(node)
    return dict(readers)


def calibration_graph(model: Any) -> tuple[bytes, list[str], int]:
    """A copy of ``model`` whose only output, ``amalfa_calibration_maxima`` (batch, n x width),
    holds per text the largest absolute value of each channel of each smoothable layer-norm
    output over the text's tokens: the graph "pools itself", so any pooled-vectors pipeline
    returns these maxima. Returns the graph, the layer-norm outputs in column order and their
    width (no graph and no outputs when no layer norm feeds a constant MatMul)."""
    from onnx import TensorProto, helper

    readers = _smoothable(model)
    names = sorted(readers)
    if not names:
        return b"", [], 0
    constants = {init.name: init for init in model.graph.initializer}
    widths = {int(constants[readers[name][0].input[1]].dims[0]) for name in names}
    if len(widths) != 1:
        raise ValueError(f"layer norms of different widths {sorted(widths)}")
    width = widths.pop()
    calibration = type(model)()
    calibration.CopyFrom(model)
    _use_opset(calibration, 21)
    graph = calibration.graph
    mask = "amalfa_calibration_mask"
    nodes = [helper.make_node("Cast", ["attention_mask"], [mask + "_f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", [mask + "_f", "amalfa_calibration_last"], [mask])]
    graph.initializer.extend([_initializer(np.array([-1], np.int64), "amalfa_calibration_last"),
                              _initializer(np.array([1], np.int64), "amalfa_calibration_tokens")])
    maxima = []
    for index, name in enumerate(names):
        out = f"amalfa_calibration_{index}"
        nodes += [helper.make_node("Abs", [name], [out + "_abs"]),
                  helper.make_node("Mul", [out + "_abs", mask], [out + "_masked"]),
                  helper.make_node("ReduceMax", [out + "_masked", "amalfa_calibration_tokens"],
                                   [out], keepdims=0)]
        maxima.append(out)
    nodes.append(helper.make_node("Concat", maxima, ["amalfa_calibration_maxima"], axis=-1))
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(
        "amalfa_calibration_maxima", TensorProto.FLOAT, [None, width * len(names)]))
    prune(calibration)
    return calibration.SerializeToString(deterministic=True), names, width


def smooth_activations(model: Any, maxima: dict[str, np.ndarray]) -> int:
    """SmoothQuant-style rescaling of each layer-norm output read by constant MatMuls: channel j
    is divided by s_j = sqrt(max|x_j| / max|W_j|) (normalised to a geometric mean of 1, rounded to
    a power of two) and the MatMuls' weight rows multiplied by it, so the few outlier channels no
    longer set every token's int8 scale. ``maxima``: layer-norm output -> max |x_j| per channel
    on calibration texts. The product is unchanged in exact arithmetic; returns how many outputs
    were rescaled."""
    from onnx import helper

    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    done = 0
    for name, readers in sorted(_smoothable(model).items()):
        if name not in maxima:
            continue
        weights = [_numpy(constants[node.input[1]]) for node in readers]
        weight_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        ratio = np.maximum(maxima[name], 1e-5) / np.maximum(weight_max, 1e-5)
        exponent = 0.5 * np.log2(ratio)
        scale = np.exp2(np.rint(exponent - exponent.mean())).astype(np.float32)
        smoothed = f"{name}_amalfa_smoothed"
        graph.initializer.append(_initializer((1.0 / scale).astype(np.float32), smoothed + "_by"))
        position = next(i for i, node in enumerate(graph.node) if name in node.output) + 1
        graph.node.insert(position, helper.make_node("Mul", [name, smoothed + "_by"], [smoothed],
                                                     name=smoothed))
        for node, weight in zip(readers, weights):
            node.input[0] = smoothed
            rescaled = (weight * scale[:, None]).astype(np.float32)
            constants[node.input[1]].CopyFrom(_initializer(rescaled, node.input[1]))
        done += 1
    return done


#: GELU's outputs are >= -0.17: their int8 zero point sits low, so the positive side gets
#: 223 steps instead of 127 (the scale never drops below 0.17 / 32, so -0.17 stays in range).
_GELU_ZERO_POINT, _GELU_MIN = 32, 0.17
_GELUS = frozenset({"BiasGelu", "Gelu", "FastGelu"})


def quantize_int8(model: Any) -> int:
    """MatMuls with a constant 2-D weight -> ``MatMulIntegerToFloat`` with per-channel int8
    weights and per-token int8 activations; returns how many were quantised.

    Each activation is quantised once for all its readers: scale = max |row| / 127 (zero point
    128) by opset 21's blocked ``QuantizeLinear`` (one block per row), or for GELU outputs
    max(row) / 223 with zero point 32 (no Abs pass: GELU is >= -0.17). The product is multiplied
    by the row scales afterwards."""
    from onnx import helper

    _use_opset(model, 21)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    graph = model.graph
    constants = {init.name: init for init in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    shared: dict[str, np.ndarray] = {
        "inverse_127": np.array(1 / 127, np.float32), "tiny": np.array(1e-8, np.float32),
        "one": np.array(1.0, np.float32), "last": np.array([-1], np.int64),
        "zp_128": np.array(128, np.uint8), "zp_gelu": np.array(_GELU_ZERO_POINT, np.uint8),
        "inverse_gelu": np.array(1 / (255 - _GELU_ZERO_POINT), np.float32),
        "gelu_floor": np.array(_GELU_MIN / _GELU_ZERO_POINT, np.float32)}
    graph.initializer.extend(_initializer(value, f"amalfa_q_{name}")
                             for name, value in shared.items())
    zero_points: dict[str, str] = {}  # every row scale has the activation's (batch, seq, 1) shape
    quantised_inputs: dict[str, tuple[str, str, str]] = {}
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
            source = producer.get(x)
            gelu = source is not None and source.op_type in _GELUS
            zero_point = "amalfa_q_zp_gelu" if gelu else "amalfa_q_zp_128"
            if gelu:
                new += [helper.make_node("ReduceMax", [x, "amalfa_q_last"], [q + "_max"],
                                         keepdims=1),
                        helper.make_node("Mul", [q + "_max", "amalfa_q_inverse_gelu"],
                                         [q + "_raw"]),
                        helper.make_node("Max", [q + "_raw", "amalfa_q_gelu_floor"],
                                         [q + "_scale"])]
            else:
                new += [helper.make_node("Abs", [x], [q + "_abs"]),
                        helper.make_node("ReduceMax", [q + "_abs", "amalfa_q_last"],
                                         [q + "_max"], keepdims=1),
                        helper.make_node("Max", [q + "_max", "amalfa_q_tiny"], [q + "_range"]),
                        helper.make_node("Mul", [q + "_range", "amalfa_q_inverse_127"],
                                         [q + "_scale"])]
            if zero_point not in zero_points:
                zero_points[zero_point] = f"{zero_point}_rows"
                new += [helper.make_node("Shape", [q + "_scale"], [q + "_shape"]),
                        helper.make_node("Expand", [zero_point, q + "_shape"],
                                         [zero_points[zero_point]])]
            new.append(helper.make_node("QuantizeLinear", [x, q + "_scale",
                                                           zero_points[zero_point]],
                                        [q + "_u8"], axis=-1, block_size=weight.shape[0]))
            quantised_inputs[x] = (q + "_u8", q + "_scale", zero_point)
        x_u8, x_scale, zero_point = quantised_inputs[x]
        graph.initializer.extend([_initializer(weight_q, name + "_w"),
                                  _initializer(weight_scale.astype(np.float32), name + "_ws")])
        new += [
            helper.make_node("MatMulIntegerToFloat", [x_u8, name + "_w", "amalfa_q_one",
                                                      name + "_ws", zero_point],
                             [name + "_f32"], name=name, domain="com.microsoft"),
            helper.make_node("Mul", [name + "_f32", x_scale], [node.output[0]]),
        ]
        _replace(graph, node, new)
        count += 1
    prune(model)
    return count
