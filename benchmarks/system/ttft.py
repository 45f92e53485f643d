"""Time to first token of the embedded ONNX engine by prompt length, per ONNX Runtime session option.

onnxruntime-genai driven directly (as benchmarks/system/streaming.py drives it), one `og.Model` per option
set, all loaded at once and measured interleaved: each round visits every prompt, and for each prompt every
option set in a rotating order. TTFT is the prefill (`append_tokens`) plus the first `generate_next_token`.
Prompts are the `prompt` pipeline's messages padded to about 100, 250 and 500 tokens, and the real `rag`
prompts of corpus/eval questions with today's default evidence context.

The options: intra-op threads (1, 2), intra-op and inter-op spinning, the graph optimisation level, and the
int8 MatMul accuracy level. The last is an attribute of the model's MatMulNBits nodes, fixed when the model
is built; og.Config cannot change it at load, so it is measured on a copy of the graph with the attribute
rewritten (the weights file is hard-linked).

Every generator here is fresh: the service's prompt-prefix cache is measured by
benchmarks/system/prefix_cache.py.

    hybridllm bench ttft [--rounds 5] [--threads 2]

Writes benchmarks/results/ttft.{json,md,png}; the last stdout line is the JSON summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.report import markdown_table, write_json
from benchmarks.system.streaming import engine_messages
from services.core.settings import OnnxGeneratorSettings, OpenAIGeneratorSettings, load_settings
from services.core.types import ChatMessage, GenerationParams
from services.llm.onnx_backend import OnnxGenerator, SessionOptions, session_config

TARGET_LENGTHS = (100, 250, 500)
GOAL_TTFT_MS_AT_100 = 120.0
DECODE_TOKENS = 32  # decode speed is measured after the 100-token prompt
ADOPT_BELOW_RATIO = 0.95  # an option must cut the baseline's TTFT by 5 % or more to be chosen
DECODE_KEPT = 0.95  # and keep this share of its decode speed
PADDING = (
    "The report covers the quarterly review of the support queue, the staffing plan for the next release, "
    "and the changes to the on-call rotation that the team agreed on last week. "
)
EVAL_FILE = REPO_ROOT / "corpus" / "eval" / "handbook_eval.jsonl"


@dataclass(frozen=True)
class EngineOption:
    """One configuration of the engine: session options, and the MatMul accuracy level (None: as built)."""

    name: str
    session: SessionOptions
    accuracy_level: int | None = None


@dataclass(frozen=True)
class Sample:
    option: str
    prompt: str  # "100", "250", "500" or "rag-<id>"
    prompt_tokens: int
    ttft_ms: float
    first_token: int


def engine_options(threads: int) -> list[EngineOption]:
    """The baseline (the library's defaults, `threads` intra-op threads) and one change each."""
    base = SessionOptions(threads=threads)
    return [
        EngineOption("baseline", base),
        EngineOption("threads=1", replace(base, threads=1)),
        EngineOption("intra_spin=0", replace(base, intra_op_spinning=False)),
        EngineOption("inter_spin=0", replace(base, inter_op_spinning=False)),
        EngineOption("spin=0 (both)", replace(base, intra_op_spinning=False, inter_op_spinning=False)),
        EngineOption("opt=basic", replace(base, graph_optimization="basic")),
        EngineOption("opt=extended", replace(base, graph_optimization="extended")),
        EngineOption("accuracy=1 (fp32)", base, accuracy_level=1),
    ]


def padded_prompt(
    service: OnnxGenerator, target_tokens: int, question: str = "", rotation: int = 0
) -> tuple[ChatMessage, ...]:
    """The `prompt` pipeline's messages, filler words and then `question`, grown until the rendered prompt
    has `target_tokens`. The filler is rotated by `rotation` words, so that prompts padded with different
    rotations share only the system prompt."""
    words = (PADDING * (target_tokens // 10 + 2)).split()
    words = words[rotation % len(words) :] + words[: rotation % len(words)]

    def messages(count: int) -> tuple[ChatMessage, ...]:
        return engine_messages(f"{' '.join(words[:count])} {question}".strip())

    low, high = 1, len(words)
    while low < high:  # the fewest words whose rendered prompt reaches target_tokens
        middle = (low + high) // 2
        if service.render_prompt_tokens(messages(middle)) >= target_tokens:
            high = middle
        else:
            low = middle + 1
    return messages(low)


def rag_prompts(questions: int) -> dict[str, tuple[ChatMessage, ...]]:
    """The messages the default `rag` pipeline sends the generator for the first corpus/eval questions."""
    from services.pipelines.base import PipelineRequest, RequestTrace
    from services.pipelines.factory import build_components
    from services.pipelines.privacy_guard import PrivacyGuard
    from services.privacy import PrivacyGate

    # The generator is never called (only the plan is built), so a remote one avoids loading a model.
    settings = load_settings(None, generator=OpenAIGeneratorSettings(base_url="http://127.0.0.1:9"))
    components = build_components(settings)
    rag = components.pipelines["rag"]
    guard = PrivacyGuard(PrivacyGate(settings.privacy), internal=components.primary)
    prompts: dict[str, tuple[ChatMessage, ...]] = {}
    for line in EVAL_FILE.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        request = PipelineRequest(
            messages=(ChatMessage(role="user", content=item["question"]),),
            params=GenerationParams(),
            request_id=item["id"],
        )
        trace = RequestTrace(pipeline="rag")
        request = guard.before_plan(request, trace, components.primary)  # as the runner does first
        plan = asyncio.run(rag.plan(request, trace))
        if plan.messages:  # a question rag answers without the model (no evidence) has no prompt
            prompts[f"rag-{item['id']}"] = tuple(plan.messages)
        if len(prompts) == questions:
            break
    return prompts


@contextmanager
def model_with_accuracy_level(model_dir: Path, level: int) -> Iterator[Path]:
    """A copy of `model_dir` whose MatMulNBits nodes have accuracy_level `level` (other files hard-linked)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="ttft-accuracy-") as tmp:
        copy = Path(tmp)
        for path in model_dir.iterdir():
            if path.name != "model.onnx":  # a symlink would fail ORT's external-data path check
                _link_or_copy(path.resolve(), copy / path.name)
        graph = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
        for node in graph.graph.node:
            for attribute in node.attribute:
                if node.op_type == "MatMulNBits" and attribute.name == "accuracy_level":
                    attribute.i = level
        onnx.save(graph, str(copy / "model.onnx"))
        yield copy


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


class Engines:
    """Every option's og.Model, loaded side by side so that the runs can interleave."""

    def __init__(
        self, model_dir: Path, options: Sequence[EngineOption], tmp_dirs: Mapping[int, Path]
    ) -> None:
        import onnxruntime_genai as og

        self._og = og
        self.models: dict[str, Any] = {}
        for option in options:
            folder = model_dir if option.accuracy_level is None else tmp_dirs[option.accuracy_level]
            self.models[option.name] = og.Model(session_config(folder, option.session))

    def ttft(self, option: str, prompt_ids: Sequence[int]) -> tuple[float, int]:
        """(TTFT ms, first token) for a fresh generator: prefill and the first decode step."""
        model = self.models[option]
        params = self._og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt_ids) + 2, do_sample=False, batch_size=1)
        generator = self._og.Generator(model, params)
        started = time.perf_counter()
        generator.append_tokens(list(prompt_ids))
        generator.generate_next_token()
        first = int(generator.get_next_tokens()[0])
        return (time.perf_counter() - started) * 1000.0, first

    def decode_tok_s(self, option: str, prompt_ids: Sequence[int], tokens: int) -> float:
        """Greedy decode tokens/s after the first token: what an option costs the rest of the answer."""
        model = self.models[option]
        params = self._og.GeneratorParams(model)
        params.set_search_options(max_length=len(prompt_ids) + tokens, do_sample=False, batch_size=1)
        generator = self._og.Generator(model, params)
        generator.append_tokens(list(prompt_ids))
        generator.generate_next_token()
        started = time.perf_counter()
        for _ in range(tokens - 1):  # the model may end its answer (EOS) before that
            if generator.is_done():
                break
            generator.generate_next_token()
        steps = int(generator.token_count()) - len(prompt_ids) - 1
        return steps / (time.perf_counter() - started)


def summarize(
    samples: Sequence[Sample], options: Sequence[str], decode: Mapping[str, Sequence[float]]
) -> dict[str, Any]:
    """Median TTFT per option and prompt, ratios to the baseline, the option chosen, and the 100-token goal.

    An option is chosen over the baseline only if it cuts TTFT by at least ADOPT_BELOW_RATIO while keeping
    decode speed (DECODE_KEPT) and every greedy first token; otherwise the baseline stays.
    """
    prompts = list(dict.fromkeys(s.prompt for s in samples))
    medians = {
        option: {
            prompt: statistics.median(s.ttft_ms for s in samples if s.option == option and s.prompt == prompt)
            for prompt in prompts
        }
        for option in options
    }
    ratios = {
        option: statistics.median(medians[option][p] / medians["baseline"][p] for p in prompts)
        for option in options
    }
    decode_medians = {option: statistics.median(decode[option]) for option in options}
    decode_ratios = {option: decode_medians[option] / decode_medians["baseline"] for option in options}
    tokens = {p: next(s.prompt_tokens for s in samples if s.prompt == p) for p in prompts}
    # The greedy first token of the baseline, which every option should reproduce.
    baseline_first = {s.prompt: s.first_token for s in samples if s.option == "baseline"}
    agreement = {
        option: sum(s.first_token == baseline_first[s.prompt] for s in samples if s.option == option)
        / max(1, sum(1 for s in samples if s.option == option))
        for option in options
    }
    eligible = [
        o
        for o in options
        if ratios[o] <= ADOPT_BELOW_RATIO and decode_ratios[o] >= DECODE_KEPT and agreement[o] == 1.0
    ]
    chosen = min(eligible, key=lambda o: ratios[o]) if eligible else "baseline"
    return {
        "prompt_tokens": tokens,
        "median_ttft_ms": medians,
        "ratio_to_baseline": {o: round(r, 3) for o, r in ratios.items()},
        "first_token_agreement": {o: round(a, 3) for o, a in agreement.items()},
        "decode_tok_s": {o: round(r, 1) for o, r in decode_medians.items()},
        "decode_ratio_to_baseline": {o: round(r, 3) for o, r in decode_ratios.items()},
        "chosen": chosen,
        "goal_ttft_ms_at_100": {
            "goal": GOAL_TTFT_MS_AT_100,
            "chosen_ms": medians[chosen].get("100"),
            "met": medians[chosen].get("100", float("inf")) <= GOAL_TTFT_MS_AT_100,
        },
    }


def ttft_slope(medians: Mapping[str, float], tokens: Mapping[str, int]) -> dict[str, float]:
    """A least-squares line TTFT = intercept + per_token * tokens over the prompts (ms)."""
    xs = [float(tokens[p]) for p in medians]
    ys = [medians[p] for p in medians]
    fit = statistics.linear_regression(xs, ys)
    return {"intercept_ms": round(fit.intercept, 1), "per_token_ms": round(fit.slope, 3)}


def plot(summary: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = summary["prompt_tokens"]
    figure, axes = plt.subplots(figsize=(8, 5))
    for option, medians in summary["median_ttft_ms"].items():
        points = sorted((tokens[p], ms) for p, ms in medians.items())
        axes.plot([t for t, _ in points], [ms for _, ms in points], marker="o", label=option)
    axes.plot([100], [GOAL_TTFT_MS_AT_100], "k*", markersize=12, linestyle="none", label="goal at 100 tokens")
    axes.set_xlabel("prompt tokens")
    axes.set_ylabel("median TTFT (ms)")
    axes.set_title("ONNX engine TTFT by prompt length and session option (SmolLM2 int8)")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(result: Mapping[str, Any]) -> None:
    write_json(RESULTS_ROOT / "ttft.json", result)
    plot(result["summary"], RESULTS_ROOT / "ttft.png")
    summary, config = result["summary"], result["config"]
    prompts = list(summary["prompt_tokens"])
    headers = [
        "option",
        *[f"{p} ({summary['prompt_tokens'][p]} tok)" for p in prompts],
        "TTFT x baseline (median over prompts)",
        "same 1st token",
        f"decode tok/s ({DECODE_TOKENS} tokens)",
    ]
    rows = [
        [
            option,
            *[medians[p] for p in prompts],
            f"{summary['ratio_to_baseline'][option]:.3f}x",
            f"{summary['first_token_agreement'][option]:.0%}",
            f"{summary['decode_tok_s'][option]:.1f} ({summary['decode_ratio_to_baseline'][option]:.2f}x)",
        ]
        for option, medians in summary["median_ttft_ms"].items()
    ]
    goal = summary["goal_ttft_ms_at_100"]
    slope = result["slope"]
    load = result["load_average"]
    lines = [
        "# Time to first token of the embedded ONNX engine",
        "",
        environment_markdown(result.get("environment")),
        "",
        f"SmolLM2 ONNX {config['precision']}, onnxruntime-genai driven directly, greedy; TTFT = prefill + "
        f"the first decode step. {len(config['options'])} option sets loaded side by side and measured "
        f"interleaved (each prompt visits every option in a rotating order), {config['rounds']} rounds. "
        f"Baseline: {config['threads']} intra-op threads, 1 inter-op thread, the library's defaults "
        "otherwise (spinning on, all graph optimisations, the MatMul accuracy level the model was built "
        "with: 4, int8). Prompts: the `prompt` pipeline's messages padded to ~100/250/500 tokens, and the "
        "`rag` pipeline's real prompts (default evidence context) for the first corpus/eval handbook "
        "questions. Medians in ms.",
        "",
        f"Load average (1 min) {load['start']:.2f} at start, {load['end']:.2f} at end. The machine (2 cores) "
        "was shared: other agents' editors and tools were running, so read the ratios (measured in the same "
        "run, interleaved) rather than the absolute figures."
        + (f" Commit {result['commit']}." if "commit" in result else ""),
        "",
        markdown_table(headers, rows),
        "",
        f"- Chosen: **{summary['chosen']}** (an option is chosen over the baseline only if it cuts TTFT "
        f"by {1 - ADOPT_BELOW_RATIO:.0%} or more, keeps {DECODE_KEPT:.0%} of decode speed and every greedy "
        f"first token); its TTFT at the 100-token prompt is **{goal['chosen_ms']:.1f} ms** "
        f"(goal <= {goal['goal']:.0f} ms: {_verdict(goal['met'])}). The generator settings' defaults are "
        "the chosen option set (tests/llm/test_onnx_session_options.py checks them against this report).",
        f"- Baseline TTFT grows linearly with the prompt: {slope['intercept_ms']} ms + "
        f"{slope['per_token_ms']} ms per prompt token (least squares over all prompts), so the rag prompt's "
        "TTFT falls in proportion to the context tokens removed from it, less the fixed part.",
        "- `same 1st token`: the share of prompts where the option's greedy first token is the baseline's. "
        "Decode tok/s: the greedy tokens after the first, following the 100-token prompt.",
        "",
        "Every generator here is fresh. The service reuses a prompt prefix it prefilled before (the "
        "pipeline's system prompt, a conversation's earlier turns); benchmarks/results/prefix_cache.md "
        "measures that against a fresh generator.",
        "",
        "Reproduce: `hybridllm bench ttft` (`python -m benchmarks.system.ttft`).",
        "",
    ]
    (RESULTS_ROOT / "ttft.md").write_text("\n".join(lines), encoding="utf-8")


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rag-questions", type=int, default=3)
    parser.add_argument("--precision", default="int8", choices=("int4", "int8", "fp32"))
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "var")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.threads < 1 or args.rag_questions < 0:
        parser.error(f"--rounds and --threads must be >= 1 and --rag-questions >= 0, got {args.rounds}, "
                     f"{args.threads}, {args.rag_questions}")  # fmt: skip
    load_start = os.getloadavg()[0]
    service = OnnxGenerator(
        OnnxGeneratorSettings(threads=args.threads, onnx_precision=args.precision), args.data_dir
    )
    service.warm_up()  # converts if needed; its prompt rendering is the service's
    assert service.model_dir is not None
    messages = {str(n): padded_prompt(service, n) for n in TARGET_LENGTHS}
    rag = rag_prompts(args.rag_questions) if args.rag_questions else {}
    prompt_ids = {name: service.prompt_ids(m) for name, m in {**messages, **rag}.items()}
    options = engine_options(args.threads)
    samples: list[Sample] = []
    decode: dict[str, list[float]] = {o.name: [] for o in options}
    levels = sorted({o.accuracy_level for o in options if o.accuracy_level is not None})
    with _accuracy_copies(service.model_dir, levels) as copies:
        engines = Engines(service.model_dir, options, copies)
        for option in options:  # one untimed run each: first-run allocations are not prefill
            engines.ttft(option.name, prompt_ids["100"])
        for round_ in range(args.rounds):
            for index, (name, ids) in enumerate(prompt_ids.items()):
                shift = (round_ + index) % len(options)
                for option in [*options[shift:], *options[:shift]]:
                    ms, first = engines.ttft(option.name, ids)
                    samples.append(Sample(option.name, name, len(ids), round(ms, 2), first))
                    if name == "100":
                        decode[option.name].append(engines.decode_tok_s(option.name, ids, DECODE_TOKENS))
    summary = summarize(samples, [o.name for o in options], decode)
    result = {
        "config": {
            "rounds": args.rounds,
            "threads": args.threads,
            "precision": args.precision,
            "options": [asdict(o) for o in options],
        },
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "environment": environment(),
        "summary": summary,
        "slope": ttft_slope(summary["median_ttft_ms"]["baseline"], summary["prompt_tokens"]),
        "samples": [asdict(s) for s in samples],
        "decode_samples": decode,
    }
    write_report(result)
    print(json.dumps({k: result[k] for k in ("summary", "slope", "load_average")}))
    return 0


@contextmanager
def _accuracy_copies(model_dir: Path, levels: Sequence[int]) -> Iterator[dict[int, Path]]:
    """A rewritten copy of the model per accuracy level, removed afterwards."""
    if not levels:
        yield {}
        return
    with (
        model_with_accuracy_level(model_dir, levels[0]) as first,
        _accuracy_copies(model_dir, levels[1:]) as rest,
    ):
        yield {levels[0]: first, **rest}


if __name__ == "__main__":
    raise SystemExit(main())
