"""oga_native without a model: the version gate and the C API's error results."""

from __future__ import annotations

import threading

import pytest

from services.llm import oga_native


def test_an_unchecked_version_keeps_the_bindings_own_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    oga_native._binding_of.cache_clear()
    monkeypatch.setattr(oga_native, "CHECKED_VERSIONS", ("0.0.0",))
    try:
        generator = object()
        assert not oga_native.native_calls_available()
        assert oga_native.compute_calls(generator, release_gil=True, lock=threading.Lock()) is generator
    finally:
        oga_native._binding_of.cache_clear()


def test_a_null_result_is_success() -> None:
    binding = oga_native._binding()
    assert binding is not None
    oga_native._check(binding.library, None)
    oga_native._check(binding.library, 0)


def test_only_the_bindings_own_generator_class_is_driven_natively() -> None:
    stand_in = object()  # a test double, or a class whose layout was never checked
    assert oga_native.compute_calls(stand_in, release_gil=True, lock=threading.Lock()) is stand_in
