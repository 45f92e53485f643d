"""The `cache` settings section: defaults, YAML and environment, and the Redis store's need for a URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.errors import ConfigError
from services.core.settings import load_settings
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit


def test_off_by_default_and_settable_from_yaml_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings().cache.mode == "off"
    config = tmp_path / "config.yaml"
    config.write_text("cache: {mode: exact, ttl_s: 60, max_entries: 5}\n", encoding="utf-8")
    monkeypatch.setenv("HYBRID_CACHE__SEMANTIC__THRESHOLD", "0.95")
    settings = load_settings(config)
    assert (settings.cache.mode, settings.cache.ttl_s, settings.cache.max_entries) == ("exact", 60, 5)
    assert settings.cache.semantic.threshold == 0.95


def test_the_redis_store_names_both_settings_when_redis_url_is_missing() -> None:
    with pytest.raises(ConfigError, match=r"cache\.store is redis but redis\.url is not set"):
        load_settings(cache={"mode": "semantic", "store": "redis"})
    assert load_settings(cache={"mode": "off", "store": "redis"}).cache.store == "redis"  # off: never used
    url = "redis://127.0.0.1:6379/0"
    assert load_settings(cache={"mode": "exact", "store": "redis"}, redis={"url": url}).redis.url == url


@pytest.mark.parametrize("bad", [{"mode": "fuzzy"}, {"ttl_s": 0}, {"semantic": {"threshold": 1.5}}])
def test_bad_values_name_the_key(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=r"invalid setting cache\."):
        load_settings(cache=bad)


def test_the_readme_cache_example_loads(tmp_path: Path) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Response cache", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = tmp_path / "cache.yaml"
    config.write_text(example, encoding="utf-8")
    settings = load_settings(config)
    assert (settings.cache.mode, settings.cache.store) == ("semantic", "redis")
    assert settings.cache.semantic.threshold == load_settings().cache.semantic.threshold  # the default
