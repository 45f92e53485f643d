"""Retrieval benchmark: stage latency by index size, ingest throughput, index memory, update lag.

    HF_HUB_OFFLINE=1 python -m benchmarks.components.retrieval [--sizes 10000 100000 1000000] [--queries 200]
        [--kinds flat hnsw ivf ivf_sq8] [--corpus corpus/handbook]
        [--realism ../shared/datasets/sourcegraph_handbook/content]
        [--real-recall ../shared/datasets/beir_scifact]

Latency at 10k / 100k / 1M chunks uses synthetic unit vectors (384-d, noisy copies of 1,000 centres) and
synthetic BM25 text (Zipf-distributed pseudo-words), the FAISS index kinds side by side. Recall@10 of each
approximate index against exact search is reported on those vectors and, with --real-recall, on real
MiniLM embeddings (the sentences of a BEIR corpus, searched by its queries): isotropic synthetic noise is
a much harder case for ANN indexes than real embeddings, so the real figure is the one to trust. Query
embedding is measured with the real MiniLM on real questions (it does not depend on the index size) and
added per query. Ingest throughput and the update lag (edit one file -> ingest -> reload -> the
new fact is retrieved) run on the default corpus with the real embedder. Writes JSON + Markdown + a plot to
benchmarks/results/ and prints the JSON as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks.harness.environment import environment, environment_markdown  # noqa: E402
from benchmarks.harness.stats import percentile  # noqa: E402
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
KINDS = ("flat", "hnsw", "ivf", "ivf_sq8")
LATENCY_GOALS_MS = {100_000: 20.0, 1_000_000: 30.0}
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
# Questions about the Sourcegraph handbook (../shared/datasets/sourcegraph_handbook, not in this repo),
# written for this benchmark, each with the file that answers it (relative to content/).
REALISM_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("How many days of paid time off are we encouraged to take each year?", "time-off/index.md"),
    ("How many weeks of paid parental leave does a new parent get?", "parental-leave.md"),
    ("How do I get reimbursed for something I bought for work?", "pay-expenses/expenses/index.md"),
    ("What does the on-call engineer do when an alert fires at night?", "infrastructure/on-call.md"),
    ("How do I write and share an RFC?", "communication/rfcs/index.md"),
    ("What mental health support does the company offer?", "mental-health/"),
    ("What are the rules for using company laptops and systems?", "acceptable-use-policy.md"),
    ("How are compensation changes approved?", "compensation-change-approvals.md"),
    ("What are Sourcegraph's company values?", "values/index.md"),
    ("How do I book travel for a team offsite?", "travel/"),
)


def percentile_ms(values: list[float], q: float) -> float:
    """The harness percentile, rounded to the microsecond for the report."""
    return round(percentile(values, q), 3)


@dataclass(frozen=True)
class SyntheticCorpus:
    """Vectors, chunk texts and their BM25 index, built once per size and shared by every index kind."""

    vectors: npt.NDArray[np.float32]
    chunks: list[Chunk]
    sparse: Bm25Index
    sparse_build_s: float


def synthetic_corpus(size: int, rng: np.random.Generator) -> SyntheticCorpus:
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
    sparse = Bm25Index.build(texts)
    return SyntheticCorpus(vectors, chunks, sparse, time.perf_counter() - started)


@contextmanager
def faiss_threads(count: int) -> Iterator[None]:
    """FAISS's OpenMP threads for a block (builds use every core; queries run at the service's count)."""
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def synthetic_snapshot(
    corpus: SyntheticCorpus,
    kind: str,
    *,
    hnsw_m: int,
    hnsw_ef_construction: int,
    nprobe: int,
    build_threads: int = 1,
) -> tuple[IndexSnapshot, float]:
    size = len(corpus.chunks)
    started = time.perf_counter()
    store = FaissVectorStore.create(
        DIMENSIONS,
        expected_count=size,
        exact_search_max=size if kind == "flat" else 0,
        ann="hnsw" if kind == "flat" else kind,  # type: ignore[arg-type]
        hnsw_m=hnsw_m,
        hnsw_ef_construction=hnsw_ef_construction,
        ivf_nprobe=nprobe,
    )
    with faiss_threads(build_threads):
        store.add(corpus.vectors)
    vector_build_s = time.perf_counter() - started
    snapshot = IndexSnapshot(
        version=f"synthetic-{size}-{kind}",
        manifest={},
        chunks=corpus.chunks,
        embeddings=corpus.vectors,
        vectors=store,
        sparse=corpus.sparse,
        directory=Path("."),
    )
    return snapshot, vector_build_s


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
    corpus: SyntheticCorpus,
    kind: str,
    queries: int,
    embed_ms: list[float],
    rng: np.random.Generator,
    *,
    hnsw_m: int,
    hnsw_ef_construction: int,
    nprobe: int,
    build_threads: int = 1,
) -> dict[str, Any]:
    snapshot, vector_build_s = synthetic_snapshot(
        corpus,
        kind,
        hnsw_m=hnsw_m,
        hnsw_ef_construction=hnsw_ef_construction,
        nprobe=nprobe,
        build_threads=build_threads,
    )
    vectors, size = corpus.vectors, len(corpus.chunks)
    params = RetrievalParams.from_settings(RagSettings())
    picks = rng.integers(0, size, queries)
    stage_ms: list[float] = []
    totals: list[float] = []
    dense_ms: list[float] = []
    sparse_ms: list[float] = []
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
        if number < 50:
            # The stages alone, on a sample: where the time of the whole goes.
            started = time.perf_counter()
            approx = [r for r, _ in snapshot.vectors.search(query_vector, params.dense_k)][:10]
            dense_ms.append((time.perf_counter() - started) * 1000.0)
            started = time.perf_counter()
            snapshot.sparse.search(query_text, params.sparse_k)
            sparse_ms.append((time.perf_counter() - started) * 1000.0)
            if kind != "flat":
                exact = np.argpartition(-(vectors @ query_vector), 10)[:10]
                recall_hits += len(set(exact.tolist()) & set(approx))
    sizes = bytes_on_disk(snapshot)
    result: dict[str, Any] = {
        "size": size,
        "kind": kind,
        "queries": queries,
        "search_fuse_select_p50_ms": percentile_ms(stage_ms, 50),
        "search_fuse_select_p99_ms": percentile_ms(stage_ms, 99),
        "total_p50_ms": percentile_ms(totals, 50),
        "total_p99_ms": percentile_ms(totals, 99),
        "dense_search_p50_ms": percentile_ms(dense_ms, 50),
        "bm25_search_p50_ms": percentile_ms(sparse_ms, 50),
        "vector_build_s": round(vector_build_s, 2),
        "bm25_build_s": round(corpus.sparse_build_s, 2),
    }
    if kind != "flat":
        result["recall@10_vs_exact"] = round(recall_hits / (10 * min(50, queries)), 4)
    if kind == "hnsw":
        result["hnsw_m"], result["hnsw_ef_construction"] = hnsw_m, hnsw_ef_construction
    if kind.startswith("ivf"):
        result["ivf_nprobe"] = nprobe
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
        for question, gold in REALISM_QUESTIONS:
            outcome = service.retrieve(question, top_k=5)
            sources = [c.chunk.source for c in outcome.chunks]
            rank = next((i + 1 for i, source in enumerate(sources) if gold in source), None)
            answers.append(
                {
                    "question": question,
                    "gold": gold,
                    "rank": rank,
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
    ranks = [a["rank"] for a in answers]
    return {
        "files": report.files,
        "chunks": report.chunks,
        "ingest_s": round(report.seconds, 1),
        "ingest_chunks_per_s": round(report.chunks / report.seconds, 1),
        "skipped_files": len(report.skipped_files),
        "hit@1": sum(r == 1 for r in ranks) / len(ranks),
        "hit@5": sum(r is not None for r in ranks) / len(ranks),
        "questions": answers,
    }


def beir_sentences(beir: Path, limit: int) -> tuple[list[str], list[str]]:
    """Up to `limit` sentences of a BEIR corpus (title, then each sentence of the text), and its queries."""
    sentences: list[str] = []
    with (beir / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            parts = [record.get("title", ""), *re.split(r"(?<=[.!?])\s+", record.get("text", ""))]
            sentences.extend(part for part in parts if len(part.split()) >= 4)
            if len(sentences) >= limit:
                break
    with (beir / "queries.jsonl").open(encoding="utf-8") as handle:
        queries = [json.loads(line)["text"] for line in handle]
    return sentences[:limit], queries


def bench_real_recall(
    beir: Path,
    embedder: SentenceTransformerEmbedder,
    *,
    limit: int,
    kinds: list[str],
    nprobe: int,
    build_threads: int,
) -> dict[str, Any]:
    """Recall@10 against exact search, and dense search latency, of each ANN kind on real embeddings."""
    sentences, queries = beir_sentences(beir, limit)
    started = time.perf_counter()
    vectors = np.asarray(embedder.embed_documents(sentences), dtype=np.float32)
    embed_s = time.perf_counter() - started
    query_vectors = np.asarray(embedder.embed_documents(queries[:300]), dtype=np.float32)
    exact = [set(np.argpartition(-(vectors @ q), 10)[:10].tolist()) for q in query_vectors]
    rows: list[dict[str, Any]] = []
    for kind in [k for k in kinds if k != "flat"]:
        started = time.perf_counter()
        store = FaissVectorStore.create(
            DIMENSIONS,
            expected_count=len(vectors),
            exact_search_max=0,
            ann=kind,  # type: ignore[arg-type]
            ivf_nprobe=nprobe,
        )
        with faiss_threads(build_threads):
            store.add(vectors)
        build_s = time.perf_counter() - started
        hits, timings = 0, []
        for query, truth in zip(query_vectors, exact, strict=True):
            started = time.perf_counter()
            found = store.search(query, 10)
            timings.append((time.perf_counter() - started) * 1000.0)
            hits += len(truth & {r for r, _ in found})
        rows.append(
            {
                "kind": kind,
                "recall@10_vs_exact": round(hits / (10 * len(exact)), 4),
                "search_p50_ms": percentile_ms(timings, 50),
                "build_s": round(build_s, 2),
            }
        )
    return {
        "data": f"{beir.name}: {len(sentences):,} sentences, {len(query_vectors)} queries",
        "vectors": len(sentences),
        "embed_s": round(embed_s, 1),
        "rows": rows,
    }


def write_report(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "retrieval.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    rows = results["latency"]
    figure, axis = plt.subplots(figsize=(7, 4))
    for kind in KINDS:
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
        environment_markdown(results.get("environment")),
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
        "| chunks | index | total p50 ms | total p99 ms | search+fuse+select p50 | p99 | dense p50 "
        "| BM25 p50 | recall@10 vs exact | vector build s | BM25 build s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']:,} | {r['kind']} | {r['total_p50_ms']} | {r['total_p99_ms']} | "
            f"{r['search_fuse_select_p50_ms']} | {r['search_fuse_select_p99_ms']} | "
            f"{r.get('dense_search_p50_ms', '-')} | {r.get('bm25_search_p50_ms', '-')} | "
            f"{r.get('recall@10_vs_exact', 1.0 if r['kind'] == 'flat' else '-')} | "
            f"{r['vector_build_s']} | {r['bm25_build_s']} |"
        )
    by_key = {(r["size"], r["kind"]): r for r in rows}
    ratios = [
        f"- {size:,}: {kind} / flat total p50 = "
        f"{by_key[(size, kind)]['total_p50_ms'] / by_key[(size, 'flat')]['total_p50_ms']:.2f}x"
        for size in sorted({r["size"] for r in rows})
        for kind in KINDS[1:]
        if (size, "flat") in by_key and (size, kind) in by_key
    ]
    goals = [
        f"- {size:,} chunks, {r['kind']}: total p50 {r['total_p50_ms']} ms vs goal {goal} ms: "
        f"{'met' if r['total_p50_ms'] <= goal else 'MISSED'}"
        for size, goal in LATENCY_GOALS_MS.items()
        for r in rows
        if r["size"] == size
    ]
    lines += ["", "Side by side (same run):", *ratios, "", "Goals (p50, 2 cores):", *goals, ""]
    if results.get("skipped"):
        lines += ["Not run: " + "; ".join(results["skipped"]) + ".", ""]
    lines += ["![latency](retrieval_latency.png)", ""]
    memory = [r for r in rows if "bytes_per_million" in r]
    if memory:
        lines += [
            "## Index size per million chunks (serialized = resident; each version also keeps "
            "embeddings.npy, 1.43 GiB per million, memory-mapped)",
            "",
        ]
        for r in memory:
            per = r["bytes_per_million"]
            lines.append(
                f"- {r['kind']} (measured at {r['size']:,}): index {per['vectors'] / 2**30:.2f} GiB, "
                f"BM25 {per['bm25'] / 2**30:.2f} GiB (synthetic 24-token chunks; real chunks have more terms)"
            )
        lines.append("")
    if "real_recall" in results:
        real = results["real_recall"]
        lines += [
            f"## ANN recall on real MiniLM embeddings ({real['data']})",
            "",
            "| index | recall@10 vs exact | dense search p50 ms | build s |",
            "|---|---|---|---|",
            *[
                f"| {r['kind']} | {r['recall@10_vs_exact']} | {r['search_p50_ms']} | {r['build_s']} |"
                for r in real["rows"]
            ],
            "",
        ]
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
            f"{r['files']} files ({r['skipped_files']} skipped) -> {r['chunks']} chunks in {r['ingest_s']} s "
            f"({r['ingest_chunks_per_s']} chunks/s, real embedder). Questions written for this benchmark, "
            f"each with the file that answers it: hit@1 {r['hit@1']:.2f}, hit@5 {r['hit@5']:.2f}.",
            "",
            "| question | gold file | rank | top sources (cosine) |",
            "|---|---|---|---|",
        ]
        for answer in r["questions"]:
            tops = "; ".join(f"{t['source']} ({t['cosine']})" for t in answer["top_sources"])
            lines.append(f"| {answer['question']} | {answer['gold']} | {answer['rank'] or '-'} | {tops} |")
        lines.append("")
    (out / "retrieval.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--ivf-nprobe", type=int, default=RagSettings().faiss.ivf_nprobe)
    parser.add_argument(
        "--hnsw-max-size",
        type=int,
        default=200_000,
        help="skip HNSW above this many chunks (its build time grows fastest with size; see the report)",
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--hnsw-ef-construction", type=int, default=80)
    parser.add_argument("--corpus", type=Path, default=Path("corpus/handbook"))
    parser.add_argument(
        "--realism", type=Path, default=None, help="e.g. ../shared/datasets/sourcegraph_handbook/content"
    )
    parser.add_argument(
        "--real-recall", type=Path, default=None, help="a BEIR folder, e.g. ../shared/datasets/beir_scifact"
    )
    parser.add_argument("--real-recall-limit", type=int, default=40_000, help="sentences to embed")
    parser.add_argument("--threads", type=int, default=1, help="torch and FAISS threads at query time")
    parser.add_argument(
        "--ingest-threads", type=int, default=os.cpu_count() or 1, help="torch threads to embed"
    )
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
    # Ingestion is offline work that may use every core; query-time latency is measured at --threads.
    ingest_embedder = SentenceTransformerEmbedder(threads=args.ingest_threads)
    ingest_embedder.warm_up()
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
        "environment": environment(),
        "machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, "
        f"{args.threads} thread(s) per query, builds and ingestion on {args.ingest_threads}",
        "query_engine": args.query_engine,
        "query_embed_p50_ms": percentile_ms(embed_ms, 50),
        "query_embed_p99_ms": percentile_ms(embed_ms, 99),
        "query_embed_by_engine": {
            engine: {"p50_ms": percentile_ms(ms, 50), "p99_ms": percentile_ms(ms, 99)}
            for engine, ms in measured.items()
        },
        "latency": [],
        "skipped": [],
    }
    rng = np.random.default_rng(7)
    for size in args.sizes:
        corpus = synthetic_corpus(size, rng)
        for kind in args.kinds:
            if kind == "hnsw" and size > args.hnsw_max_size:
                results["skipped"].append(
                    f"hnsw at {size:,} chunks (over --hnsw-max-size {args.hnsw_max_size:,})"
                )
                continue
            row = bench_size(
                corpus,
                kind,
                args.queries,
                embed_ms,
                rng,
                hnsw_m=args.hnsw_m,
                hnsw_ef_construction=args.hnsw_ef_construction,
                nprobe=args.ivf_nprobe,
                build_threads=args.ingest_threads,
            )
            results["latency"].append(row)
            print(json.dumps(row), flush=True)
        del corpus
    if args.corpus.is_dir() and any(args.corpus.rglob("*.md")):
        results["default_corpus"] = bench_default_corpus(args.corpus, ingest_embedder)
        print(json.dumps(results["default_corpus"]), flush=True)
    if args.realism is not None:
        results["realism"] = bench_realism(args.realism, ingest_embedder)
    if args.real_recall is not None:
        results["real_recall"] = bench_real_recall(
            args.real_recall,
            ingest_embedder,
            limit=args.real_recall_limit,
            kinds=args.kinds,
            nprobe=args.ivf_nprobe,
            build_threads=args.ingest_threads,
        )
        print(json.dumps(results["real_recall"]), flush=True)
    write_report(results, args.out)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
