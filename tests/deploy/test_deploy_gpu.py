"""deploy/gpu and benchmarks/gpu: the vLLM settings load; the benchmark script is shellcheck-clean, strict."""

from __future__ import annotations

import subprocess

import pytest

from services.core.settings import load_settings
from tests.deploy.deploy_checks import (
    DEPLOY_DIR,
    REPO_ROOT,
    assert_tool_ok,
    hybrid_environment,
    require_tool,
    run_tool,
)

pytestmark = pytest.mark.integration

RUN_SH = REPO_ROOT / "benchmarks" / "gpu" / "run.sh"
DEPLOY_TOOLS = REPO_ROOT / ".ci" / "deploy-tools.sh"


@pytest.mark.parametrize("script", [RUN_SH, DEPLOY_TOOLS], ids=["benchmarks-gpu-run", "ci-deploy-tools"])
def test_shellcheck_passes(script) -> None:
    shellcheck = require_tool("shellcheck")
    assert_tool_ok(run_tool([shellcheck, str(script)]))


def test_shellcheck_flags_an_unquoted_variable(tmp_path) -> None:
    shellcheck = require_tool("shellcheck")
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/usr/bin/env bash\nrm -rf $1/data\n", encoding="utf-8")
    assert run_tool([shellcheck, str(bad)]).returncode != 0


def test_benchmark_script_is_strict_and_uses_the_same_slos_for_gateway_and_vllm() -> None:
    text = RUN_SH.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text
    goodput = '--goodput "ttft:$SLO_TTFT_MS" "tpot:$SLO_TPOT_MS"'
    assert text.count(goodput) == 2
    assert "hybridllm bench compare --base-url" in text
    assert "vllm bench serve" in text


def test_benchmark_script_without_arguments_prints_usage_and_exits_2() -> None:
    result = subprocess.run(["bash", str(RUN_SH)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_gpu_settings_point_at_vllm_with_the_embedded_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    with hybrid_environment(monkeypatch, {}):
        settings = load_settings(DEPLOY_DIR / "gpu" / "settings.yaml")
    assert settings.generator.backend == "openai"
    assert settings.generator.base_url == "http://127.0.0.1:8001/v1"
    assert settings.generator.model == "base"
    assert settings.generator.adapters == {"tuned": "tuned"}
    assert settings.fallback_generator is not None
    assert settings.fallback_generator.backend == "onnx"
    assert settings.prices.self_hosted_hour_usd["vllm"] > 0


def test_k8s_settings_file_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    with hybrid_environment(monkeypatch, {}):
        settings = load_settings(DEPLOY_DIR / "k8s" / "base" / "settings.yaml")
    assert settings.server.workers == 2
    assert settings.auth.enabled is True
