"""The ONNX Runtime GenAI backend end to end with the real SmolLM2 (converted once per test session)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import pytest

from services.core.errors import ConfigError, InvalidRequest, NotReady, Overloaded, StructuredOutputError
from services.core.settings import OnnxGeneratorSettings
from services.core.types import ChatMessage, GenerationParams, TokenDelta
from services.llm.model_prep import prepare_hf_model, prepare_onnx_model
from services.llm.onnx_backend import OnnxGenerator, guided_decoding_works
from services.llm.onnx_prefix_cache import MIN_PREFILLED_TOKENS
from tests.llm.test_structured_output import SCHEMA as TRIP_SCHEMA

pytestmark = pytest.mark.integration

QUESTION = [ChatMessage("user", "Name three colours of the rainbow and say one sentence about each.")]
# Fewer tokens than the model's whole answer (22 tokens with transformers 5.24 / onnxruntime 1.32; it was
# longer with earlier releases), so the greedy reference always ends on the length limit.
GREEDY = GenerationParams(max_tokens=16)


@pytest.fixture(scope="session")
def onnx_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data dir for the whole session, so every test reuses the same conversions."""
    return tmp_path_factory.getbasetemp() / "onnx-data"


@pytest.fixture(scope="session")
def smollm2_settings() -> OnnxGeneratorSettings:
    return OnnxGeneratorSettings(model="smollm2", onnx_precision="int8", threads=2, max_concurrency=2)


@pytest.fixture(scope="session")
def smollm2_onnx_dir(onnx_data_dir: Path, smollm2_settings: OnnxGeneratorSettings) -> Path:
    return prepare_onnx_model(smollm2_settings, onnx_data_dir)


def loaded(settings: OnnxGeneratorSettings, data_dir: Path, model_dir: Path) -> OnnxGenerator:
    # A fresh generator per test (its GenerationSlots belong to that test's event loop); loading a converted
    # model takes under a second.
    generator = OnnxGenerator(settings, data_dir)
    generator.load(model_dir)
    return generator


@pytest.fixture
def generator(
    smollm2_settings: OnnxGeneratorSettings, onnx_data_dir: Path, smollm2_onnx_dir: Path
) -> OnnxGenerator:
    return loaded(smollm2_settings, onnx_data_dir, smollm2_onnx_dir)


@pytest.fixture(scope="session")
def greedy_reference(
    smollm2_settings: OnnxGeneratorSettings, onnx_data_dir: Path, smollm2_onnx_dir: Path
) -> str:
    result = asyncio.run(loaded(smollm2_settings, onnx_data_dir, smollm2_onnx_dir).complete(QUESTION, GREEDY))
    assert result.finish_reason == "length"
    return result.text


async def collect(
    generator: OnnxGenerator, params: GenerationParams
) -> tuple[str, list[str], dict[str, object]]:
    pieces: list[str] = []
    final: dict[str, object] = {}
    async for delta in generator.stream(QUESTION, params):
        pieces.append(delta.text)
        if delta.finish_reason is not None:
            final = {
                "finish_reason": delta.finish_reason,
                "prompt_tokens": delta.prompt_tokens,
                "completion_tokens": delta.completion_tokens,
            }
    return "".join(pieces), pieces, final


async def test_complete_and_stream_give_the_same_greedy_text(
    generator: OnnxGenerator, greedy_reference: str
) -> None:
    result = await generator.complete(QUESTION, GREEDY)
    streamed, pieces, final = await collect(generator, GREEDY)
    assert result.text == greedy_reference
    assert streamed == greedy_reference
    assert len([p for p in pieces if p]) > 5  # really token by token, not one blob
    assert final["finish_reason"] == "length"
    assert result.backend == "local"
    assert 0 < result.ttft_s <= result.busy_s


async def test_stop_string_cuts_the_text_and_never_leaks_a_partial_stop(
    generator: OnnxGenerator, greedy_reference: str
) -> None:
    middle = len(greedy_reference) // 3
    stop = greedy_reference[middle : middle + 6]  # likely spans a token boundary
    cut = greedy_reference.index(stop)
    streamed, pieces, final = await collect(
        generator, GenerationParams(max_tokens=GREEDY.max_tokens, stop=(stop,))
    )
    assert streamed == greedy_reference[:cut]
    assert final["finish_reason"] == "stop"
    running = ""
    for piece in pieces:
        running += piece
        assert running == greedy_reference[: len(running)]  # nothing beyond the cut ever went out


async def test_token_counts_equal_the_tokenizers(
    generator: OnnxGenerator, smollm2_settings, onnx_data_dir
) -> None:
    from transformers import AutoTokenizer

    hf_tokenizer = AutoTokenizer.from_pretrained(str(prepare_hf_model(smollm2_settings, onnx_data_dir)))
    text = "Larkspur's handbook: résumé, naïve café — 日本語 too."
    assert generator.count_tokens(text) == len(hf_tokenizer.encode(text, add_special_tokens=False))
    chat = [{"role": m.role, "content": m.content} for m in QUESTION]
    encoded: Any = hf_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    expected_prompt = len(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
    assert generator.render_prompt_tokens(QUESTION) == expected_prompt
    result = await generator.complete(QUESTION, GenerationParams(max_tokens=7))
    assert result.prompt_tokens == expected_prompt
    assert result.completion_tokens == 7
    assert result.finish_reason == "length"


async def test_answer_that_ends_by_itself_finishes_with_stop(generator: OnnxGenerator) -> None:
    result = await generator.complete([ChatMessage("user", "Say just: yes")], GenerationParams(max_tokens=64))
    assert result.finish_reason == "stop"
    assert 0 < result.completion_tokens < 64
    assert "<|im_end|>" not in result.text


async def test_seed_makes_sampling_reproducible(generator: OnnxGenerator) -> None:
    params = GenerationParams(max_tokens=24, temperature=1.0, top_p=0.95, seed=1234)
    first = await generator.complete(QUESTION, params)
    second = await generator.complete(QUESTION, params)
    assert first.text == second.text
    others = {
        (await generator.complete(QUESTION, GenerationParams(max_tokens=24, temperature=1.0, seed=s))).text
        for s in (1, 2, 3)
    }
    assert len(others | {first.text}) > 1  # sampling really samples


async def test_two_concurrent_streams_both_complete_correctly(
    generator: OnnxGenerator, greedy_reference: str
) -> None:
    (text_a, _, final_a), (text_b, _, final_b) = await asyncio.gather(
        collect(generator, GREEDY), collect(generator, GREEDY)
    )
    assert text_a == text_b == greedy_reference
    assert final_a["completion_tokens"] == final_b["completion_tokens"] == GREEDY.max_tokens
    assert generator.slots.running == 0


async def test_consumer_that_stops_iterating_frees_the_slot(generator: OnnxGenerator) -> None:
    stream = cast(
        AsyncGenerator[TokenDelta, None], generator.stream(QUESTION, GenerationParams(max_tokens=200))
    )
    first = await anext(stream)
    assert first.text
    assert generator.slots.running == 1
    await stream.aclose()  # what the gateway does when the client disconnects
    assert generator.slots.running == 0


async def test_a_full_queue_is_refused(smollm2_settings, onnx_data_dir, smollm2_onnx_dir) -> None:
    settings = smollm2_settings.model_copy(update={"max_concurrency": 1, "max_queue": 0})
    generator = loaded(settings, onnx_data_dir, smollm2_onnx_dir)
    busy = cast(
        AsyncGenerator[TokenDelta, None], generator.stream(QUESTION, GenerationParams(max_tokens=100))
    )
    await anext(busy)
    with pytest.raises(Overloaded):
        await generator.complete(QUESTION, GREEDY)
    await busy.aclose()


@pytest.mark.parametrize(
    "options",
    [
        {"intra_op_spinning": True, "inter_op_spinning": True, "graph_optimization": "all"},
        {"intra_op_spinning": False, "inter_op_spinning": False, "graph_optimization": "basic"},
    ],
)
async def test_the_session_options_load_and_keep_the_greedy_answer(
    options: dict[str, Any], smollm2_settings, onnx_data_dir, smollm2_onnx_dir, greedy_reference: str
) -> None:
    settings = smollm2_settings.model_copy(update={**options, "max_concurrency": 1})
    result = await loaded(settings, onnx_data_dir, smollm2_onnx_dir).complete(QUESTION, GREEDY)
    assert result.text == greedy_reference


async def test_invalid_requests_are_refused(generator: OnnxGenerator) -> None:
    with pytest.raises(InvalidRequest, match="unknown adapter"):
        await generator.complete(QUESTION, GenerationParams(adapter="nope"))
    with pytest.raises(InvalidRequest, match="max_tokens"):
        await generator.complete(QUESTION, GenerationParams(max_tokens=0))


async def test_not_warmed_up_raises_not_ready(smollm2_settings, onnx_data_dir) -> None:
    with pytest.raises(NotReady):
        await OnnxGenerator(smollm2_settings, onnx_data_dir).complete(QUESTION, GREEDY)


def test_a_corrupted_converted_model_is_refused(tmp_path: Path, smollm2_settings, smollm2_onnx_dir) -> None:
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(smollm2_onnx_dir, damaged)
    data_file = damaged / "model.onnx.data"
    with data_file.open("r+b") as handle:
        handle.truncate(data_file.stat().st_size // 2)
    with pytest.raises(ConfigError, match="truncated"):
        OnnxGenerator(smollm2_settings, tmp_path).load(damaged)
    (damaged / "genai_config.json").unlink()
    with pytest.raises(ConfigError, match="genai_config.json"):
        OnnxGenerator(smollm2_settings, tmp_path).load(damaged)


def trip_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "trip", "schema": schema}}


async def test_a_json_schema_comes_valid_in_one_guided_pass(generator: OnnxGenerator) -> None:
    import jsonschema

    assert generator.supports_response_format
    params = GenerationParams(max_tokens=60, response_format=trip_format(TRIP_SCHEMA))
    result = await generator.complete([ChatMessage("user", "Lisbon for 3 days")], params)
    jsonschema.validate(json.loads(result.text), TRIP_SCHEMA)
    assert result.finish_reason == "stop"


async def test_a_schema_the_grammar_compiler_refuses_is_a_structured_output_error(
    generator: OnnxGenerator,
) -> None:
    lookbehind = {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=a)b"}}}
    with pytest.raises(StructuredOutputError, match="guided decoding cannot use"):
        await generator.complete(QUESTION, GenerationParams(response_format=trip_format(lookbehind)))
    assert generator.slots.running == 0


def test_without_guidance_response_format_is_left_to_validate_and_repair(
    smollm2_settings, onnx_data_dir, smollm2_onnx_dir, caplog: pytest.LogCaptureFixture
) -> None:
    assert not guided_decoding_works(object(), smollm2_onnx_dir)  # og refuses a model it cannot use
    assert "guided decoding unavailable" in caplog.text
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("services.llm.onnx_backend.guided_decoding_works", lambda model, model_dir: False)
        assert not loaded(smollm2_settings, onnx_data_dir, smollm2_onnx_dir).supports_response_format


def make_random_lora(
    hf_dir: Path, out: Path, seed: int, target_modules: tuple[str, ...] = ("q_proj", "v_proj", "down_proj")
) -> Path:
    """A tiny peft LoRA whose B is random, so it visibly changes the output (a trained one would too)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    peft_model.save_pretrained(str(out))
    return out


@pytest.mark.slow
async def test_an_adapter_switches_the_output_per_request(
    tmp_path_factory: pytest.TempPathFactory, smollm2_settings, onnx_data_dir, greedy_reference: str
) -> None:
    hf_dir = prepare_hf_model(smollm2_settings, onnx_data_dir)
    lora_dir = make_random_lora(hf_dir, tmp_path_factory.mktemp("lora") / "style", seed=0)
    settings = smollm2_settings.model_copy(update={"adapters": {"style": str(lora_dir)}})
    generator = OnnxGenerator(settings, onnx_data_dir)
    generator.warm_up()  # builds the LoRA-ready base and converts the adapter
    assert list(generator.adapters) == ["style"]

    base = await generator.complete(QUESTION, GREEDY)
    tuned = await generator.complete(
        QUESTION, GenerationParams(max_tokens=GREEDY.max_tokens, adapter="style")
    )
    base_again = await generator.complete(QUESTION, GREEDY)
    # Zero-default LoRA inputs: without an adapter the LoRA-ready model answers exactly like the plain one.
    assert base.text == base_again.text == greedy_reference
    assert tuned.text != base.text
    (plain, _, _), (adapted, _, _) = await asyncio.gather(
        collect(generator, GREEDY),
        collect(generator, GenerationParams(max_tokens=GREEDY.max_tokens, adapter="style")),
    )
    assert plain == base.text
    assert adapted == tuned.text


# ---------------------------------------------------------------- prompt-prefix reuse (kept generators)

SYSTEM = ChatMessage(
    "system",
    "You answer questions from the employees of a small software company. Keep every answer short, "
    "state only what you know, and say so when you do not know the answer to a question.",
)
PREFIX_CONVERSATIONS = [
    [SYSTEM, ChatMessage("user", "What is a good way to start a code review?")],
    [SYSTEM, ChatMessage("user", "How should I name a new git branch?")],
    [SYSTEM, ChatMessage("user", "What is a good way to start a code review?")],
]
PREFIX_PARAMS = GenerationParams(max_tokens=20)


def unbatched(settings: OnnxGeneratorSettings, **update: Any) -> OnnxGeneratorSettings:
    return settings.model_copy(update={"max_concurrency": 1, **update})


async def test_kept_generators_give_the_fresh_greedy_answers_and_count_the_reused_tokens(
    smollm2_settings, onnx_data_dir, smollm2_onnx_dir
) -> None:
    kept = loaded(unbatched(smollm2_settings), onnx_data_dir, smollm2_onnx_dir)
    fresh = loaded(unbatched(smollm2_settings, prefix_cache_slots=0), onnx_data_dir, smollm2_onnx_dir)
    first = await fresh.complete(PREFIX_CONVERSATIONS[0], PREFIX_PARAMS)
    follow_up = [
        *PREFIX_CONVERSATIONS[0],
        ChatMessage("assistant", first.text),
        ChatMessage("user", "And how should it end?"),
    ]
    system_tokens = len(kept.prompt_ids([SYSTEM])) - 2  # without the rendered message's end
    assert system_tokens > 30
    conversations = [*PREFIX_CONVERSATIONS, follow_up]
    for index, messages in enumerate(conversations):
        expected = await fresh.complete(messages, PREFIX_PARAMS)
        got = await kept.complete(messages, PREFIX_PARAMS)
        assert (got.text, got.prompt_tokens, got.completion_tokens, got.finish_reason) == (
            expected.text,
            expected.prompt_tokens,
            expected.completion_tokens,
            expected.finish_reason,
        ), messages
        assert expected.cached_prompt_tokens == 0
        # Two slots: the first two prompts each get a generator, so the repeat finds the first one's.
        if index < 2:
            assert got.cached_prompt_tokens == 0
        elif index == 2:  # the same prompt again: all but the last tokens, which give the logits
            assert got.cached_prompt_tokens == got.prompt_tokens - MIN_PREFILLED_TOKENS
        else:
            assert system_tokens <= got.cached_prompt_tokens < got.prompt_tokens
    # The follow-up reused the whole first prompt, not only the system prompt.
    assert got.cached_prompt_tokens == len(kept.prompt_ids(PREFIX_CONVERSATIONS[0]))


async def test_a_request_that_could_outgrow_the_kept_buffer_runs_on_a_fresh_generator(
    smollm2_settings, onnx_data_dir, smollm2_onnx_dir
) -> None:
    messages = PREFIX_CONVERSATIONS[0]
    prompt_tokens = len(
        OnnxGenerator.prompt_ids(loaded(smollm2_settings, onnx_data_dir, smollm2_onnx_dir), messages)
    )
    settings = unbatched(smollm2_settings, prefix_cache_tokens=prompt_tokens + PREFIX_PARAMS.max_tokens - 1)
    small = loaded(settings, onnx_data_dir, smollm2_onnx_dir)
    first = await small.complete(messages, PREFIX_PARAMS)
    again = await small.complete(messages, PREFIX_PARAMS)
    assert first.text == again.text
    assert first.cached_prompt_tokens == again.cached_prompt_tokens == 0
    assert (await small.complete(messages, GenerationParams(max_tokens=PREFIX_PARAMS.max_tokens - 1))).text


async def test_a_cancelled_request_leaves_a_generator_the_next_request_can_reuse(
    smollm2_settings, onnx_data_dir, smollm2_onnx_dir
) -> None:
    kept = loaded(unbatched(smollm2_settings), onnx_data_dir, smollm2_onnx_dir)
    fresh = loaded(unbatched(smollm2_settings, prefix_cache_slots=0), onnx_data_dir, smollm2_onnx_dir)
    stream = cast(
        AsyncGenerator[TokenDelta, None],
        kept.stream(PREFIX_CONVERSATIONS[1], GenerationParams(max_tokens=200)),
    )
    assert (await anext(stream)).text
    await stream.aclose()
    got = await kept.complete(PREFIX_CONVERSATIONS[1], PREFIX_PARAMS)
    assert got.text == (await fresh.complete(PREFIX_CONVERSATIONS[1], PREFIX_PARAMS)).text
    assert got.cached_prompt_tokens == got.prompt_tokens - MIN_PREFILLED_TOKENS


async def test_seeded_and_guided_requests_never_take_a_kept_generator(
    smollm2_settings, onnx_data_dir, smollm2_onnx_dir
) -> None:
    kept = loaded(unbatched(smollm2_settings), onnx_data_dir, smollm2_onnx_dir)
    messages = PREFIX_CONVERSATIONS[0]
    await kept.complete(messages, PREFIX_PARAMS)
    seeded = GenerationParams(max_tokens=12, temperature=1.0, seed=7)
    assert (await kept.complete(messages, seeded)).cached_prompt_tokens == 0
    guided = GenerationParams(max_tokens=24, response_format={"type": "json_object"})
    assert (await kept.complete(messages, guided)).cached_prompt_tokens == 0
    assert (await kept.complete(messages, PREFIX_PARAMS)).cached_prompt_tokens > 0


# ---------------------------------------------------------------------------- the GIL (oga_native.py)

SENTENCE = "The quarterly review covered staffing and the release plan."
LONG_PROMPT = [ChatMessage("user", " ".join([SENTENCE] * 60))]


async def largest_loop_pause(generator: OnnxGenerator, messages: list[ChatMessage]) -> tuple[float, float]:
    """(the longest the event loop could not run, the request's duration) while `messages` is generated."""
    stamps: list[float] = []

    async def tick() -> None:
        while True:
            stamps.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.001)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    started = asyncio.get_running_loop().time()
    await generator.complete(messages, GenerationParams(max_tokens=2))
    ended = asyncio.get_running_loop().time()
    ticker.cancel()
    during = [stamp for stamp in stamps if started <= stamp <= ended] + [ended]
    pauses = [later - earlier for earlier, later in zip([started, *during], during, strict=False)]
    return max(pauses), ended - started


@pytest.mark.parametrize("max_concurrency", [1, 2], ids=["unbatched", "cohort"])
@pytest.mark.parametrize("release_gil", [True, False])
async def test_the_event_loop_runs_while_a_long_prompt_prefills_only_with_the_gil_released(
    release_gil: bool, max_concurrency: int, smollm2_settings, onnx_data_dir, smollm2_onnx_dir
) -> None:
    settings = smollm2_settings.model_copy(
        update={"release_gil": release_gil, "max_concurrency": max_concurrency, "prefix_cache_slots": 0}
    )
    generator = loaded(settings, onnx_data_dir, smollm2_onnx_dir)
    assert generator.render_prompt_tokens(LONG_PROMPT) > 500
    try:
        pause, duration = await largest_loop_pause(generator, LONG_PROMPT)
    finally:
        await generator.aclose()
    if release_gil:
        assert pause < 0.25 * duration  # the loop kept running through the prefill
    else:
        assert pause > 0.5 * duration  # the binding held the GIL through the whole prefill


async def test_the_bindings_own_calls_give_the_same_greedy_answer(
    smollm2_settings, onnx_data_dir, smollm2_onnx_dir, greedy_reference: str
) -> None:
    settings = smollm2_settings.model_copy(update={"release_gil": False, "max_concurrency": 1})
    result = await loaded(settings, onnx_data_dir, smollm2_onnx_dir).complete(QUESTION, GREEDY)
    assert result.text == greedy_reference  # the reference ran through the C API (the default)


def test_a_c_api_error_is_raised_with_its_message(generator: OnnxGenerator) -> None:
    import onnxruntime_genai as og

    from services.llm.oga_native import compute_calls, native_calls_available

    assert native_calls_available()  # the pinned onnxruntime-genai is a checked version
    model = generator._require_model()
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=8, batch_size=1)
    og_generator = og.Generator(model, params)
    calls = compute_calls(og_generator, release_gil=True, lock=threading.Lock())
    assert calls is not og_generator
    with pytest.raises(RuntimeError, match=r"\S"):
        calls.append_tokens(list(range(100, 120)))  # beyond max_length
    assert compute_calls(og_generator, release_gil=False, lock=threading.Lock()) is og_generator


def test_native_compute_calls_wait_for_the_models_lock(generator: OnnxGenerator) -> None:
    import onnxruntime_genai as og

    from services.llm.oga_native import compute_calls

    model = generator._require_model()
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=16, batch_size=1)
    og_generator = og.Generator(model, params)
    lock = threading.Lock()
    calls = compute_calls(og_generator, release_gil=True, lock=lock)
    with lock:  # another generator of the model is computing
        worker = threading.Thread(target=calls.append_tokens, args=([1, 2, 3],))
        worker.start()
        worker.join(0.3)
        assert worker.is_alive()
    worker.join(30)
    assert not worker.is_alive() and og_generator.token_count() == 3
