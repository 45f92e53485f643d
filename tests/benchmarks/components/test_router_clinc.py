"""The CLINC150 report names each row's recipe, souped, distilled or plain, from the model folder."""

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.components.router_clinc import _describe, _training_line, summary_lines
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit


CFG = {"lora_r": 16, "target_modules": ["query", "value"], "pooling": "mean", "weight_average_decay": 0.999}
SOUP = {"seeds": [13, 29], "member_lora_r": 8, "member_in_scope_accuracy": [0.9527, 0.9542]}


def test_a_soup_is_described_by_its_members_rank_not_its_adapters() -> None:
    assert _describe(CFG, SOUP) == "soup of 2 x MiniLM+LoRA r8 query+value, mean pooling, EMA 0.999"
    plain = {**CFG, "weight_average_decay": None}
    assert _describe(plain, None) == "MiniLM+LoRA r16 query+value, mean pooling"


def test_a_soups_training_line_sums_its_members() -> None:
    run = {"training": {"steps": 6608, "train_seconds": 4286.6}, "soup": SOUP}
    line = _training_line("soup2", run)
    assert "seeds [13, 29]" in line and "6608 training steps" in line and "95.3, 95.4" in line


def test_a_distilled_run_names_its_weight_temperature_and_teachers() -> None:
    cfg = {**CFG, "lora_r": 8, "distill_weight": 0.5, "distill_temperature": 2.0}
    assert _describe(cfg, None).endswith("EMA 0.999, distilled (w 0.5, T 2.0)")
    kd = {"teachers": ["a", "b", "c"], "teacher_seeds": [13, 29, 41], "teacher_seconds": 371.4}
    t = {"steps": 10, "best_step": 10, "epochs_run": 1.0, "stopped_early": False, "train_seconds": 5.0}
    run = {"training": {**t, "seconds_per_step": 0.5}, "trainable_parameters": 1, "history": []}
    assert "distilled" not in _training_line("plain", run)
    line = _training_line("kd", {**run, "distillation": kd})
    assert "mean logits of 3 routers, seeds [13, 29, 41]" in line and "371.4 s" in line


def _point(in_scope: float, recall: float) -> dict[str, float]:
    return {"in_scope_accuracy": in_scope, "oos_recall": recall}


def test_the_summary_judges_the_goal_at_the_validation_chosen_point_not_the_curve() -> None:
    curve = [{"in_scope_accuracy": 0.9641, "oos_recall": 0.50, "threshold": 0.3}]
    engine = {
        "operating_points": {"no_threshold": _point(96.4, 34.6), "within_0.2_point": _point(96.31, 49.8)},
        "curve": curve,
    }
    passing = {"operating_points": {**engine["operating_points"], "within_0.2_point": _point(96.04, 55.0)}}
    runs = {
        "soup": {"oos_method": "class+threshold", "engines": {"fp32": engine, "int8": {**engine, **passing}}},
        "threshold-only": {"oos_method": "threshold", "engines": {"fp32": engine}},
    }
    rows = summary_lines({"runs": runs})[2:]
    assert rows == [
        "| soup | fp32 | 96.40 / 34.6 | 96.31 / 49.8 | no | 96.41 |",
        "| soup | int8 | 96.40 / 34.6 | 96.04 / 55.0 | yes | 96.41 |",
    ]


def test_a_missing_model_folder_fails_before_any_scoring(tmp_path: Path) -> None:
    data = tmp_path / "data_full.json"
    data.write_text("{}")  # never read: the folders are checked first
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.components.router_clinc", "--data", str(data),
         "--out", str(tmp_path), "--model", f"late={tmp_path / 'still-training'}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "still-training" in done.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "router_clinc150.md").exists()
