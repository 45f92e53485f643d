"""What every pipeline shares: the request, the per-request trace, and the plan a pipeline produces.

A pipeline only *plans* (route, retrieve, build the prompt). Running the plan (generation, fallback,
output filtering, costing) is the runner's job, so streaming and non-streaming share one code path and
every pipeline gets the same guarantees.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict

from services.cache.service import CacheReport
from services.core.protocols import Generator
from services.core.types import ChatMessage, GenerationParams, RouteDecision, StageTimings
from services.llm.prompts import TemplateRef
from services.privacy import GateDecision, PrivacyReport


@dataclass(frozen=True, slots=True)
class PipelineRequest:
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    request_id: str

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""


@dataclass(slots=True)
class ClockedStageTimings(StageTimings):
    """Stage timings that also remember when each stage was recorded (wall clock, ns): trace spans need
    to know where a stage sat in time, not only how long it took."""

    ended_ns: dict[str, int] = field(default_factory=dict)

    def add(self, stage: str, milliseconds: float) -> None:
        StageTimings.add(self, stage, milliseconds)  # slots dataclass: no zero-argument super()
        self.ended_ns[stage] = time.time_ns()


class SourceRef(TypedDict):
    """A chunk the answer drew on, as `hybrid.sources` lists it."""

    source: str
    chunk_id: str
    score: float


CheckAction = Literal["pass", "flag", "extract", "abstain"]


class GroundednessReport(TypedDict):
    """`hybrid.groundedness`: the checked answer's score, its unsupported terms, and what the check did."""

    score: float
    unsupported: list[str]
    abstained: bool
    threshold: float
    action: CheckAction


@dataclass(slots=True)
class RequestTrace:
    """Everything observed while serving one request; becomes the `hybrid` extension and the metrics."""

    pipeline: str
    request_id: str = ""
    timings: StageTimings = field(default_factory=ClockedStageTimings)
    route: RouteDecision | None = None
    sources: list[SourceRef] = field(default_factory=list)
    context_tokens: int = 0
    template: TemplateRef | None = None
    index_version: str | None = None
    adapter: str | None = None
    adapter_version: str | None = None
    backend: str | None = None
    backend_trust: str | None = None
    privacy: PrivacyReport | None = None
    fallback: dict[str, str] | None = None
    degraded: str | None = None
    # The answer's groundedness check (rag): score, action, threshold; None where no check ran.
    groundedness: GroundednessReport | None = None
    # The privacy gate's decision on this request (its placeholder map); read only by the privacy guard.
    guard_state: GateDecision | None = None
    privacy_counts: dict[str, int] = field(default_factory=dict)
    # The adapter versions loaded when the request started (name -> version; absent: as configured).
    adapter_versions: Mapping[str, str] = field(default_factory=dict)
    # What the response cache did (None while the cache is off).
    cache: CacheReport | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings.add(name, (time.perf_counter() - started) * 1000.0)

    @property
    def route_label(self) -> str:
        """A bounded label for metrics: the route target, or the pipeline itself when nothing routed."""
        return self.route.target if self.route is not None else self.pipeline


@dataclass(frozen=True, slots=True)
class CheckedAnswer:
    """The answer to send (the generated one, or what replaces it) and the report for `hybrid`."""

    text: str
    report: GroundednessReport


class AnswerCheck(Protocol):
    """Checks a generated answer once it is complete (rag: is it supported by the evidence?)."""

    @property
    def may_replace(self) -> bool:
        """True when `check` may return other text: the runner then holds the answer back until checked."""
        ...

    def check(self, answer: str) -> CheckedAnswer: ...


@dataclass(frozen=True, slots=True)
class Plan:
    """Either a fixed answer (refusal, no-answer) or a generation to run, optionally checked."""

    messages: tuple[ChatMessage, ...] = ()
    params: GenerationParams = GenerationParams()
    generator: Generator | None = None
    fixed_answer: str | None = None
    answer_check: AnswerCheck | None = None

    def __post_init__(self) -> None:
        if (self.fixed_answer is None) == (self.generator is None):
            raise ValueError("a plan has exactly one of fixed_answer and generator")


class Pipeline(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    async def plan(self, request: PipelineRequest, trace: RequestTrace) -> Plan: ...
