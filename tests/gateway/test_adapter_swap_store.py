"""The published adapter versions every worker loads: staging, CURRENT, refusals, and the watcher's check."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.errors import InvalidRequest, NotReady
from services.core.settings import load_settings
from services.gateway.adapter_versions import AdapterVersionStore, AdapterVersionSync, versions_dir
from services.gateway.auth import KeyChecker
from services.gateway.metrics import ServiceMetrics
from services.gateway.state import GatewayState

pytestmark = pytest.mark.unit


def peft_folder(root: Path, name: str, weights: bytes) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


class RecordingLoader:
    """An AdapterLoader that records loads and refuses folders whose weights say so."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, Path]] = []
        self.attempts = 0

    def load_adapter(self, name: str, folder: Path) -> None:
        self.attempts += 1
        weights = (folder / "adapter_model.safetensors").read_bytes()
        if weights == b"bad":
            raise InvalidRequest(f"path: cannot load {folder}", param="path")
        if weights == b"later" and self.attempts == 1:  # the generator was still starting
            raise NotReady("generator not reachable yet")
        self.loaded.append((name, folder))


@pytest.fixture
def state(tmp_path: Path) -> GatewayState:
    settings = load_settings(data_dir=str(tmp_path / "data"))
    return GatewayState(settings=settings, metrics=ServiceMetrics(), auth=KeyChecker(settings.auth))


def worker(state: GatewayState, loader: RecordingLoader) -> AdapterVersionSync:
    """One worker's sync; a second GatewayState on the same settings stands for another worker."""
    return AdapterVersionSync(state, loader, AdapterVersionStore(versions_dir(state.settings)))


def test_the_versions_dir_defaults_under_the_data_dir(tmp_path: Path) -> None:
    assert versions_dir(load_settings(data_dir=str(tmp_path))) == tmp_path / "adapter-versions"
    configured = load_settings(data_dir=str(tmp_path), server={"adapter_versions_dir": str(tmp_path / "v")})
    assert versions_dir(configured) == tmp_path / "v"


def test_stage_copies_and_keeps_retrained_weights_under_one_label_apart(tmp_path: Path) -> None:
    store = AdapterVersionStore(tmp_path / "versions")
    source = peft_folder(tmp_path, "v1", b"one")
    folder, created = store.stage("tuned", "v1", source)
    assert created and (folder / "adapter_model.safetensors").read_bytes() == b"one"
    assert store.stage("tuned", "v1", source) == (folder, False)  # the same files again: reused
    retrained, created = store.stage("tuned", "v1", peft_folder(tmp_path, "other", b"two"))
    assert created and retrained != folder
    assert store.current() == {}  # staged is not current
    store.make_current(retrained)
    published = store.current()["tuned"]
    assert (published.version, published.folder) == ("v1", retrained)


@pytest.mark.parametrize("name, version", [("..", "v1"), ("tuned", ".."), ("tuned", "a/b"), ("tuned", "")])
def test_names_that_are_not_one_path_component_are_refused(tmp_path: Path, name: str, version: str) -> None:
    store = AdapterVersionStore(tmp_path / "versions")
    with pytest.raises(InvalidRequest, match="must be 1-64 letters"):
        store.stage(name, version, peft_folder(tmp_path, "src", b"w"))


def test_current_ignores_a_pointer_to_a_missing_folder(tmp_path: Path) -> None:
    store = AdapterVersionStore(tmp_path / "versions")
    folder, _ = store.stage("tuned", "v1", peft_folder(tmp_path, "v1", b"one"))
    store.make_current(folder)
    store.make_current(tmp_path / "versions" / "grounded" / "v9-0123456789ab")  # never staged
    assert list(store.current()) == ["tuned"]


async def test_publish_loads_here_first_then_names_it_current(state: GatewayState, tmp_path: Path) -> None:
    loader = RecordingLoader()
    await worker(state, loader).publish("tuned", "v2", peft_folder(tmp_path, "v2", b"two"))
    published = AdapterVersionStore(versions_dir(state.settings)).current()["tuned"]
    assert loader.loaded == [("tuned", published.folder)]
    assert published.version == "v2" and state.adapter_versions == {"tuned": "v2"}


async def test_a_version_that_fails_to_load_is_not_published(state: GatewayState, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest):
        await worker(state, RecordingLoader()).publish("tuned", "v3", peft_folder(tmp_path, "v3", b"bad"))
    store = AdapterVersionStore(versions_dir(state.settings))
    assert store.current() == {} and list((store.root / "tuned").iterdir()) == []
    assert state.adapter_versions == {}


async def test_other_workers_load_the_published_version_once(state: GatewayState, tmp_path: Path) -> None:
    here_loader = RecordingLoader()
    here = worker(state, here_loader)
    await here.publish("tuned", "v2", peft_folder(tmp_path, "v2", b"two"))
    await here.check()  # the worker that published it does not load it again
    assert len(here_loader.loaded) == 1
    other = GatewayState(settings=state.settings, metrics=state.metrics, auth=state.auth)
    other_loader = RecordingLoader()
    there = worker(other, other_loader)
    await there.check()
    await there.check()
    assert other.adapter_versions == {"tuned": "v2"} and len(other_loader.loaded) == 1
    # Retrained weights posted under the same label still reach the other worker.
    await here.publish("tuned", "v2", peft_folder(tmp_path, "v2-retrained", b"two again"))
    await there.check()
    assert len(other_loader.loaded) == 2 and other_loader.loaded[-1] == here_loader.loaded[-1]


async def test_a_published_version_a_worker_refuses_is_tried_once(
    state: GatewayState, tmp_path: Path
) -> None:
    store = AdapterVersionStore(versions_dir(state.settings))
    folder, _ = store.stage("tuned", "v4", peft_folder(tmp_path, "v4", b"bad"))
    store.make_current(folder)
    loader = RecordingLoader()
    sync = worker(state, loader)
    await sync.check()
    await sync.check()
    assert state.adapter_versions == {} and loader.attempts == 1


async def test_a_version_that_fails_because_the_generator_is_not_ready_is_tried_again(
    state: GatewayState, tmp_path: Path
) -> None:
    store = AdapterVersionStore(versions_dir(state.settings))
    folder, _ = store.stage("tuned", "v5", peft_folder(tmp_path, "v5", b"later"))
    store.make_current(folder)
    loader = RecordingLoader()
    sync = worker(state, loader)
    await sync.check()
    assert state.adapter_versions == {}
    await sync.check()
    assert state.adapter_versions == {"tuned": "v5"} and loader.attempts == 2
