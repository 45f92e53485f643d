"""Send one chat completion over HTTP and time it as a client sees it (streaming and not).

httpx rather than the `openai` client here: the load generator must not spend the cores it shares with the
server on pydantic models per chunk. The e2e evaluator uses the real `openai` client instead.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.harness.stats import RequestRecord


@dataclass(frozen=True, slots=True)
class PromptItem:
    """One workload prompt; `expected` carries the e2e eval fields (route, gold files, substrings)."""

    item_id: str
    question: str
    expected: dict[str, Any]


def build_payload(item: PromptItem, pipeline: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": pipeline,
        "messages": [{"role": "user", "content": item.question}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": stream,
    }
    if stream:
        payload["stream_options"] = {"include_usage": True}
    return payload


async def send_chat(
    client: httpx.AsyncClient,
    base_url: str,
    item: PromptItem,
    *,
    pipeline: str,
    max_tokens: int,
    stream: bool,
    headers: dict[str, str] | None = None,
) -> RequestRecord:
    """Never raises for a failed request: the failure is recorded, the run goes on."""
    url = f"{base_url.rstrip('/')}/v1/chat/completions"
    payload = build_payload(item, pipeline, max_tokens, stream)
    start = time.perf_counter()
    record = RequestRecord(pipeline=pipeline, item_id=item.item_id, start_s=start, e2e_s=0.0, ok=False)
    try:
        if stream:
            await _stream(client, url, payload, headers, record, start)
        else:
            response = await client.post(url, json=payload, headers=headers)
            record.e2e_s = time.perf_counter() - start
            if response.status_code != 200:
                record.error = f"http_{response.status_code}: {response.text[:200]}"
                return record
            _read_completion(response.json(), record)
            # Without streaming the client sees every token at once: its first token is its last.
            record.ttft_s = record.e2e_s
            record.ok = True
    except (httpx.HTTPError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        record.e2e_s = time.perf_counter() - start
        record.error = f"{type(exc).__name__}: {exc}"[:300]
        record.ok = False
    return record


def _read_completion(body: dict[str, Any], record: RequestRecord) -> None:
    choice = body["choices"][0]
    record.answer = (choice.get("message") or {}).get("content") or ""
    usage = body.get("usage") or {}
    record.output_tokens = int(usage.get("completion_tokens") or 0)
    record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    record.hybrid = body.get("hybrid") or {}


async def _stream(
    client: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any],
    headers: dict[str, str] | None,
    record: RequestRecord,
    start: float,
) -> None:
    pieces: list[str] = []
    chunks_with_text = 0
    last_token_at: float | None = None
    async with client.stream("POST", url, json=payload, headers=headers) as response:
        if response.status_code != 200:
            body = (await response.aread()).decode("utf-8", "replace")
            record.e2e_s = time.perf_counter() - start
            record.error = f"http_{response.status_code}: {body[:200]}"
            return
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                record.error = f"stream_error: {json.dumps(chunk['error'])[:200]}"
                record.e2e_s = time.perf_counter() - start
                return
            now = time.perf_counter()
            for choice in chunk.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or ""
                if not text:
                    continue
                chunks_with_text += 1
                pieces.append(text)
                if last_token_at is None:
                    record.ttft_s = now - start
                else:
                    record.itl_s.append(now - last_token_at)
                last_token_at = now
            usage = chunk.get("usage")
            if usage:
                record.output_tokens = int(usage.get("completion_tokens") or 0)
                record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            if chunk.get("hybrid"):
                record.hybrid = chunk["hybrid"]
    record.e2e_s = time.perf_counter() - start
    record.answer = "".join(pieces)
    if record.output_tokens == 0:
        # No usage chunk: fall back to one token per content chunk, as most servers send.
        record.output_tokens = chunks_with_text
    if record.ttft_s is None:
        # A refusal or an empty answer still completed; its "first token" is the end of the response.
        record.ttft_s = record.e2e_s
    record.ok = True
