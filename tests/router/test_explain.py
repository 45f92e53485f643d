"""`hybridllm route --explain`: the rule that decided, and the nearest training examples with their cache."""

import json

import numpy as np
import pytest

from services.core.errors import ConfigError
from services.core.settings import RouterSettings
from services.core.types import IntentPrediction
from services.router.build import Router
from services.router.explain import (
    CACHE_FILE,
    TrainingDataVectors,
    explain_route,
    explanation_table,
    recorded_training_data,
)
from services.router.policy import RoutingPolicy
from tests.rag.conftest import HashingEmbedder

pytestmark = pytest.mark.unit

ROWS = [
    ("how many vacation days do I get", "knowledge"),
    ("what is the parental leave policy", "knowledge"),
    ("write me a poem about cats", "direct"),
    ("what is the weather in paris", "out_of_scope"),
    ("vacation days carry over to next year", "knowledge"),
]


def _data(path, rows=ROWS):
    path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in rows))
    return path


def test_nearest_examples_are_ordered_by_cosine_similarity(tmp_path):
    vectors = TrainingDataVectors(_data(tmp_path / "train.jsonl"), HashingEmbedder(), tmp_path)
    nearest = vectors.nearest("how many vacation days", k=3)
    assert nearest[0].text == "how many vacation days do I get"
    assert nearest[1].text == "vacation days carry over to next year"
    similarities = [n.similarity for n in nearest]
    assert similarities == sorted(similarities, reverse=True) and len(nearest) == 3
    assert nearest[0].label == "knowledge" and 0 < nearest[0].similarity <= 1.0 + 1e-6


def test_a_second_explanation_reuses_the_cached_vectors(tmp_path):
    data = _data(tmp_path / "train.jsonl")
    first = TrainingDataVectors(data, HashingEmbedder(), tmp_path)
    assert not first.from_cache and (tmp_path / CACHE_FILE).is_file()
    counting = HashingEmbedder()
    second = TrainingDataVectors(data, counting, tmp_path)
    assert second.from_cache and counting.embedded_texts == 0
    np.testing.assert_array_equal(first.vectors, second.vectors)


def test_the_cache_is_rebuilt_when_the_data_or_the_embedder_changes(tmp_path):
    data = _data(tmp_path / "train.jsonl")
    TrainingDataVectors(data, HashingEmbedder(), tmp_path)
    _data(data, [*ROWS, ("reset my laptop password", "knowledge")])
    changed = TrainingDataVectors(data, HashingEmbedder(), tmp_path)
    assert not changed.from_cache and changed.vectors.shape[0] == len(ROWS) + 1
    assert changed.nearest("laptop password", k=1)[0].text == "reset my laptop password"
    other_model = TrainingDataVectors(data, HashingEmbedder(dimensions=64, model_id="other"), tmp_path)
    assert not other_model.from_cache and other_model.vectors.shape[1] == 64


def test_a_corrupt_cache_is_replaced(tmp_path):
    data = _data(tmp_path / "train.jsonl")
    (tmp_path / CACHE_FILE).write_bytes(b"not a zip file")
    assert not TrainingDataVectors(data, HashingEmbedder(), tmp_path).from_cache
    assert TrainingDataVectors(data, HashingEmbedder(), tmp_path).from_cache


def test_missing_training_data_names_the_option(tmp_path):
    with pytest.raises(ConfigError, match="pass --data FILE"):
        TrainingDataVectors(tmp_path / "absent.jsonl", HashingEmbedder(), tmp_path)


def test_recorded_training_data_reads_metrics_json(tmp_path):
    assert recorded_training_data(tmp_path) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"accuracy": 1.0}))
    assert recorded_training_data(tmp_path) is None
    (tmp_path / "metrics.json").write_text(json.dumps({"train_data": "/data/train.jsonl"}))
    assert str(recorded_training_data(tmp_path)) == "/data/train.jsonl"


@pytest.mark.parametrize(
    ("intent", "confidence", "threshold", "rule", "target"),
    [
        ("knowledge", 0.9, None, "argmax", "rag"),
        ("direct", 0.4, None, "low_confidence", "rag"),
        ("billing", 0.9, None, "unmapped_intent", "rag"),
        ("direct", 0.3, 0.5, "oos_threshold", "refuse"),
        ("direct", 0.8, 0.5, "argmax", "prompt"),
    ],
)
def test_the_rule_reported_is_the_one_that_decided(intent, confidence, threshold, rule, target):
    policy = RoutingPolicy(RouterSettings(), threshold=threshold)
    prediction = IntentPrediction(intent=intent, confidence=confidence, scores={intent: confidence})
    assert policy.rule_for(prediction) == rule
    assert policy.decide(prediction).target == target


class UnsureClassifier:
    """A fake classifier: 'direct' at 0.40 for every text."""

    temperature = 1.7

    def predict(self, text):
        scores = {"direct": 0.40, "knowledge": 0.35, "out_of_scope": 0.25}
        return IntentPrediction(intent="direct", confidence=0.40, scores=scores)


def test_explain_route_reports_scores_rule_and_neighbours(tmp_path):
    router = Router(classifier=UnsureClassifier(), policy=RoutingPolicy(RouterSettings()))
    vectors = TrainingDataVectors(_data(tmp_path / "train.jsonl"), HashingEmbedder(), tmp_path)
    explanation = explain_route(router, "write a poem about my cat", vectors, k=2)
    assert explanation.decision.target == "rag" and explanation.rule == "low_confidence"
    facts = explanation.as_dict()
    assert facts["min_confidence"] == 0.55 and facts["low_confidence_target"] == "rag"
    assert facts["temperature"] == 1.7 and facts["oos_threshold"] is None
    assert facts["nearest"][0] == {
        "text": "write me a poem about cats",
        "label": "direct",
        "similarity": facts["nearest"][0]["similarity"],
    }
    assert "fake-hashing-128" in facts["encoder"] and facts["data"].endswith("train.jsonl")
    table = explanation_table(explanation)
    assert "direct -> rag (rule: low_confidence)" in table and "write me a poem about cats" in table
