"""Versioned index layout on disk, with an atomic pointer to the version being served.

    index_dir/
      CURRENT                      one line: the served version's name
      .ingest.lock                 held (flock) by the one ingest allowed at a time
      versions/<UTC time>-<corpus hash>/
        manifest.json              model, dimensions, counts, corpus hash, created time, index kind, sizes
        chunks.jsonl               one Chunk per line; line i is vector row i
        embeddings.npy             float32 (chunks x dimensions): the embedding cache for the next ingest
        unit_vectors.npy           float16 (units x dimensions): each chunk's evidence units, embedded
        unit_offsets.npy           int64 (chunks + 1): chunk i's units are rows offsets[i]:offsets[i+1]
        vectors.faiss              the vector store (FAISS; Qdrant: qdrant.json [+ qdrant/ in local mode])
        bm25/                      the BM25 index

A version is built in a staged folder, fsynced, renamed into place, and only then named in CURRENT (an
atomic write; both in services/core/atomic.py), so a reader sees either the old version or the complete
new one, never a half written index, even across a crash. The file sizes in the manifest catch truncated
files before they are parsed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.atomic import atomic_write, staged_dir
from services.core.errors import IndexCorrupted, RetrievalError
from services.core.types import Chunk
from services.rag.path_field import PathFieldIndex
from services.rag.sparse import Bm25Index
from services.rag.store import VectorStore, load_vector_store, release_vector_store

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT_FILE = "CURRENT"
VERSIONS_DIR = "versions"
LOCK_FILE = ".ingest.lock"
MANIFEST_FILE = "manifest.json"
CHUNKS_FILE = "chunks.jsonl"
EMBEDDINGS_FILE = "embeddings.npy"
UNIT_VECTORS_FILE = "unit_vectors.npy"
UNIT_OFFSETS_FILE = "unit_offsets.npy"
KEEP_VERSIONS = 3


@dataclass(frozen=True, slots=True)
class IndexInfo:
    version: str
    chunks: int
    created_at: datetime
    index_dir: Path


@dataclass(frozen=True)
class UnitVectors:
    """Embeddings of every chunk's evidence units (services/rag/sentences.py), written at ingestion so
    evidence selection embeds nothing per query. `splitter` is the unit splitter's version: a version
    written by another splitter is not used (its rows would not line up with today's units)."""

    vectors: npt.NDArray[np.float16]
    offsets: npt.NDArray[np.int64]
    splitter: str

    def of_row(self, row: int) -> npt.NDArray[np.float32]:
        return np.asarray(self.vectors[self.offsets[row] : self.offsets[row + 1]], dtype=np.float32)


@dataclass(frozen=True)
class IndexSnapshot:
    """One loaded, validated index version. Immutable: a reload builds a new snapshot."""

    version: str
    manifest: dict[str, Any]
    chunks: list[Chunk]
    embeddings: npt.NDArray[np.float32]
    vectors: VectorStore
    sparse: Bm25Index
    directory: Path
    units: UnitVectors | None = None

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(str(self.manifest["created_at"]))

    @cached_property
    def path_field(self) -> PathFieldIndex:
        """BM25 over the chunks' file paths (rag.path_field), built on first use from the chunks."""
        return PathFieldIndex(self.chunks)

    @cached_property
    def rows_by_chunk_id(self) -> dict[str, int]:
        return {chunk.chunk_id: row for row, chunk in enumerate(self.chunks)}


def version_name(corpus_hash: str, now: datetime | None = None) -> str:
    """`20261123T184002.123Z-3f2a1b9c`: sorts by time; readable; no characters that trouble file systems."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z-{corpus_hash[:8]}"


def read_current(index_dir: Path) -> str | None:
    try:
        name = (index_dir / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def set_current(index_dir: Path, version: str) -> None:
    atomic_write(index_dir / CURRENT_FILE, version + "\n")


def list_versions(index_dir: Path) -> list[str]:
    versions = index_dir / VERSIONS_DIR
    if not versions.is_dir():
        return []
    return sorted(p.name for p in versions.iterdir() if p.is_dir() and not p.name.startswith("."))


@contextlib.contextmanager
def ingest_lock(index_dir: Path) -> Iterator[None]:
    """Hold the index's ingest lock; RetrievalError at once if another ingest holds it.

    flock is released by the kernel when the process dies, so a crashed ingest never leaves a stale lock.
    """
    index_dir.mkdir(parents=True, exist_ok=True)
    with (index_dir / LOCK_FILE).open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise RetrievalError(
                f"another ingest is running on {index_dir}", code="ingest_in_progress"
            ) from exc
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True, slots=True)
class VersionContents:
    """What one index version holds; `manifest` is the caller's part of manifest.json."""

    corpus_hash: str
    chunks: Sequence[Chunk]
    embeddings: npt.NDArray[np.float32]
    vectors: VectorStore
    sparse: Bm25Index
    manifest: dict[str, Any]
    units: UnitVectors | None = None


def write_version(index_dir: Path, contents: VersionContents) -> str:
    """Write a complete new version, fsync it, point CURRENT at it, prune old versions. Returns its name."""
    created = datetime.now(UTC)
    name = version_name(contents.corpus_hash, created)
    try:
        with staged_dir(index_dir / VERSIONS_DIR / name) as building:
            _write_version_files(building, name, created, contents)
        set_current(index_dir, name)
    except (OSError, RuntimeError) as exc:  # RuntimeError: FAISS reports its write errors (disk full) so
        served = read_current(index_dir) or "none"
        raise RetrievalError(
            f"cannot write index version {name} to {index_dir}: {_write_failure(exc)}; "
            f"the served version ({served}) is unchanged"
        ) from exc
    prune_versions(index_dir, keep=KEEP_VERSIONS)
    return name


def _write_failure(exc: BaseException) -> str:
    """The OS's reason (e.g. "No space left on device"), also from FAISS's long RuntimeError text."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip()
    reason = re.search(r"\(([^()]+)\)$", text)
    return reason.group(1) if reason else text[-200:]


def _write_version_files(building: Path, name: str, created: datetime, contents: VersionContents) -> None:
    """Every file of one version, the manifest last (it records the others' sizes)."""
    written: list[Path] = []
    with (building / CHUNKS_FILE).open("w", encoding="utf-8") as handle:
        for chunk in contents.chunks:
            handle.write(json.dumps(asdict(chunk), ensure_ascii=False) + "\n")
    written.append(building / CHUNKS_FILE)
    np.save(building / EMBEDDINGS_FILE, np.ascontiguousarray(contents.embeddings, dtype=np.float32))
    written.append(building / EMBEDDINGS_FILE)
    written.extend(contents.vectors.save(building))
    written.extend(contents.sparse.save(building))
    units_manifest: dict[str, Any] = {}
    units = contents.units
    if units is not None:
        np.save(building / UNIT_VECTORS_FILE, np.ascontiguousarray(units.vectors, dtype=np.float16))
        np.save(building / UNIT_OFFSETS_FILE, np.ascontiguousarray(units.offsets, dtype=np.int64))
        written.extend((building / UNIT_VECTORS_FILE, building / UNIT_OFFSETS_FILE))
        units_manifest = {"units": {"splitter": units.splitter, "count": int(units.vectors.shape[0])}}

    full_manifest = {
        **contents.manifest,
        "format_version": FORMAT_VERSION,
        "version": name,
        "created_at": created.isoformat(),
        "corpus_hash": contents.corpus_hash,
        "chunks": len(contents.chunks),
        "dimensions": int(contents.embeddings.shape[1]),
        "index_kind": contents.vectors.kind,
        **units_manifest,
        "file_sizes": {path.relative_to(building).as_posix(): path.stat().st_size for path in written},
    }
    manifest_path = building / MANIFEST_FILE
    manifest_path.write_text(json.dumps(full_manifest, indent=2, ensure_ascii=False), encoding="utf-8")


def prune_versions(index_dir: Path, *, keep: int = KEEP_VERSIONS) -> list[str]:
    """Delete all but the newest `keep` versions (never the current one) and leftover build folders."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    current = read_current(index_dir)
    versions = list_versions(index_dir)
    removed = [name for name in versions[:-keep] if name != current]
    for name in removed:
        directory = index_dir / VERSIONS_DIR / name
        with contextlib.suppress(IndexCorrupted):
            release_vector_store(directory, read_manifest(directory))
        shutil.rmtree(directory, ignore_errors=True)
    # Hidden folders are builds a crash left behind (staged_dir's, and `.building-*` of older releases).
    for leftover in (index_dir / VERSIONS_DIR).glob(".*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
    if removed:
        logger.info("pruned index versions %s", removed)
    return removed


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IndexCorrupted(f"index version {directory.name} has no manifest") from exc
    except (OSError, ValueError) as exc:
        raise IndexCorrupted(f"manifest {path} is unreadable: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexCorrupted(f"manifest {path} has an unsupported format (want version {FORMAT_VERSION})")
    return manifest


def _check_file_sizes(directory: Path, manifest: dict[str, Any]) -> None:
    for relative, size in dict(manifest.get("file_sizes", {})).items():
        path = directory / relative
        try:
            actual = path.stat().st_size
        except FileNotFoundError as exc:
            raise IndexCorrupted(f"index version {directory.name} is missing {relative}") from exc
        if actual != size:
            raise IndexCorrupted(
                f"index version {directory.name}: {relative} has {actual} bytes, manifest says {size}"
            )


def read_chunks(directory: Path) -> list[Chunk]:
    chunks = []
    try:
        with (directory / CHUNKS_FILE).open(encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                row["heading_path"] = tuple(row.get("heading_path", ()))
                chunks.append(Chunk(**row))
    except (OSError, ValueError, TypeError) as exc:
        raise IndexCorrupted(f"chunks of index version {directory.name} are unreadable: {exc}") from exc
    return chunks


def read_embeddings(directory: Path, *, mmap: bool = True) -> npt.NDArray[np.float32]:
    try:
        array = np.load(directory / EMBEDDINGS_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexCorrupted(f"embeddings of index version {directory.name} are unreadable: {exc}") from exc
    return array  # type: ignore[no-any-return]


def read_unit_vectors(directory: Path, manifest: dict[str, Any], chunks: int) -> UnitVectors | None:
    """The version's unit vectors, or None when it was built without them; IndexCorrupted when damaged."""
    described = manifest.get("units")
    if not isinstance(described, dict):
        return None
    try:
        vectors = np.load(directory / UNIT_VECTORS_FILE, mmap_mode="r", allow_pickle=False)
        offsets = np.load(directory / UNIT_OFFSETS_FILE, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexCorrupted(f"unit vectors of index version {directory.name} are unreadable: {exc}") from exc
    count, dimensions = int(described.get("count", -1)), int(manifest["dimensions"])
    if (
        vectors.shape != (count, dimensions)
        or offsets.shape != (chunks + 1,)
        or (
            chunks
            and (int(offsets[0]) != 0 or int(offsets[-1]) != count or bool(np.any(np.diff(offsets) < 0)))
        )
    ):
        raise IndexCorrupted(
            f"index version {directory.name}: unit vectors {vectors.shape} and offsets {offsets.shape} "
            f"do not match {chunks} chunks and {count} units of {dimensions} dimensions"
        )
    return UnitVectors(vectors=vectors, offsets=offsets, splitter=str(described.get("splitter", "")))


def load_version(index_dir: Path, version: str) -> IndexSnapshot:
    """Load and fully validate one version; IndexCorrupted on anything inconsistent."""
    directory = index_dir / VERSIONS_DIR / version
    if not directory.is_dir():
        raise IndexCorrupted(f"CURRENT names version {version!r}, which does not exist in {index_dir}")
    manifest = read_manifest(directory)
    _check_file_sizes(directory, manifest)
    expected = int(manifest["chunks"])
    chunks = read_chunks(directory)
    embeddings = read_embeddings(directory)
    vectors = load_vector_store(directory, manifest, expected_count=expected)
    sparse = Bm25Index.load(directory, expected_count=expected)
    if len(chunks) != expected or embeddings.shape != (expected, int(manifest["dimensions"])):
        raise IndexCorrupted(
            f"index version {version}: {len(chunks)} chunks and embeddings {embeddings.shape}, "
            f"manifest says {expected} x {manifest['dimensions']}"
        )
    if vectors.dimensions != int(manifest["dimensions"]):
        raise IndexCorrupted(f"index version {version}: the vector store has {vectors.dimensions} dimensions")
    return IndexSnapshot(
        version=version,
        manifest=manifest,
        chunks=chunks,
        embeddings=embeddings,
        vectors=vectors,
        sparse=sparse,
        directory=directory,
        units=read_unit_vectors(directory, manifest, expected),
    )


def load_current(index_dir: Path) -> IndexSnapshot:
    """The version CURRENT names. RetrievalError when there is none, IndexCorrupted when it is bad."""
    version = read_current(index_dir)
    if version is None:
        raise RetrievalError(
            f"no index in {index_dir}: run `hybridllm ingest PATH --index {index_dir}` first", code="no_index"
        )
    return load_version(index_dir, version)
