"""Benchmarks and the e2e evaluator through the REAL service (`hybridllm ingest` + `hybridllm serve`).

The service runs its real gateway, privacy gate, retrieval (MiniLM embedder, FAISS, BM25) and metrics; its
generator is the `openai` backend pointed at the benchmark fixture upstream, so no language model loads and
the run stays bounded. Answers are therefore meaningless ("token token ..."): these tests check plumbing
and bookkeeping (routing of requests, retrieval hits, cost agreement, reports), not answer quality.
"""

import json
from typing import Any

import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour, gateway_env, running_fixture_upstream
from benchmarks.system.compare import bench_compare_main
from benchmarks.system.overhead import bench_overhead_main
from services.evaluation.e2e import evaluate_e2e
from services.evaluation.local_server import running_service
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

CORPUS = REPO_ROOT / "corpus" / "handbook"
EVAL = REPO_ROOT / "corpus" / "eval" / "handbook_eval.jsonl"


@pytest.fixture(scope="module")
def service():
    if not CORPUS.is_dir() or not EVAL.exists():
        pytest.skip(f"needs {CORPUS} and {EVAL}")
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.005, tokens=8)) as upstream:
        with running_service(CORPUS, extra_env=gateway_env(upstream, 16), ready_timeout_s=300) as url:
            yield {"upstream": upstream, "gateway": url}


def last_json_line(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    line: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return line


def test_tiny_comparison_through_the_real_service(service, tmp_path, capsys):
    out = tmp_path / "compare"
    argv = ["--base-url", service["gateway"], "--data", str(EVAL), "--limit", "6", "--concurrency", "1,2",
            "--max-tokens", "8", "--out", str(out)]  # fmt: skip
    assert bench_compare_main(argv) == 0
    line = last_json_line(capsys)
    assert {"prompt", "rag"} <= set(line["pipelines"])
    results = json.loads((out / "results.json").read_text())
    rag = results["pipelines"]["rag"]
    assert rag["quality"]["errors"] == 0
    assert rag["quality"]["hit@5"] > 0  # real retrieval finds some gold files
    assert rag["mean_context_tokens"] > 0
    assert rag["index_chunks"] > 0
    # Cost counted per response and counted by /metrics over the same requests must agree.
    cost = rag["cost_per_1k_usd"]
    assert cost["from_responses"] > 0
    assert cost["from_metrics"] == pytest.approx(cost["from_responses"], rel=1e-3)
    stages = {
        s for run in results["runs"] if run["pipeline"] == "rag" for s in run["server"]["stages"]["rag"]
    }
    assert {"embed", "search", "generate"} <= stages
    assert "| deployment target |" in (out / "report.md").read_text()


async def test_e2e_evaluator_through_the_real_service(service):
    result = await evaluate_e2e(EVAL, base_url=service["gateway"], pipeline="rag", limit=4, max_tokens=8)
    assert result["errors"] == 0 and result["n"] == 4
    assert result["hit@5"] > 0
    assert all(item["sources"] for item in result["items"])


def test_overhead_bench_side_by_side(service, tmp_path, capsys):
    argv = ["--gateway-url", service["gateway"], "--upstream-url", service["upstream"], "--rates", "5",
            "--duration", "1", "--tokens", "8", "--out", str(tmp_path)]  # fmt: skip
    assert bench_overhead_main(argv) == 0
    line = last_json_line(capsys)
    added_p50, added_p99 = line["added_ms"]["5"]
    assert added_p50 is not None and added_p99 is not None
    row = json.loads((tmp_path / "results.json").read_text())["rows"][0]
    assert row["direct"]["completed"] > 0 and row["gateway"]["completed"] > 0
    assert row["gateway"]["failed"] == 0
