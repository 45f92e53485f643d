"""`hybridllm eval e2e --config` on a project: the service starts from that config and serves its index.

A tiny corpus is ingested into the project's rag.index_dir; the generator is the `openai` backend on the
fixture upstream (fast, meaningless answers), so routing, retrieval (hit@5) and the lifecycle are checked.
"""

import json
from pathlib import Path

import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour, gateway_env, running_fixture_upstream
from services.cli import main
from services.core.settings import load_settings
from services.rag.ingest import ingest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROUTER = REPO / "var" / "router"
DOCS = {
    "greenhouse/watering.md": "# Watering\n\nTomato seedlings in the greenhouse are watered at 06:30 every "
    "morning by the irrigation timer. Check the drip lines every Friday.\n",
    "greenhouse/pests.md": "# Pest control\n\nAphids on the cucumbers are treated with ladybird larvae, "
    "released on Mondays. Never spray pesticides in the greenhouse.\n",
    "shop/opening-hours.md": "# Opening hours\n\nThe farm shop opens Tuesday to Sunday, 9:00 to 17:00, "
    "and is closed on Mondays.\n",
}
ROWS = [
    {"id": "w", "route": "rag", "question": "when are the tomato seedlings watered?",
     "gold_files": ["greenhouse/watering.md"], "answer_substrings": ["06:30"]},
    {"id": "s", "route": "rag", "question": "what days is the farm shop open?",
     "gold_files": ["shop/opening-hours.md"], "answer_substrings": ["Tuesday"]},
    {"id": "d", "route": "direct", "question": "write a haiku about autumn", "gold_files": [],
     "answer_substrings": []},
]  # fmt: skip


def test_eval_e2e_with_a_project_config_serves_the_project_index(tmp_path, monkeypatch, capsys):
    if not (ROUTER / "model.onnx").is_file():
        pytest.skip(f"needs the trained router at {ROUTER} (make router)")
    corpus = tmp_path / "docs"
    for name, text in DOCS.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(text)
    index_dir = tmp_path / "project" / "var" / "index"
    ingest([corpus], load_settings(rag={"index_dir": str(index_dir)}).rag, progress=False)
    config = tmp_path / "project" / "config.yaml"
    # min_confidence 1 sends every question to rag (the low-confidence target), so each one retrieves.
    config.write_text(
        f"rag:\n  index_dir: {index_dir}\nrouter:\n  model_dir: {ROUTER}\n  min_confidence: 1.0\n"
    )
    data = tmp_path / "project" / "eval" / "questions.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    items = tmp_path / "items.jsonl"

    with running_fixture_upstream(FixtureBehaviour(delay_s=0.001, tokens=4)) as upstream:
        for key, value in gateway_env(upstream, 8).items():
            monkeypatch.setenv(key, value)
        main(["eval", "e2e", "--config", str(config), "--data", str(data), "--out", str(items)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    assert result["n"] == 3 and result["errors"] == 0 and result["pipeline"] == "hybrid"
    assert result["route_accuracy"] is not None and result["answer_contains"] is not None
    records = {r["item_id"]: r for r in map(json.loads, items.read_text().splitlines())}
    assert all(r["ok"] and r["target"] == "rag" for r in records.values())
    assert records["w"]["sources"] and records["s"]["sources"]
    # Every source that reached a prompt is a file of the project's corpus: the config's index was served.
    assert {s for r in records.values() for s in r["sources"]} <= set(DOCS)
    assert result["hit@5"] == 1.0 and result["per_route"]["rag"]["n"] == 2
