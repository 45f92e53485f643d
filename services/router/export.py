"""Export the merged router model to ONNX at training time, so serving needs no torch.

Imports torch and onnxruntime.quantization lazily: only training calls these functions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_onnx(model: Any, path: Path, *, opset: int = 17) -> Path:
    """torch.onnx.export of a (merged, eval-mode) sequence classifier with dynamic batch and sequence axes."""
    import torch

    class _LogitsOnly(torch.nn.Module):
        # The HF model returns a ModelOutput; the exporter wants plain tensors.
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            logits: torch.Tensor = self.inner(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).logits
            return logits

    wrapper = _LogitsOnly(model).eval()
    dummy = torch.ones((2, 8), dtype=torch.long)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in ONNX_INPUTS}
    dynamic["logits"] = {0: "batch"}
    with torch.no_grad():
        # The TorchScript exporter (dynamo=False) needs no onnxscript and handles BERT's ops at opset 17.
        torch.onnx.export(
            wrapper,
            (dummy, dummy, torch.zeros_like(dummy)),
            str(path),
            input_names=list(ONNX_INPUTS),
            output_names=["logits"],
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    logger.info("exported router to %s (opset %d)", path, opset)
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization of the MatMul weights (activations stay float, no calibration data).

    Per output channel: one scale per weight column instead of one per matrix. On the service router the
    test accuracy lost to int8 went from 2.6 points (per matrix) to 0.9 (results/router_service.md).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    logger.info("quantized %s -> %s (int8 dynamic, per channel)", source, target)
    return target
