"""Qdrant vector store: the scale-out alternative to FAISS behind the same VectorStore seam.

Two modes:
- local (no URL): qdrant-client's embedded mode. The store is built in memory; `save()` persists it under the
  index version's folder (`qdrant/`); `load()` reads it back into memory and closes the files at once, because
  the embedded mode holds an exclusive lock on its folder and several gateway workers read the same version.
  Embedded Qdrant searches by brute force (numpy): it is for development and tests, not for scale.
- remote (a URL): a Qdrant server or cluster. Each index version gets its own collection (created at build,
  named in the version's `qdrant.json`), so a new version is filled while the old one keeps serving and the
  swap stays the atomic CURRENT rename; `drop()` deletes a version's collection when the version is pruned.
  Shards and replicas are fixed at creation (settings.qdrant.shards, settings.qdrant.replication_factor).

Points are addressed by row (0 .. n-1) like the FAISS rows, and compared by dot product: on the embedder's
unit vectors that is the cosine, the same score FAISS's IndexFlatIP returns.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from qdrant_client import QdrantClient, models

from services.core.errors import IndexCorrupted, RetrievalError

logger = logging.getLogger(__name__)

POINTER_FILE = "qdrant.json"
LOCAL_DIR = "qdrant"
IN_MEMORY = ":memory:"
UPLOAD_BATCH = 256
# Same search breadth as the FAISS HNSW store (efSearch=64); Qdrant searches exactly below its indexing
# threshold (~20k vectors per segment), so small collections are exact either way.
HNSW_EF_SEARCH = 64


def new_collection_name(prefix: str = "hybridllm") -> str:
    """`hybridllm-20261123T184002-3f2a1b9c`: sortable by build time, unique across concurrent builders."""
    return f"{prefix}-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(4)}"


class QdrantVectorStore:
    def __init__(
        self, client: QdrantClient, collection: str, dimensions: int, *, url: str | None, count: int = 0
    ) -> None:
        if dimensions <= 0:
            raise ValueError(f"dimensions must be > 0, got {dimensions}")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        self._client = client
        self._collection = collection
        self._dimensions = dimensions
        self._url = url
        self._count = count

    @classmethod
    def create(
        cls,
        dimensions: int,
        *,
        url: str | None = None,
        collection: str | None = None,
        shard_number: int = 1,
        replication_factor: int = 1,
        api_key: str | None = None,
    ) -> QdrantVectorStore:
        """An empty collection: in memory without `url`, else a new collection on that server or cluster."""
        if dimensions <= 0:
            raise ValueError(f"dimensions must be > 0, got {dimensions}")
        if shard_number < 1:
            raise ValueError(f"shard_number must be >= 1, got {shard_number}")
        if replication_factor < 1:
            raise ValueError(f"replication_factor must be >= 1, got {replication_factor}")
        name = collection or new_collection_name()
        client = QdrantClient(url=url, api_key=api_key) if url else QdrantClient(location=IN_MEMORY)
        try:
            if url and client.collection_exists(name):
                raise RetrievalError(f"Qdrant collection {name!r} already exists at {url}")
            client.create_collection(
                name,
                vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.DOT),
                # Sharding and replication only mean something on a cluster; embedded mode ignores them.
                shard_number=shard_number if url else None,
                replication_factor=replication_factor if url else None,
            )
        except RetrievalError:
            client.close()
            raise
        except Exception as exc:  # the client raises transport- and server-specific types
            client.close()
            where = url or IN_MEMORY
            raise RetrievalError(f"cannot create Qdrant collection {name!r} at {where}: {exc}") from exc
        return cls(client, name, dimensions, url=url)

    @classmethod
    def load(
        cls, directory: Path, *, expected_count: int | None = None, api_key: str | None = None
    ) -> QdrantVectorStore:
        """The store `save()` wrote into `directory`; IndexCorrupted when it is missing or inconsistent."""
        pointer_path = directory / POINTER_FILE
        try:
            pointer = json.loads(pointer_path.read_text(encoding="utf-8"))
            collection, dimensions, saved_count = (
                str(pointer["collection"]),
                int(pointer["dimensions"]),
                int(pointer["count"]),
            )
            url = pointer.get("url")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexCorrupted(f"Qdrant pointer {pointer_path} is unreadable: {exc}") from exc
        if url:
            client = QdrantClient(url=str(url), api_key=api_key)
        else:
            client = _copy_local_into_memory(directory / LOCAL_DIR, collection, dimensions)
        store = cls(client, collection, dimensions, url=str(url) if url else None)
        try:
            store._count = store._count_points()
        except RetrievalError as exc:
            store.close()
            raise IndexCorrupted(f"Qdrant collection {collection!r} of {directory.name}: {exc}") from exc
        for label, wanted in (("qdrant.json", saved_count), ("the manifest", expected_count)):
            if wanted is not None and store._count != wanted:
                store.close()
                raise IndexCorrupted(
                    f"Qdrant collection {collection!r} holds {store._count} vectors, {label} says {wanted}"
                )
        return store

    @property
    def kind(self) -> str:
        return "qdrant"

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def collection(self) -> str:
        return self._collection

    @property
    def url(self) -> str | None:
        return self._url

    def count(self) -> int:
        return self._count

    def add(self, vectors: npt.NDArray[np.float32]) -> None:
        if vectors.ndim != 2 or vectors.shape[1] != self._dimensions:
            raise ValueError(f"vectors must have shape (n, {self._dimensions}), got {vectors.shape}")
        if len(vectors) == 0:
            return
        first = self._count
        try:
            self._client.upload_collection(
                self._collection,
                vectors=np.ascontiguousarray(vectors, dtype=np.float32),
                ids=range(first, first + len(vectors)),
                batch_size=UPLOAD_BATCH,
                # wait: the version must be searchable before CURRENT names it.
                wait=True,
            )
        except Exception as exc:
            raise RetrievalError(
                f"cannot upload vectors to Qdrant collection {self._collection!r}: {exc}"
            ) from exc
        self._count += len(vectors)

    def search(self, query: npt.NDArray[np.float32], k: int) -> list[tuple[int, float]]:
        if k <= 0:
            raise ValueError(f"k must be > 0, got {k}")
        k = min(k, self._count)
        if k == 0:
            return []
        try:
            response = self._client.query_points(
                self._collection,
                query=np.asarray(query, dtype=np.float32).reshape(-1).tolist(),
                limit=k,
                with_payload=False,
                # Embedded mode searches exactly and warns about search parameters: only a server gets them.
                search_params=models.SearchParams(hnsw_ef=max(HNSW_EF_SEARCH, k)) if self._url else None,
            )
        except Exception as exc:
            raise RetrievalError(f"Qdrant search in {self._collection!r} failed: {exc}") from exc
        return [(int(point.id), float(point.score)) for point in response.points]

    def save(self, directory: Path) -> list[Path]:
        """Remote: write the pointer only (the vectors live on the cluster). Local: persist them as well."""
        if self._url is None:
            _persist_local(self._client, self._collection, self._dimensions, directory / LOCAL_DIR)
        pointer = {
            "collection": self._collection,
            "dimensions": self._dimensions,
            "count": self._count,
            "url": self._url,
            "distance": "dot",
        }
        path = directory / POINTER_FILE
        path.write_text(json.dumps(pointer, indent=2), encoding="utf-8")
        # Only the pointer goes into the manifest's size check: the embedded database's files are rewritten
        # by every client that opens them (lock file, sqlite journal), so their sizes are not stable.
        return [path]

    def drop(self) -> None:
        """Delete this store's collection (remote: on the cluster) and close the client."""
        try:
            self._client.delete_collection(self._collection)
        finally:
            self.close()

    def close(self) -> None:
        self._client.close()

    def _count_points(self) -> int:
        try:
            if not self._client.collection_exists(self._collection):
                raise RetrievalError(f"collection {self._collection!r} does not exist")
            return int(self._client.count(self._collection, exact=True).count)
        except RetrievalError:
            raise
        except Exception as exc:
            raise RetrievalError(f"cannot reach Qdrant collection {self._collection!r}: {exc}") from exc


def drop_saved_collection(directory: Path, *, api_key: str | None = None) -> bool:
    """Delete the remote collection a pruned version's `qdrant.json` names. False when there is none."""
    try:
        pointer: dict[str, Any] = json.loads((directory / POINTER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    url = pointer.get("url")
    if not url:
        return False  # local mode: the vectors go with the version folder
    client = QdrantClient(url=str(url), api_key=api_key)
    try:
        return bool(client.delete_collection(str(pointer["collection"])))
    except Exception as exc:
        logger.warning("cannot drop Qdrant collection %s at %s: %s", pointer.get("collection"), url, exc)
        return False
    finally:
        client.close()


def _scroll_all(client: QdrantClient, collection: str) -> tuple[list[int], npt.NDArray[np.float32]]:
    ids: list[int] = []
    vectors: list[Any] = []
    offset: Any = None
    while True:
        points, offset = client.scroll(
            collection, limit=1024, offset=offset, with_payload=False, with_vectors=True
        )
        for point in points:
            ids.append(int(point.id))
            vectors.append(point.vector)
        if offset is None:
            return ids, np.asarray(vectors, dtype=np.float32)


def _copy_points(source: QdrantClient, target: QdrantClient, collection: str, dimensions: int) -> None:
    target.create_collection(
        collection, vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.DOT)
    )
    ids, vectors = _scroll_all(source, collection)
    if ids:
        target.upload_collection(collection, vectors=vectors, ids=ids, batch_size=UPLOAD_BATCH, wait=True)


def _persist_local(client: QdrantClient, collection: str, dimensions: int, folder: Path) -> None:
    on_disk = QdrantClient(path=str(folder))
    try:
        _copy_points(client, on_disk, collection, dimensions)
    finally:
        on_disk.close()
    # The version folder is fsynced as a whole when write_version moves it into place (staged_dir).


def _copy_local_into_memory(folder: Path, collection: str, dimensions: int) -> QdrantClient:
    if not folder.is_dir():
        raise IndexCorrupted(f"embedded Qdrant folder {folder} is missing")
    try:
        on_disk = QdrantClient(path=str(folder))
    except Exception as exc:
        raise IndexCorrupted(f"cannot open embedded Qdrant folder {folder}: {exc}") from exc
    memory = QdrantClient(location=IN_MEMORY)
    try:
        if not on_disk.collection_exists(collection):
            raise IndexCorrupted(f"embedded Qdrant folder {folder} has no collection {collection!r}")
        _copy_points(on_disk, memory, collection, dimensions)
    except IndexCorrupted:
        memory.close()
        raise
    except Exception as exc:
        memory.close()
        raise IndexCorrupted(f"cannot read embedded Qdrant folder {folder}: {exc}") from exc
    finally:
        on_disk.close()
    return memory
