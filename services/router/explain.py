"""Why the router decided what it did: label scores, the rule that applied, and the nearest training examples.

The router's ONNX model outputs logits only, so the nearest examples are found with an `Embedder` (the
caller passes the RAG embedder, the same MiniLM base the router was tuned from, without the router's
fine-tuning). Training-data vectors are cached beside the router, keyed by the data file's hash and the
embedder, so a second explanation embeds one question only.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.artifact_cache import file_sha256
from services.core.atomic import atomic_writer
from services.core.errors import ConfigError
from services.core.protocols import Embedder
from services.core.types import RouteDecision
from services.router.artifacts import METRICS_FILE, TRAIN_DATA_KEY
from services.router.build import Router
from services.router.examples import Example, is_clinc_file, load_clinc, load_examples
from services.router.policy import RoutingRule

logger = logging.getLogger(__name__)

CACHE_FILE = "explain_cache.npz"


@dataclass(frozen=True, slots=True)
class NearestExample:
    text: str
    label: str
    similarity: float


@dataclass(frozen=True, slots=True)
class RouteExplanation:
    decision: RouteDecision
    rule: RoutingRule
    min_confidence: float
    oos_threshold: float | None
    temperature: float
    low_confidence_target: str
    nearest: tuple[NearestExample, ...]
    encoder: str
    data: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "min_confidence": self.min_confidence,
            "oos_threshold": self.oos_threshold,
            "temperature": round(self.temperature, 4),
            "low_confidence_target": self.low_confidence_target,
            "encoder": self.encoder,
            "data": self.data,
            "nearest": [
                {"text": n.text, "label": n.label, "similarity": round(n.similarity, 4)} for n in self.nearest
            ],
        }


def recorded_training_data(model_dir: Path) -> Path | None:
    """The training data file that training recorded in the router's metrics.json; None if not recorded."""
    try:
        metrics = json.loads((model_dir / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    recorded = metrics.get(TRAIN_DATA_KEY) if isinstance(metrics, dict) else None
    return Path(recorded) if isinstance(recorded, str) and recorded else None


def training_examples(data: Path) -> list[Example]:
    """The examples the router learned from: a flat JSONL/CSV file, or CLINC150's train split."""
    return load_clinc(data).train if is_clinc_file(data) else load_examples(data)


class TrainingDataVectors:
    """Unit vectors of every training example, cached in `cache_dir` (beside the router)."""

    def __init__(self, data: Path, embedder: Embedder, cache_dir: Path) -> None:
        if not data.is_file():
            raise ConfigError(f"router training data not found: {data}; pass --data FILE")
        self._data = data
        self._embedder = embedder
        self._cache_file = cache_dir / CACHE_FILE
        self.examples = training_examples(data)
        if not self.examples:
            raise ConfigError(f"router training data {data} holds no examples")
        self.vectors, self.from_cache = self._load_or_embed()

    @property
    def data(self) -> Path:
        return self._data

    @property
    def encoder_id(self) -> str:
        return self._embedder.model_id

    def _cache_key(self) -> str:
        return f"{file_sha256(self._data)}:{self._embedder.model_id}"

    def _load_or_embed(self) -> tuple[npt.NDArray[np.float32], bool]:
        key = self._cache_key()
        try:
            with np.load(self._cache_file, allow_pickle=False) as cached:
                if str(cached["key"]) == key and cached["vectors"].shape[0] == len(self.examples):
                    return np.asarray(cached["vectors"], dtype=np.float32), True
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            pass  # no cache yet, or an unreadable one: embed again
        vectors = np.asarray(self._embedder.embed_documents([t for t, _ in self.examples]), dtype=np.float32)
        try:
            with atomic_writer(self._cache_file, "wb") as stream:
                np.savez(stream, key=np.array(key), vectors=vectors)
        except OSError as exc:  # a read-only router folder still explains, only more slowly
            logger.warning("cannot cache training-data vectors at %s: %s", self._cache_file, exc)
        return vectors, False

    def nearest(self, text: str, k: int) -> list[NearestExample]:
        """The `k` most similar examples (cosine), most similar first; ties keep the data file's order."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        similarities = self.vectors @ np.asarray(self._embedder.embed_query(text), dtype=np.float32)
        order = np.argsort(-similarities, kind="stable")[:k]
        return [
            NearestExample(text=example, label=label, similarity=float(similarities[i]))
            for i in order
            for example, label in [self.examples[i]]
        ]


def explain_route(router: Router, text: str, vectors: TrainingDataVectors, *, k: int = 5) -> RouteExplanation:
    """The decision for `text`, the rule that made it and the `k` nearest training examples."""
    prediction = router.classifier.predict(text)
    policy = router.policy
    return RouteExplanation(
        decision=policy.decide(prediction),
        rule=policy.rule_for(prediction),
        min_confidence=policy.min_confidence,
        oos_threshold=policy.threshold,
        temperature=router.classifier.temperature,
        low_confidence_target=policy.low_confidence_target,
        nearest=tuple(vectors.nearest(text, k)),
        encoder=f"{vectors.encoder_id} (the RAG embedder: the router's ONNX model exposes no features)",
        data=str(vectors.data),
    )


def explanation_table(explanation: RouteExplanation) -> str:
    """A short human-readable summary; the JSON line after it carries the same facts."""
    decision = explanation.decision
    lines = [f"route: {decision.intent} -> {decision.target} (rule: {explanation.rule})"]
    threshold = explanation.oos_threshold
    oos = f", oos threshold {threshold:.3f}" if threshold is not None else ""
    lines.append(
        f"min_confidence {explanation.min_confidence:.2f}{oos}, low confidence -> "
        f"{explanation.low_confidence_target}, temperature {explanation.temperature:.3f}"
    )
    for label, score in sorted(decision.scores.items(), key=lambda item: -item[1]):
        lines.append(f"  {score:6.3f}  {label}")
    lines.append(f"nearest training examples ({explanation.encoder}):")
    for near in explanation.nearest:
        lines.append(f"  {near.similarity:6.3f}  {near.label:<14} {near.text}")
    return "\n".join(lines)
