"""The embedding graph with int8 weights, built so that its vectors stay those of the float32 model.

Why: the float32 forward pass is ~86 % MatMul and runs near the CPU's float32 peak (~8.7 ms for a 34-token
report on one core), so no graph rewrite makes it fast enough for issue 15's 200 reports/s per worker core;
int8 MatMuls (VNNI / AMX) do the same work in well under half the time.

How: onnxruntime's own quantisation tool (`quantize_dynamic`: int8 weights per output channel, activations
quantised per call to uint8 with one scale) on the graph `graph.build` writes. Alone, that costs too much
quality: cosine 0.974 to the float32 vector for "ok", 0.987 at worst over the labelled reports, against the
0.99 the tests pin. The reason is a handful of input channels of the linears (the same few hidden dimensions
in every layer, after its layer norms, and one or two after each GELU) whose values are 4–15 times the median
channel's: one scale for the whole input spends its 256 levels on them. So the linears are first split
around those channels (`graph.build(…, outliers)`, LLM.int8()'s decomposition): their product with their
weight rows stays in float32 (a few columns), the rest is quantised. The channels are found by running the
float32 graph over a small fixed corpus of app feedback (calibration.txt, not the labelled data) and taking,
per linear, those whose largest value exceeds `RATIO` times the median channel's, at most `LIMIT`.

Measured on this project's labelled reports (912 texts, one core, AMD EPYC with AVX-512 VNNI, with the
graph changes that came with it: query, key and value one MatMul, GELU in onnxruntime's fused form): 3.4–3.9
ms per report against 8.4–8.9 ms in float32 (`bench/enrichment.py` measures both side by side); cosine to
the float32 vectors 0.9987 at worst, 0.9995 on average; 0.9977 at worst over the pinned reference vectors
("ok"); sentence-transformers' published similarities for the model within 0.001; the benchmark's top-5
and grouping figures unchanged. (Splitting fewer channels — `RATIO` 4, at most 4 — is ~0.1 ms faster but
moves the published similarities by up to 0.007.) The runtime's quantised activations depend on everything
in one call, so `embedding.Encoder` runs each text in its own call: a vector depends on its text alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnx

from cell.enrichment import graph

RATIO = 2.5
"""An input channel is split out when its largest value over the corpus exceeds this many times the median
channel's (layer norm outputs: median ~2, the outliers 6–30)."""
LIMIT = 8
"""Channels split out per linear at most: each one is a float32 column beside the int8 product."""
CORPUS = Path(__file__).with_name("calibration.txt")


def corpus() -> list[str]:
    """The calibration texts: one per line, short and long, several languages, a stack trace."""
    return [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def peaks(model: onnx.ModelProto, ids: Callable[[str], list[int]], texts: Sequence[str]) -> dict[str, np.ndarray]:
    """The largest absolute value each input channel of each named linear takes over the texts (float32
    model, one text per run as the encoder runs them)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    linears = {node.name: node.input[0] for node in probe.graph.node if node.op_type == "MatMul" and node.name}
    for tensor in dict.fromkeys(linears.values()):
        probe.graph.output.append(onnx.helper.make_tensor_value_info(tensor, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = list(dict.fromkeys(linears.values()))
    found: dict[str, np.ndarray] = {}
    for text in texts:
        tokens = np.array([ids(text)], dtype=np.int64)
        outputs = session.run(wanted, {"input_ids": tokens, "attention_mask": np.ones_like(tokens)})
        for tensor, value in zip(wanted, outputs, strict=True):
            largest = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            found[tensor] = np.maximum(found[tensor], largest) if tensor in found else largest
    return {name: found[tensor] for name, tensor in linears.items()}


def outliers(found: dict[str, np.ndarray], ratio: float = RATIO, limit: int = LIMIT) -> dict[str, list[int]]:
    """Per linear, the input channels to keep in float32 (largest first)."""
    chosen = {}
    for name, largest in found.items():
        median = float(np.median(largest))
        channels = [int(c) for c in np.argsort(largest)[::-1][:limit] if largest[c] > ratio * median]
        if channels:
            chosen[name] = channels
    return chosen


def write(weights: graph.Weights, ids: Callable[[str], list[int]], path: Path) -> None:
    """Build the float32 graph, find its outlier channels, rebuild it split around them and write the
    quantised graph to `path` (the outlier columns stay float32)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    split = graph.build(weights, outliers(peaks(graph.build(weights), ids, corpus())))
    keep = [node.name for node in split.graph.node if node.name.endswith(graph.OUTLIERS)]
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the tool advises shape inference ("pre-processing") by warning
    try:
        quantize_dynamic(split, path, per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=keep)
    finally:
        logging.getLogger().setLevel(quiet)
