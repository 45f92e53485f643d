"""Grounded answers side by side: generators x rag configurations, on two question sets, plus direct answers.

    python -m benchmarks.system.grounding --handbook-index var/index --sourcegraph-index var/index-sourcegraph

Each (generator, configuration) is served by a real `hybridllm serve` with `HYBRID_...` overrides and asked,
one request at a time (`max_tokens` 64, greedy), the knowledge items of corpus/eval/handbook_eval.jsonl and
of the unseen Sourcegraph set (corpus/eval/sourcegraph_eval.jsonl over an ingested copy of
../shared/datasets/sourcegraph_handbook). Each generator also answers corpus/eval/general_knowledge.jsonl
through `prompt`. Runs are written one file each under OUT/runs/ and an existing file is reused
(`--fresh` reruns), so a long grid survives an interruption. Prints the summary JSON on its last line and
writes OUT/grounding.json, OUT/grounding.png and the tables into benchmarks/results/grounding.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.load import configure_logging
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.report import markdown_table, write_json
from services.evaluation.e2e import evaluate_e2e
from services.evaluation.local_server import running_service

HANDBOOK_EVAL = REPO_ROOT / "corpus" / "eval" / "handbook_eval.jsonl"
SOURCEGRAPH_EVAL = REPO_ROOT / "corpus" / "eval" / "sourcegraph_eval.jsonl"
GENERAL_KNOWLEDGE = REPO_ROOT / "corpus" / "eval" / "general_knowledge.jsonl"
REPORT = RESULTS_ROOT / "grounding.md"
TABLES_MARKER = "<!-- tables: written by benchmarks/system/grounding.py -->"
MAX_TOKENS = 64


@dataclass(frozen=True, slots=True)
class Generator:
    name: str
    env: Mapping[str, str]
    limit: int | None = None  # questions per set (evenly spread) for slow generators


@dataclass(frozen=True, slots=True)
class RagConfig:
    name: str
    env: Mapping[str, str]
    needs_adapter: bool = False


GENERATORS = {
    "smollm2-int8": Generator("smollm2-int8", {"HYBRID_GENERATOR__MODEL": "smollm2"}),
    "qwen0.5b-int4": Generator(
        "qwen0.5b-int4",
        {"HYBRID_GENERATOR__MODEL": "qwen2.5-coder-0.5b", "HYBRID_GENERATOR__ONNX_PRECISION": "int4"},
    ),
    "qwen1.5b-int4": Generator(
        "qwen1.5b-int4",
        {"HYBRID_GENERATOR__MODEL": "qwen2.5-coder-1.5b", "HYBRID_GENERATOR__ONNX_PRECISION": "int4"},
        limit=20,
    ),
}
CONFIGS = {
    # Today's pipeline before this work: whole chunks under the 450-token budget, answers unchecked.
    "chunks": RagConfig(
        "chunks", {"HYBRID_RAG__CONTEXT__MODE": "chunks", "HYBRID_RAG__GROUNDING__UNSUPPORTED_ANSWER": "pass"}
    ),
    "evidence": RagConfig(
        "evidence",
        {"HYBRID_RAG__CONTEXT__MODE": "evidence", "HYBRID_RAG__GROUNDING__UNSUPPORTED_ANSWER": "pass"},
    ),
    "evidence+adapter": RagConfig(
        "evidence+adapter",
        {
            "HYBRID_RAG__CONTEXT__MODE": "evidence",
            "HYBRID_RAG__GROUNDING__UNSUPPORTED_ANSWER": "pass",
            "HYBRID_RAG__ADAPTER": "grounded",
        },
        needs_adapter=True,
    ),
    "evidence+extract": RagConfig(
        "evidence+extract",
        {
            "HYBRID_RAG__CONTEXT__MODE": "evidence",
            "HYBRID_RAG__GROUNDING__UNSUPPORTED_ANSWER": "extract",
            "HYBRID_RAG__GROUNDING__EXTRACT_QUOTE_UNITS": "1",
        },
    ),  # fmt: skip
    "evidence+extract2": RagConfig(
        "evidence+extract2",
        {
            "HYBRID_RAG__CONTEXT__MODE": "evidence",
            "HYBRID_RAG__GROUNDING__UNSUPPORTED_ANSWER": "extract",
            "HYBRID_RAG__GROUNDING__EXTRACT_QUOTE_UNITS": "2",
        },
    ),  # fmt: skip
    "evidence+adapter+extract2": RagConfig(
        "evidence+adapter+extract2",
        {
            "HYBRID_RAG__CONTEXT__MODE": "evidence",
            "HYBRID_RAG__GROUNDING__UNSUPPORTED_ANSWER": "extract",
            "HYBRID_RAG__GROUNDING__EXTRACT_QUOTE_UNITS": "2",
            "HYBRID_RAG__ADAPTER": "grounded",
        },
        needs_adapter=True,
    ),  # fmt: skip
}


@dataclass(slots=True)
class Plan:
    generators: list[Generator]
    configs: list[RagConfig]
    sets: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # name -> (eval file, index dir)
    adapter: Path | None = None


def knowledge_items(path: Path, limit: int | None) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [row for row in rows if row["route"] == "rag"]
    if limit is not None and limit < len(rows):
        rows = [rows[i * len(rows) // limit] for i in range(limit)]
    return rows


def _write_items(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def summarise(result: Mapping[str, Any], dev_ids: set[str] | None = None) -> dict[str, Any]:
    items = result["items"]
    summary = {
        "n": result["n"],
        "errors": result["errors"],
        "answer_contains": result["answer_contains"],
        "hit@5": result["hit@5"],
        "p50_ms": result["p50_ms"],
        "p95_ms": result["p95_ms"],
        "context_tokens_mean": _mean(
            [i["context_tokens"] for i in items if i.get("context_tokens") is not None]
        ),
        "groundedness_actions": result.get("groundedness_actions", {}),
    }
    if dev_ids is not None:
        for name, keep in (("dev", True), ("other_half", False)):
            part = [
                i for i in items if (i["item_id"] in dev_ids) == keep and i["answer_contains"] is not None
            ]
            summary[f"answer_contains_{name}"] = _mean([float(i["answer_contains"]) for i in part])
    return summary


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


async def _evaluate(base_url: str, data: Path, pipeline: str, out: Path) -> dict[str, Any]:
    return await evaluate_e2e(
        data, base_url=base_url, pipeline=pipeline, concurrency=1, max_tokens=MAX_TOKENS, out=out
    )


def run_one(
    generator: Generator,
    config: RagConfig | None,
    set_name: str,
    data: Path,
    index: Path,
    adapter: Path | None,
    runs_dir: Path,
) -> dict[str, Any]:
    """Serve one configuration and ask one question set; the run's record (cached under runs_dir)."""
    label = f"{generator.name}__{config.name if config else 'prompt'}__{set_name}"
    cached = runs_dir / f"{label}.json"
    if cached.exists():
        return dict(json.loads(cached.read_text(encoding="utf-8")))
    env = dict(generator.env)
    if config is not None:
        env.update(config.env)
        if config.needs_adapter and adapter is not None:
            env["HYBRID_GENERATOR__ADAPTERS"] = json.dumps({"grounded": str(adapter)})
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with running_service(None, extra_env=env, index_dir=index) as base_url:
        pipeline = "rag" if config is not None else "prompt"
        result = asyncio.run(_evaluate(base_url, data, pipeline, runs_dir / f"{label}.items.jsonl"))
    dev_ids = _dev_ids() if set_name == "handbook" else None
    record = {
        "generator": generator.name,
        "config": config.name if config else "prompt",
        "set": set_name,
        **summarise(result, dev_ids),
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        # Runs are cached across sessions: each carries the stack it was measured on.
        "environment": environment(),
    }
    write_json(cached, record)
    return record


def _dev_ids() -> set[str]:
    """The dev half of handbook_eval's knowledge items: every other one from the first (corpus/eval)."""
    return {row["id"] for row in knowledge_items(HANDBOOK_EVAL, None)[0::2]}


def run_grid(plan: Plan, out_dir: Path) -> list[dict[str, Any]]:
    runs_dir = out_dir / "runs"
    records: list[dict[str, Any]] = []
    for generator in plan.generators:
        data = _write_items(
            [json.loads(line) for line in GENERAL_KNOWLEDGE.read_text(encoding="utf-8").splitlines()],
            runs_dir / "sets" / "general_knowledge.jsonl",
        )
        any_index = next(iter(plan.sets.values()))[1]
        records.append(run_one(generator, None, "general_knowledge", data, any_index, None, runs_dir))
        for config in plan.configs:
            if config.needs_adapter and (plan.adapter is None or generator.name != "smollm2-int8"):
                continue  # the grounding adapter is trained for the default generator only
            for set_name, (eval_file, index) in plan.sets.items():
                rows = knowledge_items(eval_file, generator.limit)
                data = _write_items(rows, runs_dir / "sets" / f"{set_name}-{generator.limit or 'all'}.jsonl")
                records.append(run_one(generator, config, set_name, data, index, plan.adapter, runs_dir))
                print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    return records


def tables(records: Sequence[Mapping[str, Any]]) -> str:
    by_key = {(r["generator"], r["config"], r["set"]): r for r in records}
    rows = []
    for (gen, config, set_name), record in sorted(by_key.items(), key=lambda item: _order(item[0])):
        if set_name != "handbook":
            continue
        unseen = by_key.get((gen, config, "sourcegraph"), {})
        rows.append([
            gen, config, record["n"], record["answer_contains"], record.get("answer_contains_other_half"),
            unseen.get("n"), unseen.get("answer_contains"), unseen.get("hit@5"), record["p50_ms"],
            record["p95_ms"], unseen.get("p50_ms"), record["context_tokens_mean"],
            _actions(record), _actions(unseen),
        ])  # fmt: skip
    rows = [
        [round(c) if isinstance(c, float) and i in (8, 9, 10, 11) else c for i, c in enumerate(r)]
        for r in rows
    ]
    headers = [
        "generator", "rag configuration", "n", "answer_contains (corpus/eval)", "other half", "n unseen",
        "answer_contains (unseen)", "hit@5 (unseen)", "rag p50 ms", "rag p95 ms", "rag p50 ms (unseen)",
        "context tokens", "checks (corpus/eval)", "checks (unseen)",
    ]  # fmt: skip
    direct = [
        [r["generator"], r["n"], r["answer_contains"], round(r["p50_ms"])]
        for r in sorted(records, key=lambda r: _order((r["generator"], r["config"], r["set"])))
        if r["set"] == "general_knowledge"
    ]
    return "\n\n".join([
        "### Knowledge questions (rag, concurrency 1, max_tokens 64)",
        markdown_table(headers, rows, digits=2),
        "### Direct answers (prompt, general-knowledge set)",
        markdown_table(["generator", "n", "answer_contains", "p50 ms"], direct, digits=2),
    ])  # fmt: skip


def _order(key: tuple[str, str, str]) -> tuple[int, int, str]:
    """Generators and configurations in the order they are declared above, unknown ones last."""
    generators, configs = list(GENERATORS), list(CONFIGS)
    gen, config, set_name = key
    return (
        generators.index(gen) if gen in generators else len(generators),
        configs.index(config) if config in configs else len(configs),
        set_name,
    )


def _actions(record: Mapping[str, Any]) -> str:
    actions = record.get("groundedness_actions") or {}
    return ", ".join(f"{k} {v}" for k, v in sorted(actions.items())) or "–"


def plot(records: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {(r["generator"], r["config"], r["set"]): r for r in records}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, set_name, title in ((axes[0], "handbook", "corpus/eval"), (axes[1], "sourcegraph", "unseen set")):
        for (gen, config, name), record in sorted(by_key.items()):
            if name != set_name or record.get("answer_contains") is None:
                continue
            latency = by_key.get((gen, config, "handbook"), record)["p50_ms"]
            ax.scatter(latency / 1000.0, record["answer_contains"], s=40)
            ax.annotate(f"{gen}\n{config}", (latency / 1000.0, record["answer_contains"]), fontsize=6)
        ax.axvline(1.5, linestyle="--", linewidth=1)
        ax.set_title(f"answer_contains on {title} vs rag p50 (corpus/eval)")
        ax.set_xlabel("rag p50 (s), concurrency 1")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("knowledge answer_contains")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    records: Sequence[Mapping[str, Any]], out_dir: Path, started: str, env: Mapping[str, Any]
) -> None:
    """Replace everything after TABLES_MARKER in the report; what is above it (the rule, the
    interpretation) is written by people."""
    text = REPORT.read_text(encoding="utf-8") if REPORT.exists() else "# Grounded answers\n"
    head = text.split(TABLES_MARKER)[0].rstrip() + "\n\n"
    body = (
        f"{TABLES_MARKER}\n\n## Measured (`python -m benchmarks.system.grounding`, started {started})\n\n"
        f"{environment_markdown(env)} Each cached run's own record: `{out_dir.name}/runs/*.json`.\n\n"
        f"{os.cpu_count()} cores; load average before/after each run in `{out_dir.name}/grounding.json`. "
        f"![quality vs latency]({out_dir.name}/grounding.png)\n\n{tables(records)}\n"
    )
    REPORT.write_text(head + body, encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.system.grounding", description=__doc__)
    parser.add_argument("--handbook-index", type=Path, required=True)
    parser.add_argument(
        "--sourcegraph-index", type=Path, default=None, help="an ingested Sourcegraph handbook"
    )
    parser.add_argument("--generators", default=",".join(GENERATORS))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--adapter", type=Path, default=None, help="the grounding adapter's folder")
    parser.add_argument("--out", type=Path, default=RESULTS_ROOT / "grounding")
    parser.add_argument("--fresh", action="store_true", help="rerun runs that have a cached result")
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        generators = [GENERATORS[name] for name in args.generators.split(",") if name]
        configs = [CONFIGS[name] for name in args.configs.split(",") if name]
    except KeyError as exc:
        print(f"error: unknown generator or configuration {exc}", file=sys.stderr)
        return 2
    for path in [args.handbook_index, args.sourcegraph_index, args.adapter]:
        if path is not None and not path.exists():
            print(f"error: not found: {path}", file=sys.stderr)
            return 2
    plan = Plan(generators, configs, {"handbook": (HANDBOOK_EVAL, args.handbook_index)}, args.adapter)
    if args.sourcegraph_index is not None:
        plan.sets["sourcegraph"] = (SOURCEGRAPH_EVAL, args.sourcegraph_index)
    else:
        print("sourcegraph index not given: the unseen set is skipped", file=sys.stderr)
    if args.fresh and (args.out / "runs").exists():
        for old in (args.out / "runs").glob("*.json"):
            old.unlink()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    run_grid(plan, args.out)
    # The report covers every cached run in OUT/runs, so a grid can be run in parts (one generator at a time).
    records = [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted((args.out / "runs").glob("*.json"))
    ]
    env = environment()
    write_json(args.out / "grounding.json", {"environment": env, "started": started, "runs": records})
    plot(records, args.out / "grounding.png")
    write_report(records, args.out, started, env)
    print(json.dumps({"runs": len(records), "report": str(REPORT.relative_to(REPO_ROOT))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
