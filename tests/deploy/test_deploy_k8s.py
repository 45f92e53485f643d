"""deploy/k8s: `kubectl kustomize` per overlay, `kubernetes-validate --strict`, the wiring between objects."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.core.settings import load_settings
from tests.deploy.deploy_checks import DEPLOY_DIR, assert_tool_ok, hybrid_environment, require_tool, run_tool

pytestmark = pytest.mark.integration

K8S_DIR = DEPLOY_DIR / "k8s"
OVERLAYS = ("cpu", "gpu", "qdrant")
# The schemas kubernetes-validate ships cover the core API; these come from the Prometheus Operator's CRDs,
# for which it has none. Any other kind without a schema (a typo in apiVersion, say) fails the test.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "hybridllm"
CLUSTER_SCOPED = {"Namespace"}


def _kustomize(path: Path) -> str:
    kubectl = require_tool("kubectl")
    result = run_tool([kubectl, "kustomize", str(path)])
    assert_tool_ok(result)
    manifest: str = result.stdout
    return manifest


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return {overlay: _kustomize(K8S_DIR / "overlays" / overlay) for overlay in OVERLAYS}


def _objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def _get(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def _container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = (c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name)
    return container


def _validate(manifest: str, tmp_path: Path) -> tuple[int, str]:
    validator = require_tool("kubernetes-validate")
    path = tmp_path / "manifest.yaml"
    path.write_text(manifest, encoding="utf-8")
    result = run_tool([validator, "--strict", "-k", KUBERNETES_VERSION, "--quiet", str(path)])
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_kubernetes_schemas(
    rendered: dict[str, str], overlay: str, tmp_path: Path
) -> None:
    returncode, output = _validate(rendered[overlay], tmp_path)
    assert returncode == 0, output
    unvalidated = set(re.findall(r"Couldn't find schema for kind (\w+)", output))
    assert unvalidated <= CRD_KINDS, output


def test_kubernetes_validate_rejects_an_unknown_field(rendered: dict[str, str], tmp_path: Path) -> None:
    broken = rendered["cpu"].replace("minAvailable: 1", "minAvailable: 1\n  minAvailabel: 1", 1)
    assert broken != rendered["cpu"]
    returncode, output = _validate(broken, tmp_path)
    assert returncode != 0 and "minAvailabel" in output


def test_hpa_in_flight_component_builds_and_validates(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    # kustomize wants relative paths to other kustomizations.
    k8s = os.path.relpath(K8S_DIR, overlay)
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{k8s}/overlays/gpu]\ncomponents: [{k8s}/components/hpa-in-flight]\n", encoding="utf-8"
    )
    manifest = _kustomize(overlay)
    hpa = _get(_objects(manifest), "HorizontalPodAutoscaler", "hybridllm-gateway")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    assert hpa["spec"]["metrics"][1]["pods"]["metric"]["name"] == "hybrid_requests_in_flight"
    returncode, output = _validate(manifest, tmp_path)
    assert returncode == 0, output


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_one_namespace(rendered: dict[str, str], overlay: str) -> None:
    for obj in _objects(rendered[overlay]):
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_policies_select_existing_pods(rendered: dict[str, str], overlay: str) -> None:
    objects = _objects(rendered[overlay])
    workloads = [o for o in objects if o["kind"] in {"Deployment", "StatefulSet"}]
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in workloads]

    def selects(selector: dict[str, str]) -> list[dict[str, Any]]:
        return [
            w for w, labels in zip(workloads, pod_labels, strict=True) if selector.items() <= labels.items()
        ]

    for obj in objects:
        if obj["kind"] == "Service":
            targets = selects(obj["spec"]["selector"])
            assert targets, f"Service {obj['metadata']['name']} selects no pods"
            port_names = {
                p["name"]
                for w in targets
                for c in w["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            }
            for port in obj["spec"]["ports"]:
                assert port["targetPort"] in port_names, f"{obj['metadata']['name']}: {port['targetPort']}"
        if obj["kind"] in {"PodDisruptionBudget", "ServiceMonitor"}:
            assert selects(obj["spec"]["selector"]["matchLabels"]) or obj["kind"] == "ServiceMonitor"
        if obj["kind"] == "HorizontalPodAutoscaler":
            _get(objects, "Deployment", obj["spec"]["scaleTargetRef"]["name"])
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        labels = monitor["spec"]["selector"]["matchLabels"]
        assert any(labels.items() <= s["metadata"]["labels"].items() for s in services.values())


def test_gateway_probes_metrics_dir_and_index_volume(rendered: dict[str, str]) -> None:
    objects = _objects(rendered["cpu"])
    deployment = _get(objects, "Deployment", "hybridllm-gateway")
    pod = deployment["spec"]["template"]["spec"]
    gateway = _container(deployment, "gateway")
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["resources"]["requests"] and gateway["resources"]["limits"]
    env = {e["name"]: e for e in gateway["env"]}
    mounts = {m["name"]: m["mountPath"] for m in gateway["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["prometheus-multiproc"] == env["PROMETHEUS_MULTIPROC_DIR"]["value"]
    assert "emptyDir" in volumes["prometheus-multiproc"]
    claim = volumes["index"]["persistentVolumeClaim"]["claimName"]
    _get(objects, "PersistentVolumeClaim", claim)
    (init,) = pod["initContainers"]
    assert {m["name"]: m["mountPath"] for m in init["volumeMounts"]}["index"] == mounts["index"]
    assert "hybridllm ingest" in init["args"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    configmap_name = volumes["settings"]["configMap"]["name"]
    _get(objects, "ConfigMap", configmap_name)
    for name in ("HYBRID_AUTH__API_KEY_SHA256", "HYBRID_AUTH__ADMIN_KEY_SHA256"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in _get(objects, "Secret", ref["name"])["stringData"]


def _settings_of(objects: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Loads the gateway's settings the way the pod does: the ConfigMap's file plus the container's env."""
    deployment = _get(objects, "Deployment", "hybridllm-gateway")
    gateway = _container(deployment, "gateway")
    configmap = next(o for o in objects if o["kind"] == "ConfigMap")
    config_file = tmp_path / "settings.yaml"
    config_file.write_text(configmap["data"]["settings.yaml"], encoding="utf-8")
    env: dict[str, str] = {}
    for var in gateway["env"]:
        if not var["name"].startswith("HYBRID_"):
            continue
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = _get(objects, "Secret", ref["name"])["stringData"][ref["key"]]
    with hybrid_environment(monkeypatch, env):
        return load_settings(config_file)


def test_cpu_gateway_settings_load(
    rendered: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings_of(_objects(rendered["cpu"]), tmp_path, monkeypatch)
    assert settings.generator.backend == "onnx"
    assert str(settings.rag.index_dir) == "/data/index"
    assert settings.auth.enabled is True and settings.auth.api_key_sha256 == []


def test_gpu_gateway_calls_vllm_with_embedded_fallback(
    rendered: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = _objects(rendered["gpu"])
    settings = _settings_of(objects, tmp_path, monkeypatch)
    assert settings.generator.backend == "openai"
    assert settings.generator.base_url == "http://hybridllm-vllm:8000/v1"
    assert settings.fallback_generator is not None and settings.fallback_generator.backend == "onnx"
    service = _get(objects, "Service", "hybridllm-vllm")
    assert service["spec"]["ports"][0]["port"] == 8000


def test_gpu_vllm_serves_lora_with_patchable_tensor_parallelism(rendered: dict[str, str]) -> None:
    vllm = _container(_get(_objects(rendered["gpu"]), "Deployment", "hybridllm-vllm"), "vllm")
    args = vllm["args"]
    assert "--enable-lora" in args
    assert args[args.index("--lora-modules") + 1] == "tuned=/adapters/tuned"
    assert "--tensor-parallel-size=$(TENSOR_PARALLEL_SIZE)" in args
    env = {e["name"]: e.get("value") for e in vllm["env"]}
    # One GPU per tensor-parallel rank: the two numbers must move together.
    assert env["TENSOR_PARALLEL_SIZE"] == vllm["resources"]["limits"]["nvidia.com/gpu"]
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "1"
    assert vllm["image"].startswith("vllm/vllm-openai:")


def test_qdrant_overlay_points_the_gateway_at_the_qdrant_service(
    rendered: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = _objects(rendered["qdrant"])
    settings = _settings_of(objects, tmp_path, monkeypatch)
    assert settings.rag.vector_store == "qdrant"
    assert settings.rag.qdrant.url == "http://hybridllm-qdrant:6333"
    statefulset = _get(objects, "StatefulSet", "hybridllm-qdrant")
    assert statefulset["spec"]["serviceName"] == "hybridllm-qdrant-headless"
    _get(objects, "Service", "hybridllm-qdrant-headless")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_replicas_share_limits_in_the_redis_service(
    rendered: dict[str, str], overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = _objects(rendered[overlay])
    settings = _settings_of(objects, tmp_path, monkeypatch)
    assert settings.limits.backend == "redis"
    assert settings.redis.url == "redis://hybridllm-redis:6379/0"
    service = _get(objects, "Service", "hybridllm-redis")
    assert service["spec"]["ports"][0]["port"] == 6379
    redis = _get(objects, "Deployment", "hybridllm-redis")
    pod = redis["spec"]["template"]["spec"]
    # No PVC by default: the counters live in memory (persistence is a documented opt-in).
    assert all("persistentVolumeClaim" not in volume for volume in pod["volumes"])
    args = _container(redis, "redis")["args"]
    assert args[args.index("--appendonly") + 1] == "no"
    assert pod["securityContext"]["runAsNonRoot"] is True


def _renderer() -> Any:
    spec = importlib.util.spec_from_file_location(
        "render_prometheusrule", K8S_DIR / "render_prometheusrule.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheus_rule_is_current_and_equals_alerts_yml(rendered: dict[str, str]) -> None:
    committed = (K8S_DIR / "base" / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert committed == _renderer().render(), "run `python deploy/k8s/render_prometheusrule.py` and commit"
    alerts = yaml.safe_load((DEPLOY_DIR / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    rule = _get(_objects(rendered["cpu"]), "PrometheusRule", "hybridllm")
    assert rule["spec"]["groups"] == alerts["groups"]


def test_prometheus_rule_groups_pass_promtool(rendered: dict[str, str], tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rule = _get(_objects(rendered["cpu"]), "PrometheusRule", "hybridllm")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}), encoding="utf-8")
    assert_tool_ok(run_tool([promtool, "check", "rules", str(path)]))
