"""The intent router at inference: a LoRA-tuned MiniLM classifier, run in ONNX Runtime (or torch).

The ONNX engine runs the merged model exported at training time and needs no torch; the torch engine
loads base + adapter and merges them (peft merge_and_unload), for equivalence tests and as a fallback
when the ONNX file is missing. Both tokenize with the same `tokenizers` fast tokenizer, and both turn
logits into probabilities with the temperature fitted on validation data.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from services.core.encoding import IntArray, pad_encodings
from services.core.errors import ConfigError, NotReady
from services.core.types import IntentPrediction
from services.router.artifacts import HOW_TO_TRAIN, THRESHOLD_METHODS, RouterArtifacts, read_artifacts
from services.router.metrics import softmax

logger = logging.getLogger(__name__)

Engine = Literal["onnx", "torch"]
# Rows per model call in predict_batch (after sorting by length): large enough to fill the matrix
# kernels, small enough that lengths within a sub-batch stay close (benchmarks/components/router.py).
SUB_BATCH = 32


class IntentRouterModel:
    """Implements core.protocols.IntentClassifier.

    `labels` are the classes the model scores. A model trained with the threshold method never scores
    its out-of-scope label: `oos_threshold` and `oos_label` tell the routing policy when to reject
    (a class+threshold model scores it and also rejects below the threshold).
    `quantized` picks the int8 ONNX file (falls back to fp32 when it is absent).
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int = 1,
        max_length: int = 64,
        engine: Engine = "onnx",
        quantized: bool = False,
    ) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {max_length}")
        if engine not in ("onnx", "torch"):
            raise ValueError(f"engine must be 'onnx' or 'torch', got {engine!r}")
        self._model_dir = Path(model_dir)
        self._threads = threads
        self._max_length = max_length
        self._requested_engine: Engine = engine
        self._quantized = quantized
        # Reading the small JSON files here makes a missing or corrupt folder fail at construction.
        self._artifacts: RouterArtifacts = read_artifacts(self._model_dir)
        self._engine: Engine | None = None
        self._tokenizer: Any = None
        self._session: Any = None
        self._session_inputs: tuple[str, ...] = ()
        self._torch_model: Any = None

    # -- IntentClassifier --------------------------------------------------------------------------

    @property
    def labels(self) -> Sequence[str]:
        return self._artifacts.labels

    @property
    def oos_label(self) -> str | None:
        return self._artifacts.oos_label

    @property
    def oos_method(self) -> str:
        return self._artifacts.oos_method

    @property
    def oos_threshold(self) -> float | None:
        """The calibrated rejection threshold; None unless the model was trained to use one."""
        return self._artifacts.threshold if self._artifacts.oos_method in THRESHOLD_METHODS else None

    @property
    def temperature(self) -> float:
        return self._artifacts.temperature

    @property
    def engine(self) -> Engine:
        """The engine actually in use after warm_up (torch when the ONNX file is missing)."""
        return self._engine or self._requested_engine

    def warm_up(self) -> None:
        if self._engine is not None:
            return
        self._tokenizer = self._load_tokenizer()
        onnx_file = self._artifacts.onnx_file(quantized=self._quantized)
        if self._quantized and not onnx_file.is_file():
            onnx_file = self._artifacts.onnx_file(quantized=False)
        if self._requested_engine == "onnx" and onnx_file.is_file():
            self._load_onnx(onnx_file)
            self._engine = "onnx"
        else:
            if self._requested_engine == "onnx":
                logger.warning("router ONNX file %s missing: falling back to torch", onnx_file)
            self._load_torch()
            self._engine = "torch"
        # One call compiles kernels and allocates arenas, so the first request is not the slow one.
        self.predict("warm up")
        logger.info("router ready: %s engine, %d labels, %s", self._engine, len(self.labels), self._model_dir)

    def predict(self, text: str) -> IntentPrediction:
        return self.predict_batch([text])[0]

    def predict_batch(self, texts: Sequence[str]) -> list[IntentPrediction]:
        if not texts:
            return []
        probabilities = softmax(self.logits(texts), self._artifacts.temperature)
        labels = self._artifacts.labels
        predictions = []
        for row in probabilities:
            best = int(row.argmax())
            scores = {label: float(p) for label, p in zip(labels, row, strict=True)}
            prediction = IntentPrediction(intent=labels[best], confidence=float(row[best]), scores=scores)
            predictions.append(prediction)
        return predictions

    # -- engines -----------------------------------------------------------------------------------

    def logits(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Raw (uncalibrated) logits, one row per text, in the order given.

        Texts run in sub-batches of similar token length: a batch is padded to its longest text, so
        sorting first keeps a mixed batch from paying the longest text's cost for every row.
        """
        if self._engine is None:
            raise NotReady("router model is not loaded: call warm_up() first")
        encodings = self._tokenizer.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        chunks = [order[start : start + SUB_BATCH] for start in range(0, len(order), SUB_BATCH)]
        # Sub-batches run one after another, each on every intra-op thread (benchmarks/components/router.py).
        parts = [self._run(*pad_encodings([encodings[i] for i in rows])) for rows in chunks]
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        for rows, part in zip(chunks, parts, strict=True):
            out[rows] = part
        return out

    def _run(
        self, input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
    ) -> npt.NDArray[np.float32]:
        if self._engine == "onnx":
            feed = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
            }
            outputs = self._session.run(None, {name: feed[name] for name in self._session_inputs})
            return np.asarray(outputs[0], dtype=np.float32)
        return self._torch_logits(input_ids, attention_mask, token_type_ids)

    def _load_tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(self._artifacts.tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on a corrupt file
            raise ConfigError(
                f"router tokenizer {self._artifacts.tokenizer_file} is unreadable ({exc}); {HOW_TO_TRAIN}"
            ) from exc
        tokenizer.no_padding()  # pad_encodings pads each sub-batch to its longest text
        tokenizer.enable_truncation(max_length=self._max_length)
        return tokenizer

    def _load_onnx(self, onnx_file: Path) -> None:
        self._session = _onnx_session(onnx_file, threads=self._threads)
        self._session_inputs = tuple(i.name for i in self._session.get_inputs())
        n_out = self._session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(self.labels):
            raise ConfigError(f"router ONNX model {onnx_file}: {n_out} outputs for {len(self.labels)} labels")

    def _load_torch(self) -> None:
        self._torch_model = load_merged_torch_model(self._artifacts, threads=self._threads)

    def _torch_logits(
        self, input_ids: IntArray, attention_mask: IntArray, token_type_ids: IntArray
    ) -> npt.NDArray[np.float32]:
        import torch

        with torch.inference_mode():
            logits = self._torch_model(
                input_ids=torch.from_numpy(input_ids),
                attention_mask=torch.from_numpy(attention_mask),
                token_type_ids=torch.from_numpy(token_type_ids),
            ).logits
        return np.asarray(logits.float().numpy(), dtype=np.float32)


def _onnx_session(onnx_file: Path, *, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(onnx_file), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
        raise ConfigError(f"router ONNX model {onnx_file} does not load ({exc}); {HOW_TO_TRAIN}") from exc


def load_merged_torch_model(artifacts: RouterArtifacts, *, threads: int | None = None) -> Any:
    """Base model + LoRA adapter, merged into plain weights (peft merge_and_unload), in eval mode."""
    import torch
    from peft import PeftModel

    from services.core.packaged import resolve_encoder
    from services.router.modeling import build_classifier

    if threads is not None:
        torch.set_num_threads(threads)
    if not (artifacts.adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"router adapter missing: {artifacts.adapter_dir}; {HOW_TO_TRAIN}")
    try:
        base_dir = str(resolve_encoder(artifacts.base_model))
        base = build_classifier(
            base_dir, artifacts.labels, artifacts.pooling, encoder_layers=artifacts.encoder_layers
        )
        model = PeftModel.from_pretrained(base, str(artifacts.adapter_dir)).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"router adapter {artifacts.adapter_dir} does not load ({exc}); {HOW_TO_TRAIN}"
        ) from exc
    return model.eval()
