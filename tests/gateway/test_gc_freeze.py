"""Start-up objects are frozen out of the cyclic collector once the gateway is ready, and requests are
served as before."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.harness.in_thread import serve_in_thread
from services.gateway.app import create_app
from tests.gateway.test_metrics import gateway_settings, upstream  # noqa: F401  (module fixture)


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test session runs with a normal collector


@pytest.mark.usefixtures("unfrozen")
def test_a_ready_gateway_has_frozen_its_start_up_objects(upstream: str, tmp_path: Path) -> None:  # noqa: F811
    assert gc.get_freeze_count() == 0
    with serve_in_thread(create_app(gateway_settings(upstream, tmp_path))) as url:
        frozen = gc.get_freeze_count()
        body = {"model": "prompt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
    assert frozen > 10_000
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
