"""Shared helpers for the deploy/ validation tests: locating the real tools, running them, PromQL checks."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from services.gateway.metrics import service_metric_names

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
INSTALL_HINT = "install the deploy validators with `bash .ci/deploy-tools.sh`"

# The metric names the service exports, read from its metric objects; histograms add HISTOGRAM_SUFFIXES.
HYBRID_METRICS = service_metric_names()
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
)
_LABEL_MATCHERS = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_RANGES = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")

# Grafana's variables, replaced by plausible values so promtool can parse the expressions.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$pipeline": ".*"}


def find_tool(name: str) -> str | None:
    """A tool on PATH, or installed next to this Python (the project venv's bin/)."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which(name)


def require_tool(name: str) -> str:
    tool = find_tool(name)
    if tool is None:
        pytest.skip(f"{name} not found on PATH or in the venv; {INSTALL_HINT}")
    return tool


def run_tool(
    args: list[str], cwd: Path = REPO_ROOT, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


def assert_tool_ok(result: subprocess.CompletedProcess[str]) -> None:
    command = " ".join(result.args)
    assert result.returncode == 0, (
        f"{command} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and literals removed)."""
    stripped = _STRINGS.sub(" ", expr)
    stripped = _LABEL_MATCHERS.sub(" ", stripped)
    stripped = _GROUPING.sub(" ", stripped)
    stripped = _RANGES.sub(" ", stripped)
    names = set()
    for match in _IDENTIFIER.finditer(stripped):
        name, call = match.group(1), match.group(2)
        if call or name in _PROMQL_KEYWORDS or name.lower() in {"inf", "nan"}:
            continue
        names.add(name)
    return names


def is_known_metric(name: str, recorded: Iterable[str] = ()) -> bool:
    if name.startswith("vllm:") or name in recorded or name == "up":
        return True
    base = name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            base = name[: -len(suffix)]
    return name in HYBRID_METRICS or base in HYBRID_METRICS


def promtool_check_expressions(promtool: str, exprs: Mapping[str, str], tmp_path: Path) -> None:
    """Parses every expression with promtool, as recording rules: promtool has no bare expression checker."""
    rules = []
    for name, expr in exprs.items():
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"check:{name}", "expr": expr})
    rule_file = tmp_path / "expressions.yml"
    rule_file.write_text(
        yaml.safe_dump({"groups": [{"name": "expressions", "rules": rules}]}), encoding="utf-8"
    )
    assert_tool_ok(run_tool([promtool, "check", "rules", str(rule_file)]))


@contextmanager
def hybrid_environment(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> Iterator[None]:
    """Exactly `env` as the HYBRID_* environment (anything set by the caller's shell removed)."""
    with monkeypatch.context() as patch:
        import os

        for key in list(os.environ):
            if key.startswith("HYBRID_"):
                patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        yield
