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
    """Token ids, attention mask and token types of `encodings`, zero-padded to the longest."""
    width = max(len(e.ids) for e in encodings)
    input_ids = np.zeros((len(encodings), width), dtype=np.int64)
    attention_mask = np.zeros_like(input_ids)
    token_type_ids = np.zeros_like(input_ids)
    for row, encoding in enumerate(encodings):
        n = len(encoding.ids)
        input_ids[row, :n] = encoding.ids
        attention_mask[row, :n] = 1
        token_type_ids[row, :n] = encoding.type_ids
    return input_ids, attention_mask, token_type_ids
