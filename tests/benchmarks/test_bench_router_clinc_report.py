"""The CLINC150 report names each row's recipe, souped, distilled or plain, from the model folder."""

import pytest

from benchmarks.bench_router_clinc import _describe, _training_line

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
