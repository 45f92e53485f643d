"""The circuit breaker's states, and the wrapper's explicit delegation of its backend's capabilities."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.errors import InvalidRequest
from services.core.protocols import AdapterLoader, enforces_response_format, generation_queue
from services.llm.circuit import CircuitBreaker, CircuitBreakerGenerator, CircuitState
from services.llm.slots import GenerationSlots
from tests.pipelines.fakes import ScriptedGenerator

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_circuit_breaker_states() -> None:
    clock = FakeClock()
    seen: list[CircuitState] = []
    breaker = CircuitBreaker(
        "primary",
        failure_threshold=2,
        window_s=10,
        cooldown_s=5,
        clock=clock,
        on_change=lambda _, s: seen.append(s),
    )
    breaker.record_failure()
    clock.now += 11  # outside the window: the streak starts again
    breaker.record_failure()
    assert breaker.state == CircuitState.CLOSED
    breaker.record_failure()
    assert breaker.state == CircuitState.OPEN  # type: ignore[comparison-overlap]  # mypy narrows too far
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow()  # the one probe
    assert breaker.state == CircuitState.HALF_OPEN
    assert not breaker.allow()  # only one probe at a time
    breaker.record_abandoned()  # the probe's client left: another probe may go
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CircuitState.CLOSED and breaker.allow()
    assert seen == [CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]
    with pytest.raises(ValueError, match="failure_threshold must be >= 1, got 0"):
        CircuitBreaker("x", failure_threshold=0, window_s=1, cooldown_s=1)


class CapableGenerator(ScriptedGenerator):
    """A fake backend with every optional capability: guided output, slots and run-time adapters."""

    def __init__(self) -> None:
        super().__init__()
        self.slots = GenerationSlots(1, 0)
        self.loaded: list[tuple[str, Path]] = []

    @property
    def supports_response_format(self) -> bool:
        return True

    def load_adapter(self, name: str, folder: Path) -> None:
        self.loaded.append((name, folder))


def wrapped(inner: ScriptedGenerator) -> CircuitBreakerGenerator:
    breaker = CircuitBreaker(inner.name, failure_threshold=1, window_s=1, cooldown_s=1)
    return CircuitBreakerGenerator(inner, breaker)


def test_the_wrapper_offers_what_its_backend_offers(tmp_path: Path) -> None:
    inner = CapableGenerator()
    breaker = wrapped(inner)
    assert enforces_response_format(breaker)
    assert generation_queue(breaker) is inner.slots
    assert isinstance(breaker, AdapterLoader)
    breaker.load_adapter("tuned", tmp_path)
    assert inner.loaded == [("tuned", tmp_path)]


def test_the_wrapper_of_a_plain_backend_offers_nothing_extra(tmp_path: Path) -> None:
    breaker = wrapped(ScriptedGenerator())
    assert not enforces_response_format(breaker)
    assert generation_queue(breaker) is None
    with pytest.raises(InvalidRequest, match="cannot load adapters"):
        breaker.load_adapter("tuned", tmp_path)
