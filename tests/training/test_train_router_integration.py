"""Real training on a small subset (bounded steps), then the folder it writes served by both engines."""

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from services.core.errors import ConfigError
from services.router.classifier import IntentRouterModel
from services.router.evaluation import evaluate_router
from training import router_output
from training.train_router import train_router

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ROUTER_DATA = REPO / "corpus" / "router"
CLINC = REPO.parent / "shared" / "datasets" / "clinc150" / "data_full.json"


def _subset(source: Path, target: Path, per_label: int, seed: int = 0) -> Path:
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(rows)
    picked: list[dict[str, str]] = []
    counts: dict[str, int] = {}
    for row in rows:
        if counts.get(row["label"], 0) < per_label:
            counts[row["label"]] = counts.get(row["label"], 0) + 1
            picked.append(row)
    target.write_text("".join(json.dumps(r) + "\n" for r in picked))
    return target


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (ROUTER_DATA / "train.jsonl").is_file():
        pytest.skip(f"router data not found at {ROUTER_DATA}")
    root = tmp_path_factory.mktemp("router")
    train = _subset(ROUTER_DATA / "train.jsonl", root / "train.jsonl", per_label=100)
    val = _subset(ROUTER_DATA / "val.jsonl", root / "val.jsonl", per_label=30)
    out = root / "model"
    metrics = train_router(train, out, eval_file=val, max_steps=60, progress=False, export_int8=False)
    return out, metrics, val


def test_small_training_is_well_above_chance(trained: tuple[Path, dict, Path]) -> None:
    out, metrics, _ = trained
    assert metrics["steps"] == 60
    assert metrics["accuracy"] > 0.7  # chance is ~0.33 with three labels
    for name in (
        "adapter/adapter_config.json",
        "model.onnx",
        "labels.json",
        "threshold.json",
        "calibration.json",
        "metrics.json",
        "confusion_matrix.png",
        "MODEL_CARD.md",
        "router_config.yaml",
        "tokenizer.json",
    ):
        assert (out / name).is_file(), name


def test_onnx_and_merged_torch_agree_and_reload_is_identical(trained: tuple[Path, dict, Path]) -> None:
    out, _, val = trained
    texts = [json.loads(line)["text"] for line in val.read_text().splitlines()][:32]
    onnx = IntentRouterModel(out, engine="onnx")
    torch_model = IntentRouterModel(out, engine="torch")
    onnx.warm_up()
    torch_model.warm_up()
    assert (onnx.engine, torch_model.engine) == ("onnx", "torch")
    np.testing.assert_allclose(onnx.logits(texts), torch_model.logits(texts), atol=1e-3)
    assert [p.intent for p in onnx.predict_batch(texts)] == [
        p.intent for p in torch_model.predict_batch(texts)
    ]
    again = IntentRouterModel(out, engine="onnx")
    again.warm_up()
    np.testing.assert_array_equal(again.logits(texts), onnx.logits(texts))
    single = onnx.predict(texts[0])
    assert single.intent in onnx.labels
    assert sum(single.scores.values()) == pytest.approx(1.0)


def test_evaluate_router_reports_quality_and_latency(trained: tuple[Path, dict, Path]) -> None:
    out, _, val = trained
    report = evaluate_router(out, val)
    for key in ("accuracy", "macro_f1", "in_scope_accuracy", "p50_ms", "p99_ms", "batch_qps", "examples"):
        assert key in report
    assert report["oos_recall"] is not None  # val holds out_of_scope examples


def test_a_failing_run_leaves_the_previous_model_intact(
    trained: tuple[Path, dict, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, _, val = trained
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    def broken_export(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("export failed")

    monkeypatch.setattr(router_output, "export_onnx", broken_export)
    with pytest.raises(RuntimeError, match="export failed"):
        train_router(val, out, max_steps=2, progress=False, export_int8=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def _train_briefly(tmp_path: Path, val: Path, *, oos_method: str, seed: int, export_int8: bool) -> dict:
    """10 steps on a small subset: enough to check what a method writes, not how well it routes."""
    train = _subset(ROUTER_DATA / "train.jsonl", tmp_path / "t.jsonl", per_label=40, seed=seed)
    return train_router(
        train,
        tmp_path / "m",
        eval_file=val,
        max_steps=10,
        progress=False,
        oos_method=oos_method,
        export_int8=export_int8,
    )


def test_threshold_method_stores_a_threshold(tmp_path: Path, trained: tuple[Path, dict, Path]) -> None:
    _, _, val = trained
    metrics = _train_briefly(tmp_path, val, oos_method="threshold", seed=1, export_int8=False)
    assert 0.0 <= metrics["threshold"] <= 1.0
    model = IntentRouterModel(tmp_path / "m")
    assert model.oos_threshold == metrics["threshold"]
    assert "out_of_scope" not in model.labels  # never trained on it: the threshold decides
    assert model.oos_label == "out_of_scope"


def test_class_threshold_method_keeps_the_class_and_adds_a_threshold(
    tmp_path: Path, trained: tuple[Path, dict, Path]
) -> None:
    _, _, val = trained
    metrics = _train_briefly(tmp_path, val, oos_method="class+threshold", seed=2, export_int8=True)
    model = IntentRouterModel(tmp_path / "m")
    assert "out_of_scope" in model.labels  # trained on the class ...
    assert model.oos_threshold == metrics["threshold"] is not None  # ... and rejects below the threshold
    stored = json.loads((tmp_path / "m" / "threshold.json").read_text())
    assert "within 0.01" in stored["objective"]
    assert stored["val_in_scope_accuracy"] >= stored["val_in_scope_accuracy_without_threshold"] - 0.01 - 1e-9

    # The int8 copy (router.precision: int8) loads in its place and mostly agrees with fp32.
    assert (tmp_path / "m" / "model.int8.onnx").is_file()
    int8 = IntentRouterModel(tmp_path / "m", quantized=True)
    model.warm_up()
    int8.warm_up()
    texts = [json.loads(line)["text"] for line in val.read_text().splitlines()][:60]
    agree = np.mean(int8.logits(texts).argmax(axis=1) == model.logits(texts).argmax(axis=1))
    assert agree >= 0.8
    assert np.abs(int8.logits(texts) - model.logits(texts)).max() > 0  # really the quantized graph


def test_batch_results_do_not_depend_on_batch_order_or_size(trained: tuple[Path, dict, Path]) -> None:
    out, _, val = trained
    texts = [json.loads(line)["text"] for line in val.read_text().splitlines()][:70]
    texts[5] = "hi"  # lengths differ a lot, so the length-sorted sub-batches pad differently
    texts[6] = " ".join(["expense report for the quarterly offsite in Lisbon"] * 6)
    model = IntentRouterModel(out, engine="onnx")
    model.warm_up()
    together = model.logits(texts)
    one_by_one = np.vstack([model.logits([t]) for t in texts])
    np.testing.assert_allclose(together, one_by_one, atol=1e-4)
    reversed_logits = model.logits(texts[::-1])[::-1]
    np.testing.assert_allclose(together, reversed_logits, atol=1e-4)
    # the thread count changes how the kernels split the work, not the numbers
    concurrent = IntentRouterModel(out, engine="onnx", threads=2)
    concurrent.warm_up()
    np.testing.assert_allclose(concurrent.logits(texts), together, atol=1e-4)


def test_mean_pooled_router_on_fewer_layers_exports_and_reloads_the_same(
    tmp_path: Path, trained: tuple[Path, dict, Path]
) -> None:
    """Also runs the weight-averaged training path: what is saved and exported is the average."""
    _, _, val = trained
    train = _subset(ROUTER_DATA / "train.jsonl", tmp_path / "t.jsonl", per_label=40, seed=3)
    out = tmp_path / "m"
    metrics = train_router(
        train,
        out,
        eval_file=val,
        max_steps=30,
        progress=False,
        pooling="mean",
        encoder_layers=3,
        weight_average_decay=0.99,
    )
    # the kept weights are the ones validation scored (the average, not the last step's live weights)
    assert metrics["evaluated_on"] == "val"
    assert metrics["macro_f1"] == pytest.approx(metrics["best_val_macro_f1"], abs=1e-9)
    stored = json.loads((out / "labels.json").read_text())
    assert (stored["pooling"], stored["encoder_layers"]) == ("mean", 3)
    assert metrics["accuracy"] > 0.5  # chance ~0.33
    texts = [json.loads(line)["text"] for line in val.read_text().splitlines()][:24]
    onnx = IntentRouterModel(out, engine="onnx")
    torch_model = IntentRouterModel(out, engine="torch")  # rebuilds the 3-layer mean-pooled head
    onnx.warm_up()
    torch_model.warm_up()
    np.testing.assert_allclose(onnx.logits(texts), torch_model.logits(texts), atol=1e-3)


def test_missing_or_corrupt_model_dir_is_a_config_error(
    tmp_path: Path, trained: tuple[Path, dict, Path]
) -> None:
    with pytest.raises(ConfigError, match="make router"):
        IntentRouterModel(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "labels.json").write_text("{not json")
    with pytest.raises(ConfigError, match="labels.json"):
        IntentRouterModel(broken)


def test_clinc150_subset_trains(tmp_path: Path) -> None:
    if not CLINC.is_file():
        pytest.skip(f"CLINC150 not found at {CLINC}")
    raw = json.loads(CLINC.read_text())
    intents = sorted({label for _, label in raw["train"]})[:8]
    keep = {
        k: [r for r in v if r[1] in intents or k.startswith("oos")][:400]
        for k, v in raw.items()
        if isinstance(v, list)
    }
    subset = tmp_path / "data_full.json"
    subset.write_text(json.dumps(keep))
    metrics = train_router(subset, tmp_path / "m", max_steps=80, progress=False, oos_method="class+threshold")
    assert metrics["evaluated_on"] == "test"
    assert metrics["in_scope_accuracy"] > 0.35  # over 3x chance (1/9) after well under 2 epochs
    assert "oos_recall" in metrics

    # The CLINC150 benchmark scores the same folder through the serving code.
    from benchmarks.components.router_clinc import evaluate, read_splits

    val, test = read_splits(subset)
    report = evaluate(tmp_path / "m", val, test)
    fp32 = report["engines"]["fp32"]["operating_points"]
    assert fp32["stored"]["threshold"] == pytest.approx(metrics["threshold"])
    assert fp32["stored"]["in_scope_accuracy"] == pytest.approx(100 * metrics["in_scope_accuracy"], abs=0.5)
    assert fp32["stored"]["oos_recall"] == pytest.approx(100 * metrics["oos_recall"], abs=0.5)
    curve = report["engines"]["fp32"]["curve"]
    assert curve[0]["oos_recall"] <= curve[-1]["oos_recall"] == 1.0  # threshold 1 rejects everything
    assert set(report["engines"]) == {"fp32", "int8"}
