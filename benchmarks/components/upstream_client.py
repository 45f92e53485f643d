"""CPU per request of the HTTP client that calls an OpenAI-compatible upstream: httpx against aiohttp.

    hybridllm bench upstream-client [--requests 1500] [--concurrency 16] [--rounds 3]

The `openai` generator backend sends every request of the gateway to its upstream, so its client's CPU is
part of the gateway's cost per request. Each row sends the same chat request (the fixture upstream, 20 ms,
16 tokens, in its own process) `--requests` times, `--concurrency` at once, reads and parses the JSON
answer, and divides this process's user+system CPU by the requests. Rows alternate within each round:
  - `httpx`: AsyncClient.send(stream=True) then aread, as the backend did before;
  - `aiohttp`: ClientSession.post then read;
  - `backend`: OpenAICompatibleGenerator.complete, the service's own path (aiohttp), with its settings.

Writes benchmarks/results/upstream_client.{json,md}; the last stdout line is the JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.fixture_upstream import MODEL_NAME, FixtureBehaviour, running_fixture_upstream
from benchmarks.harness.paths import RESULTS_ROOT
from benchmarks.harness.report import markdown_table, write_json
from services.core.settings import OpenAIGeneratorSettings
from services.core.types import ChatMessage, GenerationParams
from services.llm.openai_backend import OpenAICompatibleGenerator

QUESTION = "Write one sentence about the sea."
BODY = {"model": MODEL_NAME, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16}
CLIENTS = ("httpx", "aiohttp", "backend")
REPORT_NAME = "upstream_client"

Send = Callable[[], Awaitable[None]]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def timed_run(send: Send, requests: int, concurrency: int) -> dict[str, float]:
    """CPU ms per request and wall seconds for `requests` sends, `concurrency` at a time (after a warm-up)."""
    await asyncio.gather(*(send() for _ in range(concurrency)))  # connections open, code paths warm
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await send()

    wall, cpu = time.perf_counter(), cpu_seconds()
    await asyncio.gather(*(one() for _ in range(requests)))
    return {
        "cpu_ms_per_request": (cpu_seconds() - cpu) * 1000.0 / requests,
        "wall_s": time.perf_counter() - wall,
    }


async def run_httpx(url: str, requests: int, concurrency: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

        async def send() -> None:
            request = client.build_request("POST", "/v1/chat/completions", json=BODY)
            response = await client.send(request, stream=True)
            try:
                json.loads(await response.aread())
            finally:
                await response.aclose()

        return await timed_run(send, requests, concurrency)


async def run_aiohttp(url: str, requests: int, concurrency: int) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        data = json.dumps(BODY).encode("utf-8")
        headers = {"Content-Type": "application/json"}

        async def send() -> None:
            async with session.post(f"{url}/v1/chat/completions", data=data, headers=headers) as response:
                json.loads(await response.read())

        return await timed_run(send, requests, concurrency)


async def run_backend(url: str, requests: int, concurrency: int) -> dict[str, float]:
    settings = OpenAIGeneratorSettings(
        backend="openai", base_url=f"{url}/v1", model=MODEL_NAME, max_concurrency=concurrency
    )
    backend = OpenAICompatibleGenerator(settings)
    messages = (ChatMessage(role="user", content=QUESTION),)
    params = GenerationParams(max_tokens=16)

    async def send() -> None:
        await backend.complete(messages, params)

    try:
        return await timed_run(send, requests, concurrency)
    finally:
        await backend.aclose()


RUNNERS: dict[str, Callable[[str, int, int], Coroutine[Any, Any, dict[str, float]]]] = {
    "httpx": run_httpx,
    "aiohttp": run_aiohttp,
    "backend": run_backend,
}


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for client in CLIENTS:
        cpu = [run["cpu_ms_per_request"] for run in runs if run["client"] == client]
        summary[client] = {
            "cpu_ms_per_request_median": statistics.median(cpu),
            "min": min(cpu),
            "max": max(cpu),
        }
    base = summary["httpx"]["cpu_ms_per_request_median"]
    for client in CLIENTS:
        summary[client]["vs_httpx"] = summary[client]["cpu_ms_per_request_median"] / base
    return summary


def report_markdown(result: dict[str, Any]) -> str:
    config, summary = result["config"], result["summary"]
    rows = [
        [client, s["cpu_ms_per_request_median"], s["min"], s["max"], f"{s['vs_httpx']:.2f}x"]
        for client, s in summary.items()
    ]
    return (
        "\n\n".join(
            [
                "# The upstream client's CPU per request: httpx against aiohttp",
                "Written by `hybridllm bench upstream-client` (benchmarks/components/upstream_client.py).",
                environment_markdown(result.get("environment")),
                f"Fixture upstream (its own process, {config['delay_ms']:g} ms, {config['tokens']} tokens), "
                f"{config['requests']} requests per run, {config['concurrency']} at once, {config['rounds']} "
                "rounds with the clients alternating. CPU: this process's user+system time over the run, "
                "per request (the fixture's is not counted). `backend` is "
                "OpenAICompatibleGenerator.complete, the service's own path.",
                markdown_table(
                    ["client", "CPU ms/request (median)", "min", "max", "vs httpx"], rows, digits=3
                ),
            ]
        )
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_ROOT)
    args = parser.parse_args(argv)
    for name in ("requests", "concurrency", "rounds"):
        if getattr(args, name) < 1:
            print(f"error: --{name} must be >= 1, got {getattr(args, name)}")
            return 2
    behaviour = FixtureBehaviour(delay_s=0.02, tokens=16)
    runs: list[dict[str, Any]] = []
    with running_fixture_upstream(behaviour) as url:
        for round_index in range(args.rounds):
            order = CLIENTS if round_index % 2 == 0 else tuple(reversed(CLIENTS))
            for client in order:
                measured = asyncio.run(RUNNERS[client](url, args.requests, args.concurrency))
                runs.append({"round": round_index, "client": client, **measured})
    result = {
        "environment": environment(),
        "config": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "delay_ms": behaviour.delay_s * 1000.0,
            "tokens": behaviour.tokens,
        },
        "runs": runs,
        "summary": summarize(runs),
    }
    write_json(args.out_dir / f"{REPORT_NAME}.json", result)
    (args.out_dir / f"{REPORT_NAME}.md").write_text(report_markdown(result), encoding="utf-8")
    print(json.dumps({"summary": result["summary"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
