"""CohortScheduler against a fake batched og.Generator: padding, own ends per row, cancellation, cohorts."""

from __future__ import annotations

import time
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from services.core.settings import OnnxGeneratorSettings, load_settings
from services.llm.onnx_batching import TurnEnd, TurnSpec
from services.llm.onnx_cohort import CohortScheduler, choose_pad_id, pad_candidates, right_padded
from tests.llm.test_onnx_batching_scheduler import Collector

pytestmark = pytest.mark.unit

EOS = 2
PAD = 0


class FakeModel:
    """Each row answers the script of its prompt's first token, then EOS."""

    def __init__(self, scripts: dict[int, list[int]]) -> None:
        self.scripts = scripts
        self.generators: list[FakeGenerator] = []
        self.fail_next_step = False


class FakeParams:
    def __init__(self, model: FakeModel) -> None:
        self.options: dict[str, Any] = {}

    def set_search_options(self, **options: Any) -> None:
        self.options = options


class FakeGenerator:
    def __init__(self, model: FakeModel, params: FakeParams) -> None:
        self.model, self.options = model, params.options
        self.batch: Any = None
        self.steps = 0
        model.generators.append(self)

    def append_tokens(self, batch: Any) -> None:
        assert batch.shape[0] == self.options["batch_size"]
        self.batch = batch

    def is_done(self) -> bool:
        return bool(self.batch.shape[1] + self.steps >= self.options["max_length"])

    def generate_next_token(self) -> None:
        if self.model.fail_next_step:
            self.model.fail_next_step = False
            raise RuntimeError("model execution failed")
        self.steps += 1
        time.sleep(0.002)  # a decode step takes time, so cancellations can arrive during a cohort

    def get_next_tokens(self) -> Any:
        rows = []
        for row in self.batch:
            script = self.model.scripts[int(row[0])]
            rows.append(script[self.steps - 1] if self.steps <= len(script) else EOS)
        return np.asarray(rows, dtype=np.int32)


@pytest.fixture(autouse=True)
def fake_og(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.SimpleNamespace(GeneratorParams=FakeParams, Generator=FakeGenerator)
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime_genai", module)
    yield


def scheduler_for(model: FakeModel, window_s: float = 0.3, demand: int = 0) -> CohortScheduler:
    return CohortScheduler(
        model,
        pad_id=PAD,
        eos_ids={EOS},
        context_length=64,
        max_batch_size=4,
        admission_window_s=window_s,
        demand=lambda: demand,
    )


def submit(
    scheduler: CohortScheduler, prompt: Sequence[int], max_tokens: int, temperature: float = 0.0
) -> tuple[Any, Collector]:
    collector = Collector()
    spec = TurnSpec(list(prompt), max_tokens, len(prompt) + max_tokens, temperature=temperature)
    return scheduler.submit(spec, collector.tokens.append, collector.on_end), collector


def test_prompts_of_different_lengths_share_one_right_padded_batch_and_end_on_their_own() -> None:
    model = FakeModel({5: [10, 11, 12], 6: [20, 21, 22, 23, 24, 25], 7: [30]})
    scheduler = scheduler_for(model, demand=3)
    _, short = submit(scheduler, [5, 1], max_tokens=10)
    _, capped = submit(scheduler, [6, 1, 1, 1], max_tokens=4)
    _, one = submit(scheduler, [7], max_tokens=10)
    assert all(c.ended.wait(5) for c in (short, capped, one))
    assert (short.tokens, short.end) == ([10, 11, 12], TurnEnd(ended_by_model=True))
    assert (capped.tokens, capped.end) == ([20, 21, 22, 23], TurnEnd())  # its own max_tokens
    assert (one.tokens, one.end) == ([30], TurnEnd(ended_by_model=True))
    [generator] = model.generators
    assert generator.batch.tolist() == [[5, 1, PAD, PAD], [6, 1, 1, 1], [7, PAD, PAD, PAD]]
    assert generator.options["max_length"] == 4 + 10
    assert generator.steps == 4  # the cohort stops once no row is open, not at max_length
    assert scheduler.peak_batch_size == 3
    scheduler.close()


def test_a_cancelled_row_ends_at_once_and_the_others_continue() -> None:
    model = FakeModel({5: list(range(100, 140)), 6: [20, 21, 22]})
    scheduler = scheduler_for(model, demand=2)
    doomed, doomed_collector = submit(scheduler, [5], max_tokens=40)
    _, other = submit(scheduler, [6], max_tokens=40)
    doomed_collector.cancel_once_streaming(scheduler, doomed)
    assert other.ended.wait(5)
    assert other.tokens == [20, 21, 22]
    assert len(doomed_collector.tokens) < 40
    assert model.generators[0].steps < 40  # no row open: the cohort ended early
    scheduler.close()


def test_requests_arriving_during_a_cohort_start_the_next_one_together() -> None:
    model = FakeModel({5: list(range(100, 130)), 6: [20, 21], 7: [30]})
    scheduler = scheduler_for(model, window_s=0.5, demand=1)
    first, first_collector = submit(scheduler, [5], max_tokens=30)
    first_collector.wait_for_first_token()
    late = [submit(scheduler, [6], max_tokens=5)[1], submit(scheduler, [7, 1], max_tokens=5)[1]]
    scheduler.cancel(first)
    assert all(c.ended.wait(5) for c in late)
    assert [g.options["batch_size"] for g in model.generators] == [1, 2]
    assert [c.tokens for c in late] == [[20, 21], [30]]
    scheduler.close()


def test_requests_with_other_sampling_wait_for_their_own_cohort() -> None:
    model = FakeModel({5: [10], 6: [20]})
    scheduler = scheduler_for(model, demand=2)
    _, greedy = submit(scheduler, [5], max_tokens=3)
    _, sampled = submit(scheduler, [6], max_tokens=3, temperature=0.7)
    assert greedy.ended.wait(5) and sampled.ended.wait(5)
    assert [g.options["batch_size"] for g in model.generators] == [1, 1]
    assert model.generators[0].options["do_sample"] is False
    assert model.generators[1].options["do_sample"] is True
    assert model.generators[1].options["temperature"] == 0.7
    scheduler.close()


def test_a_failed_step_fails_its_cohort_and_the_next_cohort_is_served() -> None:
    model = FakeModel({5: [10, 11]})
    model.fail_next_step = True
    scheduler = scheduler_for(model, window_s=0.0)
    _, failed = submit(scheduler, [5], max_tokens=3)
    assert failed.ended.wait(5)
    assert failed.end is not None and failed.end.error == "model execution failed"
    _, served = submit(scheduler, [5], max_tokens=3)
    assert served.ended.wait(5)
    assert (served.tokens, served.end) == ([10, 11], TurnEnd(ended_by_model=True))
    scheduler.close()


def test_closing_ends_the_running_cohort_cancelled_and_refuses_new_requests() -> None:
    model = FakeModel({5: list(range(100, 10_000))})
    scheduler = scheduler_for(model, window_s=0.0)
    _, running = submit(scheduler, [5], max_tokens=9_000)
    running.wait_for_first_token()
    scheduler.close()
    assert running.ended.wait(5)
    assert running.end == TurnEnd(cancelled=True)
    with pytest.raises(Exception, match="shut down"):
        submit(scheduler, [5], max_tokens=1)


def test_the_pad_is_a_token_the_chat_scaffold_never_contains() -> None:
    config = {"model": {"pad_token_id": 2, "bos_token_id": 1, "eos_token_id": 2}}
    assert pad_candidates(config) == [2, 1, 0]
    assert choose_pad_id({1, 2, 198}, pad_candidates(config)) == 0
    assert choose_pad_id({5}, pad_candidates(config)) == 2
    assert choose_pad_id({0, 1, 2}, pad_candidates(config)) is None


def test_right_padding_keeps_each_prompt_at_the_start_of_its_row() -> None:
    batch = right_padded([[4, 5, 6], [7]], pad_id=0)
    assert batch.dtype == np.int32
    assert batch.tolist() == [[4, 5, 6], [7, 0, 0]]
    with pytest.raises(ValueError, match="at least one prompt"):
        right_padded([], pad_id=0)


def test_the_batch_scheduler_is_a_setting_from_yaml_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert OnnxGeneratorSettings().batch_scheduler == "cohort"
    config = tmp_path / "config.yaml"
    config.write_text("generator:\n  backend: onnx\n  batch_scheduler: engine\n", encoding="utf-8")
    generator = load_settings(config).generator
    assert isinstance(generator, OnnxGeneratorSettings) and generator.batch_scheduler == "engine"
    monkeypatch.setenv("HYBRID_GENERATOR__BATCH_SCHEDULER", "cohort")
    generator = load_settings(config).generator
    assert isinstance(generator, OnnxGeneratorSettings) and generator.batch_scheduler == "cohort"
    with pytest.raises(ValidationError, match="batch_scheduler"):
        OnnxGeneratorSettings.model_validate({"batch_scheduler": "continuous"})
