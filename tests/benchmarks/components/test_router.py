"""The router benchmark's plumbing with a keyword classifier in place of the model: configurations side by
side, interleaved rounds, ratios, and the three report files. The real model runs in the router's
integration tests and in the benchmark itself."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

import benchmarks.components.router as bench
from services.core.types import IntentPrediction

pytestmark = pytest.mark.unit

LABELS = ("direct", "knowledge", "out_of_scope")


class KeywordRouter:
    """Routes on keywords; `delay_s` per text makes the 'slow' model measurably slower."""

    built: list[tuple[Path, int, str, bool]] = []

    def __init__(self, model_dir: Path, *, threads: int, engine: str, quantized: bool) -> None:
        self.delay_s = 0.0002 if model_dir.name == "slow" else 0.0
        self.labels = LABELS
        self.oos_label = "out_of_scope"
        self.oos_threshold = None
        self.engine = engine
        KeywordRouter.built.append((model_dir, threads, engine, quantized))

    def warm_up(self) -> None:
        pass

    def predict(self, text: str) -> IntentPrediction:
        return self.predict_batch([text])[0]

    def predict_batch(self, texts: Sequence[str]) -> list[IntentPrediction]:
        time.sleep(self.delay_s * len(texts))
        out = []
        for text in texts:
            intent = "knowledge" if "policy" in text else "out_of_scope" if "diagnose" in text else "direct"
            out.append(IntentPrediction(intent=intent, confidence=0.9, scores={intent: 0.9}))
        return out


def test_models_are_compared_side_by_side_with_ratios_and_a_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "test.jsonl"
    rows = [("what is the travel policy", "knowledge"), ("diagnose my rash", "out_of_scope")]
    rows += [("rewrite this sentence", "direct"), ("what is the leave policy", "direct")]  # one miss
    data.write_text("".join(json.dumps({"text": t, "label": g}) + "\n" for t, g in rows))
    monkeypatch.setattr(bench, "IntentRouterModel", KeywordRouter)
    monkeypatch.setattr(bench, "measure_latency", _fast_latency(bench.measure_latency))
    out = tmp_path / "results"
    code = bench.main(
        ["--model", "fast=" + str(tmp_path / "fast"), "--model", str(tmp_path / "slow"), "--data", str(data)]
        + ["--threads", "1", "2", "--variants", "onnx_fp32", "onnx_int8", "--batch-sizes", "4", "8"]
        + ["--rounds", "2", "--name", "r", "--out", str(out)]
    )
    assert code == 0
    result = json.loads((out / "r.json").read_text())
    labels = [(r["model"], r["variant"], r["threads"]) for r in result["rows"]]
    assert labels == [
        (model, variant, threads)
        for threads in (1, 2)
        for model in ("fast", "slow")
        for variant in ("onnx_fp32", "onnx_int8")
    ]
    assert (tmp_path / "slow", 2, "onnx", True) in KeywordRouter.built
    by_label = {(r["model"], r["variant"], r["threads"]): r for r in result["rows"]}
    first, slow = by_label[("fast", "onnx_fp32", 1)], by_label[("slow", "onnx_int8", 1)]
    assert first["p50_speedup_vs_first"] == pytest.approx(1.0)
    assert slow["qps_ratio_vs_first"] < 0.5  # 0.2 ms per text against none
    assert first["test"]["accuracy"] == pytest.approx(0.75)
    assert first["test"]["oos_recall"] == pytest.approx(1.0)
    for stat in (first["p50_ms"], first["batch_qps"]["8"]):
        assert stat["min"] <= stat["median"] <= stat["max"]
    report = (out / "r.md").read_text()
    assert "| slow | onnx_int8 | 2 |" in report and "![router latency and throughput](r.png)" in report
    assert (out / "r.png").stat().st_size > 0


def _fast_latency(measure):  # type: ignore[no-untyped-def]
    def few_queries(model, texts, *, batch_sizes):  # type: ignore[no-untyped-def]
        return measure(model, texts, queries=5, batch_sizes=batch_sizes)

    return few_queries


def test_a_malformed_model_argument_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--model", "=nowhere", "--data", str(tmp_path / "x.jsonl")]) == 2
    assert "NAME=DIR" in capsys.readouterr().err


def test_the_clinc_report_reads_the_best_in_scope_point_at_the_goal_recall() -> None:
    from benchmarks.components.router_clinc import curve_best_at_recall

    curve = [
        {"threshold": 0.1, "in_scope_accuracy": 0.97, "oos_recall": 0.40},
        {"threshold": 0.3, "in_scope_accuracy": 0.96, "oos_recall": 0.52},
        {"threshold": 0.5, "in_scope_accuracy": 0.95, "oos_recall": 0.70},
    ]
    assert curve_best_at_recall(curve, 0.5) == curve[1]
    assert curve_best_at_recall(curve, 0.9) is None
