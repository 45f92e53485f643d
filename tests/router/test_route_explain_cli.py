"""`hybridllm route --explain` on a real router: its decision, scores and real neighbours from its data.

The router is the session fixture (trained on corpus/router/train.jsonl), whose metrics.json records
that file; the neighbours are embedded with the real RAG embedder.
"""

import json
from pathlib import Path

import pytest

from services.cli import main
from services.router.explain import CACHE_FILE

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "corpus" / "router" / "train.jsonl"


def _explain(capsys, model: Path, text: str) -> tuple[str, dict]:
    main(["route", "--model", str(model), "--explain", "--k", "4", text])
    lines = capsys.readouterr().out.strip().splitlines()
    return "\n".join(lines[:-1]), json.loads(lines[-1])


def test_route_explains_a_decision_with_nearest_training_examples(service_router, capsys):
    text = "what is the capital of australia"
    table, result = _explain(capsys, service_router, text)
    explanation = result["explanation"]
    assert explanation["data"] == str(TRAIN.resolve())
    assert explanation["rule"] in {"argmax", "low_confidence", "unmapped_intent", "oos_threshold"}
    assert set(result["scores"]) >= {"direct", "knowledge", "out_of_scope"}
    train_rows = {(r["text"], r["label"]) for r in map(json.loads, TRAIN.read_text().splitlines())}
    nearest = explanation["nearest"]
    assert len(nearest) == 4 and all((n["text"], n["label"]) in train_rows for n in nearest)
    similarities = [n["similarity"] for n in nearest]
    assert similarities == sorted(similarities, reverse=True) and similarities[0] > 0.3
    assert f"-> {result['target']} (rule: {explanation['rule']})" in table
    assert nearest[0]["text"] in table

    # The second call reads the cached training-data vectors and does not rewrite them.
    cache = service_router / CACHE_FILE
    written = cache.stat().st_mtime_ns
    _, again = _explain(capsys, service_router, text)
    assert again["explanation"]["nearest"] == nearest and cache.stat().st_mtime_ns == written


def test_route_without_recorded_data_asks_for_data(service_router, tmp_path, capsys):
    import shutil

    copy = tmp_path / "router"
    shutil.copytree(service_router, copy, ignore=shutil.ignore_patterns("*.onnx", CACHE_FILE))
    shutil.copy(service_router / "model.onnx", copy / "model.onnx")
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics.pop("train_data")
    (copy / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(SystemExit):
        main(["route", "--model", str(copy), "--explain", "hello"])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pass --data FILE" in err
