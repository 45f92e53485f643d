"""The seams between layers. Concrete classes are named only by factories; everything else sees these."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from services.core.types import (
    ChatMessage,
    ContextSelection,
    GenerationParams,
    GenerationResult,
    IntentPrediction,
    RetrievalOutcome,
    ScoredChunk,
    TokenDelta,
    Trust,
)


@runtime_checkable
class Generator(Protocol):
    """A text generator backend (in-process or an OpenAI-compatible server)."""

    @property
    def name(self) -> str:
        """The configured backend name (bounded: used as a metric label)."""
        ...

    @property
    def trust(self) -> Trust: ...

    @property
    def adapters(self) -> Sequence[str]:
        """LoRA adapter names this backend can serve per request."""
        ...

    def warm_up(self) -> None:
        """Load weights. Blocking; called once at start, off the event loop."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def render_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens the chat template of the model produces for `messages` (the prompt to be sent)."""
        ...

    async def complete(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> GenerationResult: ...

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[TokenDelta]:
        """Yield text deltas as tokens are produced; the last delta has finish_reason and counts."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ResponseFormatEnforcer(Protocol):
    """A generator that may honour `response_format` in decoding itself (guided decoding, an upstream's)."""

    @property
    def supports_response_format(self) -> bool:
        """True when its output already matches the requested format: no validate-and-repair needed."""
        ...


def enforces_response_format(generator: Generator) -> bool:
    return isinstance(generator, ResponseFormatEnforcer) and generator.supports_response_format


class GenerationQueue(Protocol):
    """A generator's bounded concurrency: how many run and wait, and a hook for each request's wait."""

    on_wait: Callable[[float], None] | None

    @property
    def running(self) -> int: ...

    @property
    def waiting(self) -> int: ...


@runtime_checkable
class QueuedGenerator(Protocol):
    @property
    def slots(self) -> GenerationQueue | None:
        """Its generation queue; None when the requests go straight through."""
        ...


def generation_queue(generator: Generator) -> GenerationQueue | None:
    return generator.slots if isinstance(generator, QueuedGenerator) else None


@runtime_checkable
class AdapterLoader(Protocol):
    def load_adapter(self, name: str, folder: Path) -> None:
        """Load (or replace) a LoRA adapter at run time. Blocking: call it off the event loop."""
        ...


class Embedder(Protocol):
    @property
    def dimensions(self) -> int: ...

    @property
    def model_id(self) -> str: ...

    def warm_up(self) -> None: ...

    @property
    def max_seq_length(self) -> int:
        """Word pieces the model reads; longer texts are truncated when embedded."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of each token, in the model's own tokenization."""
        ...

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """L2-normalised vectors, one row per text."""
        ...

    def embed_query(self, text: str) -> npt.NDArray[np.float32]: ...


class IntentClassifier(Protocol):
    @property
    def labels(self) -> Sequence[str]: ...

    def warm_up(self) -> None: ...

    def predict(self, text: str) -> IntentPrediction: ...

    def predict_batch(self, texts: Sequence[str]) -> list[IntentPrediction]: ...


class Retriever(Protocol):
    """Search over the current index version, and the selection of what goes into a prompt."""

    def retrieve(self, query: str, *, top_k: int | None = None) -> RetrievalOutcome: ...

    def select_context(
        self, chunks: Sequence[ScoredChunk], budget_tokens: int | None = None
    ) -> ContextSelection: ...
