"""The evaluator with the real `openai` client against a fake of the HTTP contract on 127.0.0.1."""

import json

import pytest

from services.evaluation.e2e import evaluate_e2e
from tests.evaluation.e2e_fake_service import SAMPLE_ROWS, serve_fake

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def fake_url():
    with serve_fake(SAMPLE_ROWS) as url:
        yield url


@pytest.fixture
def eval_file(tmp_path):
    path = tmp_path / "e2e.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in SAMPLE_ROWS))
    return path


async def test_hybrid_pipeline_scores_route_retrieval_answers_and_refusals(fake_url, eval_file, tmp_path):
    out = tmp_path / "items.jsonl"
    result = await evaluate_e2e(eval_file, base_url=fake_url, pipeline="hybrid", concurrency=3, out=out)
    assert result["n"] == 6 and result["errors"] == 0
    assert result["route_accuracy"] == 1.0
    assert result["hit@5"] == 1.0
    assert result["answer_contains"] == 1.0
    assert result["refusal_accuracy"] == 1.0
    assert result["per_route"]["out_of_scope"]["n"] == 1
    assert result["p50_ms"] > 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert {row["item_id"] for row in written} == {row["id"] for row in SAMPLE_ROWS}


async def test_prompt_pipeline_has_no_route_and_misses_knowledge(fake_url, eval_file):
    result = await evaluate_e2e(eval_file, base_url=fake_url + "/v1", pipeline="prompt")
    assert result["route_accuracy"] is None
    assert result["hit@5"] == 0.0
    assert result["answer_contains"] == pytest.approx(2 / 5)
    assert result["per_route"]["rag"]["answer_contains"] == 0.0
    assert result["refusal_accuracy"] == 0.0


async def test_unknown_pipeline_counts_as_errors_not_as_a_crash(fake_url, eval_file):
    result = await evaluate_e2e(eval_file, base_url=fake_url, pipeline="tuned", limit=2)
    assert result["errors"] == 2
    assert result["answer_contains"] == 0.0
