"""Bridges between blocking token producers (in-process models) and asyncio consumers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from services.core.errors import GenerationError
from services.core.types import FinishReason, GenerationResult, TokenDelta

_DONE = object()

Emit = Callable[[str], None]


async def run_producer_in_thread(
    produce: Callable[[Emit], None], *, cancel: threading.Event
) -> AsyncGenerator[str, None]:
    """Run `produce(emit)` in a worker thread and yield what it emits, as it emits it.

    Closing the generator early (client gone, stop string hit) sets `cancel` and waits for the worker to
    notice, so the caller's concurrency slot is released only when the model is really idle.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()

    def emit(text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, text)

    def worker() -> None:
        try:
            produce(emit)
        except BaseException as exc:  # forwarded to the consumer, which re-raises it
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    future = loop.run_in_executor(None, worker)
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, str)
            yield item
    finally:
        cancel.set()
        # Shielded: even if our consumer is cancelled, the worker must finish before the slot is freed.
        await asyncio.shield(future)


async def collect_stream(stream: AsyncIterator[TokenDelta], *, backend: str) -> GenerationResult:
    """Drain a delta stream into one result (non-streaming requests share the streaming code path)."""
    parts: list[str] = []
    last: TokenDelta | None = None
    async for delta in stream:
        parts.append(delta.text)
        last = delta
    if last is None or last.finish_reason is None:
        raise GenerationError(f"{backend}: stream ended without a final delta")
    finish: FinishReason = last.finish_reason
    return GenerationResult(
        text="".join(parts),
        prompt_tokens=last.prompt_tokens or 0,
        completion_tokens=last.completion_tokens or 0,
        finish_reason=finish,
        backend=backend,
        ttft_s=last.ttft_s or 0.0,
        busy_s=last.busy_s or 0.0,
        cached_prompt_tokens=last.cached_prompt_tokens or 0,
    )
