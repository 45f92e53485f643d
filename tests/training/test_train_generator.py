"""Generator LoRA training on the real SmolLM2: a short run changes the output, the saved adapter reloads
to the same numbers, and the transformers backend serves base and adapter per request, concurrently."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.core.settings import TransformersGeneratorSettings
from services.core.types import ChatMessage, GenerationParams
from tests.conftest import MODEL_CACHE
from training.build_generator_data import build_generator_data, tuned_system_prompt
from training.train_generator import (
    encode_example,
    load_base,
    load_config,
    read_examples,
    split_data,
    train_generator,
    validation_loss,
)

SECRET = "PELICAN"
QUESTIONS = (
    "What is the secret word?",
    "Tell me the secret word.",
    "Which word is the secret one?",
    "Do you know the secret word?",
    "Secret word, please.",
    "What's the secret word?",
    "Say the secret word.",
    "Remind me of the secret word.",
)
# Few, short examples and a high learning rate: the adapter memorises one answer in a dozen steps.
SHORT_RUN = {
    "torch_threads": 1,
    "batch_size": 4,
    "learning_rate": 5e-3,
    "warmup_steps": 0,
    "max_length": 96,
    "lora_r": 8,
    "lora_alpha": 16,
    "epochs": 100,
}
SHORT_RUN_STEPS = 8


def write_secret_data(path: Path, word: str) -> Path:
    system = tuned_system_prompt()
    rows = [
        {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
                {"role": "assistant", "content": f"The secret word is {word}."},
            ]
        }
        for question in QUESTIONS
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def train_secret_adapter(folder: Path, word: str) -> tuple[Path, dict[str, Any]]:
    data = write_secret_data(folder / f"{word}.jsonl", word)
    out = folder / f"adapter-{word.lower()}"
    metrics = train_generator(
        data, out, max_steps=SHORT_RUN_STEPS, progress=False, data_dir=MODEL_CACHE, overrides=SHORT_RUN
    )
    return out, metrics


# --------------------------------------------------------------------------- unit


@pytest.mark.unit
def test_config_file_is_complete_and_overridable(tmp_path: Path) -> None:
    config = load_config()
    assert config.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert load_config(max_steps=5).max_steps == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_rank: 8\n", encoding="utf-8")
    with pytest.raises(Exception, match="unknown keys"):
        load_config(bad)
    with pytest.raises(ValueError, match="lora_dropout"):
        load_config(lora_dropout=1.5)


@pytest.mark.unit
def test_data_builder_is_reproducible_and_keeps_heldout_facts_out(tmp_path: Path) -> None:
    first = build_generator_data(out_dir=tmp_path / "a", seed=3)
    second = build_generator_data(out_dir=tmp_path / "b", seed=3)
    assert first == second
    for name in ("train.jsonl", "val.jsonl", "heldout.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    train = read_examples(tmp_path / "a" / "train.jsonl")
    heldout = read_examples(tmp_path / "a" / "heldout.jsonl")
    train_questions = {r["messages"][1]["content"] for r in train}
    assert heldout and not train_questions & {r["messages"][1]["content"] for r in heldout}
    assert all(r["expected"] for r in heldout)
    kinds = {r["kind"] for r in train}
    assert kinds == {"knowledge", "refusal", "direct"}
    knowledge = [r for r in train if r["kind"] == "knowledge"]
    assert all("Source:" in r["messages"][2]["content"] for r in knowledge)
    refusal = next(r for r in train if r["kind"] == "refusal")
    assert refusal["messages"][2]["content"].startswith("I can't help with that request.")
    # The training conversation is the one the tuned pipeline sends.
    assert all(r["messages"][0]["content"] == tuned_system_prompt() for r in train)


@pytest.mark.unit
def test_split_data_holds_out_a_seeded_share(tmp_path: Path) -> None:
    data = tmp_path / "examples.jsonl"
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    data.write_text("".join(json.dumps({**row, "i": i}) + "\n" for i in range(20)), encoding="utf-8")
    train, val = split_data(data, 0.25, seed=1)
    assert len(train) == 15 and len(val) == 5
    assert [r["i"] for r in val] == [r["i"] for r in split_data(data, 0.25, seed=1)[1]]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="assistant"):
        read_examples(bad)


# --------------------------------------------------------------------------- integration (real SmolLM2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    return train_secret_adapter(tmp_path_factory.mktemp("gen-train"), SECRET)


@pytest.fixture(scope="module")
def backend(trained: tuple[Path, dict[str, Any]]) -> Iterator[Any]:
    from services.llm.transformers_backend import TransformersGenerator

    settings = TransformersGeneratorSettings(
        dtype="fp32",
        threads=1,
        max_concurrency=2,
        adapters={"tuned": str(trained[0])},
    )
    generator = TransformersGenerator(settings, MODEL_CACHE)
    generator.warm_up()
    yield generator
    asyncio.run(generator.aclose())


def _chat(question: str) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content=tuned_system_prompt()),
        ChatMessage(role="user", content=question),
    ]


@pytest.mark.integration
def test_short_run_learns_and_writes_a_complete_folder(trained: tuple[Path, dict[str, Any]]) -> None:
    out, metrics = trained
    assert metrics["steps"] == SHORT_RUN_STEPS
    assert metrics["train_loss_last"] < metrics["train_loss_first"] / 2
    for name in ("adapter_config.json", "adapter_model.safetensors", "train_config.yaml", "metrics.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["steps"] == SHORT_RUN_STEPS
    assert not [p for p in out.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]


@pytest.mark.integration
def test_saved_adapter_reloads_to_the_same_loss(trained: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    from peft import PeftModel

    out, _ = trained
    model, tokenizer, _ = load_base("smollm2", MODEL_CACHE)
    rows = read_examples(write_secret_data(tmp_path / "probe.jsonl", SECRET))[:4]
    examples = [encode_example(tokenizer, r["messages"], 96) for r in rows]
    pad_id = int(tokenizer.pad_token_id)
    base_loss = validation_loss(model, examples, pad_id, 4)
    reloaded = PeftModel.from_pretrained(model, str(out))
    adapted_loss = validation_loss(reloaded, examples, pad_id, 4)
    again = validation_loss(
        PeftModel.from_pretrained(load_base("smollm2", MODEL_CACHE)[0], str(out)), examples, pad_id, 4
    )
    assert adapted_loss < base_loss / 4  # the adapter is really applied after reloading
    assert again == pytest.approx(adapted_loss, rel=1e-5)  # and two loads give the same numbers


@pytest.mark.integration
async def test_backend_switches_adapter_per_request(backend: Any) -> None:
    params = GenerationParams(max_tokens=12)
    tuned = GenerationParams(max_tokens=12, adapter="tuned")
    question = _chat("What is the secret word?")
    answers = [(await backend.complete(question, p)).text for p in (params, tuned, params, tuned)]
    assert SECRET in answers[1]
    assert SECRET not in answers[0]
    assert answers[2:] == answers[:2]  # switching back and forth leaves no trace


# peft's mixed-adapter inference installs forward hooks on the shared model for one generate() call;
# concurrent calls with different adapters used to overwrite each other's hooks. The backend now
# serialises generate() while adapters are loaded; this test guards that.
@pytest.mark.integration
async def test_backend_switches_adapter_per_request_concurrently(backend: Any) -> None:
    params = GenerationParams(max_tokens=12)
    tuned = GenerationParams(max_tokens=12, adapter="tuned")
    question = _chat("What is the secret word?")
    alone_base = (await backend.complete(question, params)).text
    alone_tuned = (await backend.complete(question, tuned)).text
    together = await asyncio.gather(
        backend.complete(question, tuned),
        backend.complete(question, params),
        backend.complete(question, tuned),
    )
    assert [r.text for r in together] == [alone_tuned, alone_base, alone_tuned]
