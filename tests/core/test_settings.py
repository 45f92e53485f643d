from __future__ import annotations

from pathlib import Path

import pytest

from services.core.errors import ConfigError
from services.core.settings import load_settings

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
    config.write_text("rag:\n  top_k: 7\n  fusion: dense\ngenerator:\n  backend: transformers\n")
    assert load_settings(config).rag.top_k == 7
    monkeypatch.setenv("HYBRID_RAG__TOP_K", "9")
    settings = load_settings(config)
    assert settings.rag.top_k == 9  # env beats YAML
    assert settings.rag.fusion == "dense"  # the rest of the YAML section survives
    assert settings.generator.backend == "transformers"


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
        ("generator:\n  base_url: localhost:8000\n", "generator.base_url"),
        ("nonsense: 1\n", "nonsense"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match=rf"invalid setting {key}\b"):
        load_settings(config)


def test_invalid_env_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_ROUTER__MIN_CONFIDENCE", "1.5")
    with pytest.raises(ConfigError, match="router.min_confidence"):
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
