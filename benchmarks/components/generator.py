"""Generator engines side by side: transformers bf16 vs ONNX Runtime GenAI int4 / int8 / fp32.

For each model and engine, in its own child process (so peak RSS is that engine's alone):
- TTFT and decode tokens/s at templated prompts of about 50 / 100 / 500 tokens (greedy, median of reps);
- answer quality on the e2e eval set: `rag` items get their gold document as context and are scored by
  answer_contains; `direct` items by a length/coherence check (enough words, not looping);
- peak RSS and load time.
Models are prepared (converted) once before any timing. Writes benchmarks/results/generator.{json,md,png}
and prints one JSON object as the last stdout line.

    python -m benchmarks.components.generator --quick       # SmolLM2, int4 vs transformers, small eval
    python -m benchmarks.components.generator --threads 2   # every model and engine, the full eval
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from services.core.settings import (
    OnnxGeneratorSettings,
    PromptSettings,
    TransformersGeneratorSettings,
)
from services.core.types import ChatMessage, GenerationParams

# The engines compared here run in this process.
LocalGeneratorSettings = OnnxGeneratorSettings | TransformersGeneratorSettings
ENGINES = ("transformers-bf16", "onnx-int4", "onnx-int8", "onnx-fp32")
MODELS = ("smollm2", "qwen2.5-coder-0.5b")
PROMPT_TOKENS = (50, 100, 500)
QUALITY_TOLERANCE_POINTS = 2.0
GOALS = {
    "smollm2": {"decode_tok_s": 100.0, "ttft_ms_at_100": 120.0},
    "qwen2.5-coder-0.5b": {"decode_tok_s": 40.0},
}
FILLER = (
    "Larkspur Analytics keeps its handbook in plain Markdown. Teams write down how they hire, how they "
    "ship software, how expenses are approved and how support tickets are answered, so that answers do "
    "not depend on who happens to be online. "
)


def engine_settings(model: str, engine: str, threads: int) -> LocalGeneratorSettings:
    if engine == "transformers-bf16":
        return TransformersGeneratorSettings(model=model, dtype="bf16", threads=threads)
    precision = engine.removeprefix("onnx-")
    return OnnxGeneratorSettings(model=model, onnx_precision=precision, threads=threads)


def make_generator(settings: LocalGeneratorSettings, data_dir: Path) -> Any:
    if settings.backend == "transformers":
        from services.llm.transformers_backend import TransformersGenerator

        return TransformersGenerator(settings, data_dir)
    from services.llm.onnx_backend import OnnxGenerator

    return OnnxGenerator(settings, data_dir)


# --------------------------------------------------------------------------- worker (one engine)


def prompt_of_about(generator: Any, target_tokens: int, system: str) -> list[ChatMessage]:
    """A chat whose templated prompt is close to `target_tokens`, asking for a long answer."""
    ask = "Using the notes above, write a detailed explanation of why a team would write its processes down."
    words = FILLER.split()
    n_words = 0
    messages = [ChatMessage("system", system), ChatMessage("user", ask)]
    while generator.render_prompt_tokens(messages) < target_tokens and n_words < 5000:
        n_words += 4
        filler = " ".join((words * (1 + n_words // len(words)))[:n_words])
        messages = [ChatMessage("system", system), ChatMessage("user", f"Notes: {filler}\n\n{ask}")]
    return messages


def load_eval(path: Path, rag_limit: int, direct_limit: int) -> list[dict[str, Any]]:
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rag = [i for i in items if i["route"] == "rag" and i.get("answer_substrings")][:rag_limit]
    direct = [i for i in items if i["route"] == "direct"][:direct_limit]
    return rag + direct


def coherent(text: str) -> bool:
    """Enough words and not stuck in a loop: at least half of its word trigrams are distinct."""
    words = re.findall(r"\w+", text.lower())
    if len(words) < 3:
        return False
    trigrams = list(zip(words, words[1:], words[2:], strict=False))
    return not trigrams or len(set(trigrams)) / len(trigrams) >= 0.5


async def measure_engine(args: argparse.Namespace) -> dict[str, Any]:
    settings = engine_settings(args.model, args.engine, args.threads)
    generator = make_generator(settings, Path(args.data_dir))
    started = time.perf_counter()
    generator.warm_up()
    load_s = time.perf_counter() - started
    system = PromptSettings().system_prompt
    await generator.complete([ChatMessage("user", "Hello")], GenerationParams(max_tokens=4))  # warm caches

    speed = []
    for target in args.prompt_tokens:
        messages = prompt_of_about(generator, target, system)
        runs = []
        for _ in range(args.reps):
            result = await generator.complete(messages, GenerationParams(max_tokens=args.decode_tokens))
            decode_s = result.busy_s - result.ttft_s
            runs.append((result.ttft_s, (result.completion_tokens - 1) / decode_s if decode_s > 0 else 0.0))
        speed.append(
            {
                "target_prompt_tokens": target,
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "ttft_ms": round(1000 * statistics.median(r[0] for r in runs), 1),
                "decode_tok_s": round(statistics.median(r[1] for r in runs), 1),
            }
        )

    quality: dict[str, Any] = {}
    items = load_eval(Path(args.eval), args.eval_rag, args.eval_direct)
    if items:
        corpus = Path(args.corpus)
        rag_hits, rag_total, direct_ok, direct_total = 0, 0, 0, 0
        for item in items:
            if item["route"] == "rag":
                context = "\n\n".join((corpus / f).read_text(encoding="utf-8") for f in item["gold_files"])
                user = f"Answer from this handbook excerpt.\n\n{context}\n\nQuestion: {item['question']}"
            else:
                user = item["question"]
            result = await generator.complete(
                [ChatMessage("system", system), ChatMessage("user", user)],
                GenerationParams(max_tokens=args.answer_tokens),
            )
            if item["route"] == "rag":
                rag_total += 1
                rag_hits += any(s.lower() in result.text.lower() for s in item["answer_substrings"])
            else:
                direct_total += 1
                direct_ok += coherent(result.text)
        quality = {
            "rag_items": rag_total,
            "answer_contains": round(100 * rag_hits / rag_total, 1) if rag_total else None,
            "direct_items": direct_total,
            "direct_coherent": round(100 * direct_ok / direct_total, 1) if direct_total else None,
        }
    await generator.aclose()
    return {
        "model": args.model,
        "engine": args.engine,
        "threads": args.threads,
        "load_s": round(load_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "speed": speed,
        "quality": quality,
    }


# --------------------------------------------------------------------------- parent


def prepare_all(models: list[str], engines: list[str], data_dir: Path, threads: int) -> dict[str, float]:
    """Convert everything first (in this process: conversions are not what is timed)."""
    from services.llm.model_prep import prepare_hf_model, prepare_onnx_model

    seconds = {}
    for model in models:
        for engine in engines:
            settings = engine_settings(model, engine, threads)
            started = time.perf_counter()
            if settings.backend == "onnx":
                prepare_onnx_model(settings, data_dir)
            else:
                prepare_hf_model(settings, data_dir)
            seconds[f"{model}/{engine}"] = round(time.perf_counter() - started, 1)
    return seconds


def run_worker(args: argparse.Namespace, model: str, engine: str) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "benchmarks.components.generator", "--worker",
        "--model", model, "--engine", engine,
        "--threads", str(args.threads), "--data-dir", str(args.data_dir), "--reps", str(args.reps),
        "--decode-tokens", str(args.decode_tokens), "--answer-tokens", str(args.answer_tokens),
        "--eval", str(args.eval), "--corpus", str(args.corpus), "--eval-rag", str(args.eval_rag),
        "--eval-direct", str(args.eval_direct), "--prompt-tokens", *map(str, args.prompt_tokens),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        return {"model": model, "engine": engine, "error": completed.stderr[-1500:]}
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def speed_at(row: dict[str, Any], target: int, key: str) -> float | None:
    for point in row.get("speed", []):
        if point["target_prompt_tokens"] == target:
            return float(point[key])
    return None


def recommend(rows: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """Fastest ONNX precision whose answer_contains is within the tolerance of transformers bf16."""
    by_engine = {r["engine"]: r for r in rows if r["model"] == model and "error" not in r}
    reference = by_engine.get("transformers-bf16", {}).get("quality", {}).get("answer_contains")
    candidates = []
    for engine, row in by_engine.items():
        if not engine.startswith("onnx-"):
            continue
        score = row.get("quality", {}).get("answer_contains")
        within = reference is None or score is None or score >= reference - QUALITY_TOLERANCE_POINTS
        decode = statistics.median(p["decode_tok_s"] for p in row["speed"]) if row["speed"] else 0.0
        candidates.append((within, decode, engine, score))
    good = sorted((c for c in candidates if c[0]), key=lambda c: -c[1])
    if not good:
        return {"model": model, "precision": None, "reason": "no ONNX precision within tolerance"}
    _, decode, engine, score = good[0]
    return {
        "model": model,
        "precision": engine.removeprefix("onnx-"),
        "decode_tok_s": decode,
        "answer_contains": score,
        "transformers_answer_contains": reference,
        "tolerance_points": QUALITY_TOLERANCE_POINTS,
    }


def write_report(result: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "generator.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    rows = result["rows"]
    targets = result["config"]["prompt_tokens"]
    lines = [
        "# Generator engines side by side",
        "",
        environment_markdown(result.get("environment")),
        "",
        f"Machine: {os.cpu_count()} CPUs visible, threads={result['config']['threads']}; greedy; "
        f"decode over {result['config']['decode_tokens']} tokens; median of {result['config']['reps']} reps. "
        "Each engine ran in its own process (peak RSS is its own). "
        f"1-minute load average before/after: {result['config']['load_average_1m']} "
        "(above the thread count, the machine was shared and speeds are understated).",
        "",
        "| model | engine | load s | peak RSS MB | "
        + " | ".join(f"TTFT ms @{t}" for t in targets)
        + " | "
        + " | ".join(f"decode tok/s @{t}" for t in targets)
        + " | decode x vs transformers | answer_contains % | direct coherent % |",
        "|---|---|---|---|" + "---|" * (2 * len(targets)) + "---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(
                f"| {row['model']} | {row['engine']} | error: {row['error'].splitlines()[-1][:80]} |"
            )
            continue
        base = next(
            (r for r in rows if r["model"] == row["model"] and r["engine"] == "transformers-bf16"), None
        )
        ratio = ""
        if base is not None and "error" not in base:
            mine = statistics.median(p["decode_tok_s"] for p in row["speed"])
            theirs = statistics.median(p["decode_tok_s"] for p in base["speed"])
            ratio = f"{mine / theirs:.1f}x" if theirs else ""
        quality = row.get("quality", {})
        lines.append(
            f"| {row['model']} | {row['engine']} | {row['load_s']} | {row['peak_rss_mb']} | "
            + " | ".join(str(speed_at(row, t, "ttft_ms")) for t in targets)
            + " | "
            + " | ".join(str(speed_at(row, t, "decode_tok_s")) for t in targets)
            + f" | {ratio} | {quality.get('answer_contains')} (n={quality.get('rag_items')}) | "
            f"{quality.get('direct_coherent')} (n={quality.get('direct_items')}) |"
        )
    lines += ["", "## Goals (2 cores)", ""]
    for goal in result["goals"]:
        lines.append(
            f"- {goal['model']} {goal['engine']}: {goal['what']} = {goal['measured']} -> {goal['verdict']}"
        )
    lines += ["", "## Recommended embedded precision", ""]
    for rec in result["recommendations"]:
        lines.append(f"- {rec['model']}: **{rec.get('precision')}** ({json.dumps(rec)})")
    lines += ["", "![decode speed](generator.png)", ""]
    (out_dir / "generator.md").write_text("\n".join(lines), encoding="utf-8")
    plot(rows, targets, out_dir / "generator.png")


def plot(rows: list[dict[str, Any]], targets: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = [f"{r['model']}\n{r['engine']}" for r in ok]
    width = 0.8 / max(len(targets), 1)
    for i, target in enumerate(targets):
        xs = [x + i * width for x in range(len(ok))]
        axes[0].bar(
            xs, [speed_at(r, target, "decode_tok_s") or 0 for r in ok], width, label=f"~{target} tok prompt"
        )
        axes[1].bar(
            xs, [speed_at(r, target, "ttft_ms") or 0 for r in ok], width, label=f"~{target} tok prompt"
        )
    for ax, title in zip(
        axes, ("decode tokens/s (higher is better)", "TTFT ms (lower is better)"), strict=True
    ):
        ax.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(ok))])
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    verdicts = []
    for row in rows:
        goal = GOALS.get(row["model"])
        if goal is None or "error" in row or not row["engine"].startswith("onnx-"):
            continue
        decode = speed_at(row, 100, "decode_tok_s") or statistics.median(
            p["decode_tok_s"] for p in row["speed"]
        )
        verdicts.append(
            {
                "model": row["model"],
                "engine": row["engine"],
                "what": "decode tok/s",
                "measured": decode,
                "verdict": "met"
                if decode >= goal["decode_tok_s"]
                else f"missed (goal {goal['decode_tok_s']})",
            }
        )
        if "ttft_ms_at_100" in goal and (ttft := speed_at(row, 100, "ttft_ms")) is not None:
            verdicts.append(
                {
                    "model": row["model"],
                    "engine": row["engine"],
                    "what": "TTFT ms @100-token prompt",
                    "measured": ttft,
                    "verdict": "met"
                    if ttft <= goal["ttft_ms_at_100"]
                    else f"missed (goal {goal['ttft_ms_at_100']})",
                }
            )
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "var")
    parser.add_argument("--out", type=Path, default=RESULTS_ROOT)
    parser.add_argument("--eval", type=Path, default=REPO_ROOT / "corpus" / "eval" / "handbook_eval.jsonl")
    parser.add_argument("--corpus", type=Path, default=REPO_ROOT / "corpus" / "handbook")
    parser.add_argument("--eval-rag", type=int, default=30, help="rag items scored (answer_contains)")
    parser.add_argument("--eval-direct", type=int, default=10, help="direct items checked for coherence")
    parser.add_argument("--prompt-tokens", type=int, nargs="+", default=list(PROMPT_TOKENS))
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="SmolLM2, int4 vs transformers, small eval")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.worker:
        print(json.dumps(asyncio.run(measure_engine(args))))
        return
    if args.quick:
        args.models, args.engines = ["smollm2"], ["transformers-bf16", "onnx-int4"]
        args.eval_rag, args.eval_direct, args.reps, args.decode_tokens = 8, 4, 1, 32
    if not args.eval.is_file():
        print(f"eval set {args.eval} not found: quality is skipped", file=sys.stderr)
        args.eval_rag = args.eval_direct = 0

    load_before = round(os.getloadavg()[0], 2)
    conversions = prepare_all(args.models, args.engines, args.data_dir, args.threads)
    rows = []
    for model in args.models:
        for engine in args.engines:
            print(f"measuring {model} / {engine} ...", file=sys.stderr, flush=True)
            rows.append(run_worker(args, model, engine))
    result = {
        "environment": environment(),
        "config": {
            "threads": args.threads,
            "prompt_tokens": args.prompt_tokens,
            "decode_tokens": args.decode_tokens,
            "answer_tokens": args.answer_tokens,
            "reps": args.reps,
            "quick": args.quick,
            # Other work on the machine skews every number: the 1-minute load average before and after.
            "load_average_1m": [load_before, round(os.getloadavg()[0], 2)],
        },
        "prepare_s": conversions,
        "rows": rows,
        "goals": goals(rows),
        "recommendations": [recommend(rows, m) for m in args.models],
    }
    write_report(result, args.out)
    summary = {
        "recommendations": result["recommendations"],
        "goals": result["goals"],
        "report": str(args.out / "generator.md"),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
