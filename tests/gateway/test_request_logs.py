"""The request log: one JSON line per request, with what an operator needs and nothing a user typed,
unless `observability.log_prompts` is on, and then only after redaction.

Live gateways (`openai` backend on the benchmark fixture upstream); the lines are the ones the service's
JsonFormatter writes, captured from the request logger.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmarks.harness.fixture_upstream import FixtureBehaviour, running_fixture_upstream
from services.gateway.app import create_app
from services.gateway.logging_setup import JsonFormatter, redacted_exchange
from services.privacy import PrivacySettings
from tests.conftest import serve_in_thread
from tests.gateway.test_metrics import gateway_settings

EMAIL = "jane.doe@example.com"
CARD = "4111 1111 1111 1111"
PLANTED = f"My email is {EMAIL} and card {CARD} was charged twice; please refund it."


class LogLines:
    """JSON lines of the request logger, formatted exactly as the service writes them."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self.handler = logging.StreamHandler(self._buffer)
        self.handler.setFormatter(JsonFormatter())

    def raw(self) -> str:
        return self._buffer.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.raw().splitlines() if line.strip()]

    def for_request(self, request_id: str) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("request_id") == request_id]


@pytest.fixture(scope="module")
def log_lines() -> Iterator[LogLines]:
    lines = LogLines()
    logger = logging.getLogger("services.gateway.requests")
    previous = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(lines.handler)
    try:
        yield lines
    finally:
        logger.removeHandler(lines.handler)
        logger.setLevel(previous)


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with running_fixture_upstream(FixtureBehaviour(delay_s=0.002, tokens=8)) as url:
        yield url


def _serve(upstream: str, tmp: Path, *, log_prompts: bool) -> Any:
    settings = gateway_settings(upstream, tmp, observability={"log_prompts": log_prompts})
    return serve_in_thread(create_app(settings))


@pytest.fixture(scope="module")
def quiet_gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _serve(upstream, tmp_path_factory.mktemp("logs-off"), log_prompts=False) as url:
        yield url


@pytest.fixture(scope="module")
def prompt_logging_gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with _serve(upstream, tmp_path_factory.mktemp("logs-on"), log_prompts=True) as url:
        yield url


def post(base_url: str, request_id: str, content: str, **extra: Any) -> httpx.Response:
    body = {"model": "prompt", "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}
    return httpx.post(
        base_url + "/v1/chat/completions", json=body, headers={"x-request-id": request_id}, timeout=30
    )


@pytest.mark.integration
def test_one_line_per_request_without_prompts_by_default(quiet_gateway: str, log_lines: LogLines) -> None:
    resp = post(quiet_gateway, "req-quiet-1", PLANTED)
    assert resp.status_code == 200
    answer = resp.json()["choices"][0]["message"]["content"]
    (line,) = log_lines.for_request("req-quiet-1")
    assert line["message"] == "request" and line["level"] == "INFO"
    assert (line["pipeline"], line["route"], line["status"], line["stream"]) == (
        "prompt",
        "prompt",
        "ok",
        False,
    )
    usage = resp.json()["usage"]
    assert line["tokens"]["prompt"] == usage["prompt_tokens"]
    assert line["tokens"]["completion"] == usage["completion_tokens"]
    assert line["cost_usd"] == pytest.approx(resp.json()["hybrid"]["cost_usd"]["total"])
    assert {"privacy", "generate"} <= set(line["timings_ms"]) and line["duration_ms"] > 0
    assert "messages" not in line and "answer" not in line
    text = json.dumps(line)
    assert EMAIL not in text and "4111" not in text and answer not in text


@pytest.mark.integration
def test_streaming_and_failed_requests_are_logged_once(quiet_gateway: str, log_lines: LogLines) -> None:
    with httpx.stream(
        "POST",
        quiet_gateway + "/v1/chat/completions",
        json={"model": "prompt", "messages": [{"role": "user", "content": "Hi"}], "stream": True},
        headers={"x-request-id": "req-quiet-stream"},
        timeout=30,
    ) as resp:
        assert resp.status_code == 200
        resp.read()
    (streamed,) = log_lines.for_request("req-quiet-stream")
    assert streamed["stream"] is True and streamed["status"] == "ok"

    bad = post(quiet_gateway, "req-quiet-bad", "Hi", max_tokens=10**6)
    assert bad.status_code == 400
    (failed,) = log_lines.for_request("req-quiet-bad")
    assert failed["status"] == "client_error" and failed["error"]
    assert "tokens" not in failed


@pytest.mark.integration
def test_logged_prompts_are_redacted(prompt_logging_gateway: str, log_lines: LogLines) -> None:
    resp = post(prompt_logging_gateway, "req-logged-1", PLANTED)
    assert resp.status_code == 200
    (line,) = log_lines.for_request("req-logged-1")
    (message,) = line["messages"]
    assert message["role"] == "user"
    assert message["content"] == (
        "My email is [EMAIL_1] and card [CARD_1] was charged twice; please refund it."
    )
    assert line["answer"] == resp.json()["choices"][0]["message"]["content"]  # nothing to redact in it
    raw = log_lines.raw()
    assert EMAIL not in raw and CARD not in raw and CARD.replace(" ", "") not in raw


@pytest.mark.unit
def test_redaction_keeps_placeholders_consistent_across_messages_and_answer() -> None:
    exchange = redacted_exchange(
        PrivacySettings(),
        [("system", "Be brief."), ("user", f"Write to {EMAIL}, card {CARD}.")],
        f"I wrote to {EMAIL.upper()} about card {CARD.replace(' ', '-')}; call 212-555-0199 if needed.",
    )
    assert exchange["messages"][0] == {"role": "system", "content": "Be brief."}
    assert exchange["messages"][1]["content"] == "Write to [EMAIL_1], card [CARD_1]."
    assert exchange["answer"].startswith("I wrote to [EMAIL_1] about card [CARD_1];")
    assert "212-555-0199" not in exchange["answer"] and "[PHONE_1]" in exchange["answer"]


@pytest.mark.unit
def test_answer_is_left_out_when_there_is_none() -> None:
    exchange = redacted_exchange(PrivacySettings(), [("user", "hello")], None)
    assert exchange == {"messages": [{"role": "user", "content": "hello"}]}
