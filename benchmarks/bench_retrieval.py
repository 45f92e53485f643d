"""Retrieval benchmark: stage latency by index size, ingest throughput, index memory, update lag.

    HF_HUB_OFFLINE=1 python -m benchmarks.bench_retrieval [--sizes 10000 100000 1000000] [--queries 200]
        [--corpus corpus/handbook] [--realism ../shared/datasets/sourcegraph_handbook/content]

Latency at 10k / 100k / 1M chunks uses synthetic unit vectors (384-d, clustered like real embeddings: noisy
copies of 1,000 centres) and synthetic BM25 text (Zipf-distributed pseudo-words), flat and HNSW side by
side. Query embedding is measured with the real MiniLM on real questions (it does not depend on the index
size) and added per query. Ingest throughput and the update lag (edit one file -> ingest -> reload -> the
new fact is retrieved) run on the default corpus with the real embedder. Writes JSON + Markdown + a plot to
benchmarks/results/ and prints the JSON as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from services.core.protocols import Embedder  # noqa: E402
from services.core.settings import RagSettings  # noqa: E402
from services.core.types import Chunk  # noqa: E402
from services.rag.context import select_context_within_budget  # noqa: E402
from services.rag.embedder import SentenceTransformerEmbedder  # noqa: E402
from services.rag.faiss_store import FaissVectorStore  # noqa: E402
from services.rag.index_store import IndexSnapshot  # noqa: E402
from services.rag.ingest import ingest  # noqa: E402
from services.rag.onnx_embedder import OnnxEmbedder  # noqa: E402
from services.rag.retriever import RetrievalParams, rank_chunks  # noqa: E402
from services.rag.service import RetrievalService  # noqa: E402
from services.rag.sparse import Bm25Index  # noqa: E402

DIMENSIONS = 384
QUESTIONS = [
    "How many vacation days do I get per year?",
    "How long do I have to submit travel receipts?",
    "Where do I store my passwords?",
    "What happens in my first week?",
    "Who approves my expenses?",
    "Can I work remotely from another country?",
    "How do I report a security incident?",
    "What is the parental leave policy?",
]
REALISM_QUESTIONS = [
    "How many days of paid time off do Sourcegraph teammates get?",
    "How do I expense a new laptop or home office equipment?",
    "What is the process for reporting a security incident?",
    "How does the engineering on-call rotation work?",
    "What are the company values?",
]


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


def synthetic_snapshot(
    size: int, kind: str, rng: np.random.Generator, *, hnsw_m: int, hnsw_ef_construction: int
) -> tuple[IndexSnapshot, npt.NDArray[np.float32], float, float]:
    centres = rng.standard_normal((1000, DIMENSIONS)).astype(np.float32)
    vectors = centres[rng.integers(0, 1000, size)] + 0.6 * rng.standard_normal((size, DIMENSIONS)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ranks = np.minimum(rng.zipf(1.3, (size, 24)), 20_000)
    texts = [" ".join(f"w{r}" for r in row) for row in ranks]
    chunks = [
        Chunk(chunk_id=str(i), source=f"doc{i // 4}.md", text=t, token_count=32) for i, t in enumerate(texts)
    ]
    started = time.perf_counter()
    store = FaissVectorStore.create(
        DIMENSIONS,
        expected_count=size,
        exact_search_max=size if kind == "flat" else 0,
        hnsw_m=hnsw_m,
        hnsw_ef_construction=hnsw_ef_construction,
    )
    store.add(vectors)
    vector_build_s = time.perf_counter() - started
    started = time.perf_counter()
    sparse = Bm25Index.build(texts)
    sparse_build_s = time.perf_counter() - started
    snapshot = IndexSnapshot(
        version=f"synthetic-{size}-{kind}",
        manifest={},
        chunks=chunks,
        embeddings=vectors,
        vectors=store,
        sparse=sparse,
        directory=Path("."),
    )
    return snapshot, vectors, vector_build_s, sparse_build_s


def bytes_on_disk(snapshot: IndexSnapshot) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        vector_files = snapshot.vectors.save(directory)
        sparse_files = snapshot.sparse.save(directory)
        return {
            "vectors": sum(p.stat().st_size for p in vector_files),
            "bm25": sum(p.stat().st_size for p in sparse_files),
        }


def bench_size(
    size: int,
    kind: str,
    queries: int,
    embed_ms: list[float],
    rng: np.random.Generator,
    *,
    hnsw_m: int,
    hnsw_ef_construction: int,
) -> dict[str, Any]:
    snapshot, vectors, vector_build_s, sparse_build_s = synthetic_snapshot(
        size, kind, rng, hnsw_m=hnsw_m, hnsw_ef_construction=hnsw_ef_construction
    )
    params = RetrievalParams.from_settings(RagSettings())
    picks = rng.integers(0, size, queries)
    stage_ms: list[float] = []
    totals: list[float] = []
    recall_hits = 0
    for number, row in enumerate(picks):
        query_vector = vectors[row] + 0.3 * rng.standard_normal(DIMENSIONS).astype(np.float32)
        query_vector /= np.linalg.norm(query_vector)
        query_text = " ".join(snapshot.chunks[row].text.split()[:4])
        started = time.perf_counter()
        ranked = rank_chunks(snapshot, query_text, query_vector, params)
        select_context_within_budget(ranked.chunks, 900)
        elapsed = (time.perf_counter() - started) * 1000.0
        stage_ms.append(elapsed)
        totals.append(elapsed + embed_ms[number % len(embed_ms)])
        if kind == "hnsw" and number < 50:
            exact = np.argsort(-(vectors @ query_vector))[:10]
            approx = [r for r, _ in snapshot.vectors.search(query_vector, 10)]
            recall_hits += len(set(exact.tolist()) & set(approx))
    sizes = bytes_on_disk(snapshot) if size <= 200_000 else {}
    result: dict[str, Any] = {
        "size": size,
        "kind": kind,
        "queries": queries,
        "search_fuse_select_p50_ms": percentile(stage_ms, 50),
        "search_fuse_select_p99_ms": percentile(stage_ms, 99),
        "total_p50_ms": percentile(totals, 50),
        "total_p99_ms": percentile(totals, 99),
        "vector_build_s": round(vector_build_s, 2),
        "bm25_build_s": round(sparse_build_s, 2),
    }
    if kind == "hnsw":
        result["hnsw_recall@10_vs_exact"] = round(recall_hits / (10 * min(50, queries)), 4)
        result["hnsw_m"], result["hnsw_ef_construction"] = hnsw_m, hnsw_ef_construction
    if sizes:
        result["bytes_per_million"] = {k: int(v * 1_000_000 / size) for k, v in sizes.items()}
    return result


def measure_query_embedding(embedder: Embedder, repeats: int) -> list[float]:
    timings = []
    for number in range(repeats):
        started = time.perf_counter()
        embedder.embed_query(QUESTIONS[number % len(QUESTIONS)])
        timings.append((time.perf_counter() - started) * 1000.0)
    return timings


def bench_default_corpus(corpus: Path, embedder: SentenceTransformerEmbedder) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / corpus.name
        shutil.copytree(corpus, root)
        settings = RagSettings(index_dir=Path(folder) / "index")
        first = ingest([root], settings, embedder=embedder, progress=False)
        service = RetrievalService(settings, embedder=embedder)
        service.warm_up()
        target = sorted(root.rglob("*.md"))[0]
        fact = "The office parrot of Larkspur Analytics is called Zephyrine and speaks Portuguese."
        started = time.perf_counter()
        with target.open("a", encoding="utf-8") as handle:
            handle.write(f"\n\n## Office parrot\n\n{fact}\n")
        second = ingest([root], settings, embedder=embedder, progress=False)
        reloaded = service.reload_if_changed()
        outcome = service.retrieve("What is the name of the office parrot?")
        lag_s = time.perf_counter() - started
        found = any("Zephyrine" in c.chunk.text for c in outcome.chunks)
    return {
        "files": first.files,
        "chunks": first.chunks,
        "ingest_s": round(first.seconds, 2),
        "ingest_chunks_per_s": round(first.chunks / first.seconds, 1),
        "update_lag_s": round(lag_s, 3),
        "update_reingest_s": round(second.seconds, 3),
        "update_embedded_chunks": second.embedded,
        "update_reloaded": reloaded,
        "update_fact_retrieved_top5": found,
    }


def bench_realism(content: Path, embedder: SentenceTransformerEmbedder) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        settings = RagSettings(index_dir=Path(folder) / "index")
        report = ingest([content], settings, embedder=embedder, progress=False)
        service = RetrievalService(settings, embedder=embedder)
        service.warm_up()
        answers = []
        for question in REALISM_QUESTIONS:
            outcome = service.retrieve(question)
            answers.append(
                {
                    "question": question,
                    "relevant": outcome.relevant,
                    "top_sources": [
                        {
                            "source": c.chunk.source,
                            "heading": " > ".join(c.chunk.heading_path),
                            "cosine": round(c.score, 3),
                        }
                        for c in outcome.chunks[:3]
                    ],
                }
            )
    return {
        "files": report.files,
        "chunks": report.chunks,
        "ingest_s": round(report.seconds, 1),
        "questions": answers,
    }


def write_report(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "retrieval.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    rows = results["latency"]
    figure, axis = plt.subplots(figsize=(7, 4))
    for kind in ("flat", "hnsw"):
        points = [(r["size"], r["total_p50_ms"]) for r in rows if r["kind"] == kind]
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", label=f"{kind} p50")
        points = [(r["size"], r["total_p99_ms"]) for r in rows if r["kind"] == kind]
        if points:
            axis.plot(*zip(*points, strict=True), marker="x", linestyle="--", label=f"{kind} p99")
    axis.set_xscale("log")
    axis.set_xlabel("chunks in the index")
    axis.set_ylabel("retrieval latency, ms (embed + search + fuse + select)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "retrieval_latency.png")
    plt.close(figure)

    lines = [
        "# Retrieval benchmark",
        "",
        f"Machine: {results['machine']}. Query embedding (real MiniLM, 1 query, "
        f"{results.get('query_engine', 'torch')} engine, used in the totals): "
        f"p50 {results['query_embed_p50_ms']} ms,"
        f" p99 {results['query_embed_p99_ms']} ms.",
        "",
        *[
            f"- query embedding, {engine}: p50 {ms['p50_ms']} ms, p99 {ms['p99_ms']:.3f} ms"
            for engine, ms in results.get("query_embed_by_engine", {}).items()
        ],
        "",
        "| chunks | index | total p50 ms | total p99 ms | search+fuse+select p50 | p99 | HNSW recall@10 "
        "| vector build s | BM25 build s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']:,} | {r['kind']} | {r['total_p50_ms']} | {r['total_p99_ms']} | "
            f"{r['search_fuse_select_p50_ms']} | {r['search_fuse_select_p99_ms']} | "
            f"{r.get('hnsw_recall@10_vs_exact', '-')} | {r['vector_build_s']} | {r['bm25_build_s']} |"
        )
    by_key = {(r["size"], r["kind"]): r for r in rows}
    ratios = [
        f"- {size:,}: flat / HNSW total p50 = "
        f"{by_key[(size, 'flat')]['total_p50_ms'] / by_key[(size, 'hnsw')]['total_p50_ms']:.2f}x"
        for size in sorted({r["size"] for r in rows})
        if (size, "flat") in by_key and (size, "hnsw") in by_key
    ]
    lines += ["", "Side by side:", *ratios, "", "![latency](retrieval_latency.png)", ""]
    memory = [r for r in rows if "bytes_per_million" in r]
    if memory:
        lines += ["## Index size per million chunks (serialized = resident)", ""]
        for r in memory:
            per = r["bytes_per_million"]
            lines.append(
                f"- {r['kind']} (measured at {r['size']:,}): vectors {per['vectors'] / 2**30:.2f} GiB, "
                f"BM25 {per['bm25'] / 2**30:.2f} GiB (synthetic 24-token chunks; real chunks have more terms)"
            )
        lines.append("")
    if "default_corpus" in results:
        d = results["default_corpus"]
        lines += [
            "## Default corpus (real embedder)",
            "",
            f"- {d['files']} files -> {d['chunks']} chunks, ingested in {d['ingest_s']} s "
            f"= {d['ingest_chunks_per_s']} chunks/s",
            "- update lag (append a fact to one file -> ingest -> reload -> retrieved): "
            f"{d['update_lag_s']} s "
            f"(re-ingest {d['update_reingest_s']} s, {d['update_embedded_chunks']} chunks embedded; "
            f"fact in top 5: {d['update_fact_retrieved_top5']})",
            "",
        ]
    if "realism" in results:
        r = results["realism"]
        lines += [
            "## Realism check: Sourcegraph handbook",
            "",
            f"{r['files']} files -> {r['chunks']} chunks in {r['ingest_s']} s.",
            "",
        ]
        for answer in r["questions"]:
            tops = "; ".join(f"{t['source']} ({t['cosine']})" for t in answer["top_sources"])
            lines.append(f"- {answer['question']} -> {tops}")
        lines.append("")
    (out / "retrieval.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw"], choices=["flat", "hnsw"])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--hnsw-ef-construction", type=int, default=80)
    parser.add_argument("--corpus", type=Path, default=Path("corpus/handbook"))
    parser.add_argument(
        "--realism", type=Path, default=None, help="e.g. ../shared/datasets/sourcegraph_handbook/content"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and FAISS threads")
    parser.add_argument(
        "--query-engine",
        choices=["onnx", "torch"],
        default="onnx",
        help="query embedder timed into the totals (the service's default is onnx); ingestion uses torch",
    )
    parser.add_argument("--embedder-cache", type=Path, default=None, help="ONNX export cache (default: temp)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    import faiss

    faiss.omp_set_num_threads(args.threads)
    embedder = SentenceTransformerEmbedder(threads=args.threads)
    embedder.warm_up()
    onnx_embedder = OnnxEmbedder(
        cache_dir=args.embedder_cache or Path(tempfile.mkdtemp(prefix="embedder-cache-")), threads=1
    )
    onnx_embedder.warm_up()
    # Interleaved, so load from other processes falls on both engines alike.
    measured: dict[str, list[float]] = {"torch": [], "onnx": []}
    for candidate in (embedder, onnx_embedder):
        measure_query_embedding(candidate, 5)
    for _ in range(4):
        for engine, candidate in (("torch", embedder), ("onnx", onnx_embedder)):
            measured[engine].extend(measure_query_embedding(candidate, 25))
    embed_ms = measured[args.query_engine]
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, "
        f"{args.threads} thread(s)",
        "query_engine": args.query_engine,
        "query_embed_p50_ms": round(statistics.median(embed_ms), 3),
        "query_embed_p99_ms": percentile(embed_ms, 99),
        "query_embed_by_engine": {
            engine: {"p50_ms": round(statistics.median(ms), 3), "p99_ms": percentile(ms, 99)}
            for engine, ms in measured.items()
        },
        "latency": [],
    }
    rng = np.random.default_rng(7)
    for size in args.sizes:
        for kind in args.kinds:
            row = bench_size(
                size,
                kind,
                args.queries,
                embed_ms,
                rng,
                hnsw_m=args.hnsw_m,
                hnsw_ef_construction=args.hnsw_ef_construction,
            )
            results["latency"].append(row)
            print(json.dumps(row), flush=True)
    if args.corpus.is_dir() and any(args.corpus.rglob("*.md")):
        results["default_corpus"] = bench_default_corpus(args.corpus, embedder)
        print(json.dumps(results["default_corpus"]), flush=True)
    if args.realism is not None:
        results["realism"] = bench_realism(args.realism, embedder)
    write_report(results, args.out)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
