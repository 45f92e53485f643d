"""The router's torch model: a BERT-family encoder with a classification head, pooled one of two ways.

`cls` is transformers' BertForSequenceClassification as is: tanh(pooler(hidden[CLS])) -> classifier.
`mean` averages the last hidden states over the real (unmasked) tokens, then classifier. The sentence
encoders this project packages (all-MiniLM-L6-v2) were trained with mean pooling, so their [CLS] vector and
pooler carry no sentence meaning; a mean-pooled head starts from the representation they learnt.

Training and the torch serving path build the model here, so both score with the same head; the exported
ONNX graph contains the pooling, so the ONNX path needs nothing from this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any, Literal

from services.core.errors import ConfigError

Pooling = Literal["cls", "mean"]
POOLINGS: tuple[Pooling, ...] = ("cls", "mean")


@cache  # one class object however many models are built
def _mean_pooled_class() -> Any:
    """Defined on first use: importing transformers costs seconds and serving on ONNX never needs it."""
    import torch
    from transformers import BertForSequenceClassification
    from transformers.modeling_outputs import SequenceClassifierOutput

    class MeanPooledBertForSequenceClassification(BertForSequenceClassification):  # type: ignore[no-untyped-call]
        """BertForSequenceClassification whose head reads the masked mean of the last hidden states."""

        def forward(
            self,
            input_ids: torch.Tensor | None = None,
            attention_mask: torch.Tensor | None = None,
            token_type_ids: torch.Tensor | None = None,
            labels: torch.Tensor | None = None,
            **kwargs: Any,
        ) -> SequenceClassifierOutput:
            hidden = self.bert(
                input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True
            ).last_hidden_state
            if attention_mask is None:
                pooled = hidden.mean(dim=1)
            else:
                mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                # clamp: a row of padding only (never produced by the tokenizer) must not divide by zero
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            logits = self.classifier(self.dropout(pooled))
            loss = None
            if labels is not None:
                loss = torch.nn.functional.cross_entropy(logits, labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    return MeanPooledBertForSequenceClassification


def build_classifier(
    base_dir: str, labels: Sequence[str], pooling: Pooling, *, encoder_layers: int | None = None
) -> Any:
    """The base encoder with a fresh `len(labels)`-way head (the head is what training learns).

    `encoder_layers` keeps only the first N transformer layers (None: all). Cost per query is linear in
    the layer count; dropping the top layers of a BERT keeps most of its fine-tuned accuracy (Sajjad et
    al. 2023, "On the effect of dropping layers of pre-trained transformer models").
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if pooling not in POOLINGS:
        raise ConfigError(f"router pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    config = AutoConfig.from_pretrained(base_dir)
    available = int(config.num_hidden_layers)
    if encoder_layers is not None and not 1 <= encoder_layers <= available:
        raise ConfigError(f"router encoder_layers must be 1..{available} ({base_dir}), got {encoder_layers}")
    label_args: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
        "num_hidden_layers": encoder_layers or available,
    }
    if pooling == "cls":
        return AutoModelForSequenceClassification.from_pretrained(base_dir, **label_args)
    model_type = config.model_type
    if model_type != "bert":
        raise ConfigError(f"router pooling 'mean' needs a BERT-family encoder, {base_dir} is {model_type!r}")
    return _mean_pooled_class().from_pretrained(base_dir, **label_args)
