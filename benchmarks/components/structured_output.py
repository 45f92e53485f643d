"""response_format on the ONNX backend: guided decoding vs validate-and-repair, same prompts, interleaved.

Usage: HF_HUB_OFFLINE=1 python -m benchmarks.components.structured_output [--rounds 4] [--max-seconds 240]

The cases are the response_format tests' prompts and schemas. Each round runs every case in both modes,
alternating which mode goes first, with one sampling seed per round shared by both modes. "guided" is the
backend with onnxruntime-genai's guidance on; "repair" is the same model unconstrained behind
services/llm/structured_output.py (prompt, validate, one repair). Writes
benchmarks/results/structured_output.{json,md}; the last stdout line is the JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.harness.environment import environment, environment_markdown  # noqa: E402
from benchmarks.harness.paths import RESULTS_ROOT  # noqa: E402
from benchmarks.harness.report import markdown_table, write_json  # noqa: E402
from benchmarks.harness.stats import percentile  # noqa: E402
from services.core.errors import StructuredOutputError  # noqa: E402
from services.core.settings import OnnxGeneratorSettings, load_settings  # noqa: E402
from services.core.types import ChatMessage, GenerationParams, GenerationResult  # noqa: E402
from services.llm.onnx_backend import OnnxGenerator  # noqa: E402
from services.llm.structured_output import (  # noqa: E402
    complete_with_response_format,
    parse_response_format,
    validation_error,
)

RESULTS = RESULTS_ROOT
MODES = ("guided", "repair")
TRIP_SCHEMA = {  # tests/llm/test_structured_output.py
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 0}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
CITY_SCHEMA = {  # tests/llm/test_vllm_cpu.py
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "country": {"type": "string"},
        "population": {"type": "integer"},
    },
    "required": ["city", "country", "population"],
    "additionalProperties": False,
}
TRIP_MESSAGES = (ChatMessage("system", "You plan trips."), ChatMessage("user", "Lisbon for 3 days"))


@dataclass(frozen=True)
class Case:
    name: str
    messages: tuple[ChatMessage, ...]
    response_format: dict[str, Any]


CASES = (
    Case(
        "trip json_schema",
        TRIP_MESSAGES,
        {"type": "json_schema", "json_schema": {"name": "trip", "schema": TRIP_SCHEMA}},
    ),
    Case("trip json_object", TRIP_MESSAGES, {"type": "json_object"}),
    Case(
        "capital json_schema",
        (ChatMessage("user", "Describe the capital of France as JSON."),),
        {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA}},
    ),
)


async def run_once(
    generator: OnnxGenerator, mode: str, case: Case, params: GenerationParams
) -> dict[str, Any]:
    spec = parse_response_format(case.response_format)
    assert spec is not None
    calls = 0

    async def unconstrained(
        messages: Sequence[ChatMessage], call_params: GenerationParams
    ) -> GenerationResult:
        nonlocal calls
        calls += 1
        return await generator.complete(messages, replace(call_params, response_format=None))

    started = time.perf_counter()
    try:
        if mode == "guided":
            calls = 1
            result = await generator.complete(case.messages, params)
        else:
            result = await complete_with_response_format(unconstrained, case.messages, params)
        _, error = validation_error(spec, result.text)
        tokens = result.completion_tokens
    except StructuredOutputError as exc:
        error, tokens = exc.message, None
    return {
        "mode": mode,
        "case": case.name,
        "seed": params.seed,
        "valid": error is None,
        "error": error,
        "latency_s": time.perf_counter() - started,
        "generations": calls,
        "completion_tokens": tokens,
    }


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        mine = [r for r in runs if r["mode"] == mode]
        latencies = [r["latency_s"] for r in mine]
        summary[mode] = {
            "runs": len(mine),
            "valid_rate": sum(r["valid"] for r in mine) / len(mine) if mine else float("nan"),
            "p50_s": percentile(latencies, 50),
            "p90_s": percentile(latencies, 90),
            "mean_generations": sum(r["generations"] for r in mine) / len(mine) if mine else float("nan"),
        }
    return summary


async def measure(
    generator: OnnxGenerator, rounds: int, max_seconds: float, max_tokens: int
) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    deadline = time.monotonic() + max_seconds
    for round_index in range(rounds):
        for case_index, case in enumerate(CASES):
            params = GenerationParams(
                max_tokens=max_tokens, temperature=0.7, seed=round_index, response_format=case.response_format
            )
            order = MODES if (round_index + case_index) % 2 == 0 else MODES[::-1]
            for mode in order:
                runs.append(await run_once(generator, mode, case, params))
            if time.monotonic() > deadline:
                return runs
    return runs


def write_report(results: dict[str, Any]) -> None:
    write_json(RESULTS / "structured_output.json", results)
    summary = results["summary"]
    rows = [
        [mode, s["runs"], 100.0 * s["valid_rate"], s["p50_s"], s["p90_s"], s["mean_generations"]]
        for mode, s in summary.items()
    ]
    per_case = [
        [
            case.name,
            mode,
            *_case_figures([r for r in results["runs"] if r["case"] == case.name and r["mode"] == mode]),
        ]
        for case in CASES
        for mode in MODES
    ]
    load = results["load_average"]
    text = "\n\n".join(
        [
            "# Structured output on the ONNX backend: guided decoding vs validate-and-repair",
            environment_markdown(results.get("environment")),
            f"Model {results['model']} (ONNX {results['precision']}, {results['threads']} threads), "
            f"max_tokens {results['max_tokens']}, temperature 0.7, one seed per round shared by both "
            f"modes; modes interleaved. Load average (1 min) {load['start']:.2f} at start, "
            f"{load['end']:.2f} at end. "
            "Generated by `python -m benchmarks.components.structured_output`.",
            "Valid means the reply parses as JSON and validates against the schema (a JSON object for "
            "json_object). Latency is the whole call: for repair, both generations when a repair was needed.",
            markdown_table(["mode", "runs", "valid %", "p50 s", "p90 s", "generations/call"], rows, digits=2),
            "## Per case",
            markdown_table(["case", "mode", "runs", "valid %", "p50 s"], per_case, digits=2),
        ]
    )
    (RESULTS / "structured_output.md").write_text(text + "\n", encoding="utf-8")


def _case_figures(runs: Sequence[dict[str, Any]]) -> list[Any]:
    if not runs:
        return [0, None, None]
    return [
        len(runs),
        100.0 * sum(r["valid"] for r in runs) / len(runs),
        percentile([r["latency_s"] for r in runs], 50),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=240.0, help="stop starting rounds after this")
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    data_dir = load_settings().data_dir
    settings = OnnxGeneratorSettings(model="smollm2", threads=args.threads)
    generator = OnnxGenerator(settings, data_dir)
    generator.warm_up()
    if not generator.supports_response_format:
        raise SystemExit("guided decoding is unavailable for this model: nothing to compare")
    load_start = os.getloadavg()[0]
    runs = asyncio.run(measure(generator, args.rounds, args.max_seconds, args.max_tokens))
    results = {
        "environment": environment(),
        "model": settings.model,
        "precision": settings.onnx_precision,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "summary": summarize(runs),
        "runs": runs,
    }
    write_report(results)
    print(json.dumps(results["summary"]))


if __name__ == "__main__":
    main()
