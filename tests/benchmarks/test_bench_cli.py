"""`hybridllm bench KIND` dispatches to the bench each kind names."""

from __future__ import annotations

import importlib

import pytest

from benchmarks.cli import BENCHES

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("kind", sorted(BENCHES))
def test_every_bench_kind_names_a_function_that_exists(kind: str) -> None:
    module, function = BENCHES[kind]
    assert callable(getattr(importlib.import_module(module), function))
