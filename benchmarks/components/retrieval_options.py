"""Retrieval options side by side: the file path as a BM25 field and PRF query rewriting (issue 18, item 5).

    hybridllm bench retrieval-options --sourcegraph-index var/index-sourcegraph
    python -m benchmarks.components.retrieval_options --handbook-index /tmp/handbook-index ...

Retrieval only, in process, no generation: RetrievalService.retrieve (10 chunks) for hit@1/5/10, then
evidence selection over the first rag.evidence.candidates chunks, as the rag pipeline does; "prompt hit@5"
counts the gold file among the sources of the selected evidence, as benchmarks/system/grounding.py does.
Sets: the knowledge items of corpus/eval (over a fresh index of corpus/handbook unless --handbook-index
names one) and corpus/eval/sourcegraph_eval.jsonl (held out: reported, never tuned on). The path weight
and the rewrite threshold are chosen on the dev half of corpus/eval (its even-numbered knowledge items).
A synthetic 100k-chunk index (the one of benchmarks/components/retrieval.py, with path words drawn from
the same vocabulary as the text) gives the search-stage cost of each option at that size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.paths import REPO_ROOT, repo_path
from benchmarks.harness.report import markdown_table, write_json
from benchmarks.harness.stats import percentile
from services.core.protocols import Embedder
from services.core.settings import RagSettings
from services.core.types import Chunk
from services.evaluation.scoring import EvalItem, hit_at_k, load_eval_items
from services.rag.embedder import build_query_embedder
from services.rag.ingest import ingest
from services.rag.retriever import RetrievalParams, rank_chunks
from services.rag.service import RetrievalService

HANDBOOK_EVAL = REPO_ROOT / "corpus" / "eval" / "handbook_eval.jsonl"
SOURCEGRAPH_EVAL = REPO_ROOT / "corpus" / "eval" / "sourcegraph_eval.jsonl"
RETRIEVED = 10
PATH_WEIGHTS = (0.1, 0.25, 0.5, 1.0, 2.0)
REWRITE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
# Reported beside the chosen threshold on every set, so the held-out set shows the rewrite firing too.
SETTINGS_DEFAULT_BELOW = 0.5


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    path_weight: float | None = None  # None: the path field off
    rewrite_below: float | None = None  # None: no query rewriting

    def settings(self, base: RagSettings) -> RagSettings:
        path = {"enabled": self.path_weight is not None, "weight": self.path_weight or 1.0}
        rewrite = {
            "method": "off" if self.rewrite_below is None else "prf",
            "below": self.rewrite_below or 0.5,
        }
        return base.model_copy(
            update={
                "path_field": base.path_field.model_copy(update=path),
                "query_rewrite": base.query_rewrite.model_copy(update=rewrite),
            }
        )


def knowledge_items(path: Path) -> list[EvalItem]:
    return [item for item in load_eval_items(path) if item.route == "rag" and item.gold_files]


def evaluate(service: RetrievalService, items: Sequence[EvalItem], candidates: int) -> list[dict[str, Any]]:
    """Per item: hits at 1/5/10, the prompt hit, retrieve ms (embed + search), search ms, rewritten or not."""
    rows = []
    for item in items:
        started = time.perf_counter()
        outcome = service.retrieve(item.question, top_k=RETRIEVED)
        retrieve_ms = (time.perf_counter() - started) * 1000.0
        sources = [scored.chunk.source for scored in outcome.chunks]
        evidence = service.select_evidence(
            item.question, replace(outcome, chunks=outcome.chunks[:candidates])
        )
        rows.append(
            {
                "id": item.item_id,
                **{f"hit@{k}": bool(hit_at_k(item.gold_files, sources, k)) for k in (1, 5, 10)},
                "prompt_hit": bool(hit_at_k(item.gold_files, [c.chunk.source for c in evidence.chunks], 5)),
                "retrieve_ms": retrieve_ms,
                "search_ms": outcome.timings_ms["search"],
                "rewritten": outcome.rewritten_query is not None,
                "rewrite_ms": outcome.rewrite_ms,
            }
        )
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    # The rewrite's own time (feedback terms, second BM25 search, second fusion): what firing adds.
    extra = [row["rewrite_ms"] for row in rows if row["rewritten"]]
    return {
        "n": n,
        **{
            key: round(sum(row[key] for row in rows) / n, 3)
            for key in ("hit@1", "hit@5", "hit@10", "prompt_hit")
        },
        "retrieve_p50_ms": round(percentile([row["retrieve_ms"] for row in rows], 50), 3),
        "retrieve_p95_ms": round(percentile([row["retrieve_ms"] for row in rows], 95), 3),
        "search_p50_ms": round(percentile([row["search_ms"] for row in rows], 50), 3),
        "rewrite_rate": round(len(extra) / n, 3),
        "extra_ms_when_fired_p50": round(percentile(extra, 50), 3) if extra else None,
    }


def run_set(
    base: RagSettings, embedder: Embedder, items: Sequence[EvalItem], options: Sequence[Option]
) -> dict[str, list[dict[str, Any]]]:
    """Rows per option; each query runs once per option, options interleaved over two passes (the second
    is kept) so a warm cache and the machine's load fall on every option alike."""
    services = {}
    for option in options:
        service = RetrievalService(option.settings(base), embedder=embedder)
        service.warm_up()
        services[option.name] = service
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(2):
        for option in options:
            results[option.name] = evaluate(services[option.name], items, base.evidence.candidates)
    return results


def tune_on_dev(
    base: RagSettings, embedder: Embedder, dev: Sequence[EvalItem]
) -> tuple[dict[str, Any], float, float]:
    """The path weight and rewrite threshold with the best dev-half prompt hit, then hit@5, then hit@1;
    on a tie the first in grid order (the smaller weight, the lower threshold: the lesser change)."""
    grid = [Option(f"path w={w}", path_weight=w) for w in PATH_WEIGHTS]
    grid += [Option(f"prf below={t}", rewrite_below=t) for t in REWRITE_THRESHOLDS]
    rows = run_set(base, embedder, dev, [Option("baseline"), *grid])
    scores = {name: summarise(result) for name, result in rows.items()}

    def rank(option: Option) -> tuple[float, float, float]:
        s = scores[option.name]
        return (s["prompt_hit"], s["hit@5"], s["hit@1"])

    best_weight = max((o for o in grid if o.path_weight is not None), key=rank).path_weight
    best_threshold = max((o for o in grid if o.rewrite_below is not None), key=rank).rewrite_below
    assert best_weight is not None and best_threshold is not None
    return scores, best_weight, best_threshold


def synthetic_search_cost(options: Sequence[Option], size: int, queries: int) -> dict[str, dict[str, float]]:
    """Search-stage p50/p95 ms per option on a synthetic index of `size` chunks (HNSW, as the service)."""
    from benchmarks.components.retrieval import synthetic_corpus, synthetic_snapshot

    rng = np.random.default_rng(7)
    corpus = synthetic_corpus(size, rng)
    # Four chunks per file, as there; the path holds three words of the text's vocabulary.
    words = np.minimum(rng.zipf(1.3, (size // 4 + 1, 3)), 20_000)
    corpus.chunks[:] = [
        Chunk(
            chunk_id=chunk.chunk_id,
            source="w{}/w{}/w{}.md".format(*words[row // 4]),
            text=chunk.text,
            token_count=chunk.token_count,
        )
        for row, chunk in enumerate(corpus.chunks)
    ]
    snapshot, _ = synthetic_snapshot(
        corpus, "hnsw", hnsw_m=32, hnsw_ef_construction=80, nprobe=16, build_threads=2
    )
    started = time.perf_counter()
    _ = snapshot.path_field
    path_build_s = time.perf_counter() - started
    picks = rng.integers(0, size, queries)
    noise = rng.standard_normal((queries, corpus.vectors.shape[1])).astype(np.float32)
    query_vectors = corpus.vectors[picks] + 0.3 * noise
    query_vectors /= np.linalg.norm(query_vectors, axis=1, keepdims=True)
    queries_text = [" ".join(snapshot.chunks[row].text.split()[:4]) for row in picks]
    results: dict[str, dict[str, float]] = {}
    for option in options:
        params = RetrievalParams.from_settings(option.settings(RagSettings()))
        # Rewriting always fires here (no cosine reaches 2): the figure is its cost, not its rate.
        params = replace(params, rewrite_below=2.0) if option.rewrite_below is not None else params
        timings = []
        for query, query_vector in zip(queries_text, query_vectors, strict=True):
            started = time.perf_counter()
            rank_chunks(snapshot, query, query_vector, params)
            timings.append((time.perf_counter() - started) * 1000.0)
        results[option.name] = {
            "search_p50_ms": round(percentile(timings, 50), 3),
            "search_p95_ms": round(percentile(timings, 95), 3),
        }
    results["path field build"] = {"seconds": round(path_build_s, 3)}
    return results


def build_handbook_index(corpus: Path, base: RagSettings) -> Path:
    index_dir = Path(tempfile.mkdtemp(prefix="retrieval-options-handbook-")) / "index"
    ingest([corpus], base.model_copy(update={"index_dir": index_dir}), progress=False)
    return index_dir


def write_report(results: Mapping[str, Any], out: Path) -> None:
    write_json(out.with_suffix(".json"), results)
    headers = ["option", "n", "hit@1", "hit@5", "hit@10", "prompt hit@5", "retrieve p50 ms", "p95 ms",
               "search p50 ms", "rewrite rate", "extra ms when fired (p50)"]  # fmt: skip
    keys = ["n", "hit@1", "hit@5", "hit@10", "prompt_hit", "retrieve_p50_ms", "retrieve_p95_ms",
            "search_p50_ms", "rewrite_rate", "extra_ms_when_fired_p50"]  # fmt: skip
    lines = [
        "# Retrieval options: the file path as a BM25 field, PRF query rewriting",
        "",
        environment_markdown(results["environment"]),
        f"Load average after the run: {results['load_average_after']}. Other agents shared the 2 cores.",
        "",
        f"Chosen on the dev half of corpus/eval: path weight {results['path_weight']}, rewrite when the best "
        f"cosine is below {results['rewrite_below']}. Retrieval only (no generation); {RETRIEVED} chunks "
        "retrieved, evidence selected from the first rag.evidence.candidates of them (prompt hit@5).",
    ]
    for set_name, title in (("dev", "corpus/eval, dev half (tuned on)"), ("test", "corpus/eval, other half"),
                            ("sourcegraph", "Sourcegraph handbook, held out")):  # fmt: skip
        if set_name not in results["sets"]:
            continue
        table = [[name, *(summary[k] for k in keys)] for name, summary in results["sets"][set_name].items()]
        lines += ["", f"## {title}", "", markdown_table(headers, table, digits=3)]
    lines += ["", "## Default", "", *verdict(results["sets"])]
    lines += ["", "## Dev-half grid", ""]
    grid = [[name, *(summary[k] for k in keys)] for name, summary in results["dev_grid"].items()]
    lines.append(markdown_table(headers, grid, digits=3))
    synthetic = results.get("synthetic")
    if synthetic:
        lines += [
            "",
            f"## Search stage at {results['synthetic_size']:,} synthetic chunks (HNSW; rewriting forced)",
            "",
        ]
        lines += [
            f"- {name}: {', '.join(f'{k} {v}' for k, v in values.items())}"
            for name, values in synthetic.items()
        ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def verdict(sets: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """The issue's rule, quality first: an option is worth turning on when it raises prompt hit@5 on
    corpus/eval (both halves together) and lowers it on no set; latency decides only between equals.
    Rows whose setting was not chosen on the dev half are not candidates."""
    lines = []
    for option in next(iter(sets.values())):
        if option == "baseline":
            continue
        if "not chosen" in option:
            lines.append(f"- {option}: reported only, its threshold was not chosen on the dev half")
            continue
        gains = {
            name: round(rows[option]["prompt_hit"] - rows["baseline"]["prompt_hit"], 3)
            for name, rows in sets.items()
        }
        handbook_gain = sum(gains.get(name, 0.0) for name in ("dev", "test"))
        on = handbook_gain > 0 and all(gain >= 0 for gain in gains.values())
        described = ", ".join(f"{name} {gain:+.3f}" for name, gain in gains.items())
        lines.append(f"- {option}: prompt hit@5 vs baseline {described}: {'turn on' if on else 'keep off'}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybridllm bench retrieval-options", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--handbook-corpus", type=Path, default=REPO_ROOT / "corpus" / "handbook")
    parser.add_argument(
        "--handbook-index", type=Path, default=None, help="default: ingest a fresh one in /tmp"
    )
    parser.add_argument(
        "--sourcegraph-index", type=Path, default=None, help="an ingested Sourcegraph handbook"
    )
    parser.add_argument(
        "--synthetic-size", type=int, default=100_000, help="0 skips the synthetic cost check"
    )
    parser.add_argument("--synthetic-queries", type=int, default=300)
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "retrieval_options"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in (args.handbook_index, args.sourcegraph_index):
        if path is not None and not path.is_dir():
            print(f"no index at {path}", file=sys.stderr)
            return 2
    env = environment()
    base = RagSettings()
    handbook_index = args.handbook_index or build_handbook_index(args.handbook_corpus, base)
    # One query embedder for every service, with the ONNX export of the default index's cache.
    embedder = build_query_embedder(base)
    embedder.warm_up()
    handbook = base.model_copy(update={"index_dir": handbook_index})
    items = knowledge_items(HANDBOOK_EVAL)
    dev, test = items[0::2], items[1::2]
    dev_grid, weight, threshold = tune_on_dev(handbook, embedder, dev)
    options = [
        Option("baseline"),
        Option("path field", path_weight=weight),
        Option("prf", rewrite_below=threshold),
        Option("path field + prf", path_weight=weight, rewrite_below=threshold),
    ]
    if threshold != SETTINGS_DEFAULT_BELOW:
        options.append(
            Option(f"prf below={SETTINGS_DEFAULT_BELOW} (not chosen)", rewrite_below=SETTINGS_DEFAULT_BELOW)
        )
    sets: dict[str, dict[str, Any]] = {}
    targets = [("dev", handbook, dev), ("test", handbook, test)]
    if args.sourcegraph_index is not None:
        sg_items = knowledge_items(SOURCEGRAPH_EVAL)
        targets.append(
            ("sourcegraph", base.model_copy(update={"index_dir": args.sourcegraph_index}), sg_items)
        )
    for name, settings, set_items in targets:
        rows = run_set(settings, embedder, set_items, options)
        sets[name] = {option: summarise(result) for option, result in rows.items()}
    synthetic = (
        synthetic_search_cost(options, args.synthetic_size, args.synthetic_queries)
        if args.synthetic_size
        else {}
    )
    results = {
        "environment": env,
        "load_average_after": environment()["load_average"],
        "path_weight": weight,
        "rewrite_below": threshold,
        "handbook_index": repo_path(handbook_index),
        "sourcegraph_index": repo_path(args.sourcegraph_index) if args.sourcegraph_index else None,
        "dev_grid": dev_grid,
        "sets": sets,
        "synthetic_size": args.synthetic_size,
        "synthetic": synthetic,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(results, args.out)
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
