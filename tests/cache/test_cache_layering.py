"""services/cache sits beside rag and llm: pipelines and the gateway use it, it imports only services.core."""

from __future__ import annotations

import pytest

from tests.test_layering import SERVICES, imported_modules

pytestmark = pytest.mark.unit


def test_the_cache_imports_only_core_and_itself() -> None:
    upward = {
        f"{module} imports {name}"
        for module, path in SERVICES.items()
        if module.startswith("services.cache")
        for name in imported_modules(path)
        if name.startswith("services.") and not name.startswith(("services.core", "services.cache"))
    }
    assert upward == set()
    assert any(module.startswith("services.cache.") for module in SERVICES)
