"""Writes deploy/k8s/base/prometheusrule.yaml: deploy/prometheus/alerts.yml wrapped as a PrometheusRule.

One source of truth for the alert rules: compose's Prometheus reads alerts.yml directly, the Prometheus
Operator reads this generated resource. Run `python deploy/k8s/render_prometheusrule.py` after editing
alerts.yml; a CI test (tests/deploy/test_k8s.py) fails when the two differ.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY_DIR = Path(__file__).resolve().parents[1]
ALERTS_PATH = DEPLOY_DIR / "prometheus" / "alerts.yml"
RULE_PATH = DEPLOY_DIR / "k8s" / "base" / "prometheusrule.yaml"

HEADER = (
    "# GENERATED from deploy/prometheus/alerts.yml by deploy/k8s/render_prometheusrule.py:"
    " edit those, not this.\n"
    "# Your Prometheus selects rules by label (kube-prometheus-stack: `release: <helm release name>`).\n"
)


class _LiteralDumper(yaml.SafeDumper):
    """Keeps multi-line PromQL readable: block scalars instead of quoted strings with \\n."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _represent_str)


def build_prometheus_rule(alerts: dict[str, Any]) -> dict[str, Any]:
    groups = alerts.get("groups")
    if not isinstance(groups, list) or not groups:
        raise ValueError(f"{ALERTS_PATH} must hold a non-empty `groups` list, got {groups!r}")
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "hybridllm",
            "labels": {"app.kubernetes.io/name": "hybridllm", "app.kubernetes.io/component": "gateway"},
        },
        "spec": {"groups": groups},
    }


def render() -> str:
    alerts = yaml.safe_load(ALERTS_PATH.read_text(encoding="utf-8"))
    body = yaml.dump(
        build_prometheus_rule(alerts), Dumper=_LiteralDumper, sort_keys=False, width=120, allow_unicode=True
    )
    return HEADER + body


def main() -> int:
    RULE_PATH.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {RULE_PATH}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
