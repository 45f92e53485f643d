"""Export the merged router model to ONNX at training time, so serving needs no torch.

Imports torch and onnxruntime.quantization lazily: only training calls these functions.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from services.core.onnx_export import export_encoder

logger = logging.getLogger(__name__)


def export_onnx(model: Any, path: Path, *, opset: int = 17) -> Path:
    """torch.onnx.export of a (merged, eval-mode) sequence classifier with dynamic batch and sequence axes."""
    export_encoder(model, lambda output, _mask: output.logits, path, output_name="logits", opset=opset)
    logger.info("exported router to %s (opset %d)", path, opset)
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization of the MatMul weights (activations stay float, no calibration data).

    Per output channel: one scale per weight column instead of one per matrix, which loses less accuracy
    (benchmarks/results/router_service.md compares the two).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True)
    logger.info("quantized %s -> %s (int8 dynamic, per channel)", source, target)
    return target
