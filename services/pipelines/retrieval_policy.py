"""What a retrieval failure (index unavailable, embedder error) does to a request: `rag.on_failure`.

`fail`: a clear 503 (`RetrievalError`), whatever broke underneath. `degrade`: the request is answered by
the fallback pipeline (`prompt`) without retrieved context, and `hybrid.degraded` says so, so a client
never mistakes an ungrounded answer for a grounded one.
"""

from __future__ import annotations

import logging
from typing import Literal

from services.core.errors import HybridError, RetrievalError
from services.pipelines.base import Pipeline, PipelineRequest, Plan, RequestTrace

logger = logging.getLogger(__name__)

OnFailure = Literal["fail", "degrade"]


class RetrievalFailurePolicy:
    """Wraps the `rag` pipeline; the `hybrid` pipeline reaches `rag` through this wrapper too."""

    def __init__(self, pipeline: Pipeline, fallback: Pipeline, on_failure: OnFailure) -> None:
        if on_failure not in ("fail", "degrade"):
            raise ValueError(f"on_failure must be 'fail' or 'degrade', got {on_failure!r}")
        self._pipeline = pipeline
        self._fallback = fallback
        self._on_failure = on_failure

    @property
    def name(self) -> str:
        return self._pipeline.name

    @property
    def description(self) -> str:
        return self._pipeline.description

    async def plan(self, request: PipelineRequest, trace: RequestTrace) -> Plan:
        try:
            return await self._pipeline.plan(request, trace)
        except RetrievalError as exc:
            failure: RetrievalError = exc
        except HybridError:
            raise  # policy, validation: not a retrieval failure
        except Exception as exc:  # an embedder or vector-store crash
            logger.exception("retrieval failed in pipeline %s", self._pipeline.name)
            failure = RetrievalError(f"retrieval failed: {type(exc).__name__}")
        if self._on_failure == "fail":
            raise failure
        logger.warning("retrieval failed (%s); degrading to %s", failure.message, self._fallback.name)
        trace.degraded = (
            f"{self._pipeline.name} unavailable ({failure.code}: {failure.message}); "
            f"answered by {self._fallback.name} without retrieved context"
        )
        return await self._fallback.plan(request, trace)
