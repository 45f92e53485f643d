"""Property-based fuzzing of the live gateway from its own OpenAPI schema (schemathesis + hypothesis).

At least 1,000 generated requests over every operation: no 5xx, every status code and content type is
one the operation documents, and every body matches the documented schema (JSON bodies, and each event of
a stream). Generation goes to the fixture upstream (an OpenAI-compatible server answering
at once), so the run is bounded by the gateway, not by a model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("schemathesis", reason="schemathesis is not installed")

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, Phase, given  # noqa: E402
from hypothesis import settings as hypothesis_settings  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.gateway.fault_upstream import FaultUpstreamServer, fault_upstream, gateway_in_front_of  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Examples per operation and mode (valid bodies, then bodies that break the schema on purpose); the chat
# endpoint, the one with a rich body, gets most. Operations without inputs generate one request each.
EXAMPLES = {"/v1/chat/completions": 450, "/v1/retrieve": 120}
OTHER_EXAMPLES = 40
MIN_REQUESTS = 1000
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstreamServer]:
    with fault_upstream() as server:
        yield server


@pytest.fixture(scope="module")
def base_url(handbook_index: Path, upstream: FaultUpstreamServer) -> Iterator[str]:
    with gateway_in_front_of(upstream, handbook_index, server={"max_completion_tokens": 64}) as url:
        yield url


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, sent: dict[str, int]) -> None:
    label = f"{operation.method.upper()} {operation.path} {mode.value}"
    sent[label] = 0

    @hypothesis_settings(
        max_examples=EXAMPLES.get(operation.path, OTHER_EXAMPLES),
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run: a failure reproduces
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case: Any) -> None:
        response = case.call(base_url=base_url, timeout=30)
        sent[label] += 1
        case.validate_response(response, checks=CHECKS)

    exercise()


def test_generated_requests_get_no_5xx_and_match_the_schema(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # Err would raise here, which is the point
        # Without inputs there is nothing to break: negative generation is unsatisfiable there.
        has_inputs = bool(len(operation.body) or len(operation.query))
        for mode in (
            (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if has_inputs else (GenerationMode.POSITIVE,)
        ):
            _fuzz(operation, mode, base_url, sent)
    assert sum(sent.values()) >= MIN_REQUESTS, sent
