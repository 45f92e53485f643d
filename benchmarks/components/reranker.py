"""The reranker trained here (`make reranker`) against the fused ranking alone, retrieval only (issue 18).

    python -m benchmarks.components.reranker --reranker var/reranker --sourcegraph-index var/index-sourcegraph

Rows per set: the baseline (no reranker) and the cross-encoder reordering the first 10 and 20 fused candidates
(rag.rerank.candidates). The columns are retrieval_options.md's (RetrievalService.retrieve of 10 chunks, then
evidence selection over the first rag.evidence.candidates of them: "prompt hit@5"), plus the reranker's own
time per query, the cost of turning it on. Sets: the knowledge items of corpus/eval split in two halves
(dev: the even-numbered ones, where the candidate count is chosen; test: the others) over an index of
corpus/handbook, and corpus/eval/sourcegraph_eval.jsonl over an ingested Sourcegraph handbook (held out:
reported, never chosen on). The reranker scores a fixed number of pairs per query, so its cost does not
grow with the index; the search stage's cost at 100k chunks is retrieval_options.md's.

The rule for the default, fixed before the runs: the reranker is turned on only when, at the candidate count
chosen on the dev half, it raises the dev half's prompt hit@5 and its own p95 stays within COST_LIMIT_MS;
otherwise it stays an option, off.

Two more rows per set are reported only: the cross-encoder's order blended with the fused order by
reciprocal rank fusion (BlendedReranker, defined here). The service has no such blend, so they cannot be
chosen; they show whether the reranker's signal helps when it does not replace the fused ranking.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.components.retrieval_options import (
    HANDBOOK_EVAL,
    RETRIEVED,
    SOURCEGRAPH_EVAL,
    build_handbook_index,
    evaluate,
    knowledge_items,
    summarise,
)
from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.paths import REPO_ROOT, repo_path
from benchmarks.harness.report import markdown_table, write_json
from benchmarks.harness.stats import percentile
from services.core.onnx_export import ONNX_INPUTS
from services.core.protocols import Embedder
from services.core.settings import RagSettings
from services.core.types import RetrievalOutcome
from services.evaluation.scoring import EvalItem
from services.rag.chunking import embedding_text
from services.rag.embedder import build_query_embedder
from services.rag.fusion import reciprocal_rank_fusion
from services.rag.rerank import Candidates, CrossEncoderReranker, NoReranker, Reranker
from services.rag.service import RetrievalService

CANDIDATE_COUNTS = (10, 20)
# The most the reranker may add at p95 to be turned on by default: a tenth of the 1.5 s rag p50 goal.
COST_LIMIT_MS = 150.0
BASELINE = "baseline"


class TimedRetrieval(RetrievalService):
    """RetrievalService that keeps each query's rerank time (the stage the reranker adds)."""

    def __init__(self, settings: RagSettings, embedder: Embedder, reranker: Reranker) -> None:
        super().__init__(settings, embedder, reranker=reranker)
        self.rerank_ms: list[float] = []

    def retrieve(self, query: str, *, top_k: int | None = None) -> RetrievalOutcome:
        outcome = super().retrieve(query, top_k=top_k)
        self.rerank_ms.append(outcome.timings_ms["rerank"])
        return outcome


class BlendedReranker:
    """The cross-encoder's order and the fused order (the candidates' own), by reciprocal rank fusion."""

    def __init__(self, inner: Reranker, rrf_k: int = 60) -> None:
        self._inner = inner
        self._rrf_k = rrf_k

    @property
    def name(self) -> str:
        return f"blended {self._inner.name}"

    def warm_up(self) -> None:
        self._inner.warm_up()

    def rerank(self, candidates: Candidates, top_k: int) -> list[int]:
        scored = self._inner.rerank(candidates, len(candidates.texts))
        fused_order = [(position, 0.0) for position in range(len(candidates.texts))]
        scored_order = [(position, 0.0) for position in scored]
        blended = reciprocal_rank_fusion([fused_order, scored_order], rrf_k=self._rrf_k)
        return [position for position, _ in blended[:top_k]]


def onnx_cost(folder: Path, queries: Sequence[tuple[str, list[str]]], threads: int = 2) -> dict[str, Any]:
    """What serving the same model through ONNX Runtime would cost (measured only; the service runs torch):
    tokenise + score each query's candidates, p50/p95 ms per query at 10 and 20 candidates, and the largest
    difference from the torch logits."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from services.router.export import export_onnx

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    max_length = int(json_file(folder / "sentence_bert_config.json").get("max_seq_length", 192))
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "reranker.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    results: dict[str, Any] = {"max_length": max_length, "threads": threads}
    largest_diff = 0.0
    for count in CANDIDATE_COUNTS:
        timings = []
        for query, texts in queries:
            started = time.perf_counter()
            features = tokenizer(
                [query] * len(texts[:count]), texts[:count], padding=True, truncation="longest_first",
                max_length=max_length, return_tensors="np",
            )  # fmt: skip
            logits = session.run(None, {k: features[k].astype("int64") for k in ONNX_INPUTS})[0]
            timings.append((time.perf_counter() - started) * 1000.0)
        with torch.no_grad():
            reference = model(**{k: torch.from_numpy(v) for k, v in features.items()}).logits.numpy()
        largest_diff = max(largest_diff, float(abs(reference - logits).max()))
        results[f"{count}_candidates"] = {
            "p50_ms": round(percentile(timings, 50), 3),
            "p95_ms": round(percentile(timings, 95), 3),
        }
    results["max_abs_logit_diff_vs_torch"] = round(largest_diff, 6)
    return results


def json_file(path: Path) -> dict[str, Any]:
    import json

    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return loaded


def option_name(candidates: int) -> str:
    return f"reranker, {candidates} candidates"


def blended_name(candidates: int) -> str:
    return f"blended with fused order, {candidates} candidates (reported only)"


def shown(path: Path) -> str:
    """A path for the report: as given when relative to the repository, else as repo_path prints it."""
    return path.as_posix() if not path.is_absolute() else repo_path(path)


def run_set(
    base: RagSettings, embedder: Embedder, reranker: Reranker, items: Sequence[EvalItem]
) -> dict[str, dict[str, Any]]:
    """Summary per option. Options are interleaved over two passes (the second is kept), so a warm cache
    and the machine's load fall on every option alike."""
    options: dict[str, tuple[int, Reranker]] = {BASELINE: (base.rerank.candidates, NoReranker())}
    options.update({option_name(n): (n, reranker) for n in CANDIDATE_COUNTS})
    options.update({blended_name(n): (n, BlendedReranker(reranker)) for n in CANDIDATE_COUNTS})
    services = {}
    for name, (candidates, option_reranker) in options.items():
        settings = base.model_copy(
            update={"rerank": base.rerank.model_copy(update={"candidates": candidates})}
        )
        service = TimedRetrieval(settings, embedder, option_reranker)
        service.warm_up()
        services[name] = service
    summaries: dict[str, dict[str, Any]] = {}
    for _ in range(2):
        for name, service in services.items():
            service.rerank_ms.clear()
            rows = evaluate(service, items, base.evidence.candidates)
            summaries[name] = {
                **summarise(rows),
                "rerank_p50_ms": round(percentile(service.rerank_ms, 50), 3),
                "rerank_p95_ms": round(percentile(service.rerank_ms, 95), 3),
            }
    return summaries


def choose_candidates(dev: Mapping[str, Mapping[str, Any]]) -> int:
    """The candidate count with the best dev-half prompt hit@5, then hit@5, then hit@1; on a tie the
    smaller (the cheaper)."""

    def rank(candidates: int) -> tuple[float, float, float, int]:
        s = dev[option_name(candidates)]
        return (s["prompt_hit"], s["hit@5"], s["hit@1"], -candidates)

    return max(CANDIDATE_COUNTS, key=rank)


def verdict(sets: Mapping[str, Mapping[str, Mapping[str, Any]]], chosen: int) -> tuple[bool, list[str]]:
    """(turn it on?, the reasons) by the rule of the module docstring."""
    dev = sets["dev"]
    option = dev[option_name(chosen)]
    gain = round(option["prompt_hit"] - dev[BASELINE]["prompt_hit"], 3)
    cost = option["rerank_p95_ms"]
    turn_on = gain > 0 and cost <= COST_LIMIT_MS
    lines = [
        f"- Chosen on the dev half: {chosen} candidates.",
        f"- Dev half prompt hit@5 {dev[BASELINE]['prompt_hit']:.3f} -> {option['prompt_hit']:.3f} "
        f"({gain:+.3f}).",
        f"- Reranker cost at {chosen} candidates: p50 {option['rerank_p50_ms']:.1f} ms, p95 {cost:.1f} ms "
        f"(limit {COST_LIMIT_MS:.0f} ms at p95).",
    ]
    for name in ("test", "sourcegraph"):
        if name in sets:
            other = sets[name]
            lines.append(
                f"- {name}: prompt hit@5 {other[BASELINE]['prompt_hit']:.3f} -> "
                f"{other[option_name(chosen)]['prompt_hit']:.3f}, hit@1 {other[BASELINE]['hit@1']:.3f} -> "
                f"{other[option_name(chosen)]['hit@1']:.3f} (reported, not used to decide)."
            )
    lines.append(
        "- Default: rag.rerank.reranker: "
        + ("the trained folder (it raises dev prompt hit@5 within the cost limit)." if turn_on else "none.")
        + ("" if turn_on else " It stays an option, off: " + reasons_off(gain, cost))
    )
    return turn_on, lines


def reasons_off(gain: float, cost: float) -> str:
    reasons = []
    if gain <= 0:
        reasons.append("it does not raise the dev half's prompt hit@5")
    if cost > COST_LIMIT_MS:
        reasons.append(f"its p95 {cost:.0f} ms is over the {COST_LIMIT_MS:.0f} ms limit")
    return " and ".join(reasons) + "."


def write_report(results: Mapping[str, Any], out: Path) -> None:
    write_json(out.with_suffix(".json"), results)
    headers = ["option", "n", "hit@1", "hit@5", "hit@10", "prompt hit@5", "retrieve p50 ms", "p95 ms",
               "reranker p50 ms", "reranker p95 ms"]  # fmt: skip
    keys = ["n", "hit@1", "hit@5", "hit@10", "prompt_hit", "retrieve_p50_ms", "retrieve_p95_ms",
            "rerank_p50_ms", "rerank_p95_ms"]  # fmt: skip
    training = results["reranker_metrics"]
    lines = [
        "# The reranker trained here: MiniLM cross-encoder on doc2query questions",
        "",
        environment_markdown(results["environment"]),
        f"Load average after the run: {results['load_average_after']}. Other agents shared the 2 cores.",
        "",
        f"Reranker: {results['reranker']} (`make reranker`), trained on {training.get('train_queries')} "
        f"questions written by {training.get('data_generator')} for the chunks of index version "
        f"{training.get('data_index_version')}; validation on {training.get('val_queries')} questions of "
        f"held-out files: MRR {training.get('val', {}).get('mrr')} (before training "
        f"{training.get('val_before', {}).get('mrr')}), top-1 {training.get('val', {}).get('top1')}.",
        "",
        f"Retrieval only (no generation); {RETRIEVED} chunks retrieved, the reranker reorders the first "
        "10 or 20 fused candidates; evidence is selected from the first rag.evidence.candidates chunks "
        "(prompt hit@5). Retrieve ms include the reranker's. Its cost does not grow with the index: it "
        "scores a fixed number of (query, chunk) pairs, in torch on the CPU.",
    ]
    for set_name, title in (("dev", "corpus/eval, dev half (the candidate count is chosen here)"),
                            ("test", "corpus/eval, other half"),
                            ("sourcegraph", "Sourcegraph handbook, held out")):  # fmt: skip
        if set_name not in results["sets"]:
            continue
        table = [[name, *(summary[k] for k in keys)] for name, summary in results["sets"][set_name].items()]
        lines += ["", f"## {title}", "", markdown_table(headers, table, digits=3)]
    onnx = results["onnx"]
    lines += [
        "",
        "## The same model through ONNX Runtime (measured only)",
        "",
        f"Exported with services/router/export.py, {onnx['threads']} threads, {onnx['max_length']} tokens, "
        f"the dev half's queries (tokenising included; largest logit difference from torch "
        f"{onnx['max_abs_logit_diff_vs_torch']}). The service scores in torch; this is what serving "
        "an export would cost instead.",
        "",
        *(
            f"- {count} candidates: p50 {onnx[f'{count}_candidates']['p50_ms']} ms, "
            f"p95 {onnx[f'{count}_candidates']['p95_ms']} ms"
            for count in CANDIDATE_COUNTS
        ),
    ]
    lines += ["", "## Default", "", *results["verdict"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.components.reranker", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--reranker", type=Path, required=True, help="the trained reranker folder")
    parser.add_argument("--handbook-corpus", type=Path, default=REPO_ROOT / "corpus" / "handbook")
    parser.add_argument(
        "--handbook-index", type=Path, default=None, help="default: ingest a fresh one in /tmp"
    )
    parser.add_argument(
        "--sourcegraph-index", type=Path, default=None, help="an ingested Sourcegraph handbook"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "reranker")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in (args.reranker, args.handbook_index, args.sourcegraph_index):
        if path is not None and not path.is_dir():
            print(f"no folder at {path}", file=sys.stderr)
            return 2
    env = environment()
    started = time.perf_counter()
    base = RagSettings()
    handbook_index = args.handbook_index or build_handbook_index(args.handbook_corpus, base)
    embedder = build_query_embedder(base)
    embedder.warm_up()
    reranker = CrossEncoderReranker(str(args.reranker))
    reranker.warm_up()
    items = knowledge_items(HANDBOOK_EVAL)
    handbook = base.model_copy(update={"index_dir": handbook_index})
    targets = [("dev", handbook, items[0::2]), ("test", handbook, items[1::2])]
    if args.sourcegraph_index is not None:
        sourcegraph = base.model_copy(update={"index_dir": args.sourcegraph_index})
        targets.append(("sourcegraph", sourcegraph, knowledge_items(SOURCEGRAPH_EVAL)))
    sets = {name: run_set(settings, embedder, reranker, set_items) for name, settings, set_items in targets}
    fused = RetrievalService(handbook, embedder, reranker=NoReranker())
    fused.warm_up()
    dev_candidates = [
        (item.question, [embedding_text(s.chunk) for s in fused.retrieve(item.question, top_k=20).chunks])
        for item in items[0::2]
    ]
    onnx = onnx_cost(args.reranker, dev_candidates)
    chosen = choose_candidates(sets["dev"])
    turn_on, reasons = verdict(sets, chosen)
    metrics = json_file(args.reranker / "metrics.json")
    metrics.pop("history", None)
    results = {
        "environment": env,
        "load_average_after": environment()["load_average"],
        "seconds": round(time.perf_counter() - started, 1),
        "reranker": shown(args.reranker),
        "reranker_metrics": metrics,
        "handbook_index": shown(handbook_index),
        "sourcegraph_index": shown(args.sourcegraph_index) if args.sourcegraph_index else None,
        "cost_limit_ms": COST_LIMIT_MS,
        "chosen_candidates": chosen,
        "turn_on": turn_on,
        "verdict": reasons,
        "sets": sets,
        "onnx": onnx,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(results, args.out)
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
