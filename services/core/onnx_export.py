"""ONNX export of a BERT-style encoder with a head on its output: the router's logits, the embedder's pooled
sentence vector. Needs torch (the `convert` extra); imported only when something is exported.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

# (the encoder's output object, attention_mask) -> the tensor the exported graph returns
Head = Callable[[Any, Any], Any]


def export_encoder(model: Any, head: Head, path: Path, *, output_name: str, opset: int = 17) -> Path:
    """torch.onnx.export of `head(model(...), attention_mask)`, with dynamic batch and sequence axes."""
    import torch

    class _Exported(torch.nn.Module):
        # The HF model returns a ModelOutput; the exporter wants plain tensors.
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            output = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            result: torch.Tensor = head(output, attention_mask)
            return result

    wrapper = _Exported().eval()
    dummy = torch.ones((2, 8), dtype=torch.long)
    dynamic: dict[str, Any] = {name: {0: "batch", 1: "sequence"} for name in ONNX_INPUTS}
    dynamic[output_name] = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about Python control flow in transformers' mask code: the shapes they depend on
        # are dynamic axes here, and each caller's equivalence test checks the result.
        warnings.simplefilter("ignore")
        # The TorchScript exporter (dynamo=False) needs no onnxscript and handles BERT's ops at opset 17.
        torch.onnx.export(
            wrapper,
            (dummy, dummy, torch.zeros_like(dummy)),
            str(path),
            input_names=list(ONNX_INPUTS),
            output_names=[output_name],
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path
