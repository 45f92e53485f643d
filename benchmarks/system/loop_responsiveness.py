"""The gateway's event loop while the embedded generator computes: with the GIL released, and held.

onnxruntime-genai's Python binding holds the GIL through a whole prefill or decode step; the service drives
those calls through the C API instead (services/llm/oga_native.py, `generator.release_gil`). This bench
serves the `prompt` pipeline twice, with the setting on and off (prefix cache off on both, so every request
prefills its whole prompt), and for each long-prompt streamed request probes GET /healthz every
`--probe-ms` from a second connection. A probe measures what any other request waiting on the loop waits:
parsing, routing, retrieval, a metrics scrape, a liveness check.

Reports, per side, the probe latency while a generation runs (p50/p99/max), the generation's own first
visible text and decode rate (the cost of the change, if any), and the load average. Sides alternate
within each round, in a rotating order.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from benchmarks.harness.report import markdown_table, write_json
from benchmarks.harness.stats import percentile
from benchmarks.system.streaming import gateway_run
from benchmarks.system.ttft import PADDING
from services.evaluation.local_server import running_service

SIDES = ("released", "held")


class Prober:
    """GET /healthz every `interval_s` on its own connection, recording each answer's latency."""

    def __init__(self, base_url: str, interval_s: float) -> None:
        self._client = httpx.Client(base_url=base_url, timeout=30)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.latencies_ms: list[float] = []
        self._thread = threading.Thread(target=self._run, name="healthz-prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            self._client.get("/healthz").raise_for_status()
            self.latencies_ms.append((time.perf_counter() - started) * 1000.0)
            self._stop.wait(self._interval_s)


def long_question(words: int, index: int) -> str:
    """About `words` words of filler, numbered so that no two requests share more than the system prompt."""
    filler = (PADDING * (words // 20 + 2)).split()[:words]
    return f"Request {index}. {' '.join(filler)} Summarise the report above in two sentences."


def summarize(samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for side, runs in samples.items():
        probes = [ms for run in runs for ms in run["probe_ms"]]
        summary[side] = {
            "probes": len(probes),
            "probe_p50_ms": round(percentile(probes, 50), 2),
            "probe_p99_ms": round(percentile(probes, 99), 2),
            "probe_max_ms": round(max(probes), 2) if probes else None,
            "ttft_ms": round(statistics.median(run["ttft_ms"] for run in runs), 1),
            "decode_tok_s": round(statistics.median(run["decode_tok_s"] for run in runs), 1),
        }
    released, held = summary["released"], summary["held"]
    summary["held_over_released"] = {
        "probe_p99": round(held["probe_p99_ms"] / released["probe_p99_ms"], 1),
        "probe_max": round(held["probe_max_ms"] / released["probe_max_ms"], 1),
        "decode": round(held["decode_tok_s"] / released["decode_tok_s"], 3),
    }
    return summary


def plot(samples: Mapping[str, Sequence[Mapping[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    for side, runs in samples.items():
        probes = sorted(ms for run in runs for ms in run["probe_ms"])
        if probes:
            fractions = [(i + 1) / len(probes) for i in range(len(probes))]
            axes.plot(probes, fractions, label=f"GIL {side} ({len(probes)} probes)")
    axes.set_xscale("log")
    axes.set_xlabel("GET /healthz latency during a generation (ms, log scale)")
    axes.set_ylabel("fraction of probes")
    axes.set_title("Event-loop responsiveness while the ONNX generator computes (SmolLM2 int8)")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(result: Mapping[str, Any]) -> None:
    write_json(RESULTS_ROOT / "loop_responsiveness.json", result)
    plot(result["samples"], RESULTS_ROOT / "loop_responsiveness.png")
    summary, config = result["summary"], result["config"]
    rows = [
        [
            side,
            summary[side]["probes"],
            summary[side]["probe_p50_ms"],
            summary[side]["probe_p99_ms"],
            summary[side]["probe_max_ms"],
            summary[side]["ttft_ms"],
            summary[side]["decode_tok_s"],
        ]
        for side in SIDES
    ]
    ratios = summary["held_over_released"]
    lines = [
        "# The event loop while the embedded generator computes",
        "",
        environment_markdown(result["environment"]),
        "",
        f"SmolLM2 ONNX {config['precision']}, {config['threads']} intra-op threads, `prompt` pipeline, "
        f"prefix cache off; {config['rounds']} rounds of one streamed request per side (a prompt of about "
        f"{config['prompt_words']} words, at most {config['tokens']} greedy tokens), sides in a rotating "
        f"order. Meanwhile GET /healthz every {config['probe_ms']} ms on a second connection. `released`: "
        "prefill and decode steps through the C API without the GIL (the default); `held`: the binding's "
        "own calls (`generator.release_gil: false`). Load average (1 min) "
        f"{result['load_average']['start']:.2f} at start, {result['load_average']['end']:.2f} at end.",
        "",
        markdown_table(
            [
                "GIL",
                "probes",
                "probe p50 ms",
                "probe p99 ms",
                "probe max ms",
                "first visible text ms (median)",
                "decode tok/s (median)",
            ],
            rows,
            digits=2,
        ),
        "",
        f"- Held over released: probe p99 **{ratios['probe_p99']}x**, probe max **{ratios['probe_max']}x**, "
        f"generation decode rate {ratios['decode']}x.",
        "- A probe is any work waiting on the loop: with the GIL held it waits out the current prefill or "
        "decode step; a prefill of a long prompt is the longest wait.",
        "- With the GIL released the server answers the probes while it generates, so the generation shares "
        "the two cores with that work; a difference in its first text or decode rate here is the cost of "
        "serving the probes, not of the release (benchmarks/results/streaming.md measures the generation "
        "with no other work).",
        "",
        "![probe latency](loop_responsiveness.png)",
        "",
        "Reproduce: `python -m benchmarks.system.loop_responsiveness`.",
    ]
    (RESULTS_ROOT / "loop_responsiveness.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-words", type=int, default=400)
    parser.add_argument("--probe-ms", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="int8", choices=("int4", "int8", "fp32"))
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "var")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.tokens < 2 or args.prompt_words < 1 or args.probe_ms <= 0:
        parser.error(f"--rounds, --prompt-words and --probe-ms must be positive and --tokens at least 2 (got "
                     f"{args.rounds}, {args.prompt_words}, {args.probe_ms}, {args.tokens})")  # fmt: skip
    load_start = os.getloadavg()[0]
    env = {
        "HYBRID_DATA_DIR": str(args.data_dir),
        "HYBRID_GENERATOR__THREADS": str(args.threads),
        "HYBRID_GENERATOR__ONNX_PRECISION": args.precision,
        "HYBRID_GENERATOR__PREFIX_CACHE_SLOTS": "0",
        "HYBRID_DEFAULT_PIPELINE": "prompt",
    }
    samples: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    with (
        running_service(None, extra_env=env) as released_url,
        running_service(None, extra_env={**env, "HYBRID_GENERATOR__RELEASE_GIL": "false"}) as held_url,
    ):
        urls = {"released": released_url, "held": held_url}
        clients = {side: httpx.Client(base_url=url, timeout=300) for side, url in urls.items()}
        try:
            for side in SIDES:  # warm each server's request path
                gateway_run(clients[side], long_question(args.prompt_words, 0), 4)
            for round_ in range(args.rounds):
                order = SIDES if round_ % 2 == 0 else SIDES[::-1]
                for side in order:
                    question = long_question(args.prompt_words, round_ + 1)
                    with Prober(urls[side], args.probe_ms / 1000.0) as prober:
                        ttft_ms, decode, tokens, _, _ = gateway_run(clients[side], question, args.tokens)
                    samples[side].append(
                        {
                            "ttft_ms": ttft_ms,
                            "decode_tok_s": decode,
                            "tokens": tokens,
                            "probe_ms": prober.latencies_ms,
                        }
                    )
        finally:
            for client in clients.values():
                client.close()
    result = {
        "environment": environment(),
        "config": {
            "rounds": args.rounds,
            "tokens": args.tokens,
            "prompt_words": args.prompt_words,
            "probe_ms": args.probe_ms,
            "threads": args.threads,
            "precision": args.precision,
        },
        "load_average": {"start": load_start, "end": os.getloadavg()[0]},
        "summary": summarize(samples),
        "samples": samples,
    }
    write_report(result)
    print(json.dumps(result["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
