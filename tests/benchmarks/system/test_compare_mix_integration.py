"""`bench compare --mix` through the REAL service with all its prompt/rag plumbing and a tuned adapter.

The generator is the `openai` backend pointed at the fixture upstream (no language model loads; answers are
meaningless), and `tuned` is served as an adapter name the upstream accepts, so the run stays bounded and
checks the bookkeeping: the drawn mix, the tuned row, goodput, the mix sweep, not answer quality.
"""

import json

import pytest

from benchmarks.harness.fixture_upstream import (
    MODEL_NAME,
    FixtureBehaviour,
    gateway_env,
    running_fixture_upstream,
)
from benchmarks.system.compare import bench_compare_main
from services.evaluation.local_server import running_service
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

EVAL = REPO_ROOT / "corpus" / "eval" / "handbook_eval.jsonl"


def test_compare_at_a_mix_lists_tuned_and_reports_goodput(handbook_index, tmp_path, capsys):
    env = {"HYBRID_GENERATOR__ADAPTERS": json.dumps({"tuned": MODEL_NAME})}
    out = tmp_path / "compare"
    args = ["--data", str(EVAL), "--pipelines", "prompt,rag,tuned",
            "--mix", "knowledge=0.5,direct=0.33,out_of_scope=0.17", "--limit", "6", "--seed", "1",
            "--concurrency", "1", "--open-loads", "2", "--max-tokens", "8", "--out", str(out)]  # fmt: skip
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.005, tokens=8)) as upstream:
        env |= gateway_env(upstream, 16)
        with running_service(None, index_dir=handbook_index, extra_env=env, ready_timeout_s=300) as url:
            assert bench_compare_main(["--base-url", url, *args]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line["pipelines"]) == {"prompt", "rag", "tuned"}
    results = json.loads((out / "results.json").read_text())
    assert results["skipped_pipelines"] == []
    assert results["mix"]["drawn"] == pytest.approx(
        {"knowledge": 0.5, "direct": 2 / 6, "out_of_scope": 1 / 6}
    )
    assert results["pipelines"]["tuned"]["quality"]["errors"] == 0
    assert results["pipelines"]["rag"]["quality"]["hit@5"] > 0  # real retrieval
    rows = {(r["pipeline"], r["mode"]): r for r in results["goodput"]}
    assert set(rows) == {(p, m) for p in ("prompt", "rag", "tuned") for m in ("closed", "open")}
    assert all(r["errors"] == 0 and r["goodput_req_per_s"] > 0 for r in rows.values())
    # the run's own mix: computed cost from the per-class pools equals the measured cost of the same requests
    check = results["mix_sweep"]["validation"]["pipelines"]["rag"]
    assert check["computed_cost_per_1k_usd"] == pytest.approx(check["measured_cost_per_1k_usd"], rel=1e-6)
    assert "## Goodput" in (out / "report.md").read_text()
