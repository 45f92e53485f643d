"""A FAKE of the hybridllm HTTP contract for unit tests of the evaluator and the benchmarks.

It knows the eval rows it is given and answers deterministically: `rag` answers with the row's first answer
substring and cites its gold files, `prompt` answers knowledge questions wrongly, `hybrid` routes by the
row's expected route (with confidence 0.9) and refuses out-of-scope questions. It exposes /metrics with the
contract's metric names so stage attribution can be checked. Real HTTP on 127.0.0.1 (uvicorn in a thread).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from services.core.ports import free_port

PRICES = {"prompt": 1e-5, "rag": 3e-5}
REFUSAL = "I can't help with that: it is outside what this assistant covers."


def _route(row: Mapping[str, Any]) -> dict[str, Any]:
    intent = {"rag": "knowledge", "direct": "direct", "out_of_scope": "out_of_scope"}[row["route"]]
    target = {"knowledge": "rag", "direct": "prompt", "out_of_scope": "refuse"}[intent]
    scores = {"direct": 0.05, "knowledge": 0.05, "out_of_scope": 0.05}
    scores[intent] = 0.9
    return {"intent": intent, "confidence": 0.9, "scores": scores, "target": target}


def build_fake_app(
    rows: Sequence[Mapping[str, Any]], pipelines: Sequence[str] = ("prompt", "rag", "hybrid")
) -> FastAPI:
    by_question = {row["question"]: row for row in rows}
    registry = CollectorRegistry()
    stage = Histogram("hybrid_stage_duration_seconds", "stage", ["stage", "pipeline"], registry=registry)
    cost = Counter("hybrid_cost_usd", "cost", ["pipeline", "stage"], registry=registry)
    tokens = Counter("hybrid_tokens", "tokens", ["pipeline", "kind"], registry=registry)
    egress = Counter("hybrid_egress_tokens", "egress", ["backend", "trust"], registry=registry)
    app = FastAPI()

    def answer(pipeline: str, row: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        substrings = row.get("answer_substrings") or []
        route = _route(row) if pipeline == "hybrid" else None
        path = route["target"] if route else pipeline
        if path == "refuse":
            text, sources, price, context = REFUSAL, [], 0.0, 0
        elif path == "rag":
            text = f"According to the handbook: {substrings[0] if substrings else 'see the policy'}."
            sources = [{"source": f, "chunk_id": f"{f}#0", "score": 0.8} for f in row.get("gold_files") or []]
            price, context = PRICES["rag"], 300
        else:
            correct = row["route"] == "direct" and substrings
            text = f"Sure: {substrings[0]}." if correct else "I believe it depends on your manager."
            sources, price, context = [], PRICES["prompt"], 0
        timings = {"generate": 10.0 if price else 0.0}
        if path == "rag":
            timings.update({"embed": 2.0, "search": 1.0})
        for name, ms in timings.items():
            stage.labels(stage=name, pipeline=pipeline).observe(ms / 1000.0)
        if price:
            cost.labels(pipeline=pipeline, stage="generate").inc(price)
            egress.labels(backend="local", trust="internal").inc(20 + context)
        tokens.labels(pipeline=pipeline, kind="context").inc(context)
        hybrid = {
            "pipeline": pipeline,
            "route": route,
            "sources": sources,
            "timings_ms": timings,
            "tokens": {"prompt": 20 + context, "completion": len(text.split()), "context": context},
            "cost_usd": {"generate": price, "total": price},
            "privacy": {"findings": [], "action": "allow", "backend_trust": "internal"},
            "index_version": "fake",
        }
        return text, hybrid

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": p, "object": "model", "owned_by": "fake"} for p in pipelines],
        }

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(registry).decode())

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        body = await request.json()
        pipeline = body.get("model") or "hybrid"
        if pipeline not in pipelines:
            return JSONResponse(
                {
                    "error": {
                        "message": f"unknown model {pipeline}",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                    }
                },
                status_code=404,
            )
        question = body["messages"][-1]["content"]
        row = by_question.get(question, {"route": "direct", "question": question})
        text, hybrid = answer(pipeline, row)
        await asyncio.sleep(0.002)
        usage = {
            "prompt_tokens": hybrid["tokens"]["prompt"],
            "completion_tokens": hybrid["tokens"]["completion"],
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": pipeline}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            return JSONResponse(
                {
                    **base,
                    "object": "chat.completion",
                    "usage": usage,
                    "hybrid": hybrid,
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                }
            )

        async def events() -> AsyncIterator[str]:
            chunk = {**base, "object": "chat.completion.chunk"}
            for i, word in enumerate(text.split(" ")):
                delta = {"content": word if i == 0 else " " + word}
                yield f"data: {json.dumps({**chunk, 'choices': [{'index': 0, 'delta': delta}]})}\n\n"
                await asyncio.sleep(0)
            final = {"index": 0, "delta": {}, "finish_reason": "stop"}
            yield f"data: {json.dumps({**chunk, 'choices': [final]})}\n\n"
            yield f"data: {json.dumps({**chunk, 'choices': [], 'usage': usage, 'hybrid': hybrid})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextmanager
def serve_fake(
    rows: Sequence[Mapping[str, Any]], pipelines: Sequence[str] = ("prompt", "rag", "hybrid")
) -> Iterator[str]:
    """Run the fake on a free port of 127.0.0.1 in a background thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(build_fake_app(rows, pipelines), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("fake service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


SAMPLE_ROWS: list[dict[str, Any]] = [
    {
        "id": "k1",
        "route": "rag",
        "question": "How many vacation days do new hires get?",
        "gold_files": ["benefits/time-off.md"],
        "answer_substrings": ["20 days"],
    },
    {
        "id": "k2",
        "route": "rag",
        "question": "Who approves remote work?",
        "gold_files": ["policies/remote.md"],
        "answer_substrings": ["your manager and HR"],
    },
    {
        "id": "k3",
        "route": "rag",
        "question": "How do I report a security incident?",
        "gold_files": ["security/incidents.md"],
        "answer_substrings": ["security@"],
    },
    {
        "id": "d1",
        "route": "direct",
        "question": "What is 2 plus 2?",
        "gold_files": [],
        "answer_substrings": ["4"],
    },
    {
        "id": "d2",
        "route": "direct",
        "question": "Say hello in French.",
        "gold_files": [],
        "answer_substrings": ["bonjour"],
    },
    {
        "id": "o1",
        "route": "out_of_scope",
        "question": "What will the stock market do tomorrow?",
        "gold_files": [],
        "answer_substrings": [],
    },
]
