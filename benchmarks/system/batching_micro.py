"""Batched generation on this CPU, engine alone: og.Generator one at a time, batched, and og.Engine.

    python -m benchmarks.system.batching_micro [--rounds 3] [--new-tokens 48] [--batch-sizes 2,4]

The converted default generator (what `make run` serves: OnnxGeneratorSettings' defaults, threads included)
runs the same greedy prompts in every mode, interleaved: each round takes the next group of prompts and runs
every mode on it in a rotating order, so a drift of the machine's load touches all of them.

Modes, for each batch size B:
- `sequential`: one `og.Generator` per prompt, one after another (today's path with max_concurrency 1);
- `generator-B`: one `og.Generator` with `batch_size` B. Prompts of different lengths are right-padded with
  a pad token that is not in any prompt, set as the model's `pad_token_id` (onnxruntime-genai builds the
  attention mask from it; the default pad id is `<|im_end|>`, which every chat prompt contains);
- `engine-B`: B requests through `og.Engine`, driven as services/llm/onnx_batching.py drives it.

Workloads: `prompt` (the built-in prompts through the `prompt` pipeline's template) and `rag` (the messages
the default `rag` pipeline sends the generator for corpus/eval questions). Reports aggregate tokens/s,
per-request latency, the prefill (first step) and decode split, and whether each batched output equals the
sequential greedy output. Writes benchmarks/results/batching_micro.{json,md}; the last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.report import markdown_table, write_json
from benchmarks.harness.workload import load_prompts
from benchmarks.system.streaming import engine_messages
from benchmarks.system.ttft import rag_prompts
from services.core.settings import OnnxGeneratorSettings
from services.llm.onnx_backend import OnnxGenerator, SessionOptions, session_config
from services.llm.onnx_batching import EngineScheduler, TurnEnd, TurnSpec, engine_config_overlay
from services.llm.onnx_cohort import pad_token_overlay, right_padded

WORKLOADS = ("prompt", "rag")


@dataclass(frozen=True)
class RequestSample:
    """One prompt's run in one mode."""

    workload: str
    mode: str
    round: int
    prompt: str
    prompt_tokens: int
    new_tokens: int
    latency_ms: float  # from the start of its batch (sequential: of its own run) to its last token
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class ModeSample:
    """One mode over one round's prompts: wall time and the split of its first step and the rest."""

    workload: str
    mode: str
    round: int
    wall_ms: float
    prefill_ms: float  # summed over its batches: the step that produces the first tokens
    decode_ms: float
    decode_steps: int
    new_tokens: int


class MicroEngines:
    """The same converted model loaded as each mode needs it (same session options)."""

    def __init__(
        self, settings: OnnxGeneratorSettings, model_dir: Path, pad_id: int, batch_sizes: Sequence[int]
    ):
        import onnxruntime_genai as og

        self._og = og
        options = SessionOptions.of(settings)
        self.model = og.Model(session_config(model_dir, options))
        padded_config = session_config(model_dir, options)
        padded_config.overlay(pad_token_overlay(pad_id))
        self.padded_model = og.Model(padded_config)
        self.pad_id = pad_id
        self.eos = {int(i) for i in og.Tokenizer(self.model).eos_token_ids}
        self.schedulers: dict[int, EngineScheduler] = {}
        for size in batch_sizes:
            engine_config = session_config(model_dir, options)
            engine_config.overlay(engine_config_overlay(size))
            # The admission window waits until all `size` requests of a batch are in.
            self.schedulers[size] = EngineScheduler(
                og.Model(engine_config),
                max_batch_size=size,
                admission_window_s=5.0,
                demand=functools.partial(int, size),
            )

    def close(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.close()

    def sequential(self, prompt_ids: Sequence[int], new_tokens: int) -> tuple[list[int], float, float, int]:
        """(tokens, prefill ms, decode ms, decode steps) of one og.Generator."""
        params = self._og.GeneratorParams(self.model)
        params.set_search_options(max_length=len(prompt_ids) + new_tokens, do_sample=False, batch_size=1)
        generator = self._og.Generator(self.model, params)
        started = time.perf_counter()
        generator.append_tokens(list(prompt_ids))
        generator.generate_next_token()
        tokens = [int(generator.get_next_tokens()[0])]
        first = time.perf_counter()
        while tokens[-1] not in self.eos and len(tokens) < new_tokens and not generator.is_done():
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
        end = time.perf_counter()
        return tokens, (first - started) * 1000.0, (end - first) * 1000.0, len(tokens) - 1

    def generator_batch(
        self, prompts: Sequence[Sequence[int]], new_tokens: int
    ) -> tuple[list[list[int]], list[float], float, float, int]:
        """(tokens and latency ms per row, prefill ms, decode ms, decode steps) of a batched og.Generator."""
        batch = right_padded(prompts, self.pad_id)
        params = self._og.GeneratorParams(self.padded_model)
        params.set_search_options(
            max_length=batch.shape[1] + new_tokens, do_sample=False, batch_size=len(prompts)
        )
        generator = self._og.Generator(self.padded_model, params)
        started = time.perf_counter()
        generator.append_tokens(batch)
        rows: list[list[int]] = [[] for _ in prompts]
        latency = [0.0] * len(prompts)
        first = started
        steps = 0
        while not all(_finished(row, self.eos, new_tokens) for row in rows) and not generator.is_done():
            generator.generate_next_token()
            now = time.perf_counter()
            if steps == 0:
                first = now
            steps += 1
            next_tokens = generator.get_next_tokens()
            for index, row in enumerate(rows):
                if not _finished(row, self.eos, new_tokens):
                    row.append(int(next_tokens[index]))
                    latency[index] = (now - started) * 1000.0
        end = time.perf_counter()
        return rows, latency, (first - started) * 1000.0, (end - first) * 1000.0, steps - 1

    def engine_batch(
        self, prompts: Sequence[Sequence[int]], new_tokens: int
    ) -> tuple[list[list[int]], list[float], float, float, int]:
        """The same through og.Engine (EngineScheduler): every request submitted at once."""
        scheduler = self.schedulers[len(prompts)]
        rows: list[list[int]] = [[] for _ in prompts]
        stamps: list[list[float]] = [[] for _ in prompts]
        ended: list[TurnEnd] = []
        all_ended = threading.Event()

        def on_token(index: int, token: int) -> None:
            rows[index].append(token)
            stamps[index].append(time.perf_counter())

        def on_end(end: TurnEnd) -> None:  # called in the engine's thread
            ended.append(end)
            if len(ended) == len(prompts):
                all_ended.set()

        started = time.perf_counter()
        for index, ids in enumerate(prompts):
            spec = TurnSpec(list(ids), max_tokens=new_tokens, max_session_tokens=len(ids) + new_tokens)
            scheduler.submit(spec, functools.partial(on_token, index), on_end)
        all_ended.wait()
        if errors := [end.error for end in ended if end.error is not None]:
            raise RuntimeError(f"the engine failed a request: {errors[0]}")
        first = min(s[0] for s in stamps)
        last = max(s[-1] for s in stamps)
        latency = [(s[-1] - started) * 1000.0 for s in stamps]
        steps = max(len(s) for s in stamps) - 1
        return rows, latency, (first - started) * 1000.0, (last - first) * 1000.0, steps


def _finished(row: Sequence[int], eos: set[int], new_tokens: int) -> bool:
    return len(row) >= new_tokens or (bool(row) and row[-1] in eos)


def answer_tokens(row: Sequence[int], eos: set[int]) -> list[int]:
    """The tokens before the first EOS: what each mode's request answers (the engine reports no EOS token)."""
    for index, token in enumerate(row):
        if token in eos:
            return list(row[:index])
    return list(row)


def workload_prompt_ids(service: OnnxGenerator, workload: str, count: int) -> dict[str, list[int]]:
    """Rendered, tokenised prompts of a workload, as the service renders them."""
    if workload == "prompt":
        messages = {item.item_id: engine_messages(item.question) for item in load_prompts(None)[:count]}
    else:
        messages = dict(rag_prompts(count))
    return {name: service.prompt_ids(m) for name, m in messages.items()}


def run_round(
    engines: MicroEngines,
    workload: str,
    round_: int,
    prompts: Mapping[str, Sequence[int]],
    batch_sizes: Sequence[int],
    new_tokens: int,
) -> tuple[list[ModeSample], list[RequestSample]]:
    """Every mode over the round's prompts, in a rotating order."""
    modes = ["sequential", *(f"generator-{b}" for b in batch_sizes), *(f"engine-{b}" for b in batch_sizes)]
    shift = round_ % len(modes)
    names, ids = list(prompts), list(prompts.values())
    mode_samples: list[ModeSample] = []
    request_samples: list[RequestSample] = []
    for mode in [*modes[shift:], *modes[:shift]]:
        started = time.perf_counter()
        prefill = decode = 0.0
        steps = 0
        rows: list[list[int]] = []
        latency: list[float] = []
        if mode == "sequential":
            for prompt_ids in ids:
                tokens, p_ms, d_ms, d_steps = engines.sequential(prompt_ids, new_tokens)
                rows.append(tokens)
                latency.append(p_ms + d_ms)
                prefill, decode, steps = prefill + p_ms, decode + d_ms, steps + d_steps
        else:
            kind, size = mode.split("-")
            run = engines.generator_batch if kind == "generator" else engines.engine_batch
            for start in range(0, len(ids), int(size)):
                b_rows, b_latency, p_ms, d_ms, d_steps = run(ids[start : start + int(size)], new_tokens)
                rows += b_rows
                latency += b_latency
                prefill, decode, steps = prefill + p_ms, decode + d_ms, steps + d_steps
        wall = (time.perf_counter() - started) * 1000.0
        rows = [answer_tokens(row, engines.eos) for row in rows]
        new = sum(len(r) for r in rows)
        mode_samples.append(ModeSample(workload, mode, round_, wall, prefill, decode, steps, new))
        for name, prompt_ids, tokens, ms in zip(names, ids, rows, latency, strict=True):
            request_samples.append(
                RequestSample(workload, mode, round_, name, len(prompt_ids), len(tokens), ms, tuple(tokens))
            )
    return mode_samples, request_samples


def summarize(modes: Sequence[ModeSample], requests: Sequence[RequestSample]) -> list[dict[str, Any]]:
    """Per workload and mode: aggregate tok/s (and x sequential), latency, prefill/decode, identity."""
    reference = {(r.workload, r.round, r.prompt): r.tokens for r in requests if r.mode == "sequential"}
    rows: list[dict[str, Any]] = []
    for workload in dict.fromkeys(m.workload for m in modes):
        order = list(dict.fromkeys(m.mode for m in modes if m.workload == workload))
        base_rate = None
        for mode in sorted(order, key=lambda m: (m != "sequential", m.split("-")[0], m)):
            ms = [m for m in modes if m.workload == workload and m.mode == mode]
            rs = [r for r in requests if r.workload == workload and r.mode == mode]
            rate = sum(m.new_tokens for m in ms) / (sum(m.wall_ms for m in ms) / 1000.0)
            base_rate = rate if mode == "sequential" else base_rate
            same = sum(r.tokens == reference[(r.workload, r.round, r.prompt)] for r in rs)
            latencies = sorted(r.latency_ms for r in rs)
            rows.append(
                {
                    "workload": workload,
                    "mode": mode,
                    "rounds": len(ms),
                    "requests": len(rs),
                    "mean_prompt_tokens": statistics.fmean(r.prompt_tokens for r in rs),
                    "mean_new_tokens": statistics.fmean(r.new_tokens for r in rs),
                    "aggregate_tok_s": rate,
                    "x_sequential": rate / base_rate if base_rate else None,
                    "latency_p50_ms": statistics.median(latencies),
                    "latency_max_ms": latencies[-1],
                    "prefill_share": sum(m.prefill_ms for m in ms) / sum(m.wall_ms for m in ms),
                    "prefill_ms_per_request": sum(m.prefill_ms for m in ms) / len(rs),
                    "decode_ms_per_step": sum(m.decode_ms for m in ms)
                    / max(sum(m.decode_steps for m in ms), 1),
                    "identical_to_sequential": f"{same}/{len(rs)}",
                }
            )
    return rows


def write_report(result: Mapping[str, Any]) -> None:
    RESULTS_ROOT.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS_ROOT / "batching_micro.json", result)
    config = result["config"]
    headers = [
        "workload", "mode", "requests", "prompt tok", "new tok", "agg tok/s", "x seq", "latency p50 ms",
        "latency max ms", "prefill share", "prefill ms/req", "decode ms/step", "same tokens as seq",
    ]  # fmt: skip
    table = markdown_table(
        headers,
        [
            [
                r["workload"],
                r["mode"],
                r["requests"],
                r["mean_prompt_tokens"],
                r["mean_new_tokens"],
                r["aggregate_tok_s"],
                r["x_sequential"],
                r["latency_p50_ms"],
                r["latency_max_ms"],
                r["prefill_share"],
                r["prefill_ms_per_request"],
                r["decode_ms_per_step"],
                r["identical_to_sequential"],
            ]  # fmt: skip
            for r in result["summary"]
        ],
        digits=2,
    )
    load = result["load_average"]
    text = f"""# Batched generation on this CPU, engine alone (micro benchmark)

{environment_markdown(result["environment"])}

The default generator ({config["model"]}, threads {config["threads"]}), greedy, at most {config["new_tokens"]}
new tokens (a row ends at EOS), {config["rounds"]} rounds; each round runs every mode on the next
{config["group"]} prompts of each workload, modes in a rotating order. `sequential`: one og.Generator per
prompt; `generator-B`: one og.Generator with batch_size B, prompts right-padded with pad id
{config["pad_id"]} (set as the model's pad_token_id); `engine-B`: og.Engine via EngineScheduler. Latency:
from the start of a request's batch (sequential: its own run) to its last token. Prefill: the step that
gives the first tokens. 1-minute load average {load["start"]:.2f} at the start, {load["end"]:.2f} at the
end; other agents' processes shared the 2 cores, so compare ratios, not absolute figures.
Regenerate with `python -m benchmarks.system.batching_micro`.

{table}
"""
    (RESULTS_ROOT / "batching_micro.md").write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", default="2,4")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "var")
    args = parser.parse_args(argv)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes must be integers separated by commas, got {args.batch_sizes!r}")
    workloads = args.workloads.split(",")
    if unknown := [w for w in workloads if w not in WORKLOADS]:
        parser.error(f"--workloads: unknown {unknown}; known: {list(WORKLOADS)}")
    if args.rounds < 1 or args.new_tokens < 1 or min(batch_sizes) < 2:
        parser.error(f"--rounds, --new-tokens must be >= 1 and batch sizes >= 2, got {args.rounds}, "
                     f"{args.new_tokens}, {batch_sizes}")  # fmt: skip
    settings = OnnxGeneratorSettings()
    service = OnnxGenerator(settings, args.data_dir)
    service.warm_up()  # converts if needed; its prompt rendering is the service's
    assert service.model_dir is not None and service.batch_pad_id is not None
    group = max(batch_sizes)
    prompts = {w: workload_prompt_ids(service, w, group * args.rounds) for w in workloads}
    engines = MicroEngines(settings, service.model_dir, service.batch_pad_id, batch_sizes)
    load_start = os.getloadavg()[0]
    modes: list[ModeSample] = []
    requests: list[RequestSample] = []
    try:
        for workload in workloads:  # one untimed round: first-run allocations are not prefill
            run_round(engines, workload, 0, dict(list(prompts[workload].items())[:group]), batch_sizes, 4)
        for round_ in range(args.rounds):
            for workload in workloads:
                items = list(prompts[workload].items())
                chosen = dict(items[(round_ * group + i) % len(items)] for i in range(group))
                m, r = run_round(engines, workload, round_, chosen, batch_sizes, args.new_tokens)
                modes += m
                requests += r
    finally:
        engines.close()
    result = {
        "config": {
            "model": service.model_dir.name,
            "threads": settings.threads,
            "new_tokens": args.new_tokens,
            "rounds": args.rounds,
            "group": group,
            "batch_sizes": batch_sizes,
            "pad_id": service.batch_pad_id,
        },
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "environment": environment(),
        "summary": summarize(modes, requests),
        "modes": [asdict(m) for m in modes],
        "requests": [{**asdict(r), "tokens": list(r.tokens)} for r in requests],
    }
    write_report(result)
    print(json.dumps({"summary": result["summary"], "load_average": result["load_average"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
