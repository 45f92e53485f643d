"""The metric list is read from the registry, and /metrics is prometheus_client's ASGI exporter."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from services.gateway.metrics import ServiceMetrics, exposition_names, service_metric_names
from tests.gateway.metrics_scrape import parse, value

pytestmark = pytest.mark.unit


def test_exposition_names_follow_the_metric_type() -> None:
    registry = CollectorRegistry()
    Counter("jobs", "", registry=registry)
    Histogram("job_duration_seconds", "", registry=registry)
    Gauge("jobs_running", "", ["queue"], registry=registry)
    assert exposition_names(registry) == {"jobs_total", "job_duration_seconds", "jobs_running"}


def test_service_metric_names_come_from_the_metric_objects() -> None:
    names = service_metric_names()
    assert {"hybrid_requests_total", "hybrid_request_duration_seconds", "hybrid_requests_in_flight"} <= names
    # Created outside the metrics class once; now part of it, so every check sees them.
    assert {"hybrid_queue_wait_seconds", "hybrid_circuit_state", "hybrid_template_requests_total"} <= names


def test_metrics_endpoint_exports_the_registry_with_a_current_index_age() -> None:
    metrics = ServiceMetrics()
    metrics.set_index("v1", chunks=3, age_s=5.0)
    metrics.requests.labels(pipeline="prompt", route="prompt", status="ok").inc()
    app = Starlette(routes=[Route("/metrics", metrics.asgi_app(), methods=["GET"])])
    with TestClient(app) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = parse(response.text)
    assert value(samples, "hybrid_requests_total", pipeline="prompt", status="ok") == 1
    assert value(samples, "hybrid_index_info", version="v1") == 1
    assert value(samples, "hybrid_index_age_seconds") >= 5.0
