"""Ingestion embedding throughput: the torch embedder as ingestion called it before vs ONNX Runtime
configurations (threads, batch size, length-sorted batches, int8), on texts of a real index; optionally
one full timed ingest with the new default.

Usage: hybridllm bench ingest [--index var/index-sourcegraph] [--chunk-texts 2000] [--unit-texts 2000]
       [--full-corpus ../shared/datasets/sourcegraph_handbook/content]

Texts: chunk texts and evidence-unit texts (what ingestion embeds) drawn with a fixed seed from the
index's chunks.jsonl (read only). Configurations run interleaved in rounds (each embeds one block of texts
in turn), so load from other processes falls on all of them alike. Vectors are compared with the torch
ones (cosine); int8, which does not reproduce them, is judged by retrieval instead: for each unit text,
is its own chunk among the top 5 chunk texts. Writes benchmarks/results/ingest.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.report import markdown_table, write_json
from services.core.cpus import available_cpu_count
from services.core.settings import Settings
from services.rag.chunking import embedding_text
from services.rag.embedder import SentenceTransformerEmbedder
from services.rag.evidence import units_for_embedding
from services.rag.index_store import VERSIONS_DIR, read_chunks, read_current
from services.rag.ingest import EMBED_BATCH, embed_texts, ingest
from services.rag.onnx_embedder import OnnxEmbedder
from services.rag.progress import progress_bars_or_log_lines

Vectors = npt.NDArray[np.float32]
EmbedFn = Callable[[Sequence[str]], Vectors]
RETRIEVAL_K = 5


@dataclass(frozen=True, slots=True)
class Sample:
    chunk_texts: list[str]
    unit_texts: list[str]
    unit_chunk: list[int]  # row in chunk_texts of the chunk each unit comes from


def sample_texts(index_dir: Path, chunk_count: int, unit_count: int, seed: int) -> Sample:
    """Chunk texts and unit texts of the index's current version; units come from the sampled chunks."""
    version = read_current(index_dir)
    if version is None:
        raise SystemExit(f"no current version in {index_dir}: ingest a corpus there first")
    chunks = read_chunks(index_dir / VERSIONS_DIR / version)
    rng = random.Random(seed)
    picked = rng.sample(chunks, min(chunk_count, len(chunks)))
    units, texts = units_for_embedding(picked)
    owners = [row for row, per in enumerate(units) for _ in per]
    rows = sorted(rng.sample(range(len(texts)), min(unit_count, len(texts))))
    return Sample(
        chunk_texts=[embedding_text(chunk) for chunk in picked],
        unit_texts=[texts[i] for i in rows],
        unit_chunk=[owners[i] for i in rows],
    )


def in_input_order(embedder: Any, batch: int) -> EmbedFn:
    """Batches as the texts come: each call pads to the longest text of its own batch."""

    def run(texts: Sequence[str]) -> Vectors:
        parts = [embedder.embed_documents(texts[s : s + batch]) for s in range(0, len(texts), batch)]
        return np.concatenate(parts)

    return run


def length_sorted(embedder: Any) -> EmbedFn:
    """What ingestion does now (services.rag.ingest.embed_texts): longest texts first, rows unsorted."""

    def run(texts: Sequence[str]) -> Vectors:
        return embed_texts(embedder, texts, progress=False, what="texts")

    return run


def int8_onnx(fp32: OnnxEmbedder, workdir: Path, threads: int, batch: int) -> EmbedFn:
    """The fp32 export quantized dynamically (weights int8), run with the fp32 embedder's tokenizer."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from services.core.encoding import pad_encodings

    # Quantize a copy: the quantizer writes a shape-inferred file beside its input, which is a shared cache.
    source = workdir / "model.fp32.onnx"
    shutil.copyfile(fp32.export_dir / "model.onnx", source)
    target = workdir / "model.int8.onnx"
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(target), sess_options=options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    tokenizer = fp32._tokenizer  # the truncating tokenizer: what the model sees

    def run(texts: Sequence[str]) -> Vectors:
        encodings = tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
        out = np.empty((len(texts), fp32.dimensions), dtype=np.float32)
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            ids, mask, types = pad_encodings([encodings[i] for i in rows])
            feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            out[rows] = session.run(["sentence_embedding"], {k: v for k, v in feed.items() if k in names})[0]
        return out

    return run


def self_retrieval(chunk_vectors: Vectors, unit_vectors: Vectors, unit_chunk: Sequence[int]) -> float:
    """Share of unit texts whose own chunk is among the top RETRIEVAL_K chunks by cosine."""
    scores = unit_vectors @ chunk_vectors.T
    top = np.argsort(-scores, axis=1)[:, :RETRIEVAL_K]
    return float(np.mean([owner in row for owner, row in zip(unit_chunk, top, strict=True)]))


def measure(
    configs: dict[str, EmbedFn], texts: list[str], rounds: int
) -> tuple[dict[str, float], dict[str, Vectors]]:
    """Texts/s per configuration (interleaved blocks) and each configuration's vectors."""
    blocks = [texts[i::rounds] for i in range(rounds)]
    seconds = dict.fromkeys(configs, 0.0)
    parts: dict[str, list[Vectors]] = {name: [] for name in configs}
    for block in blocks:
        for name, run in configs.items():
            started = time.perf_counter()
            parts[name].append(run(block))
            seconds[name] += time.perf_counter() - started
    vectors = {}
    for name in configs:
        stacked = np.concatenate(parts[name])
        # back to `texts` order: block r holds texts r, r + rounds, ...
        order = np.concatenate([np.arange(i, len(texts), rounds) for i in range(rounds)])
        restored = np.empty_like(stacked)
        restored[order] = stacked
        vectors[name] = restored
    return {name: len(texts) / seconds[name] for name in configs}, vectors


def full_ingest(corpus: Path, settings: Settings, cache_dir: Path, engine: str) -> dict[str, Any]:
    """One ingest of `corpus` into a fresh temp index with the `engine` ingest embedder."""
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        index_dir = Path(tmp) / "index"
        # The ONNX export cache sits beside the index: link the existing one, so no export is timed.
        (Path(tmp) / "embedder-cache").symlink_to(cache_dir.resolve())
        rag = settings.rag.model_copy(update={"index_dir": index_dir, "ingest_embedder_engine": engine})
        load_before = os.getloadavg()[0]
        report = ingest([corpus], rag, progress=progress_bars_or_log_lines())
    values = {"engine": engine, **report.as_dict()}
    values["minutes"] = round(report.seconds / 60, 2)
    values["stage_minutes"] = {k: round(v / 60, 2) for k, v in report.stage_seconds.items()}
    values["load_average_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    values["corpus"] = str(corpus)
    return values


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--index", type=Path, default=Path("var/index-sourcegraph"))
    parser.add_argument("--chunk-texts", type=int, default=2000)
    parser.add_argument("--unit-texts", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--batch-sizes", default="32,64,128")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 configuration")
    parser.add_argument("--full-corpus", type=Path, default=None, help="also time one full ingest of it")
    parser.add_argument("--full-engines", default="onnx", help="ingest engines of the full ingest, in turn")
    parser.add_argument(
        "--full-only", action="store_true", help="only the full ingest, added to the existing ingest.json"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=Path("var/embedder-cache"), help="ONNX export cache"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)

    settings = Settings()
    if args.full_only:
        if args.full_corpus is None:
            raise SystemExit("--full-only needs --full-corpus")
        previous: dict[str, Any] = json.loads((args.out / "ingest.json").read_text(encoding="utf-8"))
        runs = {run["engine"]: run for run in previous.get("full_ingests", [])}
        for engine in args.full_engines.split(","):
            runs[engine] = full_ingest(args.full_corpus, settings, args.cache_dir, engine)
        previous["full_ingests"] = list(runs.values())
        write_report(previous, args.out)
        print(json.dumps(previous["full_ingests"]))
        return 0
    threads = available_cpu_count()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    sample = sample_texts(args.index, args.chunk_texts, args.unit_texts, args.seed)
    texts = sample.chunk_texts + sample.unit_texts
    load_before = os.getloadavg()

    torch_embedder = SentenceTransformerEmbedder(settings.rag.embedder)
    torch_embedder.warm_up()
    onnx = {
        b: OnnxEmbedder(settings.rag.embedder, cache_dir=args.cache_dir, threads=threads, batch_size=b)
        for b in batches
    }
    for embedder in onnx.values():
        embedder.warm_up()
    configs: dict[str, EmbedFn] = {
        # before: ingest handed EMBED_BATCH texts at a time, in input order, to sentence-transformers
        "torch (before)": in_input_order(torch_embedder, EMBED_BATCH),
    }
    for b in batches:
        configs[f"onnx fp32 {threads}t b{b} sorted"] = length_sorted(onnx[b])
        configs[f"onnx fp32 {threads}t b{b} unsorted"] = in_input_order(onnx[b], b)
    with tempfile.TemporaryDirectory(prefix="ingest-int8-") as workdir:
        if not args.no_int8:
            configs[f"onnx int8 {threads}t b64 sorted"] = int8_onnx(
                onnx[batches[0]], Path(workdir), threads, 64
            )
        for run in configs.values():  # warm-up: arenas, kernels
            run(texts[:16])
        rates, vectors = measure(configs, texts, args.rounds)

    n_chunks = len(sample.chunk_texts)
    reference = vectors["torch (before)"]
    baseline = rates["torch (before)"]
    rows = []
    for name in configs:
        cosine = np.sum(vectors[name] * reference, axis=1)
        rows.append({
            "config": name,
            "texts_per_s": round(rates[name], 1),
            "vs_before": round(rates[name] / baseline, 2),
            "min_cosine_vs_torch": round(float(np.min(cosine)), 7),
            "mean_cosine_vs_torch": round(float(np.mean(cosine)), 7),
            f"unit_to_own_chunk_at_{RETRIEVAL_K}": round(
                self_retrieval(vectors[name][:n_chunks], vectors[name][n_chunks:], sample.unit_chunk), 4
            ),
        })  # fmt: skip
    tokens = [onnx[batches[0]].count_tokens(t) for t in texts]
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores ({threads} usable by this process), shared with other agents",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "index": str(args.index),
        "model": settings.rag.embedder,
        "chunk_texts": n_chunks,
        "unit_texts": len(sample.unit_texts),
        "tokens_mean_chunks": round(float(np.mean(tokens[:n_chunks])), 1),
        "tokens_mean_units": round(float(np.mean(tokens[n_chunks:])), 1),
        "rounds": args.rounds,
        "torch_threads": _torch_threads(),
        "configs": rows,
        "environment": environment(),
    }
    if args.full_corpus is not None:
        results["full_ingests"] = [
            full_ingest(args.full_corpus, settings, args.cache_dir, engine)
            for engine in args.full_engines.split(",")
        ]
    write_report(results, args.out)
    print(json.dumps(results))
    return 0


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def write_report(results: dict[str, Any], out: Path) -> None:
    write_json(out / "ingest.json", results)
    key = f"unit_to_own_chunk_at_{RETRIEVAL_K}"
    table = markdown_table(
        ["configuration", "texts/s", "vs before", "min cosine vs torch", f"unit -> own chunk @{RETRIEVAL_K}"],
        [
            [r["config"], r["texts_per_s"], r["vs_before"], f"{r['min_cosine_vs_torch']:.7f}", r[key]]
            for r in results["configs"]
        ],  # fmt: skip
        digits=2,
    )
    text = f"""# Ingestion embedding: torch (before) vs ONNX Runtime

{environment_markdown(results.get("environment"))}

Model {results["model"]}. Machine: {results["machine"]}; load average (1/5/15 min)
{results["load_average_before"]} before, {results["load_average_after"]} after.
Texts: {results["chunk_texts"]} chunk texts (mean {results["tokens_mean_chunks"]} tokens) and
{results["unit_texts"]} evidence-unit texts (mean {results["tokens_mean_units"]} tokens) from
`{results["index"]}`, configurations interleaved in {results["rounds"]} rounds. torch used
{results["torch_threads"]} threads (its default). "sorted" = ingestion's length-sorted batching; "unsorted" =
batches in input order. The last column: share of unit texts whose own chunk is among the top
{RETRIEVAL_K} of the sampled chunk texts, each configuration searching its own vectors.

{table}
"""
    runs = results.get("full_ingests", [])
    if runs:
        stage_names = list(runs[0]["stage_minutes"])
        full_table = markdown_table(
            ["engine", "minutes", *stage_names, "load average before/after"],
            [
                [
                    r["engine"],
                    r["minutes"],
                    *(r.get("stage_minutes", {}).get(k, "") for k in stage_names),
                    "/".join(str(x) for x in r["load_average_before_after"]),
                ]
                for r in runs
            ],  # fmt: skip
            digits=2,
        )
        first = runs[0]
        text += f"""
## Full ingests, minutes per stage

`{first["corpus"]}`: {first["files"]} files, {first["chunks"]} chunks, {first["embedded_units"]} evidence
units, each run into a fresh temporary index (nothing reused), engines one after the other.

{full_table}
"""
    (out / "ingest.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
