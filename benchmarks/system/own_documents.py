"""The README's own-documents walkthrough on the Sourcegraph handbook: each step timed, two routers compared.

    hybridllm bench own-documents [--handbook ../shared/datasets/sourcegraph_handbook/content] [--work DIR]

The steps, as a user runs them: `hybridllm init` (a subprocess: it checks the documents, writes the
templates and builds the router data from the headings), then what the first `hybridllm serve --config`
does before it serves (services/project/prepare.py, called here one step at a time so each is timed):
router training with the project's default recipe, and the ingest. Then two `hybridllm serve --config`
start-ups to /readyz: the first finds the router and the index ready and loads the models; the second is
the same command again, and must reuse everything (same index version, router not retrained).

The converted generator is linked from `--models` (default var/models, where `hybridllm prepare` put it on
this machine): a new machine converts it once on the first serve, which this bench does not time.

Both routers are also scored on corpus/router/generalization_sourcegraph.jsonl, the router's development
set (questions about the same handbook, with direct and out-of-scope ones): changes to init's router data
are chosen there, never on the held-out set below.

Then corpus/eval/sourcegraph_eval.jsonl (held out: never used to tune anything) through `eval e2e`'s
functions, on the same index and generator (the default embedded one), once with the router that init
trained on the handbook and once with the default router (var/router, trained for the example company).
Answers, templates and project files that name the example company are counted (0 expected).

Writes benchmarks/results/own_documents.{json,md}; the last stdout line is the JSON summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from benchmarks.harness.environment import environment, environment_markdown
from benchmarks.harness.load import configure_logging
from benchmarks.harness.paths import REPO_ROOT, RESULTS_ROOT, repo_path
from benchmarks.harness.report import fmt, markdown_table, write_json
from services.core.settings import EXAMPLE_ORG_NAME, load_settings
from services.evaluation.local_server import evaluate_e2e_local, hybridllm_command, started_service
from services.project.layout import ProjectLayout
from services.project.prepare import prepare_index, prepare_router
from services.rag.index_store import read_current
from services.router.evaluation import evaluate_router

logger = logging.getLogger("benchmarks.system.own_documents")

HANDBOOK = REPO_ROOT.parent / "shared" / "datasets" / "sourcegraph_handbook" / "content"
SOURCEGRAPH_EVAL = REPO_ROOT / "corpus" / "eval" / "sourcegraph_eval.jsonl"
ROUTER_DEV_SET = REPO_ROOT / "corpus" / "router" / "generalization_sourcegraph.jsonl"
ROUTER_METRICS = ("examples", "accuracy", "in_scope_accuracy", "oos_recall", "macro_f1")
DEFAULT_ROUTER = REPO_ROOT / "var" / "router"
CONVERTED_MODELS = REPO_ROOT / "var" / "models"
ORG = "Sourcegraph"
DESCRIPTION = "Sourcegraph's company handbook: its policies, teams and processes"
EXAMPLE_ORG_WORD = EXAMPLE_ORG_NAME.split()[0]
REPORT_NAME = "own_documents"
STEP_LABELS = {
    "init": "`hybridllm init` (checks the documents, templates, router data from the headings)",
    "router_training": "router training, the project's default recipe",
    "ingest": "ingest (chunk, embed, index)",
    "first_serve": "first `hybridllm serve --config` start-up to /readyz (router and index ready)",
    "second_serve": "second `hybridllm serve --config` start-up to /readyz (reuses everything)",
}


@contextmanager
def timed(steps: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    steps[name] = round(time.perf_counter() - start, 1)
    logger.info("%s: %.1f s", name, steps[name])


def run_init(project: Path, corpus: Path) -> dict[str, Any]:
    """`hybridllm init` exactly as the README has a user type it; its JSON report."""
    command = [*hybridllm_command(), "init", str(project), "--corpus", str(corpus), "--org", ORG]
    done = subprocess.run(
        [*command, "--description", DESCRIPTION], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"`hybridllm init` failed with code {done.returncode}: {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def default_router_config(layout: ProjectLayout, router: Path, out: Path) -> tuple[Path, dict[str, str]]:
    """A config serving the project's index, templates and generator cache with another router, and the
    environment that carries its `project` section. It has no `project` section itself, so serve does
    not prepare (a project config would retrain `router` on the project's data)."""
    settings = load_settings(layout.config)
    config = {
        "data_dir": str(layout.data_dir),
        "rag": {"index_dir": str(layout.index_dir), "corpus_dirs": [str(settings.project.corpus)]},
        "router": {"model_dir": str(router)},
        "prompts": {"templates_dir": str(layout.templates)},
    }
    out.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {
        "HYBRID_PROJECT__CORPUS": str(settings.project.corpus),
        "HYBRID_PROJECT__ORG_NAME": settings.project.org_name,
        "HYBRID_PROJECT__ORG_DESCRIPTION": settings.project.org_description,
    }
    return out, env


def example_org_files(layout: ProjectLayout) -> list[str]:
    """Files the project holds for the user to read or edit (not var/) that name the example company."""
    files = [layout.config, layout.readme, *layout.templates.rglob("*"), *layout.router_source.rglob("*")]
    return sorted(
        path.relative_to(layout.root).as_posix()
        for path in files
        if path.is_file() and EXAMPLE_ORG_WORD in path.read_text(encoding="utf-8", errors="replace")
    )


def scored(result: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of one e2e run, and its answers that name the example company."""
    items = result.get("items", [])
    keys = ("n", "errors", "route_accuracy", "hit@5", "answer_contains", "p50_ms", "p95_ms")
    summary = {key: result.get(key) for key in keys}
    summary["routes"] = dict(sorted(Counter(str(item.get("target")) for item in items).items()))
    summary["example_org_answers"] = sum(EXAMPLE_ORG_WORD in str(item.get("answer", "")) for item in items)
    return summary


def run_walkthrough(handbook: Path, work: Path, models: Path, default_router: Path) -> dict[str, Any]:
    layout = ProjectLayout(work / "sourcegraph")
    steps: dict[str, float] = {}
    with timed(steps, "init"):
        init_report = run_init(layout.root, handbook)
    layout.data_dir.mkdir(parents=True, exist_ok=True)
    (layout.data_dir / "models").symlink_to(models.resolve(), target_is_directory=True)
    settings = load_settings(layout.config)
    with timed(steps, "router_training"):
        router_step = prepare_router(layout, settings, progress=False)
    with timed(steps, "ingest"):
        index_step = prepare_index(settings, progress=False)
    config, index_dir = layout.config, layout.index_dir
    with timed(steps, "first_serve"), started_service(None, config=config, index_dir=index_dir):
        pass
    version = read_current(index_dir)
    router_metrics = (layout.router_model / "metrics.json").read_text(encoding="utf-8")
    with timed(steps, "second_serve"), started_service(None, config=config, index_dir=index_dir):
        pass
    reused = read_current(index_dir) == version and (
        (layout.router_model / "metrics.json").read_text(encoding="utf-8") == router_metrics
    )
    write_json(work / "steps.json", {"steps_s": steps, "reused": reused})  # kept if the evals fail

    dev: dict[str, dict[str, Any]] = {}
    for name, router in (("project_router", layout.router_model), ("default_router", default_router)):
        metrics = evaluate_router(router, ROUTER_DEV_SET)
        dev[name] = {key: metrics[key] for key in ROUTER_METRICS}
    runs: dict[str, dict[str, Any]] = {}
    items_dir = work / "items"
    logger.info("eval e2e: the project's router")
    project_run = evaluate_e2e_local(
        SOURCEGRAPH_EVAL, None, config=config, index_dir=index_dir, out=items_dir / "project_router.jsonl"
    )
    runs["project_router"] = scored(project_run)
    logger.info("eval e2e: the default router")
    other_config, env = default_router_config(layout, default_router, work / "default_router.yaml")
    default_run = evaluate_e2e_local(
        SOURCEGRAPH_EVAL,
        None,
        config=other_config,
        index_dir=index_dir,
        extra_env=env,
        out=items_dir / "default_router.jsonl",
    )
    runs["default_router"] = scored(default_run)

    manifest = json.loads((layout.router_data / "manifest.json").read_text(encoding="utf-8"))
    metrics = json.loads(router_metrics)
    return {
        "handbook": repo_path(handbook),
        "corpus_files": init_report["corpus_files"],
        "eval": str(SOURCEGRAPH_EVAL.relative_to(REPO_ROOT)),
        "steps_s": steps,
        "prepare": {"router": router_step, "index": index_step, "second_serve_reused_everything": reused},
        "router_data_counts": manifest["counts"],
        "router_recipe": str(settings.project.router_recipe or "packaged default"),
        "router_max_steps": settings.project.router_max_steps,
        "router_val": {key: metrics.get(key) for key in ("accuracy", "macro_f1") if key in metrics},
        "default_router": repo_path(default_router),
        "router_dev": {"data": str(ROUTER_DEV_SET.relative_to(REPO_ROOT)), "routers": dev},
        "runs": runs,
        "example_org_files": example_org_files(layout),
    }


COMPARISON_HEADERS = (
    "router", "n", "errors", "route accuracy", "hit@5", "answer contains", "routes",
    "answers naming the example company",
)  # fmt: skip


ROUTERS = (
    ("trained by `init` on the handbook", "project_router"),
    ("default (`var/router`, the example company's)", "default_router"),
)


def dev_rows(dev: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    return [[label, *(dev[name][key] for key in ROUTER_METRICS)] for label, name in ROUTERS]


def comparison_rows(runs: Mapping[str, Mapping[str, Any]]) -> list[list[Any]]:
    rows = []
    for label, name in ROUTERS:
        run = runs[name]
        routes = ", ".join(f"{target} {count}" for target, count in run["routes"].items())
        numbers = [run[key] for key in ("n", "errors", "route_accuracy", "hit@5", "answer_contains")]
        rows.append([label, *numbers, routes, run["example_org_answers"]])
    return rows


def report_markdown(result: Mapping[str, Any]) -> str:
    steps = result["steps_s"]
    step_rows = [[STEP_LABELS[name], seconds, f"{seconds / 60:.1f}"] for name, seconds in steps.items()]
    handbook = result["handbook"]
    own_split = result.get("router_val", {}).get("accuracy")
    counts = result["router_data_counts"]["train"]
    prepare = result["prepare"]
    named = result["example_org_files"]
    paragraphs = [
        "# Your own documents: the Sourcegraph handbook walkthrough",
        "Written by `hybridllm bench own-documents` (benchmarks/system/own_documents.py).",
        environment_markdown(result.get("environment")),
        f"Documents: {result['corpus_files']} files of the Sourcegraph handbook ({handbook}), "
        f"organisation `{ORG}`. The machine's cores were shared with other agents' work during the run "
        "(load average in the environment line), so the times are upper bounds for an idle machine.",
        "## Time of each step",
        markdown_table(["step", "seconds", "minutes"], step_rows),
        f"Router data built by init: {counts['knowledge']} knowledge, {counts['direct']} direct and "
        f"{counts['out_of_scope']} out-of-scope training examples; training recipe: "
        f"{result['router_recipe']} (max steps: {result['router_max_steps'] or 'not capped'}). What the "
        f"preparation did: router {prepare['router']}, index {prepare['index']}. The second serve reused "
        f"the index version and the router: {'yes' if prepare['second_serve_reused_everything'] else 'NO'}. "
        "The converted generator was linked from an earlier `hybridllm prepare`; its one-time conversion "
        "is not in these times.",
        "## The handbook's router against the default router",
        "### Router development set",
        f"{result['router_dev']['data']}: questions about the same handbook, written for this project, "
        "with direct and out-of-scope ones; the router alone. Changes to what init builds are chosen here.",
        markdown_table(["router", *ROUTER_METRICS], dev_rows(result["router_dev"]["routers"]), digits=3),
        "### Held-out questions, end to end",
        f"{result['eval']} (held out: nothing was tuned on it), same index, same generator (the default "
        "embedded one), through `eval e2e`'s functions. hit@5: a gold file among the sources that reached "
        "the prompt; answer contains: the answer contains one of the gold substrings. Route accuracy "
        "counts the router's label (every question here is `knowledge`); `routes` is where each went "
        "(a low-confidence label goes to rag).",
        markdown_table(COMPARISON_HEADERS, comparison_rows(result["runs"]), digits=3),
        "The project's router on its own validation split (init's router data: the packaged examples "
        "and the knowledge questions generated from the headings; also the split that picks its best "
        "step): accuracy "
        f"{fmt(own_split, 3)}.",
        "Project files (config, README, templates, router sources) naming the example company: "
        f"{len(named)}{' (' + ', '.join(named) + ')' if named else ''}.",
    ]
    return "\n\n".join(paragraphs) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handbook", type=Path, default=HANDBOOK, help="the handbook's content/ folder")
    parser.add_argument("--work", type=Path, default=None, help="keep the project here (default: a tmp dir)")
    parser.add_argument("--models", type=Path, default=CONVERTED_MODELS, help="converted generator cache")
    parser.add_argument("--default-router", type=Path, default=DEFAULT_ROUTER)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_ROOT)
    args = parser.parse_args(argv)
    for name, path in (("--handbook", args.handbook), ("--models", args.models)):
        if not path.is_dir():
            parser.error(f"{name} {path} is not a folder")
    if not (args.default_router / "labels.json").is_file():
        parser.error(f"--default-router {args.default_router} holds no trained router (make router)")
    if args.work is not None and args.work.exists():
        parser.error(f"--work {args.work} already exists: pass a new folder")
    configure_logging()
    with tempfile.TemporaryDirectory(prefix="hybridllm-own-documents-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = {"environment": environment(), **run_walkthrough(args.handbook, work, args.models,
                                                                  args.default_router)}  # fmt: skip
    write_json(args.out_dir / f"{REPORT_NAME}.json", result)
    (args.out_dir / f"{REPORT_NAME}.md").write_text(report_markdown(result), encoding="utf-8")
    print(json.dumps({key: result[key] for key in ("steps_s", "runs", "example_org_files")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
