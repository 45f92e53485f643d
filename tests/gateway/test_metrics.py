"""/metrics against a live gateway: every metric of the service moves, and by exactly what the
responses' `hybrid` extensions report (requests, tokens, stage timings, cost, routes, privacy, egress).

The gateway runs its real privacy gate, router (trained for a bounded number of steps), retrieval
(MiniLM, FAISS, BM25, MMR reranking) and metrics; its generator is the `openai` backend on the benchmark
fixture upstream, so no language model loads. Counters are compared as deltas around the requests a test
sends, so the tests do not depend on their order.
"""

from __future__ import annotations

import gc
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness.fixture_upstream import MODEL_NAME, FixtureBehaviour, running_fixture_upstream
from services.core.ports import free_port
from services.core.settings import Settings, load_settings
from services.gateway.app import create_app
from services.gateway.metrics import (
    COST_STAGES,
    INTENTS,
    STAGES,
    STATUSES,
    TOKEN_KINDS,
    service_metric_names,
)
from tests.conftest import serve_in_thread
from tests.gateway.metrics_scrape import delta, label_values, sample_names, scrape, series, total

pytestmark = pytest.mark.integration

# Series that appear only once their event happened (a fallback, a circuit change): tested where it does.
APPEAR_ON_FIRST_USE = frozenset({"hybrid_fallbacks_total", "hybrid_circuit_state"})


# Long enough (143 characters) to pass the privacy output filter's 96-character hold-back while streaming.
ANSWER_TOKENS = 24


def chat(
    base_url: str, pipeline: str, text: str, *, stream: bool = False, max_tokens: int = ANSWER_TOKENS
) -> dict[str, Any]:
    """One request; returns the `hybrid` extension (from the last chunk when streaming)."""
    body = {"model": pipeline, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens}
    if not stream:
        resp = httpx.post(base_url + "/v1/chat/completions", json=body, timeout=60)
        assert resp.status_code == 200, resp.text
        extension: dict[str, Any] = resp.json()["hybrid"]
        return extension
    body |= {"stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    final = json.loads(events[-2])
    assert final["usage"]["completion_tokens"] == final["hybrid"]["tokens"]["completion"]
    extension = final["hybrid"]
    return extension


def gateway_settings(upstream: str, tmp: Path, **overrides: Any) -> Settings:
    generator = {
        "backend": "openai", "base_url": f"{upstream}/v1", "model": MODEL_NAME,
        "max_concurrency": 8, "max_queue": 32, "max_retries": 0,
    }  # fmt: skip
    values: dict[str, Any] = {
        "data_dir": str(tmp / "data"),
        "default_pipeline": "prompt",
        "generator": generator,
        "rag": {"index_dir": str(tmp / "no-index"), "watch_interval_s": 0},
        "router": {"model_dir": str(tmp / "no-router")},
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.005, tokens=ANSWER_TOKENS)) as url:
        yield url


@pytest.fixture(scope="module")
def gateway(
    upstream: str, handbook_index: Path, service_router: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The pipelines that need no adapter: prompt, rag (MMR reranking), hybrid (router)."""
    tmp = tmp_path_factory.mktemp("metrics-gw")
    settings = gateway_settings(
        upstream,
        tmp,
        default_pipeline="hybrid",
        rag={"index_dir": str(handbook_index), "watch_interval_s": 0, "rerank": {"reranker": "mmr"}},
        router={"model_dir": str(service_router)},
    )
    with serve_in_thread(create_app(settings)) as url:
        yield url


QUESTIONS = {
    "knowledge": "How many vacation days do I get per year?",
    "direct": "Rewrite this sentence in a friendlier tone: send me the report now.",
    "out_of_scope": "What is the best recipe for lasagna?",
}


def test_every_service_metric_is_exported_with_bounded_labels(gateway: str) -> None:
    chat(gateway, "rag", QUESTIONS["knowledge"])
    samples = scrape(gateway)
    names = sample_names(samples)
    expected = service_metric_names() - APPEAR_ON_FIRST_USE
    missing = sorted(name for name in expected if not {name, f"{name}_bucket"} & names)
    assert missing == []
    assert label_values(samples, "hybrid_stage_duration_seconds_bucket", "stage") <= set(STAGES)
    assert label_values(samples, "hybrid_tokens_total", "kind") == set(TOKEN_KINDS)
    assert label_values(samples, "hybrid_cost_usd_total", "stage") <= set(COST_STAGES)
    assert label_values(samples, "hybrid_requests_total", "status") <= set(STATUSES)
    assert label_values(samples, "hybrid_router_confidence_bucket", "intent") == set(INTENTS)
    pipelines = {"prompt", "rag", "hybrid"}
    assert label_values(samples, "hybrid_requests_total", "pipeline") == pipelines
    assert label_values(samples, "hybrid_requests_total", "route") <= pipelines | {"refuse", "tuned"}
    # Initialised at start: a pipeline no request used yet already has its zero series.
    zero = series("hybrid_requests_total", pipeline="prompt", route="prompt", status="server_error")
    assert zero in samples
    assert series("hybrid_route_decisions_total", intent="out_of_scope", target="refuse") in samples
    assert series("hybrid_privacy_findings_total", kind="iban", action="block") in samples
    # Buckets: stage timings resolve sub-millisecond stages and CPU generation alike.
    les = label_values(samples, "hybrid_stage_duration_seconds_bucket", "le")
    assert {"0.0001", "0.001", "0.1", "10.0", "+Inf"} <= les


def test_extension_numbers_equal_counter_deltas(gateway: str) -> None:
    before = scrape(gateway)
    sent: list[tuple[str, bool, str]] = [
        ("prompt", False, QUESTIONS["direct"]),
        ("prompt", True, QUESTIONS["direct"]),
        ("rag", False, QUESTIONS["knowledge"]),
        ("rag", True, "Who approves a team offsite and how early?"),
        *[("hybrid", False, text) for text in QUESTIONS.values()],
        ("hybrid", True, QUESTIONS["knowledge"]),
    ]
    extensions = [chat(gateway, pipeline, text, stream=stream) for pipeline, stream, text in sent]
    after = scrape(gateway)

    per_pipeline = Counter(pipeline for pipeline, _, _ in sent)
    for pipeline, count in per_pipeline.items():
        assert delta(after, before, "hybrid_requests_total", pipeline=pipeline) == count
        assert delta(after, before, "hybrid_request_duration_seconds_count", pipeline=pipeline) == count
        mine = [e for e in extensions if e["pipeline"] == pipeline]
        for kind in TOKEN_KINDS:
            expected = sum(e["tokens"][kind] for e in mine)
            assert delta(after, before, "hybrid_tokens_total", pipeline=pipeline, kind=kind) == expected
        for stage in STAGES:
            ran = [e["timings_ms"][stage] for e in mine if stage in e["timings_ms"]]
            labels = {"stage": stage, "pipeline": pipeline}
            assert delta(after, before, "hybrid_stage_duration_seconds_count", **labels) == len(ran)
            seconds = delta(after, before, "hybrid_stage_duration_seconds_sum", **labels)
            assert seconds == pytest.approx(sum(ran) / 1000, abs=1e-5 * max(1, len(ran)))
        # Every answer had a first token, refusals included (a fixed answer is the whole first text).
        assert delta(after, before, "hybrid_time_to_first_token_seconds_count", pipeline=pipeline) == len(
            mine
        )
        several = [e for e in mine if e["tokens"]["completion"] > 1]
        assert delta(after, before, "hybrid_time_per_output_token_seconds_count", pipeline=pipeline) == len(
            several
        )
    assert {"prompt", "rag", "hybrid"} == set(per_pipeline)
    assert delta(after, before, "hybrid_stage_duration_seconds_count", pipeline="rag", stage="rerank") == 2

    # Cost: the responses' totals add up to the counter's growth.
    cost_from_responses = sum(e["cost_usd"]["total"] for e in extensions)
    assert cost_from_responses > 0
    assert delta(after, before, "hybrid_cost_usd_total") == pytest.approx(cost_from_responses, rel=1e-6)
    for stage in ("route", "retrieval", "generate"):
        by_stage = sum(e["cost_usd"].get(stage, 0.0) for e in extensions)
        assert delta(after, before, "hybrid_cost_usd_total", stage=stage) == pytest.approx(by_stage, rel=1e-6)

    # Routing: one decision per hybrid request, with the intent and target the extension shows.
    routes = Counter((e["route"]["intent"], e["route"]["target"]) for e in extensions if e["route"])
    assert sum(routes.values()) == per_pipeline["hybrid"]
    for (intent, target), count in routes.items():
        assert delta(after, before, "hybrid_route_decisions_total", intent=intent, target=target) == count
    intents = Counter(intent for intent, _ in routes.elements())
    for intent in INTENTS:
        observed = delta(after, before, "hybrid_router_confidence_count", intent=intent)
        assert observed == intents.get(intent, 0)

    # Egress: prompt tokens of the requests that reached the generator, by its name and trust.
    generated = [e for e in extensions if e["backend"] is not None]
    assert generated and all(e["backend"] == {"name": "local", "trust": "internal"} for e in generated)
    egress = delta(after, before, "hybrid_egress_tokens_total", backend="local", trust="internal")
    assert egress == sum(e["tokens"]["prompt"] for e in generated)


def test_privacy_findings_are_counted_by_kind_and_action(gateway: str) -> None:
    before = scrape(gateway)
    text = "My email is jane.doe@example.com and my card 4111 1111 1111 1111 was charged twice."
    extension = chat(gateway, "prompt", text)
    after = scrape(gateway)
    privacy = extension["privacy"]
    assert {"email", "card"} <= set(privacy["findings"])
    for kind in privacy["findings"]:
        labels = {"kind": kind, "action": privacy["action"]}
        assert delta(after, before, "hybrid_privacy_findings_total", **labels) == 1


def test_index_gauges_describe_the_serving_index(gateway: str) -> None:
    extension = chat(gateway, "rag", QUESTIONS["knowledge"])
    first = scrape(gateway)
    version = extension["index_version"]
    assert version
    assert first[series("hybrid_index_info", version=version)] == 1
    assert total(first, "hybrid_index_chunks") > 10
    age = total(first, "hybrid_index_age_seconds")
    assert age >= 0
    time.sleep(0.05)
    assert total(scrape(gateway), "hybrid_index_age_seconds") > age  # the age grows between reloads


@pytest.fixture(scope="module")
def fallback_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A primary backend that refuses connections, and a slow fixture upstream as the fallback."""
    tmp = tmp_path_factory.mktemp("fallback-gw")
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.005, tokens=60, inter_token_s=0.04)) as slow:
        dead = f"http://127.0.0.1:{free_port()}"
        settings = gateway_settings(
            dead,
            tmp,
            fallback_generator={
                "name": "fallback", "backend": "openai", "base_url": f"{slow}/v1", "model": MODEL_NAME,
                "max_retries": 0, "max_concurrency": 4,
            },
        )  # fmt: skip
        with serve_in_thread(create_app(settings)) as url:
            yield url


def test_fallbacks_and_in_flight(fallback_gateway: str) -> None:
    before = scrape(fallback_gateway)
    assert total(before, "hybrid_requests_in_flight") == 0
    # Initialised at start, before any request: both backends' egress series exist at zero.
    assert total(before, "hybrid_egress_tokens_total", backend="fallback", trust="internal") == 0
    assert series("hybrid_egress_tokens_total", backend="local", trust="internal") in before

    body = {"model": "prompt", "messages": [{"role": "user", "content": "Say hello."}], "stream": True,
            "max_tokens": 60}  # fmt: skip
    with httpx.stream("POST", fallback_gateway + "/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        lines = resp.iter_lines()
        next(lines)  # the first event: the request is being served
        assert total(scrape(fallback_gateway), "hybrid_requests_in_flight") == 1
        events = [line[6:] for line in lines if line.startswith("data: ")]
    final = json.loads(events[-2])
    assert final["hybrid"]["fallback"] == {"from": "local", "to": "fallback"}
    after = scrape(fallback_gateway)
    assert total(after, "hybrid_requests_in_flight") == 0
    assert delta(after, before, "hybrid_fallbacks_total", from_backend="local", to_backend="fallback") == 1
    prompt_tokens = final["hybrid"]["tokens"]["prompt"]
    assert prompt_tokens > 0
    egress = delta(after, before, "hybrid_egress_tokens_total", backend="fallback", trust="internal")
    assert egress == prompt_tokens
    assert delta(after, before, "hybrid_time_to_first_token_seconds_count", pipeline="prompt") == 1
    assert delta(after, before, "hybrid_time_per_output_token_seconds_count", pipeline="prompt") == 1


def test_short_streamed_answers_still_have_a_time_to_first_token(gateway: str) -> None:
    before = scrape(gateway)
    chat(gateway, "prompt", QUESTIONS["direct"], stream=True, max_tokens=4)  # 23 characters, all held back
    after = scrape(gateway)
    assert delta(after, before, "hybrid_time_to_first_token_seconds_count", pipeline="prompt") == 1


def test_short_answers_have_a_time_to_first_token(gateway: str) -> None:
    before = scrape(gateway)
    chat(gateway, "prompt", QUESTIONS["direct"], max_tokens=4)  # the backend measured its first token
    after = scrape(gateway)
    assert delta(after, before, "hybrid_time_to_first_token_seconds_count", pipeline="prompt") == 1


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session runs with a normal collector


@pytest.mark.usefixtures("unfrozen")
def test_a_ready_gateway_has_frozen_its_start_up_objects(upstream: str, tmp_path: Path) -> None:
    """Start-up objects leave the cyclic collector once the gateway is ready; requests are served as usual."""
    assert gc.get_freeze_count() == 0
    with serve_in_thread(create_app(gateway_settings(upstream, tmp_path))) as url:
        frozen = gc.get_freeze_count()
        body = {"model": "prompt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert frozen > 10_000
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
