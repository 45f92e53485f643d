"""The comparison report's sections on traffic mix, the mix sweep, goodput and routing regret, with plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.harness.report import fmt, markdown_table

SWEEP_PANELS: tuple[tuple[str, str], ...] = (
    ("cost_per_1k_usd", "USD per 1k requests"),
    ("p95_ms", "p95 latency (ms), c=1"),
    ("knowledge_answer_contains", "knowledge answer_contains"),
)


def _shares(shares: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {share:.2f}" for name, share in shares.items())


def mix_section(mix: Mapping[str, Any]) -> str:
    if mix.get("asked") is None:
        return f"The eval file's own mix, items evenly spaced over it: {_shares(mix['drawn'])}."
    return (
        f"Asked: {_shares(mix['asked'])}; drawn (seed {mix['seed']}): {_shares(mix['drawn'])}. "
        f"Why this mix: {mix['reason']}."
    )


def mix_sweep_section(sweep: Mapping[str, Any]) -> str:
    """The curve as a table, where hybrid meets its goals on it, and the computation's validation."""
    points = sweep["points"]
    pipelines = list(points[0]["pipelines"]) if points else []
    rows = []
    for point in points:
        for pipeline in pipelines:
            at = point["pipelines"][pipeline] or {}
            rows.append(
                [point["knowledge_share"], pipeline, at.get("cost_per_1k_usd"), at.get("p50_ms"),
                 at.get("p95_ms"), at.get("knowledge_answer_contains"), at.get("answer_contains")]
            )  # fmt: skip
    region = sweep["goal_region"]
    largest = region["largest"]
    verdict = (
        "Hybrid reaches <= 0.6x always-RAG's cost and <= 0.7x its p95 at no knowledge share of this curve."
        if largest is None
        else f"Hybrid reaches <= 0.6x always-RAG's cost and <= 0.7x its p95 at knowledge shares "
        f"{', '.join(f'{s:.1f}' for s in region['shares_met'])}; "
        f"at the largest, {largest['knowledge_share']:.1f}, "
        f"it costs {fmt(largest['cost_vs_rag'], 2)}x and takes {fmt(largest['p95_vs_rag'], 2)}x RAG's p95, "
        f"keeping knowledge answer_contains {fmt(largest['hybrid_knowledge_answer_contains'], 3)} "
        f"({fmt(largest['knowledge_gap_vs_rag'], 3)} below always-RAG)."
    )
    check = sweep["validation"]
    how = (
        "on the very requests pooled (this checks the computation, not the independence of requests)"
        if check["same_requests"]
        else "on a separate real run at concurrency 1"
    )
    check_rows = [
        [
            p,
            v["measured_p95_ms"],
            v["computed_p95_ms"],
            v["measured_cost_per_1k_usd"],
            v["computed_cost_per_1k_usd"],
        ]
        for p, v in check["pipelines"].items()
    ]
    pooled = "; ".join(f"{p}: {_shares_int(n)}" for p, n in sweep["pooled_requests"].items())
    return "\n".join(
        [
            "Each architecture's concurrency-1 requests are pooled by class; at each knowledge share (the "
            f"rest split as in {_shares(sweep['base_mix'])}) cost and quality are the share-weighted class "
            f"means and p95 comes from {sweep['draws']} seeded draws (seed {sweep['seed']}) from the pools. "
            f"Pooled requests: {pooled}.",
            "",
            verdict,
            "",
            markdown_table(
                [
                    "knowledge share",
                    "pipeline",
                    "USD/1k",
                    "p50 ms",
                    "p95 ms",
                    "knowledge answer_contains",
                    "answer_contains (mix)",
                ],
                rows,
                digits=4,
            ),  # fmt: skip
            "",
            f"Validation at {_shares(check['mix'])}, measured {how}:",
            "",
            markdown_table(
                ["pipeline", "measured p95 ms", "computed p95 ms", "measured USD/1k", "computed USD/1k"],
                check_rows,
                digits=4,
            ),  # fmt: skip
        ]
    )


def _shares_int(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def write_mix_sweep_plot(sweep: Mapping[str, Any], out_dir: Path) -> str | None:
    points = sweep.get("points") or []
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SWEEP_PANELS), figsize=(13, 4))
    for ax, (key, label) in zip(axes, SWEEP_PANELS, strict=True):
        for pipeline in points[0]["pipelines"]:
            xy = [
                (p["knowledge_share"], p["pipelines"][pipeline][key])
                for p in points
                if p["pipelines"][pipeline] and p["pipelines"][pipeline][key] is not None
            ]
            if xy:
                ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=pipeline)
        ax.set_xlabel("knowledge share of requests")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Cost, p95 and knowledge quality against the traffic mix")
    fig.tight_layout()
    fig.savefig(out_dir / "mix_sweep.png", dpi=110)
    plt.close(fig)
    return "mix_sweep.png"


def goodput_section(rows: Sequence[Mapping[str, Any]], slo_ms: float) -> str:
    if not rows:
        return "_No runs._"
    table = [
        [r["pipeline"], f"c={r['concurrency']}" if r["mode"] == "closed" else "open",
         r["offered_req_per_s"], r["req_per_s"], r["goodput_req_per_s"], r["good_fraction"], r["p50_ms"],
         r["p95_ms"], r["p99_ms"], r["ttft_p50_ms"], r["ttft_p95_ms"], r["errors"], r["p95_within_slo"]]
        for r in rows
    ]  # fmt: skip
    headers = ["pipeline", "load", "offered req/s", "req/s", "goodput req/s", "within SLO", "p50 ms",
               "p95 ms", "p99 ms", "TTFT p50", "TTFT p95", "errors", "p95 <= SLO"]  # fmt: skip
    return (
        f"Goodput: requests per second that finished within the end-to-end SLO of {slo_ms:.0f} ms (a "
        "failed request never counts). Closed-loop rows are concurrency levels; open-loop rows offer Poisson "
        "arrivals "
        "at multiples of the concurrency-1 throughput (p99_vs_load.png).\n\n"
        + markdown_table(headers, table, digits=3)
    )


def regret_section(regret: Mapping[str, Any]) -> str:
    if not regret.get("n"):
        return "_No routing regret: it needs hybrid's route decisions and both paths' answers to the items._"
    matrix = regret["confusion"]
    rows = [
        [f"router chose {decision}", m["only_rag_correct"], m["only_prompt_correct"], m["both_correct"],
         m["neither_correct"]]
        for decision, m in matrix.items()
    ]  # fmt: skip
    rec = regret.get("recommended") or {}
    return "\n".join(
        [
            f"{regret['n']} items the router sent to `rag` or `prompt` ({regret['not_decided']} refused or "
            "otherwise, left out), each answered by both paths. The off-diagonal cells of the first two "
            "columns are the router's mistakes that cost quality (chose prompt, only rag correct) or money "
            "(chose rag, only prompt correct).",
            "",
            markdown_table(
                ["", "only rag correct", "only prompt correct", "both correct", "neither correct"], rows
            ),
            "",
            f"Router quality {fmt(regret['router_quality'], 3)} against the oracle's "
            f"{fmt(regret['oracle_quality'], 3)} (the cheapest correct path per item): regret "
            f"{fmt(regret['regret_quality_points'], 1)} quality points and "
            f"${fmt(regret['regret_usd_per_1k'], 4)} per 1k requests (missed retrievals "
            f"{fmt(regret['missed_retrieval_points'], 1)} points; wasted retrievals "
            f"${fmt(regret['wasted_retrieval_usd_per_1k'], 4)} per 1k).",
            "",
            f"Recommended threshold at the quality floor ({regret['quality_floor']}): send to RAG iff "
            f"P(knowledge) >= {fmt(rec.get('threshold'), 3)}: {fmt((rec.get('share_rag') or 0) * 100, 0)} % "
            f"to RAG, quality {fmt(rec.get('quality'), 3)}, ${fmt(rec.get('cost_per_1k_usd'), 4)} per 1k.",
        ]
    )
