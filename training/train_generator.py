"""LoRA fine-tuning of the generator for the `tuned` pipeline, and its evaluation against the base model.

Steps: config -> data (chat examples; loss only on the assistant's tokens of the model's own chat
template) -> model (the HF folder model_prep makes from the packaged GGUF, fp32 for training) -> train
(AdamW, warm-up, seeded, tqdm) -> validation loss before and after -> save (peft adapter, the resolved
config, metrics.json and, for the ONNX backend, `adapter.onnx_adapter`) into a temporary sibling that
replaces `out` at the end.

`evaluate_generator` answers held-out questions with and without the adapter side by side, and checks the
house style (short answers, a named source document, refusal phrasing on out-of-scope requests).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import resource
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.core.atomic import staged_dir
from services.core.errors import ConfigError
from services.core.settings import TransformersGeneratorSettings
from training.recipe import read_recipe

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "generator_lora.yaml"
DEFAULT_EVAL = REPO_ROOT / "corpus" / "eval" / "handbook_eval.jsonl"
DEFAULT_DATA_DIR = Path("var")  # Settings.data_dir's default: the converted-model cache
IGNORE_INDEX = -100
ADAPTER_CONFIG_FILE = "adapter_config.json"
METRICS_FILE = "metrics.json"
CONFIG_FILE = "train_config.yaml"
ONNX_ADAPTER_FILE = "adapter.onnx_adapter"
REFUSAL_MARKER = "can't help with that"
SOURCE_MARKER = "Source:"


@dataclass(frozen=True, slots=True)
class GeneratorTrainConfig:
    seed: int = 7
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    bias: str = "none"
    use_rslora: bool = False
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    max_grad_norm: float = 1.0
    batch_size: int = 8
    epochs: int = 1
    max_steps: int = 60
    max_length: int = 192
    val_fraction: float = 0.1
    torch_threads: int = 2
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        checks = {
            "lora_r": self.lora_r > 0,
            "lora_alpha": self.lora_alpha > 0,
            "lora_dropout": 0 <= self.lora_dropout < 1,
            "learning_rate": self.learning_rate > 0,
            "warmup_steps": self.warmup_steps >= 0,
            "max_grad_norm": self.max_grad_norm > 0,
            "batch_size": self.batch_size > 0,
            "epochs": self.epochs > 0,
            "max_steps": self.max_steps > 0,
            "max_length": self.max_length >= 16,
            "val_fraction": 0 <= self.val_fraction < 0.5,
            "torch_threads": self.torch_threads >= 1,
            "eval_batch_size": self.eval_batch_size > 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"{name} has an invalid value: {getattr(self, name)!r}")
        if not self.target_modules:
            raise ValueError("target_modules must name at least one module")


def load_config(path: Path | None = None, **overrides: Any) -> GeneratorTrainConfig:
    """The YAML config (default: training/configs/generator_lora.yaml) with non-None overrides applied."""
    values = read_recipe(
        path or DEFAULT_CONFIG,
        GeneratorTrainConfig,
        what="generator training config",
        overrides=overrides,
        tuples=("target_modules",),
    )
    return GeneratorTrainConfig(**values)


# --------------------------------------------------------------------------- data


Messages = list[dict[str, str]]


def read_examples(path: Path) -> list[dict[str, Any]]:
    """Chat examples: JSONL rows with `messages` (system?, user, assistant), ending with the assistant."""
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            messages = row.get("messages")
            if not isinstance(messages, list) or not messages or messages[-1].get("role") != "assistant":
                raise ValueError(f"{path}:{number}: 'messages' must end with an assistant message")
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no examples")
    return rows


def split_data(
    data: Path, val_fraction: float, seed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, val): a folder holds train.jsonl and val.jsonl; a file gets a seeded validation share."""
    if data.is_dir():
        train = read_examples(data / "train.jsonl")
        val_file = data / "val.jsonl"
        return train, read_examples(val_file) if val_file.is_file() else []
    if not data.is_file():
        raise ValueError(f"data must be a JSONL file or a folder with train.jsonl, got {data}")
    rows = read_examples(data)
    sibling = data.with_name("val.jsonl")
    if data.name == "train.jsonl" and sibling.is_file():
        return rows, read_examples(sibling)
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    cut = round(len(shuffled) * val_fraction) if len(shuffled) >= 10 else 0
    return shuffled[cut:], shuffled[:cut]


def _template_ids(tokenizer: Any, messages: Messages, *, generation_prompt: bool) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=True)
    ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded  # transformers 5: BatchEncoding
    return [int(i) for i in ids]


def encode_example(tokenizer: Any, messages: Messages, max_length: int) -> tuple[list[int], list[int]]:
    """Token ids and labels; labels are IGNORE_INDEX everywhere except the final assistant turn."""
    prompt = _template_ids(tokenizer, messages[:-1], generation_prompt=True)
    full = _template_ids(tokenizer, messages, generation_prompt=False)
    if full[: len(prompt)] != prompt:
        raise ConfigError("the chat template renders the prompt differently inside the full conversation")
    labels = [IGNORE_INDEX] * len(prompt) + full[len(prompt) :]
    return full[:max_length], labels[:max_length]


def encode_all(
    tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int
) -> list[tuple[list[int], list[int]]]:
    encoded = [encode_example(tokenizer, row["messages"], max_length) for row in rows]
    kept = [(ids, labels) for ids, labels in encoded if any(label != IGNORE_INDEX for label in labels)]
    if len(kept) < len(encoded):
        logger.warning("%d examples dropped: their answer starts beyond max_length", len(encoded) - len(kept))
    return kept


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, label) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(label)] = torch.tensor(label)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def batches(
    examples: Sequence[tuple[list[int], list[int]]], size: int, pad_id: int, rng: random.Random | None = None
) -> Iterator[dict[str, Any]]:
    order = list(range(len(examples)))
    if rng is not None:
        rng.shuffle(order)
    for start in range(0, len(order), size):
        yield collate([examples[i] for i in order[start : start + size]], pad_id)


def token_loss_sum(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed cross-entropy over labelled tokens and their count (so batches of any size average right)."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((shifted_labels != IGNORE_INDEX).sum())


def validation_loss(
    model: Any, examples: Sequence[tuple[list[int], list[int]]], pad_id: int, size: int
) -> float:
    """Mean loss per assistant token over `examples`; NaN when there are none."""
    import torch

    if not examples:
        return math.nan
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for batch in batches(examples, size, pad_id):
            loss, n = token_loss_sum(model, batch)
            total, count = total + float(loss), count + n
    model.train(was_training)
    return total / max(count, 1)


# --------------------------------------------------------------------------- model


def load_base(base: str, data_dir: Path, *, dtype: str = "fp32") -> tuple[Any, Any, Path]:
    """(model, tokenizer, hf_dir) for a packaged alias, HF folder or id; fp32 for stable LoRA gradients."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from services.llm.model_prep import prepare_hf_model

    hf_dir = prepare_hf_model(TransformersGeneratorSettings(model=base), data_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = torch.float32 if dtype == "fp32" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch_dtype)
    return model, tokenizer, hf_dir


def lora_config(config: GeneratorTrainConfig) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias=config.bias,  # type: ignore[arg-type]
        use_rslora=config.use_rslora,
        inference_mode=False,
    )


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# --------------------------------------------------------------------------- train


def train_generator(
    data: Path,
    out: Path,
    *,
    config: Path | None = None,
    base: str = "smollm2",
    max_steps: int | None = None,
    progress: bool = True,
    data_dir: Path | None = None,
    onnx_adapter: bool = False,
    onnx_precision: str = "int4",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on `data` and write it atomically to `out`; returns (and saves) the metrics.

    `data`: a folder with train.jsonl (+ val.jsonl), or one JSONL file of chat examples. `onnx_adapter`
    also writes `adapter.onnx_adapter` for the ONNX backend. `overrides` replace config keys (tests).
    """
    import torch
    from peft import get_peft_model
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    started, cpu_started = time.perf_counter(), cpu_seconds()
    cfg = load_config(config, max_steps=max_steps, **(overrides or {}))
    torch.set_num_threads(cfg.torch_threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    cache_dir = data_dir or DEFAULT_DATA_DIR

    # data
    train_rows, val_rows = split_data(data, cfg.val_fraction, cfg.seed)
    model, tokenizer, hf_dir = load_base(base, cache_dir)
    train_set = encode_all(tokenizer, train_rows, cfg.max_length)
    val_set = encode_all(tokenizer, val_rows, cfg.max_length)
    if not train_set:
        raise ValueError(f"no usable training examples in {data}")
    pad_id = int(tokenizer.pad_token_id)

    # model
    peft_model = get_peft_model(model, lora_config(cfg))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    val_before = validation_loss(peft_model, val_set, pad_id, cfg.eval_batch_size)

    # train
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total_steps = min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad],
        lr=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
    )
    schedule = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, min(cfg.warmup_steps, total_steps // 2), total_steps
    )
    rng = random.Random(cfg.seed)
    peft_model.train()
    losses: list[float] = []
    train_started = time.perf_counter()
    bar = tqdm(total=total_steps, desc="train generator", disable=not progress, unit="step")
    step = 0
    while step < total_steps:
        for batch in batches(train_set, cfg.batch_size, pad_id, rng):
            loss_sum, count = token_loss_sum(peft_model, batch)
            loss = loss_sum / max(count, 1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(peft_model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if step >= total_steps:
                break
    bar.close()
    train_seconds = time.perf_counter() - train_started
    val_after = validation_loss(peft_model, val_set, pad_id, cfg.eval_batch_size)

    # save
    window = max(1, min(10, len(losses) // 4))
    metrics: dict[str, Any] = {
        "base": base,
        "base_dir": str(hf_dir),
        "train_examples": len(train_set),
        "val_examples": len(val_set),
        "steps": step,
        "epochs": round(step / steps_per_epoch, 2),
        "trainable_params": int(trainable),
        "train_loss_first": round(sum(losses[:window]) / window, 4),
        "train_loss_last": round(sum(losses[-window:]) / window, 4),
        "val_loss_before": _rounded(val_before),
        "val_loss_after": _rounded(val_after),
        "train_seconds": round(train_seconds, 1),
        "seconds_per_step": round(train_seconds / max(step, 1), 3),
        "torch_threads": cfg.torch_threads,
    }
    _write_atomically(out, peft_model, cfg, metrics, hf_dir, onnx_adapter, onnx_precision)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    metrics["cpu_seconds"] = round(cpu_seconds() - cpu_started, 1)
    metrics["adapter_bytes"] = sum(p.stat().st_size for p in out.rglob("adapter_model.*"))
    metrics["out"] = str(out)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    logger.info("generator adapter written to %s: %s", out, metrics)
    return metrics


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


def _write_atomically(
    out: Path,
    peft_model: Any,
    cfg: GeneratorTrainConfig,
    metrics: dict[str, Any],
    hf_dir: Path,
    onnx_adapter: bool,
    onnx_precision: str,
) -> None:
    """Build the folder beside `out`, then swap it in; a crash leaves the old adapter or the new one."""
    with staged_dir(out, replace=True) as staging:
        peft_model.save_pretrained(str(staging))
        config_dump = dataclasses.asdict(cfg)
        config_dump["target_modules"] = list(cfg.target_modules)
        (staging / CONFIG_FILE).write_text(yaml.safe_dump(config_dump, sort_keys=False), encoding="utf-8")
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
        if onnx_adapter:
            from services.llm.onnx_adapters import convert_peft_adapter

            converted = convert_peft_adapter(staging, hf_dir, staging / "onnx", onnx_precision)
            shutil.move(str(converted), staging / ONNX_ADAPTER_FILE)
            shutil.rmtree(staging / "onnx")


# --------------------------------------------------------------------------- evaluate


@dataclass(frozen=True, slots=True)
class EvalItem:
    set_name: str
    question: str
    expected: tuple[str, ...]


def _eval_items(data: Path, eval_file: Path | None, limit: int, seed: int) -> list[EvalItem]:
    rng = random.Random(seed)
    items: list[EvalItem] = []
    folder = data if data.is_dir() else data.parent

    def sample(rows: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
        rows = list(rows)
        rng.shuffle(rows)
        return rows[:count]

    heldout_file = folder / "heldout.jsonl"
    if heldout_file.is_file():
        rows = [r for r in read_examples(heldout_file) if r.get("expected")]
        items += [
            EvalItem("heldout_facts", r["messages"][-2]["content"], tuple(r["expected"]))
            for r in sample(rows, limit)
        ]
    train_file = folder / "train.jsonl" if data.is_dir() or data.name == "train.jsonl" else data
    rows = [r for r in read_examples(train_file) if r.get("kind") == "knowledge" and r.get("expected")]
    items += [
        EvalItem("seen_facts", r["messages"][-2]["content"], tuple(r["expected"]))
        for r in sample(rows, limit)
    ]
    if eval_file is not None and eval_file.is_file():
        with eval_file.open(encoding="utf-8") as handle:
            e2e = [json.loads(line) for line in handle if line.strip()]
        knowledge = [r for r in e2e if r.get("route") == "rag" and r.get("answer_substrings")]
        items += [
            EvalItem("eval_questions", r["question"], tuple(r["answer_substrings"]))
            for r in sample(knowledge, limit)
        ]
        oos = [r for r in e2e if r.get("route") == "out_of_scope"]
        items += [EvalItem("out_of_scope", r["question"], ()) for r in sample(oos, max(4, limit // 2))]
    return items


def generate_answers(
    model: Any, tokenizer: Any, system: str, questions: Sequence[str], *, max_new_tokens: int, batch_size: int
) -> list[str]:
    """Greedy answers, batched with left padding (the chat template the serving backends use)."""
    import torch

    answers: list[str] = []
    pad_id = int(tokenizer.pad_token_id)
    for start in range(0, len(questions), batch_size):
        prompts = [
            _template_ids(
                tokenizer,
                [{"role": "system", "content": system}, {"role": "user", "content": q}],
                generation_prompt=True,
            )
            for q in questions[start : start + batch_size]
        ]
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=pad_id,
            )
        answers += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output]
    return answers


def contains_any(answer: str, expected: Sequence[str]) -> bool:
    lowered = answer.lower()
    return any(e.lower() in lowered for e in expected)


def score_answers(items: Sequence[EvalItem], answers: Sequence[str]) -> dict[str, Any]:
    """answer_contains per set, and the house style: length, a named source, refusals where they belong."""
    scores: dict[str, Any] = {}
    for set_name in sorted({i.set_name for i in items}):
        pairs = [(i, a) for i, a in zip(items, answers, strict=True) if i.set_name == set_name]
        if set_name == "out_of_scope":
            scores["refusal_rate_out_of_scope"] = round(
                sum(REFUSAL_MARKER in a for _, a in pairs) / len(pairs), 3
            )
            continue
        scores[f"answer_contains_{set_name}"] = round(
            sum(contains_any(a, i.expected) for i, a in pairs) / len(pairs), 3
        )
    in_scope = [a for i, a in zip(items, answers, strict=True) if i.set_name != "out_of_scope"]
    if in_scope:
        scores["mean_answer_words"] = round(sum(len(a.split()) for a in in_scope) / len(in_scope), 1)
        scores["names_source_rate"] = round(sum(SOURCE_MARKER in a for a in in_scope) / len(in_scope), 3)
        scores["false_refusal_rate"] = round(sum(REFUSAL_MARKER in a for a in in_scope) / len(in_scope), 3)
    return scores


def evaluate_generator(
    adapter: Path,
    data: Path,
    *,
    base: str = "smollm2",
    data_dir: Path | None = None,
    eval_file: Path | None = DEFAULT_EVAL,
    limit: int = 12,
    max_new_tokens: int = 64,
    batch_size: int = 8,
    threads: int = 2,
    seed: int = 7,
    examples_out: Path | None = None,
) -> dict[str, Any]:
    """Compare base and base+adapter on validation loss, held-out questions and style; a JSON-ready dict.

    Sets: `heldout_facts` (corpus facts kept out of training), `seen_facts` (facts trained on, phrased as
    in training), `eval_questions` (the e2e set's knowledge questions, phrased by people), `out_of_scope`.
    """
    import torch
    from peft import PeftModel

    from training.build_generator_data import tuned_system_prompt

    if not (adapter / ADAPTER_CONFIG_FILE).is_file():
        raise ValueError(f"adapter must be a peft folder with {ADAPTER_CONFIG_FILE}, got {adapter}")
    if limit <= 0:
        raise ValueError(f"limit must be > 0, got {limit}")
    started = time.perf_counter()
    torch.set_num_threads(threads)
    model, tokenizer, _ = load_base(base, data_dir or DEFAULT_DATA_DIR)
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    peft_model.eval()
    pad_id = int(tokenizer.pad_token_id)
    _, val_rows = split_data(data, 0.1, seed)
    val_set = encode_all(tokenizer, val_rows, 256)

    items = _eval_items(data, eval_file, limit, seed)
    system = tuned_system_prompt()
    questions = [i.question for i in items]
    with peft_model.disable_adapter():
        base_loss = validation_loss(peft_model, val_set, pad_id, 16)
        base_answers = generate_answers(
            peft_model, tokenizer, system, questions, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
    tuned_loss = validation_loss(peft_model, val_set, pad_id, 16)
    tuned_answers = generate_answers(
        peft_model, tokenizer, system, questions, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    if examples_out is not None:
        rows = [
            {"set": i.set_name, "question": i.question, "expected": list(i.expected), "base": b, "tuned": t}
            for i, b, t in zip(items, base_answers, tuned_answers, strict=True)
        ]
        examples_out.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    return {
        "adapter": str(adapter),
        "items": len(items),
        "base": {"val_loss": _rounded(base_loss), **score_answers(items, base_answers)},
        "tuned": {"val_loss": _rounded(tuned_loss), **score_answers(items, tuned_answers)},
        "seconds": round(time.perf_counter() - started, 1),
    }
