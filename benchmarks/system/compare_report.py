"""The comparison's verdicts and report: goals, the six-dimension scorecard, the sweep plot, Markdown."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.harness.environment import environment_markdown
from benchmarks.harness.report import fmt, markdown_table, write_json, write_markdown_report, write_plots
from benchmarks.system.compare_sections import (
    goodput_section,
    mix_section,
    mix_sweep_section,
    regret_section,
    write_mix_sweep_plot,
)

GOAL_COST_RATIO = 0.6
GOAL_P95_RATIO = 0.7
GOAL_KNOWLEDGE_GAP = 0.02


def _cost(summary: Mapping[str, Any]) -> float | None:
    costs = summary["cost_per_1k_usd"]
    value = costs["from_responses"] if costs["from_responses"] is not None else costs["from_metrics"]
    return None if value is None else float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def goals(pipelines: Mapping[str, Mapping[str, Any]], level: int) -> dict[str, dict[str, Any]]:
    """The project's goals for `hybrid` against always-RAG and prompt-only (None: not measurable)."""
    hybrid, rag, prompt = pipelines.get("hybrid"), pipelines.get("rag"), pipelines.get("prompt")
    out: dict[str, dict[str, Any]] = {}
    if hybrid is None or rag is None:
        return out
    cost_ratio = _ratio(_cost(hybrid), _cost(rag))
    out["mean_cost_vs_rag"] = {
        "value": cost_ratio,
        "target": f"<= {GOAL_COST_RATIO}",
        "met": None if cost_ratio is None else cost_ratio <= GOAL_COST_RATIO,
    }
    key = str(level)
    p95_ratio = _ratio(hybrid["latency"].get(key, {}).get("p95"), rag["latency"].get(key, {}).get("p95"))
    out["p95_latency_vs_rag"] = {
        "value": p95_ratio,
        "target": f"<= {GOAL_P95_RATIO} at c={level}",
        "met": None if p95_ratio is None else p95_ratio <= GOAL_P95_RATIO,
    }
    h_k, r_k = hybrid["knowledge_answer_contains"], rag["knowledge_answer_contains"]
    gap = None if h_k is None or r_k is None else r_k - h_k
    out["knowledge_answer_contains_gap_vs_rag"] = {
        "value": gap,
        "target": f"<= {GOAL_KNOWLEDGE_GAP}",
        "met": None if gap is None else gap <= GOAL_KNOWLEDGE_GAP,
    }
    if prompt is not None:
        p_k = prompt["knowledge_answer_contains"]
        lead = None if h_k is None or p_k is None else h_k - p_k
        out["knowledge_answer_contains_lead_vs_prompt"] = {
            "value": lead,
            "target": "> 0",
            "met": None if lead is None else lead > 0,
        }
    return out


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "–"


def _egress_cell(summary: Mapping[str, Any]) -> str:
    per_request = summary["egress_tokens_per_request"]
    if not per_request:
        return "no egress counted"
    return "; ".join(f"{k}: {v:.0f} tok/req" for k, v in sorted(per_request.items()))


UPDATE_FIELDS: tuple[str, ...] = ("seconds", "cpu_seconds", "quality_before", "quality_after")


def update_cell(pipeline: str, update_cost: Mapping[str, Any] | None) -> str:
    """What an update takes for this architecture, with the update_cost bench's numbers when present.

    That file holds {"architectures": {"rag"|"tuned"|"prompt": {"seconds", "cpu_seconds", "quality_before",
    "quality_after", ...}}}; hybrid updates its knowledge the way rag does.
    """
    kind = {
        "prompt": "edit a template + restart",
        "rag": "re-ingest changed documents",
        "tuned": "retrain the LoRA adapter",
        "hybrid": "re-ingest (as rag); retrain the router for new intents",
    }
    base = kind.get(pipeline, "–")
    if not update_cost:
        return f"{base} (no benchmarks/results/update_cost.json)"
    entries = update_cost.get("architectures", update_cost)
    entry = entries.get("rag" if pipeline == "hybrid" else pipeline) if isinstance(entries, Mapping) else None
    if not isinstance(entry, Mapping):
        return f"{base} (not in update_cost.json)"
    numbers = ", ".join(
        f"{key.replace('_', ' ')} {fmt(entry[key], 2)}"
        for key in UPDATE_FIELDS
        if isinstance(entry.get(key), int | float)
    )
    return f"{base}: {numbers}" if numbers else base


def _index_part(summary: Mapping[str, Any]) -> str:
    if not summary["mean_context_tokens"]:
        return ""
    return f" + index ({fmt(summary['index_chunks'], 0)} chunks) + embedder"


def scorecard(results: Mapping[str, Any]) -> str:
    """Six dimensions x pipelines; every cell carries the measured numbers behind it."""
    pipelines: Mapping[str, Mapping[str, Any]] = results["pipelines"]
    levels = results["config"]["concurrency"]
    low, high = str(min(levels)), str(max(levels))
    names = list(pipelines)
    rows: list[list[str]] = []

    rows.append(
        ["privacy"]
        + [
            f"{_egress_cell(s)}; gate actions {_counts(s['privacy_actions']['actions'])}; "
            f"answered by trust {_counts(s['privacy_actions']['backend_trust'])}"
            for s in pipelines.values()
        ]
    )
    rows.append(
        ["latency"]
        + [
            f"p50 {fmt(s['latency'][low]['p50'], 0)} / p95 {fmt(s['latency'][low]['p95'], 0)} ms at c={low}; "
            f"p95 {fmt(s['latency'][high]['p95'], 0)} ms at c={high}"
            for s in pipelines.values()
        ]
    )
    rows.append(
        ["control"]
        + [
            f"answer_contains {fmt(s['quality']['answer_contains'], 2)}, "
            f"hit@5 {fmt(s['quality']['hit@5'], 2)}, "
            f"route acc {fmt(s['quality']['route_accuracy'], 2)}, "
            f"refusals {fmt(s['quality']['refusal_accuracy'], 2)}, "
            f"cited {fmt(s['with_sources'], 2)}"
            for s in pipelines.values()
        ]
    )
    rows.append(["update frequency"] + [update_cell(p, results.get("update_cost")) for p in names])
    rows.append(
        ["deployment target"]
        + [
            f"generator{_index_part(s)}"
            f"{' + router' if p == 'hybrid' else ''}{' + LoRA adapter' if p == 'tuned' else ''}; "
            f"context {fmt(s['mean_context_tokens'], 0)} tok/req"
            for p, s in pipelines.items()
        ]
    )
    rows.append(
        ["cost"]
        + [
            f"${fmt(s['cost_per_1k_usd']['from_responses'], 4)} / 1k req (responses), "
            f"${fmt(s['cost_per_1k_usd']['from_metrics'], 4)} (/metrics)"
            for s in pipelines.values()
        ]
    )
    return markdown_table(["dimension", *names], rows)


def quality_table(pipelines: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, s in pipelines.items():
        q = s["quality"]
        rows.append(
            [
                name,
                q["n"],
                q["errors"],
                q["route_accuracy"],
                q["hit@5"],
                q["answer_contains"],
                s["knowledge_answer_contains"],
                q["refusal_accuracy"],
                q["false_refusal_rate"],
            ]
        )
    headers = [
        "pipeline",
        "items",
        "errors",
        "route acc",
        "hit@5",
        "answer_contains",
        "answer_contains (knowledge)",
        "refusal acc (oos)",
        "false refusals",
    ]
    return markdown_table(headers, rows, digits=3)


def latency_cost_table(pipelines: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, s in pipelines.items():
        for level, lat in s["latency"].items():
            rows.append(
                [
                    name,
                    level,
                    lat["req_per_s"],
                    lat["ttft_p50"],
                    lat["mean"],
                    lat["p50"],
                    lat["p95"],
                    lat["p99"],
                    s["cost_per_1k_usd"]["from_responses"],
                    s["cost_per_1k_usd"]["from_metrics"],
                    s["mean_context_tokens"],
                ]
            )
    headers = [
        "pipeline",
        "concurrency",
        "req/s",
        "TTFT p50",
        "E2E mean",
        "E2E p50",
        "E2E p95",
        "E2E p99",
        "USD/1k (responses)",
        "USD/1k (/metrics)",
        "context tok/req",
    ]
    return markdown_table(headers, rows, digits=4) + "\n\nLatencies in ms, client side."


def goals_table(goal_results: Mapping[str, Mapping[str, Any]]) -> str:
    if not goal_results:
        return "_Goals need both `hybrid` and `rag` in the run._"
    rows = [
        [name, g["value"], g["target"], "–" if g["met"] is None else ("met" if g["met"] else "NOT met")]
        for name, g in goal_results.items()
    ]
    return markdown_table(["goal", "measured", "target", "verdict"], rows, digits=3)


def sweep_section(sweep: Mapping[str, Any]) -> str:
    if not sweep.get("n"):
        return (
            "_No sweep: it needs `hybrid` (with route scores), `prompt` and `rag` answers to the same "
            "items with answer substrings._"
        )
    rec = sweep.get("recommended") or {}
    shadow = sweep["shadow"]
    lines = [
        f"{sweep['n']} items (expected route `rag` or `direct`, with answer substrings). An item goes to RAG "
        "iff the router's P(knowledge) >= t; quality = answer_contains, cost = the measured cost of that "
        "item's answer on "
        "the path taken.",
        "",
        markdown_table(
            ["", "quality", "mean cost USD"],
            [
                ["prompt only", sweep["prompt_only"]["quality"], sweep["prompt_only"]["mean_cost"]],
                ["RAG only", sweep["rag_only"]["quality"], sweep["rag_only"]["mean_cost"]],
                [
                    f"recommended t={fmt(rec.get('threshold'), 3)} "
                    f"({fmt(rec.get('share_rag', 0) * 100, 0)} % to RAG)",
                    rec.get("quality"),
                    rec.get("mean_cost"),
                ],
            ],
            digits=4,
        ),
        "",
        f"Area under quality vs share-to-RAG: {fmt(sweep['auc'], 3)}; APGR {fmt(sweep['apgr'], 3)}. "
        f"Recommended threshold: the cheapest point within {sweep['tolerance'] * 100:.0f} point of "
        "always-RAG "
        f"quality, at {fmt(rec.get('cost_vs_rag_only'), 2)}x the always-RAG cost.",
        "",
        "Shadow mode (both paths answered every item; the router's actual choice):",
        "",
        markdown_table(
            [
                "chose RAG",
                "chose prompt",
                "other (refused...)",
                "unnecessary retrievals",
                "missed retrievals",
                "both correct",
                "neither correct",
            ],
            [
                [
                    shadow["chose_rag"],
                    shadow["chose_prompt"],
                    shadow["chose_other"],
                    shadow["unnecessary_retrievals"],
                    shadow["missed_retrievals"],
                    shadow["both_correct"],
                    shadow["neither_correct"],
                ]
            ],
        ),
    ]
    return "\n".join(lines)


def write_sweep_plot(sweep: Mapping[str, Any], out_dir: Path) -> str | None:
    points = sweep.get("points") or []
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(points, key=lambda p: p["share_rag"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(
        [p["share_rag"] * 100 for p in ordered], [p["quality"] for p in ordered], marker="o", label="quality"
    )
    rec = sweep.get("recommended")
    if rec:
        ax.scatter([rec["share_rag"] * 100], [rec["quality"]], color="red", zorder=3, label="recommended")
    ax.set_xlabel("requests sent to RAG (%)")
    ax.set_ylabel("answer_contains")
    ax2 = ax.twinx()
    ax2.plot(
        [p["share_rag"] * 100 for p in ordered],
        [p["mean_cost"] * 1000 for p in ordered],
        color="gray",
        linestyle="--",
        label="USD / 1k requests",
    )
    ax2.set_ylabel("USD per 1k requests")
    ax.set_title(f"Router threshold sweep (AUC {sweep['auc']:.3f})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "threshold_sweep.png", dpi=110)
    plt.close(fig)
    return "threshold_sweep.png"


def write_compare_report(results: Mapping[str, Any], out_dir: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "results.json"
    write_json(json_path, results)
    plots = write_plots(results["runs"], out_dir)
    sweep_plot = write_sweep_plot(results["sweep"], out_dir)
    if sweep_plot:
        plots.append(sweep_plot)
    mix_plot = write_mix_sweep_plot(results["mix_sweep"], out_dir) if "mix_sweep" in results else None
    if mix_plot:
        plots.append(mix_plot)
    config = results["config"]
    skipped = results.get("skipped_pipelines") or []
    variants = results.get("skipped_variants") or {}
    parts = [
        "# Architecture comparison",
        "",
        environment_markdown(results.get("environment")),
        "",
        f"{config['items']} items of `{config['data']}`, concurrency {config['concurrency']}, max_tokens "
        f"{config['max_tokens']}, {'streaming' if config['stream'] else 'non-streaming'}, service "
        f"{config['base_url']}, started {config['started_at']}."
        + (f" Not listed by the service, so not run: {', '.join(skipped)}." if skipped else "")
        + f" Run: {', '.join(results['pipelines'])}."
        + "".join(f" Not run: {name} ({reason})." for name, reason in variants.items()),
        "",
        "## Goals (hybrid against always-RAG and prompt-only, as measured at the traffic mix below)",
        "",
        goals_table(results["goals"]),
        "",
        "## Scorecard",
        "",
        scorecard(results),
        "",
        "## Quality (first concurrency level's answers)",
        "",
        quality_table(results["pipelines"]),
        "",
        "## Latency and cost",
        "",
        latency_cost_table(results["pipelines"]),
        "",
        "## Router threshold sweep and shadow mode",
        "",
        sweep_section(results["sweep"]),
        "",
    ]
    if "mix" in results:
        parts += ["## Traffic mix", "", mix_section(results["mix"]), ""]
    if "mix_sweep" in results:
        parts += [
            "## Cost, p95 and quality against the knowledge share",
            "",
            mix_sweep_section(results["mix_sweep"]),
            "",
        ]
    if "goodput" in results:
        parts += ["## Goodput", "", goodput_section(results["goodput"], config.get("slo_ms", 0.0)), ""]
    if "routing_regret" in results:
        parts += ["## Routing regret", "", regret_section(results["routing_regret"]), ""]
    return write_markdown_report(out_dir, parts, plots, json_path)
