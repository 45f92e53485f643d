"""What it costs each architecture to learn that 10 facts changed: seconds and CPU-seconds from the edit
to a service that answers with the new values, and answer quality before and after.

Everything runs on a COPY of the corpus in a temporary folder, against one real service (transformers
backend, so adapters hot-swap) started in this process:

- rag:    incremental re-ingest of the edited corpus + POST /admin/reload-index
- tuned:  rebuild the training data from the edited corpus + retrain the LoRA adapter + POST /admin/adapters
- prompt: rewrite the template whose system prompt states the facts + restart the service (templates are
          read at start-up)

Quality is answer_contains of the new value over the 10 questions (from corpus/eval/handbook_eval.jsonl),
asked through the matching pipeline. CPU-seconds are resource.getrusage of this process and its children;
the service runs in this process, so its work during an update is counted too.

    python -m benchmarks.system.update_cost [--tuned-steps 60] [--max-tokens 48]

Writes benchmarks/results/update_cost.json and .md (+ a plot); the last stdout line is the JSON summary.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.in_thread import serve_in_thread
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT
from services.core.settings import Settings, load_settings
from training.train_generator import contains_any, cpu_seconds

logger = logging.getLogger(__name__)

HANDBOOK = REPO_ROOT / "corpus" / "handbook"
PACKAGED_TEMPLATES = REPO_ROOT / "services" / "llm" / "templates"
ADMIN_KEY = "update-cost-bench"
ARCHITECTURES = ("rag", "tuned", "prompt")


@dataclass(frozen=True, slots=True)
class FactChange:
    """One fact edited in the corpus copy; `statement` is how the prompt template states it."""

    source: str
    old: str
    new: str
    question: str
    statement: str

    def stated(self, value: str) -> str:
        return self.statement.format(value=value)


# Questions are the e2e set's own (corpus/eval/handbook_eval.jsonl ids in the comments); each old value
# occurs exactly once in its document.
CHANGES: tuple[FactChange, ...] = (
    FactChange("people/hiring.md", "24 hours", "36 hours",  # rag-001
               "how long do i have to get my interview feedback into scout after i interview someone?",
               "Interview feedback must be submitted in Scout within {value} of the interview."),
    FactChange("people/employee-referrals.md", "90 days", "120 days",  # rag-004
               "when does the referral money actually get paid out? my buddy just started",
               "The referral bonus is paid after the new hire has stayed {value}."),
    FactChange("people/onboarding.md", "180 days", "150 days",  # rag-006
               "how long is probation for people hired in the lisbon office",
               "Probation in the Lisbon office lasts {value}."),
    FactChange("people/promotions.md", "8%", "11%",  # rag-010
               "roughly what kind of raise comes with a promotion here?",
               "A promotion comes with a raise of at least {value}."),
    FactChange("people/code-of-conduct.md", "USD 100", "USD 140",  # rag-012
               "a vendor sent me a pretty expensive bottle of wine, like $150. am I allowed to keep it?",
               "Gifts from vendors may be kept only up to a value of {value}."),
    FactChange("people/remote-work.md", "USD 200", "USD 260",  # rag-019
               "do fully remote ppl get anything for a coworking membership?",
               "Fully remote employees get up to {value} a month for a coworking membership."),
    FactChange("people/relocation.md", "USD 8,000", "USD 9,500",  # rag-020
               "if I transfer from port aldren to the lisbon office what's the relocation lump sum",
               "The relocation lump sum for a transfer from Port Aldren to Lisbon is {value}."),
    FactChange("benefits/health-insurance.md", "90%", "85%",  # rag-025
               "what percent of my health insurance premium does the company pay in port aldren",
               "In Port Aldren, Larkspur pays {value} of the health insurance premium."),
    FactChange("benefits/vacation.md", "25 working days", "28 working days",  # rag-031
               "how many days of paid holiday do i get per year, not counting public holidays?",
               "Full-time employees receive {value} of paid vacation per year."),
    FactChange("benefits/sick-leave.md", "12 paid sick days", "14 paid sick days",  # rag-034
               "I'm in the port aldren office - how many days can I be off sick with pay each year?",
               "Port Aldren employees have {value} per year."),
)  # fmt: skip


# --------------------------------------------------------------------------- measuring


@dataclass
class Cost:
    seconds: float = 0.0
    cpu_seconds: float = 0.0


@contextlib.contextmanager
def measured(cost: Cost) -> Iterator[None]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    try:
        yield
    finally:
        cost.seconds += time.perf_counter() - wall
        cost.cpu_seconds += cpu_seconds() - cpu


def apply_changes(corpus: Path, changes: Sequence[FactChange]) -> None:
    for change in changes:
        path = corpus / change.source
        text = path.read_text(encoding="utf-8")
        if text.count(change.old) != 1:
            raise ValueError(f"{change.source}: expected {change.old!r} exactly once")
        path.write_text(text.replace(change.old, change.new), encoding="utf-8")


def write_fact_template(templates: Path, changes: Sequence[FactChange], *, new: bool) -> None:
    """direct.j2 (the prompt pipeline's template) with a system prompt that states the facts."""
    facts = " ".join(c.stated(c.new if new else c.old) for c in changes)
    (templates / "direct.j2").write_text(
        "{#- name: direct  version: facts-" + ("new" if new else "old") + " -#}\n"
        "{% block system -%}\n{{ system_prompt }} Company facts: " + facts + "\n{%- endblock %}\n",
        encoding="utf-8",
    )


# --------------------------------------------------------------------------- the service


def running_app(settings: Settings, timeout_s: float = 600.0) -> contextlib.AbstractContextManager[str]:
    """The gateway under uvicorn in a thread of this process (so getrusage counts its CPU); its base URL."""
    from services.gateway.app import create_app

    return serve_in_thread(create_app(settings), timeout_s=timeout_s)


def ask_all(url: str, pipeline: str, changes: Sequence[FactChange], max_tokens: int) -> list[str]:
    answers = []
    with httpx.Client(timeout=300) as client:
        for change in changes:
            body = {
                "model": pipeline,
                "messages": [{"role": "user", "content": change.question}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
            response = client.post(url + "/v1/chat/completions", json=body)
            response.raise_for_status()
            answers.append(str(response.json()["choices"][0]["message"]["content"] or ""))
    return answers


def quality(answers: Sequence[str], changes: Sequence[FactChange], *, new: bool) -> float:
    hits = sum(contains_any(a, [c.new if new else c.old]) for a, c in zip(answers, changes, strict=True))
    return round(hits / len(changes), 3)


def admin_post(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.post(
        url + path, json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=600
    )
    response.raise_for_status()
    return dict(response.json())


# --------------------------------------------------------------------------- the run


def run(
    work: Path,
    *,
    data_dir: Path,
    tuned_steps: int,
    max_tokens: int,
    initial_adapter: Path | None,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    from services.rag.ingest import ingest
    from training.build_generator_data import build_generator_data
    from training.train_generator import train_generator

    corpus, templates, index = work / "corpus", work / "templates", work / "index"
    shutil.copytree(HANDBOOK, corpus)
    shutil.copytree(PACKAGED_TEMPLATES, templates)
    write_fact_template(templates, CHANGES, new=False)

    def settings(adapter: Path) -> Settings:
        return load_settings(
            data_dir=str(data_dir),
            default_pipeline="prompt",
            generator={"backend": "transformers", "threads": 2, "adapters": {"tuned": str(adapter)}},
            rag={"index_dir": str(index), "corpus_dirs": [str(corpus)], "watch_interval_s": 0},
            server={"adapter_versions_dir": str(work / "adapter-versions")},  # not the shared model cache
            prompts={"templates_dir": str(templates)},
            auth={"admin_key_sha256": [hashlib.sha256(ADMIN_KEY.encode()).hexdigest()]},
            observability={"log_json": True, "log_level": "WARNING"},
        )

    # before the change (not timed): an index and an adapter of the original corpus
    progress("initial ingest")
    base_settings = settings(work / "adapter-0")
    ingest([corpus], base_settings.rag, progress=False)
    if initial_adapter is None:
        progress(f"initial adapter ({tuned_steps} steps)")
        build_generator_data(corpus, work / "data-0")
        train_generator(
            work / "data-0", work / "adapter-0", max_steps=tuned_steps, progress=False, data_dir=data_dir
        )
    else:
        shutil.copytree(initial_adapter, work / "adapter-0")

    costs = {name: Cost() for name in ARCHITECTURES}
    results: dict[str, dict[str, Any]] = {name: {} for name in ARCHITECTURES}
    with running_app(base_settings) as url:
        for name in ARCHITECTURES:
            progress(f"quality before: {name}")
            answers = ask_all(url, name, CHANGES, max_tokens)
            results[name]["quality_before"] = quality(answers, CHANGES, new=True)
            results[name]["old_value_before"] = quality(answers, CHANGES, new=False)

        apply_changes(corpus, CHANGES)

        progress("rag: incremental ingest + reload")
        with measured(costs["rag"]):
            report = ingest([corpus], base_settings.rag, progress=False)
            admin_post(url, "/admin/reload-index")
        results["rag"]["detail"] = {
            k: v for k, v in report.as_dict().items() if isinstance(v, int | float | str)
        }
        answers = ask_all(url, "rag", CHANGES, max_tokens)
        results["rag"]["quality_after"] = quality(answers, CHANGES, new=True)
        results["rag"]["answers_after"] = answers

        progress(f"tuned: rebuild data + retrain ({tuned_steps} steps) + load adapter")
        with measured(costs["tuned"]):
            build_generator_data(corpus, work / "data-1")
            metrics = train_generator(
                work / "data-1", work / "adapter-1", max_steps=tuned_steps, progress=False, data_dir=data_dir
            )
            admin_post(
                url, "/admin/adapters", {"name": "tuned", "path": str(work / "adapter-1"), "version": "v2"}
            )
        results["tuned"]["detail"] = {k: metrics[k] for k in ("steps", "train_examples", "val_loss_after")}
        answers = ask_all(url, "tuned", CHANGES, max_tokens)
        results["tuned"]["quality_after"] = quality(answers, CHANGES, new=True)
        results["tuned"]["answers_after"] = answers

        progress("prompt: edit the template + restart")
        with measured(costs["prompt"]):
            write_fact_template(templates, CHANGES, new=True)
    # the restart: a new process pays the same start-up (model load, index, router)
    restart_wall, restart_cpu = time.perf_counter(), cpu_seconds()
    with running_app(settings(work / "adapter-1")) as url:
        costs["prompt"].seconds += time.perf_counter() - restart_wall
        costs["prompt"].cpu_seconds += cpu_seconds() - restart_cpu
        answers = ask_all(url, "prompt", CHANGES, max_tokens)
    results["prompt"]["quality_after"] = quality(answers, CHANGES, new=True)
    results["prompt"]["answers_after"] = answers

    for name in ARCHITECTURES:
        results[name]["seconds"] = round(costs[name].seconds, 2)
        results[name]["cpu_seconds"] = round(costs[name].cpu_seconds, 2)
    return results


def summarise(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    fastest = min(results[name]["seconds"] for name in ARCHITECTURES) or 1e-9
    return {
        name: {
            "seconds": results[name]["seconds"],
            "cpu_seconds": results[name]["cpu_seconds"],
            "quality_before": results[name]["quality_before"],
            "quality_after": results[name]["quality_after"],
            "seconds_vs_fastest": round(results[name]["seconds"] / fastest, 1),
        }
        for name in ARCHITECTURES
    }


def write_report(payload: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "update_cost.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    summary = payload["architectures"]
    lines = [
        "# Update cost: 10 changed facts",
        "",
        environment_markdown(payload.get("environment")),
        "",
        f"Run {payload['started']} on {payload['machine']}; generator SmolLM2-135M (transformers), "
        f"tuned retrain {payload['config']['tuned_steps']} steps, answers of at most "
        f"{payload['config']['max_tokens']} tokens. Quality: the answer contains the NEW value.",
        "",
        "| architecture | update | seconds | CPU-seconds | x fastest | quality before | quality after |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    how = {
        "rag": "incremental ingest + reload-index",
        "tuned": "rebuild data + retrain LoRA + load adapter",
        "prompt": "edit template + restart service",
    }
    for name in ARCHITECTURES:
        row = summary[name]
        lines.append(
            f"| {name} | {how[name]} | {row['seconds']:.1f} | {row['cpu_seconds']:.1f} | "
            f"{row['seconds_vs_fastest']} | {row['quality_before']:.2f} | {row['quality_after']:.2f} |"
        )
    lines += ["", "![update cost](update_cost.png)", ""]
    (out / "update_cost.md").write_text("\n".join(lines), encoding="utf-8")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
        left.bar(ARCHITECTURES, [summary[n]["seconds"] for n in ARCHITECTURES], color="#4a7bb7")
        left.set_ylabel("seconds to update (log)")
        left.set_yscale("log")
        x = range(len(ARCHITECTURES))
        right.bar(
            [i - 0.2 for i in x], [summary[n]["quality_before"] for n in ARCHITECTURES], 0.4, label="before"
        )
        right.bar(
            [i + 0.2 for i in x], [summary[n]["quality_after"] for n in ARCHITECTURES], 0.4, label="after"
        )
        right.set_xticks(list(x), ARCHITECTURES)
        right.set_ylim(0, 1)
        right.set_ylabel("answer contains new value")
        right.legend()
        fig.tight_layout()
        fig.savefig(out / "update_cost.png", dpi=110)
        plt.close(fig)
    except ImportError:
        logger.warning("matplotlib not installed: no plot")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tuned-steps", type=int, default=60, help="LoRA steps per (re)training")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--adapter", type=Path, default=None, help="adapter of the unchanged corpus (else trained)"
    )
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help="the converted-model cache")
    parser.add_argument("--out", type=Path, default=RESULTS_ROOT)
    args = parser.parse_args(argv)
    if args.tuned_steps <= 0 or args.max_tokens <= 0:
        print(json.dumps({"error": "--tuned-steps and --max-tokens must be > 0"}))  # noqa: T201
        return 2
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def progress(step: str) -> None:
        sys.stderr.write(f"[update_cost] {step}\n")

    with tempfile.TemporaryDirectory(prefix="update-cost-") as tmp:
        results = run(
            Path(tmp),
            data_dir=args.data_dir,
            tuned_steps=args.tuned_steps,
            max_tokens=args.max_tokens,
            initial_adapter=args.adapter,
            progress=progress,
        )
    payload = {
        "started": started,
        "environment": environment(),
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "config": {"tuned_steps": args.tuned_steps, "max_tokens": args.max_tokens, "facts": len(CHANGES)},
        "changes": [
            {"source": c.source, "old": c.old, "new": c.new, "question": c.question} for c in CHANGES
        ],
        "architectures": summarise(results),
        "details": results,
    }
    write_report(payload, args.out)
    print(json.dumps({"update_cost": payload["architectures"]}))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
