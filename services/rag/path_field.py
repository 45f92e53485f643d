"""The file path as a BM25 field: `engineering/dev/process/pull-requests.md` -> "engineering dev process
pull requests".

Built from the chunks' `source` when an index version loads, so it needs no re-embedding and no change to
the stored index: existing versions gain the field as they are. The field is one BM25 document per file
(paths are short and shared by every chunk of a file); a query's ranking lists, for the best-matching
files, their chunks most similar to the query, so fusion can weigh it like the text ranking.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

import numpy as np
import numpy.typing as npt

from services.core.types import Chunk
from services.rag.sparse import Bm25Index

# Separators inside a path segment: "pull-requests", "on_call", "v1.2"; camelCase splits too.
_SEGMENT_SPLIT = re.compile(r"[-_.\s]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def path_words(source: str) -> str:
    """The words of a file path, extension dropped, in path order."""
    path = PurePosixPath(source.replace("\\", "/"))
    segments = [*path.parent.parts, path.stem] if path.suffix else list(path.parts)
    words: list[str] = []
    for segment in segments:
        for piece in _SEGMENT_SPLIT.split(_CAMEL.sub(" ", segment)):
            if piece and piece != "/":
                words.append(piece.lower())
    return " ".join(words)


class PathFieldIndex:
    def __init__(self, chunks: Sequence[Chunk]) -> None:
        rows_by_source: dict[str, list[int]] = {}
        for row, chunk in enumerate(chunks):
            rows_by_source.setdefault(chunk.source, []).append(row)
        self._sources = list(rows_by_source)
        self._rows = [np.asarray(rows_by_source[source], dtype=np.int64) for source in self._sources]
        self._bm25 = Bm25Index.build([path_words(source) for source in self._sources])

    def search(
        self,
        query: str,
        query_vector: npt.NDArray[np.float32],
        embeddings: npt.NDArray[np.float32],
        *,
        files: int,
        chunks_per_file: int,
    ) -> list[tuple[int, float]]:
        """(row, path BM25 score) for the best `files` files, each file's chunks by cosine, best first."""
        if files <= 0 or chunks_per_file <= 0:
            raise ValueError(f"files and chunks_per_file must be > 0, got {files}, {chunks_per_file}")
        ranking: list[tuple[int, float]] = []
        for file_row, score in self._bm25.search(query, files):
            rows = self._rows[file_row]
            cosines = np.asarray(embeddings[rows], dtype=np.float32).reshape(len(rows), -1) @ query_vector
            best = np.argsort(-cosines, kind="stable")[:chunks_per_file]
            ranking.extend((int(rows[i]), score) for i in best)
        return ranking
