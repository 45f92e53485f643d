"""The streaming path: the ONNX engine driven directly against the same prompts streamed through the gateway.

Same model, precision and intra-op threads on both sides, greedy, `--tokens` new tokens at most. The engine
side is onnxruntime-genai itself (og.Generator, one token per step), in this process; the gateway side is
`hybridllm serve` (the `prompt` pipeline, privacy output filter on, as `make run` serves it) read with SSE.
Each prompt runs on every side back to back, in an order rotating from prompt to prompt, while the others
are idle. The `gateway` side's prompt-prefix cache is off, so it prefills whole prompts as the engine does
and the difference is the streaming path's: that is what the goals are about. A third side,
`gateway-cached`, is the gateway as `make run` serves it, with the cache on: what a user of the default
gets. A fourth, `gateway-held`, is `gateway` with the GIL held while the generator computes
(`generator.release_gil: false`, as the Python binding does), so the change in services/llm/oga_native.py
is measured on the same prompts. Each round numbers its questions, so a prompt shares only the system
prompt with earlier ones.

    python -m benchmarks.system.streaming [--rounds 3] [--tokens 128] [--threads 2]

Reports decode tokens/s (after the first token) and time to first token: the engine's first token against
the first text the client sees. Writes benchmarks/results/streaming.{json,md}; the last stdout line is the
JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.report import markdown_table, write_json
from services.core.settings import OnnxGeneratorSettings, PromptSettings
from services.core.types import ChatMessage
from services.evaluation.local_server import running_service
from services.llm.onnx_backend import OnnxGenerator, SessionOptions, session_config
from services.llm.prompts import PromptLibrary
from services.pipelines.prompt import with_system_prompt

PROMPTS = (
    "Explain in a few sentences how a refrigerator keeps food cold.",
    "Write a short paragraph about why the sky looks blue.",
    "Describe the water cycle for a ten-year-old.",
    "Give three tips for writing a clear email, with one sentence each.",
)
GOALS = {"decode_ratio": 0.9, "ttft_gap_ms": 15.0}
# The gateway side prefills whole prompts as the engine does; gateway-held also holds the GIL while the
# generator computes.
NO_CACHE = {"HYBRID_GENERATOR__PREFIX_CACHE_SLOTS": "0"}
HELD = {**NO_CACHE, "HYBRID_GENERATOR__RELEASE_GIL": "false"}
SIDES = ("engine", "gateway", "gateway-cached", "gateway-held")


@dataclass(frozen=True)
class Sample:
    side: str  # one of SIDES
    prompt: int
    ttft_ms: float
    decode_tok_s: float
    tokens: int
    # The gateway's own hybrid.ttft_ms: from the pipeline's start to the first visible text, and from the
    # generator's slot to the model's first token (None on the engine side).
    server_visible_ms: float | None = None
    server_model_ms: float | None = None


def engine_messages(question: str) -> tuple[ChatMessage, ...]:
    """What the `prompt` pipeline sends the generator for `question` (its template and system prompt)."""
    system = PromptLibrary(None).render_block(
        "direct", "system", system_prompt=PromptSettings().system_prompt
    )
    return with_system_prompt(system, (ChatMessage(role="user", content=question),))


class DirectEngine:
    """onnxruntime-genai with no service around it: the baseline the gateway is compared with."""

    def __init__(self, settings: OnnxGeneratorSettings, data_dir: Path) -> None:
        import onnxruntime_genai as og

        self._service_view = OnnxGenerator(settings, data_dir)
        self._service_view.warm_up()  # converts if needed; its prompt rendering is the service's
        assert self._service_view.model_dir is not None
        self._og = og
        self._model = og.Model(session_config(self._service_view.model_dir, SessionOptions.of(settings)))
        self._eos = {int(i) for i in og.Tokenizer(self._model).eos_token_ids}

    def run(self, messages: Sequence[ChatMessage], max_tokens: int) -> tuple[float, float, int]:
        """(TTFT ms, decode tokens/s after the first token, tokens generated)."""
        prompt_ids = self._service_view.prompt_ids(messages)
        params = self._og.GeneratorParams(self._model)
        params.set_search_options(max_length=len(prompt_ids) + max_tokens, do_sample=False, batch_size=1)
        generator = self._og.Generator(self._model, params)
        started = time.perf_counter()
        generator.append_tokens(prompt_ids)
        first = last = started
        tokens = 0
        while not generator.is_done() and tokens < max_tokens:
            generator.generate_next_token()
            token = int(generator.get_next_tokens()[0])
            last = time.perf_counter()
            tokens += 1
            if tokens == 1:
                first = last
            if token in self._eos:
                break
        return (first - started) * 1000.0, _rate(tokens, last - first), tokens


def gateway_run(
    client: httpx.Client, question: str, max_tokens: int
) -> tuple[float, float, int, float | None, float | None]:
    """(first visible text ms, decode tokens/s after it, completion tokens, the gateway's own visible and
    model TTFT ms) for one streamed request."""
    body = {
        "model": "prompt",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: float | None = None
    last = started
    tokens = 0
    server_ttft: dict[str, float] = {}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
                server_ttft = (chunk.get("hybrid") or {}).get("ttft_ms") or {}
            choices = chunk.get("choices") or []
            if choices and choices[0].get("delta", {}).get("content"):
                last = time.perf_counter()
                first = first if first is not None else last
    if first is None:
        raise RuntimeError(f"the gateway streamed no text for {question!r}")
    visible, model = server_ttft.get("visible"), server_ttft.get("model")
    return (first - started) * 1000.0, _rate(tokens, last - first), tokens, visible, model


def _rate(tokens: int, seconds: float) -> float:
    return (tokens - 1) / seconds if tokens > 1 and seconds > 0 else 0.0


def summarize(samples: Sequence[Sample]) -> dict[str, Any]:
    """Medians per side, and the gateway against the engine as a ratio (decode) and a gap (TTFT)."""
    by_side = {
        side: {
            "ttft_ms": statistics.median(s.ttft_ms for s in samples if s.side == side),
            "decode_tok_s": statistics.median(s.decode_tok_s for s in samples if s.side == side),
        }
        for side in SIDES
        if any(s.side == side for s in samples)
    }
    ratio = by_side["gateway"]["decode_tok_s"] / by_side["engine"]["decode_tok_s"]
    gap = by_side["gateway"]["ttft_ms"] - by_side["engine"]["ttft_ms"]
    return {
        **by_side,
        "gateway_server_ttft": _server_medians(samples, "gateway"),
        "gateway_held_server_ttft": _server_medians(samples, "gateway-held"),
        "decode_ratio": round(ratio, 3),
        "ttft_gap_ms": round(gap, 1),
        "goals": {
            "decode_ratio": {"goal": GOALS["decode_ratio"], "met": ratio >= GOALS["decode_ratio"]},
            "ttft_gap_ms": {"goal": GOALS["ttft_gap_ms"], "met": gap <= GOALS["ttft_gap_ms"]},
        },
    }


def _server_medians(samples: Sequence[Sample], side: str) -> dict[str, float | None]:
    """The medians of one gateway side's own hybrid.ttft_ms (visible and model)."""
    server: dict[str, float | None] = {}
    for key in ("server_visible_ms", "server_model_ms"):
        values = [value for s in samples if s.side == side and (value := getattr(s, key)) is not None]
        server[key] = statistics.median(values) if values else None
    return server


def write_report(result: dict[str, Any]) -> None:
    write_json(RESULTS_ROOT / "streaming.json", result)
    summary, config = result["summary"], result["config"]
    rows = [
        [side, summary[side]["ttft_ms"], summary[side]["decode_tok_s"]] for side in SIDES if side in summary
    ]
    goals = summary["goals"]
    lines = [
        "# The streaming path: engine alone against the gateway",
        "",
        environment_markdown(result.get("environment")),
        "",
        f"SmolLM2 ONNX {config['precision']}, {config['threads']} intra-op threads on both sides, greedy, "
        f"at most {config['tokens']} new tokens; {len(PROMPTS)} prompts x {config['rounds']} rounds (each "
        "round numbers its questions), each prompt on every side back to back (in a rotating order). "
        "Engine: onnxruntime-genai driven directly. Gateway: `hybridllm serve`, the `prompt` pipeline with "
        "the privacy output filter on, read as SSE, with the prompt-prefix cache off; gateway-cached: the "
        "same with the cache on (the default); gateway-held: cache off and `generator.release_gil: false`, "
        "the GIL held while the generator computes, as the Python binding does. Medians. Load average "
        "(1 min) "
        f"{result['load_average']['start']:.2f} at start, {result['load_average']['end']:.2f} at end.",
        "",
        markdown_table(["side", "TTFT ms (gateway: first visible text)", "decode tok/s"], rows),
        "",
        f"- Gateway decode / engine decode: **{summary['decode_ratio']}x** "
        f"(goal >= {goals['decode_ratio']['goal']}: {_verdict(goals['decode_ratio'])}).",
        f"- First visible token - engine TTFT: **{summary['ttft_gap_ms']} ms** "
        f"(goal <= {goals['ttft_gap_ms']['goal']:.0f} ms: {_verdict(goals['ttft_gap_ms'])}).",
        *cached_lines(summary),
        *held_lines(summary),
        "",
        *attribution_lines(summary),
        "Reproduce: `python -m benchmarks.system.streaming`.",
        "",
    ]
    (RESULTS_ROOT / "streaming.md").write_text("\n".join(lines), encoding="utf-8")


def cached_lines(summary: dict[str, Any]) -> list[str]:
    """The default gateway (prefix cache on) against the engine alone, which prefills the whole prompt."""
    cached, engine = summary.get("gateway-cached"), summary["engine"]
    if cached is None:
        return []
    gap = cached["ttft_ms"] - engine["ttft_ms"]
    return [
        f"- With the default prompt-prefix cache (gateway-cached), the first visible text comes "
        f"**{abs(gap):.1f} ms {'after' if gap > 0 else 'before'}** the engine alone's first token "
        f"({cached['ttft_ms']:.1f} against {engine['ttft_ms']:.1f} ms), and decode is "
        f"{cached['decode_tok_s'] / engine['decode_tok_s']:.3f}x the engine's. The engine prefills each "
        "whole prompt; the cached gateway only what follows the system prompt, so this is not the streaming "
        "path's cost (the goal above is)."
    ]


def held_lines(summary: dict[str, Any]) -> list[str]:
    """The gateway with the GIL held while the generator computes, against the default (released)."""
    held, gateway = summary.get("gateway-held"), summary["gateway"]
    held_server, server = summary.get("gateway_held_server_ttft") or {}, summary["gateway_server_ttft"]
    if held is None:
        return []
    line = (
        f"- With the GIL held while the generator computes (gateway-held), the first visible text comes at "
        f"{held['ttft_ms']:.1f} ms against {gateway['ttft_ms']:.1f} ms with it released, and decode is "
        f"{held['decode_tok_s'] / gateway['decode_tok_s']:.3f}x."
    )
    if None not in (held_server.get("server_visible_ms"), held_server.get("server_model_ms")):
        held_model, model = held_server["server_model_ms"], server["server_model_ms"]
        held_filter, released_filter = (
            held_server["server_visible_ms"] - held_model,
            server["server_visible_ms"] - model,
        )
        line += (
            f" Its `model` is {held_model:.1f} ms against {model:.1f} ms and its `visible` minus `model` "
            f"{held_filter:.1f} against {released_filter:.1f} ms: held, "
            "each token reaches the event loop only when the next decode step has ended."
        )
    return [line]


def attribution_lines(summary: dict[str, Any]) -> list[str]:
    """Where the gateway's extra time to first text goes, from its own hybrid.ttft_ms (medians)."""
    gateway, engine, server = summary["gateway"], summary["engine"], summary.get("gateway_server_ttft", {})
    visible, model = server.get("server_visible_ms"), server.get("server_model_ms")
    if visible is None or model is None:
        return []
    return [
        "Where the gap goes (medians; the gateway's `hybrid.ttft_ms`):",
        "",
        markdown_table(
            ["part", "ms"],
            [
                ["the model's first token in the gateway, from its generator slot (`model`)", model],
                [
                    "  of which beyond the engine alone (prompt rendering, og.Generator set-up, "
                    "thread hand-off)",
                    model - engine["ttft_ms"],
                ],
                [
                    "pipeline start to first visible text (`visible`) minus `model`: stages before "
                    "generation, output filter",
                    visible - model,
                ],
                ["client's first text minus `visible`: HTTP, parsing, SSE", gateway["ttft_ms"] - visible],
            ],
        ),
        "",
    ]


def _verdict(goal: dict[str, Any]) -> str:
    return "met" if goal["met"] else "missed"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="int8", choices=("int4", "int8", "fp32"))
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "var")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.tokens < 2 or args.threads < 1:
        parser.error(f"--rounds, --tokens and --threads must be positive (got {args.rounds}, {args.tokens}, "
                     f"{args.threads}); --tokens at least 2")  # fmt: skip
    load_start = os.getloadavg()[0]
    settings = OnnxGeneratorSettings(threads=args.threads, onnx_precision=args.precision)
    engine = DirectEngine(settings, args.data_dir)
    env = {
        "HYBRID_DATA_DIR": str(args.data_dir),
        "HYBRID_GENERATOR__THREADS": str(args.threads),
        "HYBRID_GENERATOR__ONNX_PRECISION": args.precision,
        "HYBRID_DEFAULT_PIPELINE": "prompt",
    }
    samples: list[Sample] = []
    with (
        running_service(None, extra_env={**env, **NO_CACHE}) as plain_url,
        running_service(None, extra_env=env) as cached_url,
        running_service(None, extra_env={**env, **HELD}) as held_url,
        httpx.Client(base_url=plain_url, timeout=120) as plain,
        httpx.Client(base_url=cached_url, timeout=120) as cached,
        httpx.Client(base_url=held_url, timeout=120) as held,
    ):
        gateways = {"gateway": plain, "gateway-cached": cached, "gateway-held": held}
        engine.run(engine_messages(PROMPTS[0]), 8)
        for client in (plain, held):
            gateway_run(client, PROMPTS[0], 8)  # warm the server's first request path
        # The cache's free slots fill first with no reuse: start from the steady state.
        for warm_up in range(OnnxGeneratorSettings().prefix_cache_slots):
            gateway_run(cached, f"Warm-up {warm_up + 1}: {PROMPTS[0]}", 8)
        for round_ in range(args.rounds):
            for index, prompt in enumerate(PROMPTS):
                question = f"Question {round_ + 1}.{index + 1}: {prompt}"
                shift = (round_ * len(PROMPTS) + index) % len(SIDES)
                for side in SIDES[shift:] + SIDES[:shift]:
                    if side == "engine":
                        sample = Sample(side, index, *engine.run(engine_messages(question), args.tokens))
                    else:
                        sample = Sample(side, index, *gateway_run(gateways[side], question, args.tokens))
                    samples.append(sample)
    result = {
        "environment": environment(),
        "config": {
            "rounds": args.rounds,
            "tokens": args.tokens,
            "threads": args.threads,
            "precision": args.precision,
        },
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "summary": summarize(samples),
        "samples": [asdict(s) for s in samples],
    }
    write_report(result)
    print(json.dumps(result["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
