"""Privacy gate benchmark: gate latency at 1 KB and 32 KB (with and without findings), and detector
precision / recall per kind on the labelled synthetic set corpus/privacy/detector_eval.jsonl.

    python -m benchmarks.components.privacy [--eval corpus/privacy/detector_eval.jsonl] \
        [--out benchmarks/results]

Writes privacy.json, privacy.md and privacy_latency.png; prints one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.stats import percentile
from services.core.errors import PolicyViolation
from services.core.privacy_settings import DETECTOR_KINDS, PrivacySettings
from services.core.types import ChatMessage
from services.privacy.gate import PrivacyGate

CHECKSUM_KINDS = ("card", "iban", "ssn")
PROSE = (
    "Larkspur Analytics grants every employee twenty-five days of paid leave per calendar year. "
    "Requests go through the HR portal at least two weeks ahead; your manager approves them. "
    "Unused days carry over until the end of March, after which they lapse unless HR agrees otherwise. "
    "Sick leave is separate and needs a note from a doctor after the third consecutive day. "
)
# About three findings per KB: one email, one phone, one IPv4 (all confidential or internal).
FINDINGS_SENTENCE = (
    "Questions: write to hr-desk@larkspur.example or call +1 (415) 555-0132 from 10.20.30.40. "
)


def make_text(size: int, with_findings: bool) -> str:
    pieces: list[str] = []
    length = 0
    while length < size:
        piece = PROSE + (FINDINGS_SENTENCE if with_findings else "")
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces)[:size]


def bench_latency(gate: PrivacyGate, size: int, with_findings: bool, iterations: int) -> dict[str, Any]:
    messages = [
        ChatMessage("system", "You answer HR questions."),
        ChatMessage("user", make_text(size, with_findings)),
    ]
    decision = gate.inspect_messages(messages, backend_trust="external", internal_available=True)
    for _ in range(min(20, iterations)):  # warm caches (regex, phonenumbers metadata)
        gate.inspect_messages(messages, backend_trust="external", internal_available=True)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        gate.inspect_messages(messages, backend_trust="external", internal_available=True)
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "input_bytes": size,
        "with_findings": with_findings,
        "findings": sum(decision.counts.values()),
        "action": decision.action,
        "iterations": iterations,
        "p50_ms": percentile(samples, 50),
        "p99_ms": percentile(samples, 99),
        "mean_ms": statistics.fmean(samples),
    }


def bench_output_filter(gate: PrivacyGate, size: int, chunk: int) -> dict[str, Any]:
    messages = [ChatMessage("user", make_text(1024, True))]
    decision = gate.inspect_messages(messages, backend_trust="external", internal_available=True)
    answer = make_text(size, False).replace("portal", "[EMAIL_1] portal")
    samples = []
    for _ in range(30):
        output = gate.output_filter(decision, backend_trust="internal")
        start = time.perf_counter()
        for i in range(0, len(answer), chunk):
            output.feed(answer[i : i + chunk])
        output.flush()
        samples.append((time.perf_counter() - start) * 1000)
    return {"answer_bytes": size, "chunk_chars": chunk, "p50_ms": percentile(samples, 50)}


def evaluate(gate: PrivacyGate, eval_path: Path) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {
        kind: {"tp": 0, "fp": 0, "fn": 0, "exact": 0} for kind in DETECTOR_KINDS
    }
    negative_rows = negative_rows_clean = 0
    rows = [json.loads(line) for line in eval_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows:
        text = row["text"]
        gold = [(span["kind"], span["start"], span["end"]) for span in row["spans"]]
        predicted = [(f.kind, f.start, f.end) for f in gate.detect(text)]
        matched: set[int] = set()
        for kind, start, end in gold:
            hit = next(
                (
                    i
                    for i, (p_kind, p_start, p_end) in enumerate(predicted)
                    if i not in matched and p_kind == kind and p_start < end and start < p_end
                ),
                None,
            )
            if hit is None:
                counts[kind]["fn"] += 1
            else:
                matched.add(hit)
                counts[kind]["tp"] += 1
                counts[kind]["exact"] += int(predicted[hit][1:] == (start, end))
        for i, (p_kind, _, _) in enumerate(predicted):
            if i not in matched:
                counts[p_kind]["fp"] += 1
        if not gold:
            negative_rows += 1
            negative_rows_clean += int(not predicted)
    per_kind = {}
    for kind, c in counts.items():
        support = c["tp"] + c["fn"]
        per_kind[kind] = {
            "support": support,
            "tp": c["tp"],
            "fp": c["fp"],
            "fn": c["fn"],
            "precision": c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else None,
            "recall": c["tp"] / support if support else None,
            "exact_span_rate": c["exact"] / c["tp"] if c["tp"] else None,
        }
    return {
        "rows": len(rows),
        "per_kind": per_kind,
        "hard_negative_rows": negative_rows,
        "hard_negative_rows_clean": negative_rows_clean,
    }


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out: Path, result: dict[str, Any]) -> None:
    latency_rows = [
        [
            r["input_bytes"],
            "yes" if r["with_findings"] else "no",
            r["findings"],
            r["action"],
            r["p50_ms"],
            r["p99_ms"],
        ]
        for r in result["latency"]
    ]
    base = {r["input_bytes"]: r["p50_ms"] for r in result["latency"] if not r["with_findings"]}
    ratio_rows = [
        [r["input_bytes"], r["p50_ms"] / base[r["input_bytes"]]]
        for r in result["latency"]
        if r["with_findings"]
    ]
    kind_rows = [
        [kind, m["support"], m["tp"], m["fp"], m["fn"], m["precision"], m["recall"], m["exact_span_rate"]]
        for kind, m in result["detectors"]["per_kind"].items()
    ]
    filter_rows = [[r["answer_bytes"], r["chunk_chars"], r["p50_ms"]] for r in result["output_filter"]]
    det = result["detectors"]
    md = [
        "# Privacy gate benchmark",
        "",
        environment_markdown(result.get("environment")),
        "",
        f"Machine: {result['machine']}; gate: default `PrivacySettings`, external backend.",
        "",
        "## Gate latency (`inspect_messages`, one system + one user message)",
        "",
        table(["input bytes", "findings in text", "findings", "action", "p50 ms", "p99 ms"], latency_rows),
        "",
        "Cost of findings (p50 with findings / p50 without, same size):",
        "",
        table(["input bytes", "ratio"], ratio_rows),
        "",
        "![latency](privacy_latency.png)",
        "",
        "## Streaming output filter (restore + secret redaction)",
        "",
        table(["answer bytes", "chunk chars", "p50 ms (whole answer)"], filter_rows),
        "",
        f"## Detectors on `{result['eval_set']}` ({det['rows']} rows)",
        "",
        "A prediction counts when it has the gold kind and overlaps the gold span; `exact` is the share of",
        "those with identical offsets.",
        "",
        table(["kind", "support", "tp", "fp", "fn", "precision", "recall", "exact span"], kind_rows),
        "",
        "Hard-negative rows with no finding at all: "
        f"{det['hard_negative_rows_clean']} / {det['hard_negative_rows']}.",
        f"Goal recall >= 0.99 on checksum kinds ({', '.join(CHECKSUM_KINDS)}): "
        f"{'met' if result['checksum_recall_goal_met'] else 'NOT met'}.",
        "",
    ]
    (out / "privacy.md").write_text("\n".join(md), encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        labels = [
            f"{r['input_bytes'] // 1024} KB\n{'findings' if r['with_findings'] else 'clean'}"
            for r in result["latency"]
        ]
        x = range(len(labels))
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar([i - 0.2 for i in x], [r["p50_ms"] for r in result["latency"]], width=0.4, label="p50")
        ax.bar([i + 0.2 for i in x], [r["p99_ms"] for r in result["latency"]], width=0.4, label="p99")
        ax.set_xticks(list(x), labels)
        ax.set_ylabel("ms")
        ax.set_yscale("log")
        ax.set_title("privacy gate inspect_messages latency")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "privacy_latency.png", dpi=110)
        plt.close(fig)
    except ImportError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--eval", type=Path, default=REPO_ROOT / "corpus" / "privacy" / "detector_eval.jsonl")
    parser.add_argument("--out", type=Path, default=RESULTS_ROOT)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (smoke run)")
    args = parser.parse_args()
    if not args.eval.is_file():
        raise SystemExit(f"evaluation set not found: {args.eval}")
    args.out.mkdir(parents=True, exist_ok=True)
    gate = PrivacyGate(PrivacySettings())
    try:
        latency = [
            bench_latency(
                gate,
                size,
                with_findings,
                (50 if args.quick else 500) if size <= 1024 else (10 if args.quick else 60),
            )
            for size in (1024, 32 * 1024)
            for with_findings in (False, True)
        ]
    except PolicyViolation as exc:
        raise SystemExit(f"the benchmark text was blocked: {exc.message}") from None
    output_filter = [bench_output_filter(gate, 2048, chunk) for chunk in (4, 64)]
    detectors = evaluate(gate, args.eval)
    checksum_ok = all((detectors["per_kind"][k]["recall"] or 0) >= 0.99 for k in CHECKSUM_KINDS)
    try:
        eval_name = str(args.eval.resolve().relative_to(REPO_ROOT))
    except ValueError:
        eval_name = args.eval.name
    result = {
        "environment": environment(),
        "machine": f"{platform.machine()} python {platform.python_version()}",
        "latency": latency,
        "output_filter": output_filter,
        "eval_set": eval_name,
        "detectors": detectors,
        "checksum_recall_goal_met": checksum_ok,
    }
    (args.out / "privacy.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    write_report(args.out, result)
    summary = {
        "gate_p50_ms_1kb": latency[0]["p50_ms"],
        "gate_p50_ms_1kb_findings": latency[1]["p50_ms"],
        "gate_p50_ms_32kb": latency[2]["p50_ms"],
        "gate_p50_ms_32kb_findings": latency[3]["p50_ms"],
        "recall": {k: v["recall"] for k, v in detectors["per_kind"].items()},
        "precision": {k: v["precision"] for k, v in detectors["per_kind"].items()},
        "checksum_recall_goal_met": checksum_ok,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
