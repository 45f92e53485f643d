"""Query-embedding latency and batch throughput: torch (sentence-transformers) vs ONNX Runtime, one run.

Usage: HF_HUB_OFFLINE=1 python -m benchmarks.components.embedder [--queries 200] [--documents 256]

Engines are measured interleaved, in rounds (each engine embeds a block of queries in turn), so load from
other processes on the shared cores falls on all of them alike rather than on whichever ran last. torch's
thread count is process-wide, so the torch rows switch it with torch.set_num_threads before each block.
Latency includes tokenization, as a query pays it. Writes benchmarks/results/embedder.{json,md,png}; the
last stdout line is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.harness.environment import environment, environment_markdown  # noqa: E402
from benchmarks.harness.report import markdown_table, write_json  # noqa: E402
from benchmarks.harness.stats import percentile  # noqa: E402
from services.rag.embedder import SentenceTransformerEmbedder  # noqa: E402
from services.rag.onnx_embedder import OnnxEmbedder  # noqa: E402

QUERIES = (
    "how many vacation days do I get per year",
    "what is the daily meal allowance abroad",
    "where do I submit travel receipts",
    "how often do service account keys rotate",
    "when does my laptop ship before my start date",
    "who is my onboarding buddy",
    "can unused vacation days carry over into next year",
    "do I need a doctor's note for sick leave",
    "which password manager does the company use",
    "how do I book flights for a business trip",
    "what is the policy on remote work equipment",
    "how do I request access to the production database",
)


def document_texts(corpus: Path, count: int) -> list[str]:
    """Chunk-sized passages (~120 words) from the handbook corpus, or synthetic text when it is absent."""
    words: list[str] = []
    for path in sorted(corpus.rglob("*.md")):
        words.extend(path.read_text(encoding="utf-8").split())
    if len(words) < 500:
        words = " ".join(QUERIES).split() * 50
    passages = []
    for i in range(count):
        start = (i * 37) % max(1, len(words) - 120)
        passages.append(" ".join(words[start : start + 60 + (i * 13) % 90]))
    return passages


def summarize(samples_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples_ms, 50), 3),
        "p90_ms": round(percentile(samples_ms, 90), 3),
        "p99_ms": round(percentile(samples_ms, 99), 3),
        "mean_ms": round(sum(samples_ms) / len(samples_ms), 3),
        "n": len(samples_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=200, help="single queries per engine")
    parser.add_argument("--documents", type=int, default=128, help="documents per batch-throughput run")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--corpus", type=Path, default=Path("corpus/handbook"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="ONNX export cache (default: temp dir)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    import torch

    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="embedder-cache-"))
    load_at_start = os.getloadavg()[0]
    export_started = time.perf_counter()
    onnx_engines = {
        threads: OnnxEmbedder(cache_dir=cache_dir, threads=threads, batch_size=args.batch_size)
        for threads in (1, 2)
    }
    for engine in onnx_engines.values():
        engine.warm_up()
    export_and_load_s = time.perf_counter() - export_started
    reload_started = time.perf_counter()
    OnnxEmbedder(cache_dir=cache_dir, threads=1).warm_up()
    cached_load_s = time.perf_counter() - reload_started
    torch_embedder = SentenceTransformerEmbedder(batch_size=args.batch_size)
    torch_embedder.warm_up()

    def torch_with(threads: int) -> Callable[[], None]:
        def setup() -> None:
            torch.set_num_threads(threads)

        return setup

    def nothing() -> None:
        return None

    # name -> (setup before each block, embedder)
    engines: dict[str, tuple[Callable[[], None], Any]] = {
        "torch 1 thread": (torch_with(1), torch_embedder),
        "torch 2 threads": (torch_with(2), torch_embedder),
        "onnx 1 thread": (nothing, onnx_engines[1]),
        "onnx 2 threads": (nothing, onnx_engines[2]),
    }

    # equivalence on the benchmark's own texts (long passages included)
    documents = document_texts(args.corpus, args.documents)
    torch.set_num_threads(2)
    reference = torch_embedder.embed_documents(documents[:64] + list(QUERIES))
    candidate = onnx_engines[2].embed_documents(documents[:64] + list(QUERIES))
    min_cosine = float(np.min(np.sum(reference * candidate, axis=1)))
    max_abs_diff = float(np.max(np.abs(reference - candidate)))

    # single-query latency, interleaved in rounds
    latencies: dict[str, list[float]] = {name: [] for name in engines}
    per_block = max(1, args.queries // args.rounds)
    for setup, embedder in engines.values():
        setup()
        for query in QUERIES:
            embedder.embed_query(query)
    for round_index in range(args.rounds):
        for name, (setup, embedder) in engines.items():
            setup()
            for i in range(per_block):
                query = QUERIES[(round_index * per_block + i) % len(QUERIES)]
                started = time.perf_counter()
                embedder.embed_query(query)
                latencies[name].append((time.perf_counter() - started) * 1000.0)

    # batch throughput, interleaved in two rounds; the best round counts (least disturbed by others)
    throughput: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(2):
        for name, (setup, embedder) in engines.items():
            setup()
            started = time.perf_counter()
            embedder.embed_documents(documents)
            throughput[name].append(len(documents) / (time.perf_counter() - started))

    tokens = [onnx_engines[1].count_tokens(text) for text in documents]
    rows: list[dict[str, Any]] = []
    for name in engines:
        stats = summarize(latencies[name])
        rows.append({
            "engine": name,
            **stats,
            "batch_texts_per_s": round(max(throughput[name]), 1),
            "batch_texts_per_s_rounds": [round(t, 1) for t in throughput[name]],
        })  # fmt: skip
    baseline = next(r for r in rows if r["engine"] == "torch 1 thread")
    for row in rows:
        row["p50_speedup_vs_torch_1t"] = round(baseline["p50_ms"] / row["p50_ms"], 2)
        row["throughput_vs_torch_1t"] = round(row["batch_texts_per_s"] / baseline["batch_texts_per_s"], 2)
    results: dict[str, Any] = {
        "environment": environment(),
        "machine": f"{os.cpu_count()} cores shared with other processes; load average {load_at_start:.1f} "
        f"at start, {os.getloadavg()[0]:.1f} at end",
        "model": onnx_engines[1].model_id,
        "max_seq_length": onnx_engines[1].max_seq_length,
        "queries_per_engine": len(latencies["onnx 1 thread"]),
        "documents": len(documents),
        "document_tokens_mean": round(sum(tokens) / len(tokens), 1),
        "batch_size": args.batch_size,
        "onnx_exported": onnx_engines[1].exported,
        "onnx_export_and_load_s": round(export_and_load_s, 2),
        "onnx_cached_load_s": round(cached_load_s, 2),
        "equivalence": {"min_cosine": min_cosine, "max_abs_diff": max_abs_diff, "texts": len(reference)},
        "engines": rows,
    }
    write_report(results, args.out)
    print(json.dumps(results))


def write_report(results: dict[str, Any], out: Path) -> None:
    write_json(out / "embedder.json", results)
    table = markdown_table(
        ["engine", "query p50 ms", "p90 ms", "p99 ms", "p50 speed-up", "batch texts/s", "batch vs torch 1t"],
        [
            [
                r["engine"],
                r["p50_ms"],
                r["p90_ms"],
                r["p99_ms"],
                r["p50_speedup_vs_torch_1t"],
                r["batch_texts_per_s"],
                r["throughput_vs_torch_1t"],
            ]
            for r in results["engines"]
        ],  # fmt: skip
        digits=2,
    )
    eq = results["equivalence"]
    first_warm_up = "export included" if results.get("onnx_exported") else "export already in the cache"
    text = f"""# Embedder: torch (sentence-transformers) vs ONNX Runtime

{environment_markdown(results.get("environment"))}

Model {results["model"]}, max_seq_length {results["max_seq_length"]}. Machine: {results["machine"]}.
Single-query latency over {results["queries_per_engine"]} short queries per engine (tokenization included),
engines interleaved in rounds. Batch throughput: {results["documents"]} handbook passages
(mean {results["document_tokens_mean"]} tokens), batch size {results["batch_size"]}, best of two rounds.

{table}

Equivalence on {eq["texts"]} texts: min cosine {eq["min_cosine"]:.7f},
max |difference| {eq["max_abs_diff"]:.2e}.
First ONNX warm-up ({first_warm_up}): {results["onnx_export_and_load_s"]} s;
a later warm-up from the cache: {results["onnx_cached_load_s"]} s (that path imports no torch).
"""
    (out / "embedder.md").write_text(text, encoding="utf-8")
    _plot(results, out / "embedder.png")


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["engines"]
    names = [r["engine"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(names))
    left.bar(x - 0.2, [r["p50_ms"] for r in rows], 0.4, label="p50")
    left.bar(x + 0.2, [r["p99_ms"] for r in rows], 0.4, label="p99")
    left.set_xticks(x, names, rotation=20)
    left.set_ylabel("ms per query")
    left.set_title("single-query latency")
    left.legend()
    right.bar(x, [r["batch_texts_per_s"] for r in rows])
    right.set_xticks(x, names, rotation=20)
    right.set_ylabel("texts / s")
    right.set_title("batch throughput")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
