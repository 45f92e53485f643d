"""Sentence-transformers embedder (all-MiniLM-L6-v2 from its PyPI package by default).

Implements core.protocols.Embedder; also exposes `token_spans` so the chunker sizes chunks in this model's
own tokens. Texts longer than the model's `max_seq_length` (256 for MiniLM) are truncated by the model,
which is why the chunker keeps chunks within that length.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.cpus import available_cpu_count
from services.core.errors import ConfigError, NotReady
from services.core.packaged import PACKAGED_MINILM, resolve_encoder
from services.core.protocols import Embedder
from services.core.settings import RagSettings
from services.rag.onnx_embedder import OnnxEmbedder

logger = logging.getLogger(__name__)


class SentenceTransformerEmbedder:
    def __init__(
        self,
        model: str = PACKAGED_MINILM,
        *,
        batch_size: int = 64,
        threads: int = 0,
        max_seq_length: int | None = None,
    ) -> None:
        if not model:
            raise ValueError("model must be a packaged alias, a folder or a hub id, got an empty string")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = library default), got {threads}")
        if max_seq_length is not None and max_seq_length <= 0:
            raise ValueError(f"max_seq_length must be > 0, got {max_seq_length}")
        self._model_name = model
        self._batch_size = batch_size
        self._threads = threads
        self._max_seq_length = max_seq_length
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_name

    @property
    def dimensions(self) -> int:
        model = self._loaded()
        # sentence-transformers 5.x renamed the method; keep both working.
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    @property
    def max_seq_length(self) -> int:
        return int(self._loaded().max_seq_length)

    def warm_up(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            import torch
            from sentence_transformers import SentenceTransformer

            if self._threads:
                torch.set_num_threads(self._threads)
            path = resolve_encoder(self._model_name)
            try:
                model = SentenceTransformer(path, device="cpu")
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot load embedder {self._model_name!r} from {path}: {exc}") from exc
            if self._max_seq_length is not None:
                model.max_seq_length = self._max_seq_length
            model.eval()
            self._model = model
            logger.info(
                "embedder %s loaded: %d dimensions, max_seq_length %d",
                self._model_name,
                self.dimensions,
                model.max_seq_length,
            )

    def _loaded(self) -> Any:
        if self._model is None:
            raise NotReady(f"embedder {self._model_name!r} is not loaded: call warm_up() first")
        return self._model

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of each token (no special tokens), for chunking in model tokens."""
        encoding = self._loaded().tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [(int(start), int(end)) for start, end in encoding["offset_mapping"]]

    def count_tokens(self, text: str) -> int:
        return len(self._loaded().tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        model = self._loaded()
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        vector: npt.NDArray[np.float32] = self.embed_documents([text])[0]
        return vector


def embedder_cache_dir(settings: RagSettings) -> Path:
    """Where the ONNX export lives: beside the index folder (`var/index` -> `var/embedder-cache`)."""
    return Path(settings.index_dir).parent / "embedder-cache"


def build_query_embedder(settings: RagSettings) -> Embedder:
    """The embedder for queries at serving time, per `rag.embedder_engine` (default ONNX Runtime).

    ONNX runs one thread: with the cores shared by the generator, a second intra-op thread made a query
    slower, not faster (benchmarks/results/embedder.md). The torch engine keeps the library's threads,
    because torch.set_num_threads would also change the thread count of an in-process generator.
    """
    engine = settings.embedder_engine
    if engine == "torch":
        return SentenceTransformerEmbedder(settings.embedder)
    if engine != "onnx":
        raise ConfigError(f"rag.embedder_engine must be 'onnx' or 'torch', got {engine!r}")
    return OnnxEmbedder(settings.embedder, cache_dir=embedder_cache_dir(settings), threads=1)


# Texts per ONNX Runtime call at ingestion (benchmarks/results/ingest.md compares 32, 64 and 128).
INGEST_BATCH_SIZE = 32


def build_ingest_embedder(settings: RagSettings) -> Embedder:
    """The embedder for ingestion, per `rag.ingest_embedder_engine` (default ONNX Runtime).

    Ingestion has the cores to itself for a while, so ONNX runs one intra-op thread per core this process
    may use. Its vectors are the query embedder's (same model id in the index manifest), so an index built
    by either engine is reused by the next ingest and served as it is.
    """
    engine = settings.ingest_embedder_engine
    if engine == "torch":
        return SentenceTransformerEmbedder(settings.embedder)
    if engine != "onnx":
        raise ConfigError(f"rag.ingest_embedder_engine must be 'onnx' or 'torch', got {engine!r}")
    return OnnxEmbedder(
        settings.embedder,
        cache_dir=embedder_cache_dir(settings),
        threads=available_cpu_count(),
        batch_size=INGEST_BATCH_SIZE,
    )
