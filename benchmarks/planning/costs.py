"""Per-stage costs of each pipeline, read from the comparison's results JSON (benchmarks/system/compare.py).

Figures come from the lowest-concurrency closed-loop run of each pipeline, where one request has the
machine to itself, so its wall time is its service time. Per-token prefill and decode costs are derived
from the same run (the generate stage's server time split by the client's time per output token) rather
than taken from benchmarks/results/generator.json, which times the engine alone at fixed prompt lengths
outside the service: the same run keeps stage times, token counts and per-token costs consistent.
serving.json is used only for the batching gain of a generator serving several requests at once
(inputs.batching_gain). Fields are read defensively: one that is missing
raises `PlanInputError` naming its path, so that fields added later by the comparison change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Server stages that run in the gateway process, grouped as the planner reports them.
GATEWAY_STAGE_GROUPS: dict[str, tuple[str, ...]] = {
    "route": ("route",),
    "embed": ("embed",),
    "search": ("search", "rerank", "select"),
    "privacy": ("privacy",),
}
# Where each mix class goes when nothing measured says otherwise (knowledge -> rag, direct -> prompt).
IDEAL_ROUTES: dict[str, dict[str, float]] = {
    "knowledge": {"rag": 1.0},
    "direct": {"prompt": 1.0},
    "out_of_scope": {"refuse": 1.0},
}
# The eval set's `route` field, by mix class.
EVAL_ROUTE_OF_CLASS = {"knowledge": "rag", "direct": "direct", "out_of_scope": "out_of_scope"}


class PlanInputError(ValueError):
    """Bad input to the planner; the message is one line that names the value."""


@dataclass(frozen=True)
class StageCosts:
    """What one request of a pipeline costs, measured unloaded (wall ms on the measured machine)."""

    pipeline: str
    requests: int
    gateway_ms: dict[str, float]  # per request, by GATEWAY_STAGE_GROUPS key (0 where the stage never ran)
    prefill_ms_per_token: float
    decode_ms_per_token: float
    prompt_tokens: float  # per request, averaged over every request (refused ones count 0)
    output_tokens: float
    decode_steps: float  # per request: output tokens after each answer's first (which prefill produces)
    # mix class -> target ("rag", "prompt", "refuse") -> share; measured for hybrid, else None.
    routes: dict[str, dict[str, float]] | None
    cpu_fallback_share: float | None
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def generation_ms(self) -> float:
        return self.prompt_tokens * self.prefill_ms_per_token + self.decode_steps * self.decode_ms_per_token


def _get(data: Any, *path: str | int, where: str = "") -> Any:
    """data[path...]; `where` prefixes the field's name in the error (e.g. `runs[2].`)."""
    node = data
    for key in path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            raise PlanInputError(f"results: missing field {where}{'.'.join(str(p) for p in path)}") from None
    return node


def _number(data: Any, *path: str | int, where: str = "") -> float:
    value = _get(data, *path, where=where)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PlanInputError(
            f"results: field {where}{'.'.join(str(p) for p in path)} is not a number: {value!r}"
        )
    return float(value)


def _unloaded_run(results: Mapping[str, Any], pipeline: str) -> tuple[int, Mapping[str, Any]]:
    runs = [
        (index, run)
        for index, run in enumerate(_get(results, "runs"))
        if isinstance(run, Mapping)
        and run.get("pipeline") == pipeline
        and run.get("mode", "closed") == "closed"
    ]
    if not runs:
        raise PlanInputError(f"results: no closed-loop run of pipeline {pipeline!r} in runs")
    return min(runs, key=lambda pair: float(pair[1].get("concurrency", 0)))


def _measured_routes(results: Mapping[str, Any], pipeline: str) -> dict[str, dict[str, float]] | None:
    """Share of each eval class sent to each target, from the per-item records (eval route -> target)."""
    items = results.get("items", {}).get(pipeline) if isinstance(results.get("items"), Mapping) else None
    if not items:
        return None
    routes: dict[str, dict[str, float]] = {}
    for mix_class, eval_route in EVAL_ROUTE_OF_CLASS.items():
        targets = [item.get("target") for item in items if item.get("route") == eval_route]
        counted = [t for t in targets if t in ("rag", "prompt", "refuse")]
        if counted:
            routes[mix_class] = {t: counted.count(t) / len(counted) for t in sorted(set(counted))}
    return routes or None


def extract_stage_costs(results: Mapping[str, Any], pipeline: str) -> StageCosts:
    """The unloaded per-request costs of `pipeline`; raises PlanInputError naming a missing field."""
    index, run = _unloaded_run(results, pipeline)
    at = f"runs[{index}] (concurrency {run.get('concurrency')})"
    in_run, in_stages = f"runs[{index}].", f"runs[{index}].server.stages.{pipeline}."
    requests = int(_number(run, "summary", "completed", where=in_run))
    if requests <= 0:
        raise PlanInputError(
            f"results: runs[{index}].summary.completed is {requests}, no request to learn from"
        )
    stages = _get(run, "server", "stages", pipeline, where=in_run)
    gateway_ms = {
        group: sum(
            _number(stages, name, "seconds", where=in_stages) * 1000 / requests
            for name in names
            if isinstance(stages.get(name), dict)
        )
        for group, names in GATEWAY_STAGE_GROUPS.items()
    }
    tokens = _get(run, "server", "tokens_by_pipeline", pipeline, where=in_run)
    in_tokens = f"runs[{index}].server.tokens_by_pipeline.{pipeline}."
    prompt_total = _number(tokens, "prompt", where=in_tokens)
    output_total = _number(tokens, "completion", where=in_tokens)
    generate_s = _number(stages, "generate", "seconds", where=in_stages)
    generated = _number(stages, "generate", "count", where=in_stages)
    tpot_ms = _number(run, "summary", "tpot_ms", "mean", where=in_run)
    # The first token of each answer comes out of prefill; every later one is a decode step (TPOT).
    decode_steps = max(output_total - generated, 0.0)
    decode_s = tpot_ms / 1000 * decode_steps
    prefill_s = generate_s - decode_s
    if prompt_total <= 0 or output_total <= 0 or prefill_s <= 0:
        raise PlanInputError(
            f"results: {at} of {pipeline!r} has no generation to derive per-token costs from"
        )
    fallback = run.get("server", {}).get("cpu_fallback_share")
    routes = _measured_routes(results, pipeline) if "route" in stages else None
    sources = {
        "gateway stages": f"{at}.server.stages.{pipeline}.<stage>.seconds / summary.completed",
        "decode ms/token": f"{at}.summary.tpot_ms.mean (client-measured time per output token)",
        "prefill ms/token": (
            f"({at}.server.stages.{pipeline}.generate.seconds - decode time) / tokens_by_pipeline.prompt"
        ),
        "tokens/request": f"{at}.server.tokens_by_pipeline.{pipeline} / summary.completed",
        "routing": f"items.{pipeline} (eval route -> target)" if routes else "not routed",
        "cpu fallback": f"{at}.server.cpu_fallback_share" if fallback is not None else "not measured",
    }
    return StageCosts(
        pipeline=pipeline,
        requests=requests,
        gateway_ms=gateway_ms,
        prefill_ms_per_token=prefill_s * 1000 / prompt_total,
        decode_ms_per_token=tpot_ms,
        prompt_tokens=prompt_total / requests,
        output_tokens=output_total / requests,
        decode_steps=decode_steps / requests,
        routes=routes,
        cpu_fallback_share=float(fallback) if isinstance(fallback, int | float) else None,
        sources=sources,
    )


def skipped_pipelines(results: Mapping[str, Any]) -> list[str]:
    skipped = results.get("skipped_pipelines", [])
    return [str(name) for name in skipped] if isinstance(skipped, list) else []
