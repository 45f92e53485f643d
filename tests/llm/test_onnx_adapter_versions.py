"""AdapterVersions with a container that behaves like og.Adapters: a name loads once, a held one stays."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from services.llm.onnx_adapter_versions import AdapterVersions

pytestmark = pytest.mark.unit


class FakeContainer:
    """og.Adapters' contract: a name loads once; unload refuses a name a generator still holds."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}
        self.held: Counter[str] = Counter()

    def load(self, file: str, name: str) -> None:
        if name in self.files:
            raise RuntimeError(f"Adapter already loaded: {name}")
        self.files[name] = file

    def unload(self, name: str) -> None:
        if self.held[name] > 0:
            raise RuntimeError(f"Adapter still in use: {name}")
        del self.files[name]


def test_a_new_version_gets_a_new_name_and_becomes_current() -> None:
    container = FakeContainer()
    versions = AdapterVersions(container)
    first = versions.load("tuned", Path("v1.onnx_adapter"))
    second = versions.load("tuned", Path("v2.onnx_adapter"))
    assert first != second
    assert versions.current("tuned") == second
    assert versions.names == ["tuned"]
    # Nothing pinned the first version: it was unloaded when replaced.
    assert container.files == {second: "v2.onnx_adapter"}


def test_a_pinned_version_stays_until_its_request_ends() -> None:
    container = FakeContainer()
    versions = AdapterVersions(container)
    first = versions.load("tuned", Path("v1.onnx_adapter"))
    running = versions.pin("tuned")
    second = versions.load("tuned", Path("v2.onnx_adapter"))
    assert running.loaded_as == first and running.container is container
    assert versions.pin("tuned").loaded_as == second  # later requests get the new version
    assert versions.loaded() == sorted([first, second])

    running.release()
    running.release()  # idempotent: a second release (e.g. the finalizer) changes nothing
    assert first not in container.files
    assert versions.loaded() == [second]


def test_a_version_the_library_still_holds_is_unloaded_at_a_later_release() -> None:
    container = FakeContainer()
    versions = AdapterVersions(container)
    first = versions.load("tuned", Path("v1.onnx_adapter"))
    pin = versions.pin("tuned")
    versions.load("tuned", Path("v2.onnx_adapter"))
    container.held[first] = 1  # its og.Generator is not gone yet when the pin ends
    pin.release()
    assert first in container.files  # refused by the library: kept, not lost
    container.held[first] = 0
    versions.pin("tuned").release()  # the next release tries again
    assert first not in container.files


def test_versions_of_different_adapters_are_independent() -> None:
    versions = AdapterVersions(FakeContainer())
    versions.load("tuned", Path("t.onnx_adapter"))
    grounded = versions.load("grounded", Path("g.onnx_adapter"))
    versions.load("tuned", Path("t2.onnx_adapter"))
    assert versions.current("grounded") == grounded
    assert versions.names == ["grounded", "tuned"]
    assert versions.current("other") is None
