from __future__ import annotations

from pathlib import Path

import pytest

from services.core.errors import ConfigError
from services.core.settings import (
    OnnxGeneratorSettings,
    OpenAIGeneratorSettings,
    TransformersGeneratorSettings,
    load_settings,
)

pytestmark = pytest.mark.unit


def test_defaults_are_the_embedded_cpu_service() -> None:
    settings = load_settings()
    assert settings.generator.backend == "onnx"
    assert settings.generator.model == "smollm2"
    assert settings.default_pipeline == "hybrid"
    assert settings.server.host == "127.0.0.1"


def test_yaml_overrides_defaults_and_env_overrides_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("rag:\n  top_k: 7\n  fusion:\n    method: dense\ngenerator:\n  backend: transformers\n")
    assert load_settings(config).rag.top_k == 7
    monkeypatch.setenv("HYBRID_RAG__TOP_K", "9")
    settings = load_settings(config)
    assert settings.rag.top_k == 9  # env beats YAML
    assert settings.rag.fusion.method == "dense"  # the rest of the YAML section survives
    assert settings.generator.backend == "transformers"
    monkeypatch.setenv("HYBRID_RAG__FUSION__RRF_K", "10")
    settings = load_settings(config)
    assert (settings.rag.fusion.method, settings.rag.fusion.rrf_k) == ("dense", 10)  # nested env merges


def test_explicit_overrides_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_RAG__TOP_K", "9")
    monkeypatch.setenv("HYBRID_RAG__FUSION__DENSE_K", "50")
    settings = load_settings(rag={"top_k": 3, "fusion": {"rrf_k": 20}})
    assert settings.rag.top_k == 3
    assert (settings.rag.fusion.rrf_k, settings.rag.fusion.dense_k) == (20, 50)


def test_generator_backend_from_env_picks_its_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_GENERATOR__BACKEND", "openai")
    monkeypatch.setenv("HYBRID_GENERATOR__BASE_URL", "http://127.0.0.1:8001/v1")
    monkeypatch.setenv("HYBRID_GENERATOR__MAX_RETRIES", "0")
    monkeypatch.setenv("HYBRID_FALLBACK_GENERATOR__MODEL", "smollm2")
    settings = load_settings()
    assert isinstance(settings.generator, OpenAIGeneratorSettings)
    assert (settings.generator.base_url, settings.generator.max_retries) == ("http://127.0.0.1:8001/v1", 0)
    # A section that names no backend gets the default one.
    assert isinstance(settings.fallback_generator, OnnxGeneratorSettings)


def test_generator_backend_from_yaml_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "s.yaml"
    config.write_text("generator:\n  backend: transformers\n  dtype: fp32\n")
    settings = load_settings(config)
    assert isinstance(settings.generator, TransformersGeneratorSettings)
    assert settings.generator.dtype == "fp32"
    assert isinstance(load_settings(generator={"model": "x"}).generator, OnnxGeneratorSettings)


def test_explicit_overrides_merge_into_sections() -> None:
    settings = load_settings(rag={"index_dir": "/x"})
    assert str(settings.rag.index_dir) == "/x"
    assert settings.rag.top_k == 4  # untouched keys keep their defaults


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("rag:\n  top_k: 0\n", "rag.top_k"),
        ("generator:\n  backend: llamafile\n", "generator.backend"),
        ("rag:\n  topk: 3\n", "rag.topk"),
        ("server:\n  port: 70000\n", "server.port"),
        ("generator:\n  backend: openai\n  base_url: localhost:8000\n", "generator.base_url"),
        ("fallback_generator:\n  backend: nope\n", "fallback_generator.backend"),
        ("rag:\n  fusion:\n    rrf_k: 0\n", "rag.fusion.rrf_k"),
        ("rag:\n  grounding:\n    threshold: 2\n", "rag.grounding.threshold"),
        ("rag:\n  chunking:\n    size: 3\n", "rag.chunking.size"),
        ("rag:\n  rrf_k: 10\n", "rag.rrf_k"),
        ("nonsense: 1\n", "nonsense"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=rf"invalid setting {key}\b"):
        load_settings(config)


@pytest.mark.parametrize(
    ("generator", "key", "backend"),
    [
        ({"backend": "openai", "onnx_precision": "int4"}, "generator.onnx_precision", "openai"),
        ({"onnx_precision": "int4", "base_url": "http://x"}, "generator.base_url", "onnx"),
        ({"backend": "onnx", "dtype": "bf16"}, "generator.dtype", "onnx"),
    ],
)
def test_a_field_of_another_backend_names_the_key(generator: dict[str, str], key: str, backend: str) -> None:
    with pytest.raises(ConfigError, match=rf"invalid setting {key}: not a setting of the {backend} backend"):
        load_settings(generator=generator)
    with pytest.raises(ConfigError, match=rf"invalid setting fallback_{key}\b"):
        load_settings(fallback_generator=generator)


def test_invalid_env_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_ROUTER__MIN_CONFIDENCE", "1.5")
    with pytest.raises(ConfigError, match="router.min_confidence"):
        load_settings()
    monkeypatch.delenv("HYBRID_ROUTER__MIN_CONFIDENCE")
    monkeypatch.setenv("HYBRID_RAG__EVIDENCE__BUDGET_TOKENS", "1")
    with pytest.raises(ConfigError, match=r"invalid setting rag\.evidence\.budget_tokens: .* \(got '1'\)"):
        load_settings()


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("rag: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(listy)


def test_the_readme_configuration_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "readme.yaml"
    config.write_text(example, encoding="utf-8")
    settings = load_settings(config)
    assert isinstance(settings.generator, OnnxGeneratorSettings)
    assert settings.rag.grounding.unsupported_answer == "extract"
    assert settings.rag.faiss.ann_index == "hnsw"
