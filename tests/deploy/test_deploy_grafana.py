"""deploy/grafana: the dashboard is current, every expression parses (promtool), names only real metrics."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_checks import (
    DEPLOY_DIR,
    HISTOGRAM_SUFFIXES,
    HYBRID_METRICS,
    is_known_metric,
    metric_names,
    promtool_check_expressions,
    require_tool,
)

pytestmark = pytest.mark.integration

GRAFANA_DIR = DEPLOY_DIR / "grafana"


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA_DIR / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is being created.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA_DIR / "dashboard.json").read_text(encoding="utf-8"))
    return loaded


def _expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    return {
        f"panel{panel['id']}_{target['refId']}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }


def test_committed_dashboard_matches_its_generator() -> None:
    committed = (GRAFANA_DIR / "dashboard.json").read_text(encoding="utf-8")
    assert committed == _builder().render(), "run `python deploy/grafana/build_dashboard.py` and commit"


def test_every_dashboard_expression_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    exprs = _expressions(dashboard)
    assert len(exprs) >= 20
    promtool_check_expressions(promtool, exprs, tmp_path)


def test_promtool_expression_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    with pytest.raises(AssertionError, match="exited"):
        promtool_check_expressions(
            promtool, {"broken": "sum by (pipeline (rate(hybrid_requests_total[5m]))"}, tmp_path
        )


def test_dashboard_names_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    unknown = {
        f"{key}: {name}"
        for key, expr in _expressions(dashboard).items()
        for name in metric_names(expr)
        if not is_known_metric(name)
    }
    assert unknown == set()


def test_metric_name_check_rejects_a_misspelt_metric() -> None:
    names = metric_names(
        "histogram_quantile(0.95, sum by (le) (rate(hybrid_request_latency_seconds_bucket[5m])))"
    )
    assert names == {"hybrid_request_latency_seconds_bucket"}
    assert not is_known_metric("hybrid_request_latency_seconds_bucket")


def test_dashboard_shows_every_service_metric(dashboard: dict[str, Any]) -> None:
    used = set()
    for expr in _expressions(dashboard).values():
        for name in metric_names(expr):
            for suffix in HISTOGRAM_SUFFIXES:
                name = name.removesuffix(suffix)
            used.add(name)
    assert HYBRID_METRICS - used == set()


def test_dashboard_has_the_required_views(dashboard: dict[str, Any]) -> None:
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    kinds = {panel["type"] for panel in panels}
    assert {"timeseries", "heatmap", "stat"} <= kinds
    stacked = [
        p
        for p in panels
        if p["fieldConfig"]["defaults"]["custom"].get("stacking", {}).get("mode") == "normal"
    ]
    assert any("hybrid_stage_duration_seconds" in t["expr"] for p in stacked for t in p["targets"])
    heatmap_exprs = [t["expr"] for p in panels if p["type"] == "heatmap" for t in p["targets"]]
    assert any("hybrid_router_confidence_bucket" in e for e in heatmap_exprs)
    all_exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}, sum by (le, pipeline)" in all_exprs
        assert f"histogram_quantile({quantile}, sum by (le, stage)" in all_exprs
    assert "1000 * sum by (pipeline) (rate(hybrid_cost_usd_total" in all_exprs


def test_panels_have_unique_ids_and_fit_the_grid(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]


def test_provisioning_points_grafana_at_prometheus_and_the_dashboard_folder() -> None:
    datasources = yaml.safe_load(
        (GRAFANA_DIR / "provisioning/datasources/prometheus.yaml").read_text("utf-8")
    )
    assert datasources["datasources"][0]["type"] == "prometheus"
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/hybridllm.yaml").read_text("utf-8"))
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/hybridllm"
