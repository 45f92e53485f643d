"""deploy/prometheus: `promtool check config`, `promtool check rules`, `promtool test rules`, metric names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.deploy_checks import (
    DEPLOY_DIR,
    assert_tool_ok,
    is_known_metric,
    metric_names,
    require_tool,
    run_tool,
)

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = DEPLOY_DIR / "prometheus"
REQUIRED_ALERTS = {
    "HybridLatencySLOBreached",
    "HybridErrorRateHigh",
    "HybridCostBurnRateHigh",
    "HybridIndexStale",
    "HybridFallbackRateHigh",
}


def _rules() -> list[dict[str, Any]]:
    alerts = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in alerts["groups"] for rule in group["rules"]]


def test_promtool_check_config_accepts_prometheus_yml() -> None:
    promtool = require_tool("promtool")
    assert_tool_ok(run_tool([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS_DIR))


def test_promtool_check_rules_accepts_alerts() -> None:
    promtool = require_tool("promtool")
    assert_tool_ok(run_tool([promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS_DIR))


def test_promtool_unit_tests_for_the_alerts_pass() -> None:
    promtool = require_tool("promtool")
    result = run_tool([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS_DIR)
    assert_tool_ok(result)
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules_fails_when_an_alert_threshold_is_broken(tmp_path: Path) -> None:
    # The unit tests must be able to fail: with the error-rate threshold raised past 10%, the expected
    # HybridErrorRateHigh alert no longer fires.
    promtool = require_tool("promtool")
    alerts = (PROMETHEUS_DIR / "alerts.yml").read_text(encoding="utf-8")
    broken = alerts.replace("ratio_rate5m > 0.05", "ratio_rate5m > 0.5")
    assert broken != alerts
    (tmp_path / "alerts.yml").write_text(broken, encoding="utf-8")
    (tmp_path / "alerts_test.yml").write_text(
        (PROMETHEUS_DIR / "alerts_test.yml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    result = run_tool([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path)
    assert result.returncode != 0
    assert "HybridErrorRateHigh" in result.stdout + result.stderr


def test_alerts_cover_slo_errors_cost_index_and_fallbacks() -> None:
    names = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert REQUIRED_ALERTS <= names


def test_every_alert_has_a_unit_test() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text(encoding="utf-8"))
    tested = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])}
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts - tested == set()


def test_rules_use_only_exported_metrics() -> None:
    rules = _rules()
    recorded = {rule["record"] for rule in rules if "record" in rule}
    unknown = {
        name for rule in rules for name in metric_names(rule["expr"]) if not is_known_metric(name, recorded)
    }
    assert unknown == set()


def test_latency_slo_is_a_p95_per_pipeline_over_the_request_histogram() -> None:
    by_name = {rule.get("record") or rule.get("alert"): rule for rule in _rules()}
    p95 = " ".join(by_name["pipeline:hybrid_request_duration_seconds:p95_5m"]["expr"].split())
    assert p95.startswith("histogram_quantile(0.95, sum by (le, pipeline)")
    assert "hybrid_request_duration_seconds_bucket" in p95
    assert "pipeline:hybrid_request_duration_seconds:p95_5m" in by_name["HybridLatencySLOBreached"]["expr"]


def test_prometheus_scrapes_the_gateway_and_vllm() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["hybridllm-gateway"] == ["gateway:8000"]
    assert targets["vllm"] == ["vllm:8000"]
    assert config["rule_files"] == ["alerts.yml"]
