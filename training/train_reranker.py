"""Train the reranker: all-MiniLM-L6-v2 as a cross-encoder (one relevance logit) on build_rerank_data's data.

Steps: data (queries.jsonl; validation holds the queries of a seeded share of the source files, so it measures
documents the model never saw) -> model (a sentence-transformers CrossEncoder from the packaged MiniLM,
num_labels=1, a new head) -> train with a listwise loss: softmax cross-entropy over each query's positive
and its negatives, so the positive must outscore every negative (LCE, Gao et al., 2021) -> evaluate (val
MRR and top-1 among each query's candidates, before and after) -> save the CrossEncoder folder and
metrics.json atomically (a staged folder renamed into place). `rag.rerank.reranker: <that folder>` serves it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.core.atomic import staged_dir
from services.core.packaged import PACKAGED_MINILM, resolve_encoder
from training.build_grounding_data import heldout_sources
from training.build_rerank_data import MANIFEST_FILE, QUERIES_FILE

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
LOG_EVERY = 10


@dataclass(frozen=True, slots=True)
class RerankerConfig:
    base: str = PACKAGED_MINILM
    epochs: int = 2
    batch_queries: int = 8
    negatives: int = 4  # per query: the hard ones first, then random ones
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_share: float = 0.1
    max_length: int = 192
    val_fraction: float = 0.15
    seed: int = 7
    torch_threads: int = 2

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_queries", "negatives", "max_length", "torch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in ("warmup_share", "val_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class RankingExample:
    """One query and its candidates; the positive is candidates[0]."""

    query: str
    source: str
    candidates: tuple[str, ...]


# --------------------------------------------------------------------------- data


def data_file(data: Path) -> Path:
    """queries.jsonl itself, or the folder build_rerank_data wrote it in."""
    path = data / QUERIES_FILE if data.is_dir() else data
    if not path.is_file():
        raise ValueError(f"no reranker data at {path} (run python -m training.build_rerank_data)")
    return path


def load_examples(path: Path, negatives: int) -> list[RankingExample]:
    """The queries with at least one negative, each with its positive and up to `negatives` negatives."""
    examples = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pool = [*row["hard_negatives"], *row["random_negatives"]][:negatives]
            if pool:
                examples.append(RankingExample(row["query"], row["source"], (row["positive"], *pool)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a reranker data row ({exc})") from exc
    if not examples:
        raise ValueError(f"{path} holds no query with a negative")
    return examples


def split_by_source(
    examples: Sequence[RankingExample], fraction: float, seed: int
) -> tuple[list[RankingExample], list[RankingExample]]:
    """(train, val): the queries of a seeded share of the source files go to validation only."""
    held = heldout_sources([e.source for e in examples], fraction, seed)
    return [e for e in examples if e.source not in held], [e for e in examples if e.source in held]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- model


class CrossEncoderTrainer:
    """A CrossEncoder whose transformer is trained with the listwise loss; saved in CrossEncoder's layout."""

    def __init__(self, config: RerankerConfig) -> None:
        from sentence_transformers import CrossEncoder

        self.config = config
        self.encoder = CrossEncoder(
            resolve_encoder(config.base), num_labels=1, max_length=config.max_length, device="cpu"
        )
        self.model = self.encoder.transformers_model
        self.tokenizer = self.encoder.tokenizer

    def logits(self, examples: Sequence[RankingExample]) -> Any:
        """Relevance logits, one row per example, padded with -inf where it has fewer candidates."""
        import torch

        queries = [e.query for e in examples for _ in e.candidates]
        passages = [c for e in examples for c in e.candidates]
        features = self.tokenizer(
            queries,
            passages,
            padding=True,
            truncation="longest_first",
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        flat = self.model(**features).logits.reshape(-1)
        width = max(len(e.candidates) for e in examples)
        rows = torch.full((len(examples), width), float("-inf"))
        offset = 0
        for row, example in enumerate(examples):
            rows[row, : len(example.candidates)] = flat[offset : offset + len(example.candidates)]
            offset += len(example.candidates)
        return rows

    def loss(self, examples: Sequence[RankingExample]) -> Any:
        import torch

        logits = self.logits(examples)
        return torch.nn.functional.cross_entropy(logits, torch.zeros(len(examples), dtype=torch.long))

    def evaluate(self, examples: Sequence[RankingExample], batch: int = 16) -> dict[str, float]:
        """MRR and top-1 of the positive among each query's candidates, and the mean loss."""
        import torch

        if not examples:
            return {"queries": 0}
        self.model.eval()
        ranks: list[int] = []
        losses: list[float] = []
        with torch.no_grad():
            for start in range(0, len(examples), batch):
                part = examples[start : start + batch]
                logits = self.logits(part)
                losses.append(float(self.loss(part)) * len(part))
                positives = logits[:, :1]
                ranks.extend(int(r) + 1 for r in (logits > positives).sum(dim=1))
        return {
            "queries": len(examples),
            "mrr": round(float(np.mean([1.0 / r for r in ranks])), 4),
            "top1": round(float(np.mean([r == 1 for r in ranks])), 4),
            "loss": round(sum(losses) / len(examples), 4),
        }

    def save(self, folder: Path) -> None:
        self.encoder.save_pretrained(str(folder))


def batches(
    examples: Sequence[RankingExample], size: int, rng: random.Random
) -> Iterator[list[RankingExample]]:
    order = list(range(len(examples)))
    rng.shuffle(order)
    for start in range(0, len(order), size):
        yield [examples[i] for i in order[start : start + size]]


# --------------------------------------------------------------------------- training


def train_reranker(
    data: Path,
    out: Path,
    *,
    config: RerankerConfig | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train on `data` (queries.jsonl or its folder), write the reranker folder `out`; return its metrics."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    config = config or RerankerConfig()
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    path = data_file(Path(data))
    torch.set_num_threads(config.torch_threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    started = time.perf_counter()

    # data
    examples = load_examples(path, config.negatives)
    train, val = split_by_source(examples, config.val_fraction, config.seed)
    if not train:
        raise ValueError(f"every query of {path} fell in validation: lower val_fraction")

    # model
    trainer = CrossEncoderTrainer(config)
    before = trainer.evaluate(val)
    steps_per_epoch = -(-len(train) // config.batch_queries)
    total = (
        steps_per_epoch * config.epochs
        if max_steps is None
        else min(max_steps, steps_per_epoch * config.epochs)
    )
    optimizer = torch.optim.AdamW(
        trainer.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    schedule = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, round(total * config.warmup_share), total
    )

    # train
    rng = random.Random(config.seed)
    history: list[dict[str, float]] = []
    step, running = 0, 0.0
    trainer.model.train()
    while step < total:
        for batch in batches(train, config.batch_queries, rng):
            loss = trainer.loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            running += float(loss.detach())
            if step % LOG_EVERY == 0 or step == total:
                count = LOG_EVERY if step % LOG_EVERY == 0 else step % LOG_EVERY
                history.append({"step": step, "loss": round(running / count, 4)})
                logger.info("reranker step %d/%d loss %.4f (%.0f s)", step, total, running / count,
                            time.perf_counter() - started)  # fmt: skip
                running = 0.0
            if step == total:
                break
    train_seconds = time.perf_counter() - started

    # evaluate + save
    after = trainer.evaluate(val)
    manifest_path = path.parent / MANIFEST_FILE
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    metrics: dict[str, Any] = {
        "base": config.base,
        "config": asdict(config),
        "data": str(path),
        "data_sha256": sha256_file(path),
        "data_index_version": manifest.get("index_version"),
        "data_generator": manifest.get("generator"),
        "train_queries": len(train),
        "val_queries": len(val),
        "val_sources": sorted({e.source for e in val}),
        "steps": step,
        "val_before": before,
        "val": after,
        "train_seconds": round(train_seconds, 1),
        "history": history,
    }
    with staged_dir(Path(out), replace=True) as folder:
        trainer.save(folder)
        (folder / METRICS_FILE).write_text(
            json.dumps(metrics, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
    logger.info("reranker written to %s: val %s (before %s)", out, after, before)
    return metrics


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m training.train_reranker ...`: the arguments and handler of `hybridllm train-reranker`."""
    import argparse

    from services.cli import run
    from training.cli import add_train_reranker_arguments, train_reranker_command

    parser = argparse.ArgumentParser(prog="python -m training.train_reranker", description=__doc__)
    add_train_reranker_arguments(parser)
    run(train_reranker_command, parser.parse_args(argv))


if __name__ == "__main__":
    main()
