"""Batches of `tokenizers` encodings as the int64 arrays BERT-style ONNX models take.

Shared by the router's classifier and the RAG query embedder, which run the same kind of encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


def pad_encodings(encodings: Sequence[Any]) -> tuple[IntArray, IntArray, IntArray]:
    """Token ids, attention mask and token types of `encodings`, padded to the longest of them.

    The padding is the tokenizers library's own (`Encoding.pad`: pad id 0 and attention 0, as BERT
    expects); it pads the given encodings in place.
    """
    width = max(len(e.ids) for e in encodings)
    for encoding in encodings:
        encoding.pad(width)
    return (
        np.array([e.ids for e in encodings], dtype=np.int64),
        np.array([e.attention_mask for e in encodings], dtype=np.int64),
        np.array([e.type_ids for e in encodings], dtype=np.int64),
    )
