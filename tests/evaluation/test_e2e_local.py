"""`hybridllm eval e2e` without --base-url: evaluate_e2e_local ingests, serves, evaluates and stops.

The generator is the `openai` backend on the benchmark fixture upstream (no model loads), so the answers
are meaningless and only routing of requests, retrieval and the lifecycle are checked.
"""

import json
import socket
from pathlib import Path

import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour, gateway_env, running_fixture_upstream
from services.evaluation.local_server import evaluate_e2e_local

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "corpus" / "handbook"
EVAL = REPO / "corpus" / "eval" / "handbook_eval.jsonl"


def test_local_evaluation_starts_and_stops_the_service(tmp_path):
    if not CORPUS.is_dir() or not EVAL.exists():
        pytest.skip(f"needs {CORPUS} and {EVAL}")
    rows = [json.loads(line) for line in EVAL.read_text().splitlines() if line.strip()]
    sample = [r for r in rows if r["route"] == "rag"][:3]
    data = tmp_path / "sample.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in sample))
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.001, tokens=4)) as upstream:
        result = evaluate_e2e_local(
            data, CORPUS, extra_env=gateway_env(upstream, 8), pipeline="rag", max_tokens=4, concurrency=3
        )
    assert result["n"] == 3 and result["errors"] == 0
    assert result["hit@5"] is not None and result["hit@5"] > 0
    # The service was stopped: nothing listens on its port any more.
    port = int(result["base_url"].rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0
