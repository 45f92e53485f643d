"""deploy/compose.yaml: `docker-compose config` and the compose-spec schema; each profile is a whole setup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from services.core.settings import load_settings
from tests.deploy.deploy_checks import DEPLOY_DIR, assert_tool_ok, hybrid_environment, require_tool, run_tool

pytestmark = pytest.mark.integration

PROFILES = {
    "cpu": {"gateway-cpu", "redis"},
    "qdrant": {"gateway-qdrant", "qdrant", "redis"},
    "gpu": {"gateway-gpu", "vllm", "prometheus", "grafana", "redis"},
    "monitoring": {"prometheus", "grafana"},
}
GATEWAY_PROFILES = ("cpu", "qdrant", "gpu")


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    """The compose file as docker-compose resolves it (anchors merged, variables substituted)."""
    compose = require_tool("docker-compose")
    result = run_tool([compose, "-f", "compose.yaml", "config"], cwd=DEPLOY_DIR)
    assert_tool_ok(result)
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def _active(services: dict[str, Any], profile: str) -> dict[str, Any]:
    # docker-compose v1's `config` prints every service whatever --profile says, so the selection that
    # `up --profile` makes is computed here: services in the profile plus those without any profile.
    return {
        name: service
        for name, service in services.items()
        if not service.get("profiles") or profile in service["profiles"]
    }


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_docker_compose_config_accepts_each_profile(profile: str) -> None:
    compose = require_tool("docker-compose")
    assert_tool_ok(
        run_tool([compose, "-f", "compose.yaml", "--profile", profile, "config", "-q"], cwd=DEPLOY_DIR)
    )


def test_compose_file_matches_the_compose_spec_schema() -> None:
    checker = require_tool("check-jsonschema")
    assert_tool_ok(
        run_tool([checker, "--builtin-schema", "vendor.compose-spec", "compose.yaml"], cwd=DEPLOY_DIR)
    )


def test_compose_spec_check_rejects_an_unknown_service_key(tmp_path: Path) -> None:
    checker = require_tool("check-jsonschema")
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  gateway:\n    image: x\n    replicaz: 2\n", encoding="utf-8")
    assert run_tool([checker, "--builtin-schema", "vendor.compose-spec", str(bad)]).returncode != 0


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_profile_starts_a_whole_setup(resolved: dict[str, Any], profile: str) -> None:
    active = _active(resolved["services"], profile)
    assert set(active) == PROFILES[profile]
    for name, service in active.items():
        missing = set(service.get("depends_on", {})) - set(active)
        assert missing == set(), f"{name} depends on services outside profile {profile}: {missing}"


@pytest.mark.parametrize("profile", GATEWAY_PROFILES)
def test_each_gateway_profile_has_one_gateway_on_port_8000(resolved: dict[str, Any], profile: str) -> None:
    active = _active(resolved["services"], profile)
    gateways = [
        service
        for service in active.values()
        if "gateway" in service.get("networks", {}).get("default", {}).get("aliases", [])
    ]
    assert len(gateways) == 1
    (gateway,) = gateways
    assert any(
        str(port["target"]) == "8000" and str(port["published"]) == "8000" for port in gateway["ports"]
    )
    assert gateway["environment"]["PROMETHEUS_MULTIPROC_DIR"] in gateway["tmpfs"]


@pytest.mark.parametrize("profile", GATEWAY_PROFILES)
def test_gateway_environment_is_valid_settings(
    resolved: dict[str, Any], profile: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (gateway,) = (s for n, s in _active(resolved["services"], profile).items() if n.startswith("gateway"))
    env = {key: str(value) for key, value in gateway["environment"].items() if key.startswith("HYBRID_")}
    with hybrid_environment(monkeypatch, env):
        settings = load_settings()
    # Every worker counts limits in the profile's Redis, which the gateway waits for.
    assert settings.limits.backend == "redis" and settings.redis.url == "redis://redis:6379/0"
    assert gateway["depends_on"]["redis"]["condition"] == "service_healthy"
    if profile == "gpu":
        assert settings.generator.backend == "openai"
        assert settings.generator.base_url == "http://vllm:8000/v1"
        assert settings.generator.adapters == {"tuned": "tuned"}
    if profile == "qdrant":
        assert settings.rag.vector_store == "qdrant"
        assert settings.rag.qdrant.url == "http://qdrant:6333"


def test_gpu_profile_reserves_a_gpu_for_vllm_with_lora(resolved: dict[str, Any]) -> None:
    vllm = resolved["services"]["vllm"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    command = vllm["command"]
    assert "--enable-lora" in command
    assert command[command.index("--lora-modules") + 1] == "tuned=/adapters/tuned"
    assert "--tensor-parallel-size=1" in command
    assert vllm["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "1"


def test_files_mounted_into_prometheus_and_grafana_exist(resolved: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        # docker-compose v1 prints short syntax: SOURCE:TARGET[:MODE], bind sources as absolute paths.
        sources = [volume.split(":")[0] for volume in resolved["services"][name]["volumes"]]
        binds = [source for source in sources if source.startswith("/")]
        assert binds, f"{name} mounts no files from deploy/"
        for source in binds:
            assert Path(source).exists(), f"{name} mounts a missing {source}"


def test_redis_keeps_no_data_by_default(resolved: dict[str, Any]) -> None:
    redis = resolved["services"]["redis"]
    assert "volumes" not in redis  # persistence is opt-in (see the comment in compose.yaml)
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "no"
    assert "redis-cli" in redis["healthcheck"]["test"]
