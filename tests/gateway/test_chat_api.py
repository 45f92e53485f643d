"""The gateway as a user sees it: the official openai client against a live server with real SmolLM2
(the embedded default backend, ONNX Runtime GenAI)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from services.core.settings import Settings, load_settings
from services.gateway.app import create_app
from tests.conftest import MODEL_CACHE, serve_in_thread
from tests.gateway.metrics_scrape import scrape, value

pytestmark = pytest.mark.integration


def _settings(tmp: Path, **generator: object) -> Settings:
    return load_settings(
        data_dir=str(MODEL_CACHE),
        default_pipeline="prompt",
        generator={"max_queue": 8, **generator},
        rag={"index_dir": str(tmp / "no-index"), "watch_interval_s": 0},
        server={"max_body_bytes": 64_000, "max_completion_tokens": 128},
        observability={"log_json": True},
    )


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app = create_app(_settings(tmp_path_factory.mktemp("gw")))
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)


QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


def test_non_streaming_completion_has_usage_and_extension(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="prompt", messages=QUESTION, max_tokens=24)  # type: ignore[arg-type]
    assert resp.object == "chat.completion"
    text = resp.choices[0].message.content
    assert text and text.strip()
    assert resp.usage is not None
    # "length" exactly when max_tokens ended the answer, "stop" when the model did.
    assert resp.choices[0].finish_reason == ("length" if resp.usage.completion_tokens == 24 else "stop")
    assert resp.usage.completion_tokens <= 24
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    hybrid = resp.model_extra["hybrid"]
    assert hybrid["pipeline"] == "prompt"
    assert hybrid["tokens"]["prompt"] == resp.usage.prompt_tokens
    assert hybrid["timings_ms"]["generate"] > 0
    assert hybrid["timings_ms"]["total"] >= hybrid["timings_ms"]["generate"]
    # The model's first token comes before the first text the client sees, which comes before the end.
    ttft = hybrid["ttft_ms"]
    assert 0 < ttft["model"] <= ttft["visible"] <= hybrid["timings_ms"]["total"]
    assert hybrid["template"] == {"name": "direct", "version": "1"}
    costs = dict(hybrid["cost_usd"])
    total = costs.pop("total")
    assert set(costs) == {"privacy", "generate"}
    assert total == pytest.approx(sum(costs.values()), rel=1e-9)
    assert costs["generate"] > costs["privacy"] > 0


def streamed_with_usage(
    client: openai.OpenAI, messages: list[Any], *, max_tokens: int
) -> list[ChatCompletionChunk]:
    """A streamed answer from the `prompt` pipeline, ending with the usage chunk."""
    stream = client.chat.completions.create(
        model="prompt",
        messages=messages,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    return list(stream)


def test_streaming_matches_non_streaming_and_ends_with_usage(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model="prompt", messages=QUESTION, max_tokens=40)  # type: ignore[arg-type]
    chunks = streamed_with_usage(client, QUESTION, max_tokens=40)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy decoding is deterministic
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3  # really token by token
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert last.model_extra["hybrid"]["pipeline"] == "prompt"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]


def test_stream_without_usage_carries_extension_on_finish_chunk(base_url: str) -> None:
    body = {"model": "prompt", "messages": QUESTION, "max_tokens": 8, "stream": True}
    with httpx.stream("POST", base_url + "/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    final = json.loads(lines[-2][6:])
    completion = final["hybrid"]["tokens"]["completion"]
    assert completion >= 1
    assert final["choices"][0]["finish_reason"] == ("length" if completion == 8 else "stop")


def test_a_reused_prompt_prefix_is_reported_as_cached_prompt_tokens(tmp_path: Path) -> None:
    """The embedded backend's prefix cache as a client and an operator see it: a conversation's next turn
    starts with the first turn's prompt (system prompt included), which the backend does not prefill again:
    `usage.prompt_tokens_details.cached_tokens`, and the `cached_prompt` token counter beside `prompt`."""
    # A gateway of its own: the module's has already prefilled the prompt pipeline's system prompt.
    with serve_in_thread(create_app(_settings(tmp_path))) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        first = client.chat.completions.create(model="prompt", messages=QUESTION, max_tokens=4)  # type: ignore[arg-type]
        answer = {"role": "assistant", "content": first.choices[0].message.content}
        next_turn = [*QUESTION, answer, {"role": "user", "content": "And three more?"}]
        chunks = streamed_with_usage(client, next_turn, max_tokens=4)
        samples = scrape(url)
    assert first.usage is not None and first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # nothing was prefilled before
    assert first.model_extra["hybrid"]["tokens"]["cached_prompt"] == 0
    second = chunks[-1].usage
    assert second is not None and second.prompt_tokens_details is not None
    cached = second.prompt_tokens_details.cached_tokens
    assert cached is not None
    # The whole first prompt is reused; the answer and the new question are prefilled.
    assert first.usage.prompt_tokens <= cached < second.prompt_tokens
    assert chunks[-1].model_extra["hybrid"]["tokens"]["cached_prompt"] == cached
    assert value(samples, "hybrid_tokens_total", pipeline="prompt", kind="cached_prompt") == cached
    prompt = value(samples, "hybrid_tokens_total", pipeline="prompt", kind="prompt")
    assert prompt == first.usage.prompt_tokens + second.prompt_tokens


def test_stop_string_cuts_the_answer(client: openai.OpenAI) -> None:
    free = client.chat.completions.create(model="prompt", messages=QUESTION, max_tokens=24)  # type: ignore[arg-type]
    text = free.choices[0].message.content or ""
    words = text.split()
    assert len(words) > 3
    stop = words[2]
    cut = client.chat.completions.create(model="prompt", messages=QUESTION, max_tokens=24, stop=[stop])  # type: ignore[arg-type]
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


def test_max_tokens_gives_length(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="prompt", messages=QUESTION, max_tokens=2)  # type: ignore[arg-type]
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage is not None and resp.usage.completion_tokens == 2


def test_models_lists_only_ready_pipelines(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == ["prompt"]  # no index, no router, no adapter in this configuration


def test_request_id_round_trip(base_url: str) -> None:
    resp = httpx.post(
        base_url + "/v1/chat/completions",
        json={"model": "prompt", "messages": QUESTION, "max_tokens": 2},
        headers={"x-request-id": "abc-123"},
        timeout=60,
    )
    assert resp.headers["x-request-id"] == "abc-123"
    assert httpx.get(base_url + "/healthz").headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"model": "prompt"}).encode(), 400, "messages"),
        (json.dumps({"model": "prompt", "messages": []}).encode(), 400, "messages"),
        (
            json.dumps({"model": "prompt", "messages": [{"role": "wizard", "content": "x"}]}).encode(),
            400,
            "role",
        ),
        (
            json.dumps({"model": "prompt", "messages": QUESTION, "temperature": 7}).encode(),
            400,
            "temperature",
        ),
        (
            json.dumps({"model": "prompt", "messages": QUESTION, "max_tokens": 100000}).encode(),
            400,
            "max_tokens",
        ),
        (json.dumps({"model": "prompt", "messages": QUESTION, "n": 2}).encode(), 400, "n"),
        (json.dumps({"model": "gpt-17", "messages": QUESTION}).encode(), 404, "prompt"),
        (
            json.dumps({"model": "prompt", "messages": [{"role": "system", "content": "x"}]}).encode(),
            400,
            "user",
        ),
        (
            json.dumps({"model": "prompt", "messages": [{"role": "user", "content": "x" * 70_000}]}).encode(),
            413,
            "limit",
        ),
    ],
)
def test_errors_are_openai_shaped(base_url: str, body: bytes, status: int, needle: str) -> None:
    resp = httpx.post(
        base_url + "/v1/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert needle in error["message"]


def test_openai_client_raises_typed_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=QUESTION)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="prompt", messages=QUESTION, top_p=3)  # type: ignore[arg-type]


def test_unknown_route_is_openai_shaped_404(base_url: str) -> None:
    resp = httpx.get(base_url + "/v1/nothing-here")
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_openai_backend_against_a_real_upstream(base_url: str, tmp_path: Path) -> None:
    """The `openai` backend talks to a real OpenAI-compatible server: this gateway itself."""
    settings = _settings(
        tmp_path, backend="openai", base_url=base_url + "/v1", model="prompt", name="upstream"
    )
    downstream = create_app(settings)
    with serve_in_thread(downstream) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        direct = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0)
        via = client.chat.completions.create(model="prompt", messages=QUESTION, max_tokens=12)  # type: ignore[arg-type]
        ref = direct.chat.completions.create(model="prompt", messages=QUESTION, max_tokens=12)  # type: ignore[arg-type]
        assert via.usage is not None and ref.usage is not None
        # The upstream's own usage passes through (its prompt includes its own system template).
        assert via.usage.completion_tokens == ref.usage.completion_tokens
        assert via.model_extra["hybrid"]["backend"] == {"name": "upstream", "trust": "internal"}
        streamed = client.chat.completions.create(
            model="prompt",
            messages=QUESTION,
            max_tokens=12,
            stream=True,  # type: ignore[arg-type]
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)


def test_unreachable_upstream_is_502(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, backend="openai", base_url="http://127.0.0.1:9/v1", model="x", max_retries=1
    )
    with serve_in_thread(create_app(settings)) as url:
        resp = httpx.post(
            url + "/v1/chat/completions", json={"model": "prompt", "messages": QUESTION}, timeout=30
        )
        assert resp.status_code == 502
        assert resp.json()["error"]["code"] == "generation_failed"
        streamed = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "prompt", "messages": QUESTION, "stream": True},
            timeout=30,
        )
        assert streamed.status_code == 502  # fails before the first byte, so a real status code
