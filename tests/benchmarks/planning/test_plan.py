"""The capacity planner against hand computations on a small results file, its bad inputs, and a run on
the committed comparison results."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cli import register_plan
from benchmarks.planning.capacity import erlang_c, servers_for, wait_p95_s
from benchmarks.planning.costs import PlanInputError, extract_stage_costs
from benchmarks.planning.main import main
from services import cli

pytestmark = pytest.mark.unit

COMMITTED_RESULTS = Path("benchmarks/results/compare/results.json")


def _run(pipeline: str, stages: dict[str, float], prompt_tokens: float, tpot_ms: float) -> dict[str, Any]:
    """A closed-loop concurrency-1 run of 10 requests, 110 output tokens in all."""
    return {
        "pipeline": pipeline, "mode": "closed", "concurrency": 1,
        "summary": {"completed": 10, "tpot_ms": {"mean": tpot_ms}},
        "server": {
            "stages": {pipeline: {name: {"seconds": s, "count": 10.0} for name, s in stages.items()}},
            "tokens_by_pipeline": {pipeline: {"prompt": prompt_tokens, "completion": 110.0}},
        },
    }  # fmt: skip


def _items(pipeline: str, targets: dict[str, str]) -> list[dict[str, Any]]:
    return [{"route": route, "target": target} for route, target in targets.items() for _ in range(2)]


@pytest.fixture
def results_file(tmp_path: Path) -> Path:
    # prompt: generate 10 s; decode 100 steps x 40 ms = 4 s, so prefill 6 s / 1000 tokens = 6 ms per token.
    # rag: embed 1 s; generate 19 s = decode 4 s + prefill 15 s / 3000 tokens (5 ms per token).
    results = {
        "machine": "2 cores",
        "skipped_pipelines": ["tuned"],
        "pipelines": {
            p: {"latency": {"1": {"mean": 1000.0, "p95": 1000.0}}} for p in ("prompt", "rag", "hybrid")
        },
        "runs": [
            _run("prompt", {"generate": 10.0}, 1000.0, 40.0),
            _run("rag", {"embed": 1.0, "generate": 19.0}, 3000.0, 40.0),
            _run("hybrid", {"route": 0.5, "embed": 1.0, "generate": 19.0}, 3000.0, 40.0),
        ],
        "items": {"hybrid": _items("hybrid", {"rag": "rag", "direct": "prompt", "out_of_scope": "refuse"})},
    }
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


@pytest.fixture
def prices_file(tmp_path: Path) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text("prices:\n  cpu_core_hour_usd: 0.05\n  self_hosted_hour_usd: {local: 0.1}\n")
    return path


def _plan(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict[str, Any]:
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("# Capacity plan")
    return dict(json.loads(out[-1]))


def _rows(plan: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(row["architecture"], row["hardware"]): row for row in plan["plans"]}


def _base(results_file: Path, prices_file: Path, tmp_path: Path) -> list[str]:
    return ["--results", str(results_file), "--prices", str(prices_file), "--slo-p95", "5s", "--rps", "10",
            "--serving", str(tmp_path / "none.json"), "--index", str(tmp_path / "no-index")]  # fmt: skip


def test_extraction_derives_per_token_costs_from_stage_time_and_tpot(results_file: Path) -> None:
    costs = extract_stage_costs(json.loads(results_file.read_text()), "rag")
    assert costs.prefill_ms_per_token == pytest.approx(5.0)
    assert costs.decode_ms_per_token == pytest.approx(40.0)
    assert costs.gateway_ms["embed"] == pytest.approx(100.0)
    assert costs.generation_ms == pytest.approx(1900.0)  # 300 tokens x 5 ms + 10 steps x 40 ms
    assert costs.cpu_fallback_share is None and costs.sources["cpu fallback"] == "not measured"


def test_missing_field_is_named(results_file: Path) -> None:
    results = json.loads(results_file.read_text())
    del results["runs"][1]["summary"]["tpot_ms"]
    with pytest.raises(PlanInputError, match=r"^results: missing field runs\[1\]\.summary\.tpot_ms\.mean$"):
        extract_stage_costs(results, "rag")


def test_erlang_c_and_the_server_count_against_hand_computations() -> None:
    # One server at 0.5 Erlang waits with probability 0.5; two: B(2) = 1/13, C = (2/13) / (2 - 0.5 * 12/13).
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    assert erlang_c(2, 0.5) == pytest.approx(0.1)
    assert erlang_c(3, 3.0) == 1.0  # saturated
    # p95 wait = service x ln(C / 0.05) / (c - a): 2 ln 10 = 4.6 s on one server, ln 2 / 1.5 on two.
    assert wait_p95_s(1, 0.5, 1.0) == pytest.approx(2 * math.log(10))
    assert wait_p95_s(2, 0.5, 1.0) == pytest.approx(math.log(2) / 1.5)
    # The utilisation cap alone allows one server; a 4 s wait budget needs two.
    assert servers_for(0.5, 1.0, wait_budget_s=4.0, max_utilisation=0.8) == 2
    assert servers_for(0.5, 1.0, wait_budget_s=5.0, max_utilisation=0.8) == 1


def test_cpu_plan_matches_a_hand_computation(
    results_file: Path, prices_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = _plan(capsys, _base(results_file, prices_file, tmp_path) + ["--mix", "knowledge=0.5,direct=0.5"])
    rows = _rows(plan)
    # prompt: 1.0 s a request (600 prefill + 400 decode) = 10 Erlangs at 10 req/s; the 0.8 cap needs
    # 13 machines, where the p95 wait (0.58 s) fits the 5 - 1 s budget. Gateway: nothing to do, 1 machine.
    prompt = rows[("prompt", "cpu")]
    assert prompt["utilisation"] == pytest.approx(10 / 13) and prompt["slo_met"] is True
    assert prompt["generator_cores"] == pytest.approx(26.0)  # 1.0 s x 2 cores x 10 req/s / (10 / 13)
    assert (prompt["gateway_replicas"], prompt["generator_replicas"]) == (1, 13)
    assert prompt["usd_per_month"] == pytest.approx((1 * 2 * 0.05 + 13 * 0.1) * 730)
    assert prompt["binding_stage"] == "prefill" and prompt["index_bytes_per_replica"] == 0
    # rag: 100 ms embed + 1.9 s generation. Gateway: 0.1 s x 2 cores x 10 / 0.8 = 2.5 cores = 2 machines;
    # generator: 19 Erlangs / 0.8 = 24 machines (p95 wait 0.53 s within 5 - 2 s).
    rag = rows[("rag", "cpu")]
    assert rag["gateway_cores"] == pytest.approx(2.5)
    assert (rag["gateway_replicas"], rag["generator_replicas"]) == (2, 24)
    assert rag["utilisation"] == pytest.approx(19 / 24)
    assert rag["usd_per_month"] == pytest.approx((2 * 2 * 0.05 + 24 * 0.1) * 730)
    # hybrid at half knowledge, half direct: route 50 + embed 50 + prefill (750 + 300) + decode 400 = 1.55 s.
    hybrid = rows[("hybrid", "cpu")]
    assert hybrid["stage_ms"] == pytest.approx(
        {"route": 50.0, "embed": 50.0, "search": 0.0, "privacy": 0.0, "prefill": 1050.0, "decode": 400.0}
    )
    # 14.5 Erlangs of generation / 0.8 = 19 machines; gateway 0.1 s x 2 x 10 / 0.8 = 2.5 cores = 2 machines.
    assert (hybrid["gateway_replicas"], hybrid["generator_replicas"]) == (2, 19)
    assert hybrid["usd_per_month"] == pytest.approx((2 * 2 * 0.05 + 19 * 0.1) * 730)
    assert plan["skipped"]["tuned"].startswith("not run in the results (listed in skipped_pipelines)")


def test_hybrid_follows_the_measured_routing(results_file: Path) -> None:
    from benchmarks.planning.capacity import demand_of

    results = json.loads(results_file.read_text())
    results["items"]["hybrid"][2]["target"] = "rag"  # one of the two direct items went to retrieval
    costs = {p: extract_stage_costs(results, p) for p in ("prompt", "rag", "hybrid")}
    demand = demand_of(costs["hybrid"], 1.0, routed_to={"rag": costs["rag"], "prompt": costs["prompt"]},
                       mix={"knowledge": 0.0, "direct": 1.0, "out_of_scope": 0.0})  # fmt: skip
    assert demand.stage_ms["embed"] == pytest.approx(50.0)  # half the direct traffic pays retrieval
    assert demand.stage_ms["prefill"] == pytest.approx(0.5 * 1500 + 0.5 * 600)


def test_an_slo_below_the_unloaded_p95_is_reported_unmet(
    results_file: Path, prices_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _base(results_file, prices_file, tmp_path) + ["--slo-p95", "1500ms"]
    rag = _rows(_plan(capsys, argv))[("rag", "cpu")]
    assert rag["slo_met"] is False  # 2 s unloaded: sized for throughput at the cap only
    assert rag["generator_replicas"] == 24 and rag["utilisation"] == pytest.approx(19 / 24)


def test_gpu_profile_plans_the_generator_on_gpus(
    results_file: Path, prices_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "gpus.yaml"
    profile.write_text("gpus:\n  g:\n    prefill_tok_s: 10000\n    decode_tok_s: 1000\n    batch_size: 10\n"
                       "    max_concurrent_seqs: 10\n    usd_per_hour: 1.0\n")  # fmt: skip
    argv = _base(results_file, prices_file, tmp_path) + ["--rps", "100", "--gpu-profile", str(profile)]
    row = _rows(_plan(capsys, argv))[("prompt", "g")]
    # 100 prompt tokens / 10000 tok/s = 10 ms; 11 output tokens at 1000 / 10 = 100 tok/s each = 110 ms.
    assert row["stage_ms"]["prefill"] == pytest.approx(10.0)
    assert row["stage_ms"]["decode"] == pytest.approx(110.0)
    # GPU-seconds a request: 0.01 + 11 / 1000 = 0.021; 2.1 Erlangs / 0.8 = 3 GPUs (p95 wait 0.05 s); 12
    # sequences in flight (100 req/s x 0.12 s) need only 2 GPUs of 10.
    assert row["generator_replicas"] == 3 and row["binding_stage"] == "decode"
    assert row["usd_per_month"] == pytest.approx((1 * 2 * 0.05 + 3 * 1.0) * 730)


def test_index_memory_counts_vectors_once_plus_bm25_and_text(
    results_file: Path, prices_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "index"
    (index / "versions" / "v1").mkdir(parents=True)
    (index / "CURRENT").write_text("v1")
    sizes = {"chunks.jsonl": 100, "vectors.faiss": 999, "embeddings.npy": 999, "bm25/a": 60}
    manifest = {"chunks": 10, "dimensions": 4, "file_sizes": sizes}
    (index / "versions" / "v1" / "manifest.json").write_text(json.dumps(manifest))
    argv = _base(results_file, prices_file, tmp_path) + ["--index", str(index)]
    rows = _rows(_plan(capsys, argv))
    assert rows[("rag", "cpu")]["index_bytes_per_replica"] == 10 * 4 * 4 + 100 + 60
    assert rows[("prompt", "cpu")]["index_bytes_per_replica"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--mix", "knowledge=0.5,direct=0.3"], "--mix: mix shares must sum to 1, got 0.8"),
        (["--mix", "knowledge=0.5,chitchat=0.5"], "--mix: mix class must be one of knowledge, direct"),
        (["--rps", "-1"], "--rps must be > 0, got -1"),
        (["--slo-p95", "fast"], "--slo-p95: expected a positive duration like 2s or 1500ms, got 'fast'"),
        (["--results", "no/such/results.json"], "--results: file not found: no/such/results.json"),
        (["--results", "EMPTY"], "results: missing field runs"),
        (["--gpu-profile", "PROFILE"], "--gpu-profile: gpus.g is missing field max_concurrent_seqs"),
    ],
)
def test_bad_input_is_one_line_naming_the_value(
    change: list[str], message: str, results_file: Path, prices_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    profile = tmp_path / "gpus.yaml"
    profile.write_text("gpus:\n  g: {prefill_tok_s: 1, decode_tok_s: 1, batch_size: 1, usd_per_hour: null}\n")
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    change = [{"PROFILE": str(profile), "EMPTY": str(empty)}.get(arg, arg) for arg in change]
    argv = _base(results_file, prices_file, tmp_path) + change
    assert main(argv) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and json.loads(out[0])["error"].startswith(message)


def test_committed_results_plan_every_architecture_or_say_why(capsys: pytest.CaptureFixture[str]) -> None:
    plan = _plan(capsys, ["--rps", "50", "--slo-p95", "2s", "--measured-cores", "2",
                          "--gpu-profile", "benchmarks/planning/gpu_profiles/example.yaml"])  # fmt: skip
    planned = {row["architecture"] for row in plan["plans"]}
    assert planned | set(plan["skipped"]) == {"prompt", "rag", "tuned", "hybrid"}
    assert not planned & set(plan["skipped"]) and all(plan["skipped"].values())
    for row in plan["plans"]:
        assert row["p95_unloaded_ms"] > 0 and row["generator_replicas"] >= 1 and row["gateway_replicas"] >= 1
        assert row["usd_per_month"] is None or row["usd_per_month"] > 0
        assert row["binding_stage"] in row["stage_ms"]
        assert 0 <= row["knowledge_answer_contains"] <= 1
    assert {row["hardware"] for row in plan["plans"]} == {"cpu", "l4-qwen2.5-0.5b-c8", "l4-qwen2.5-0.5b-c32"}


def test_the_plan_command_prints_json_on_its_last_line(
    results_file: Path, prices_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setattr(cli, "plugin_commands", lambda: [])
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    register_plan(subparsers)  # as the `plan` entry point does
    args = parser.parse_args(["plan", *_base(results_file, prices_file, tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        args.handler(args)
    assert exit_info.value.code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {row["architecture"] for row in last["plans"]} == {"prompt", "rag", "hybrid"}


def test_measured_cores_come_from_the_environment_record() -> None:
    from benchmarks.planning.inputs import measured_cores_of

    assert measured_cores_of({"environment": {"cpu": {"usable_cores": 4}}, "machine": "2 cores"}) == 4
    assert measured_cores_of({"machine": "2 cores"}) == 2
    assert measured_cores_of({}) is None
