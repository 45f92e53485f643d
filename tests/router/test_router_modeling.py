"""The router's torch heads on the packaged MiniLM: what mean pooling reads, what encoder_layers keeps,
and the checks on choosing them."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from services.core.errors import ConfigError
from services.router.artifacts import read_artifacts
from services.router.modeling import build_classifier

pytestmark = pytest.mark.integration

LABELS = ("direct", "knowledge", "out_of_scope")


@pytest.fixture(scope="module")
def base_dir() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from services.core.packaged import resolve_encoder

    return str(resolve_encoder("packaged:all-MiniLM-L6-v2"))


def _encode(base_dir: str, texts: list[str]) -> dict:
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(base_dir)(texts, padding=True, return_tensors="pt"))


def test_mean_pooling_is_the_masked_mean_of_the_last_hidden_states(base_dir: str) -> None:
    import torch

    model = build_classifier(base_dir, LABELS, "mean").eval()
    batch = _encode(base_dir, ["hi", "how many vacation days do new hires get in their first year"])
    with torch.inference_mode():
        logits = model(**batch).logits
        hidden = model.bert(**batch).last_hidden_state
        short_len = int(batch["attention_mask"][0].sum())
        expected = model.classifier(hidden[0, :short_len].mean(dim=0))
        alone = model(**_encode(base_dir, ["hi"])).logits[0]
    assert logits.shape == (2, len(LABELS))
    np.testing.assert_allclose(logits[0].numpy(), expected.numpy(), atol=1e-5)
    # the padding the longer text adds to the short one changes nothing
    np.testing.assert_allclose(logits[0].numpy(), alone.numpy(), atol=1e-5)


def test_cls_and_mean_heads_differ_and_carry_the_labels(base_dir: str) -> None:
    import torch

    batch = _encode(base_dir, ["translate good morning into german"])
    torch.manual_seed(0)
    cls_model = build_classifier(base_dir, LABELS, "cls").eval()
    torch.manual_seed(0)
    mean_model = build_classifier(base_dir, LABELS, "mean").eval()
    assert mean_model.config.id2label == dict(enumerate(LABELS))
    with torch.inference_mode():
        assert not torch.allclose(cls_model(**batch).logits, mean_model(**batch).logits)


def test_encoder_layers_keeps_the_first_layers_with_their_pretrained_weights(base_dir: str) -> None:
    import torch

    full = build_classifier(base_dir, LABELS, "mean")
    short = build_classifier(base_dir, LABELS, "mean", encoder_layers=2)
    assert len(full.bert.encoder.layer) == 6
    assert len(short.bert.encoder.layer) == 2
    for kept, original in zip(short.bert.encoder.layer, full.bert.encoder.layer[:2], strict=True):
        for (name, a), (_, b) in zip(kept.named_parameters(), original.named_parameters(), strict=True):
            assert torch.equal(a, b), name
    for bad in (0, 7):
        with pytest.raises(ConfigError, match=f"encoder_layers must be 1..6.*got {bad}"):
            build_classifier(base_dir, LABELS, "cls", encoder_layers=bad)


def test_unknown_pooling_and_non_bert_encoders_are_config_errors(tmp_path: Path, base_dir: str) -> None:
    with pytest.raises(ConfigError, match="'max'"):
        build_classifier(base_dir, LABELS, "max")  # type: ignore[arg-type]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="gpt2"):
        build_classifier(str(tmp_path), LABELS, "mean")


def _router_folder(root: Path, **labels_extra: object) -> Path:
    root.mkdir()
    (root / "labels.json").write_text(json.dumps({"labels": list(LABELS), **labels_extra}))
    (root / "calibration.json").write_text(json.dumps({"temperature": 1.0}))
    (root / "threshold.json").write_text(json.dumps({"threshold": None}))
    (root / "tokenizer.json").write_text("{}")
    return root


def test_artifacts_read_the_head_and_default_older_folders_to_cls_on_all_layers(tmp_path: Path) -> None:
    old = read_artifacts(_router_folder(tmp_path / "old"))
    assert (old.pooling, old.encoder_layers) == ("cls", None)
    assert read_artifacts(_router_folder(tmp_path / "new", pooling="mean")).pooling == "mean"
    with pytest.raises(ConfigError, match="unknown pooling 'max'"):
        read_artifacts(_router_folder(tmp_path / "bad", pooling="max"))
    assert read_artifacts(_router_folder(tmp_path / "short", encoder_layers=4)).encoder_layers == 4
    with pytest.raises(ConfigError, match="encoder_layers must be >= 1, got 'four'"):
        read_artifacts(_router_folder(tmp_path / "worse", encoder_layers="four"))
