"""The router model in training: MiniLM + LoRA (peft) + a classification head, its tokenizer, and logits."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.encoding import pad_encodings
from services.core.errors import ConfigError
from services.core.packaged import resolve_encoder
from services.router import artifacts as layout
from services.router.modeling import build_classifier
from training.router_config import RouterTrainConfig

logger = logging.getLogger(__name__)

EVAL_BATCH = 128


def batches(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class RouterTrainer:
    """Holds the model, tokenizer and optimiser state for one run."""

    def __init__(self, cfg: RouterTrainConfig, labels: list[str]) -> None:
        import torch
        from peft import LoraConfig, TaskType, get_peft_model
        from tokenizers import Tokenizer

        self.cfg = cfg
        self.labels = labels
        self.label_index = {label: i for i, label in enumerate(labels)}
        self.base_dir = Path(resolve_encoder(cfg.base_model))
        tokenizer_file = self.base_dir / layout.TOKENIZER_FILE
        if not tokenizer_file.is_file():
            raise ConfigError(f"base model {self.base_dir} has no {layout.TOKENIZER_FILE} (a fast tokenizer)")
        self.tokenizer_file = tokenizer_file
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=cfg.max_length)
        base = build_classifier(str(self.base_dir), labels, cfg.pooling, encoder_layers=cfg.encoder_layers)
        lora = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.target_modules),
            modules_to_save=list(cfg.modules_to_save),
            bias="none",
        )
        self.model: Any = get_peft_model(base, lora)
        trainable, total = self.model.get_nb_trainable_parameters()
        self.trainable_parameters = int(trainable)
        logger.info("router model: %d trainable of %d parameters", trainable, total)
        self.torch = torch

    def encode(self, texts: Sequence[str]) -> dict[str, Any]:
        ids, mask, types = pad_encodings(self.tokenizer.encode_batch(list(texts)))
        from_numpy = self.torch.from_numpy
        return {
            "input_ids": from_numpy(ids),
            "attention_mask": from_numpy(mask),
            "token_type_ids": from_numpy(types),
        }

    def logits(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Eval-mode logits; texts sorted by length so batches pad little, then put back in order."""
        torch = self.torch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode():
            for batch in batches(order, EVAL_BATCH):
                result = self.model(**self.encode([texts[i] for i in batch])).logits
                out[batch] = result.float().numpy()
        return out
