"""response_format: checking, extraction, validation and the single repair attempt (fake generator)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from services.core.errors import InvalidRequest, StructuredOutputError
from services.core.types import ChatMessage, GenerationParams, GenerationResult
from services.llm.structured_output import complete_with_response_format, extract_json, parse_response_format

pytestmark = pytest.mark.unit

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 0}},
    "required": ["city", "days"],
    "additionalProperties": False,
}
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "trip", "schema": SCHEMA, "strict": True},
}


class ScriptedGenerator:
    """Answers with the given texts in order and records the prompts it was sent."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[list[ChatMessage]] = []

    async def __call__(self, messages: Sequence[ChatMessage], params: GenerationParams) -> GenerationResult:
        self.prompts.append(list(messages))
        return GenerationResult(self.answers.pop(0), 20, 8, "stop", "fake", 0.1, 0.5)


def params(response_format: dict[str, Any] | None) -> GenerationParams:
    return GenerationParams(response_format=response_format)


MESSAGES = [ChatMessage("system", "You plan trips."), ChatMessage("user", "Lisbon for 3 days")]


async def test_valid_first_answer_in_code_fence_is_returned_as_compact_json() -> None:
    generate = ScriptedGenerator('Here you go:\n```json\n{"city": "Lisbon", "days": 3}\n```')
    result = await complete_with_response_format(generate, MESSAGES, params(JSON_SCHEMA_FORMAT))
    assert json.loads(result.text) == {"city": "Lisbon", "days": 3}
    assert len(generate.prompts) == 1
    system = generate.prompts[0][0]
    assert (
        system.role == "system" and "JSON Schema" in system.content and system.content.startswith("You plan")
    )


async def test_invalid_then_repaired() -> None:
    generate = ScriptedGenerator('{"city": "Lisbon", "days": "three"}', '{"city": "Lisbon", "days": 3}')
    result = await complete_with_response_format(generate, MESSAGES, params(JSON_SCHEMA_FORMAT))
    assert json.loads(result.text) == {"city": "Lisbon", "days": 3}
    repair_prompt = generate.prompts[1]
    assert repair_prompt[-2].role == "assistant"
    assert "days" in repair_prompt[-1].content and "not valid" in repair_prompt[-1].content
    assert (
        result.prompt_tokens == 40 and result.completion_tokens == 16 and result.busy_s == pytest.approx(1.0)
    )


async def test_invalid_twice_raises_structured_output_error() -> None:
    generate = ScriptedGenerator("sure!", "{not json")
    with pytest.raises(StructuredOutputError):
        await complete_with_response_format(generate, MESSAGES, params(JSON_SCHEMA_FORMAT))
    assert len(generate.prompts) == 2


async def test_json_object_requires_an_object() -> None:
    generate = ScriptedGenerator("[1, 2]", 'ok {"a": 1} trailing')
    result = await complete_with_response_format(generate, MESSAGES, params({"type": "json_object"}))
    assert json.loads(result.text) == {"a": 1}
    assert generate.prompts[0][0].content.endswith("no code fences.")


async def test_no_format_or_text_passes_through_untouched() -> None:
    for response_format in (None, {"type": "text"}):
        generate = ScriptedGenerator("plain words")
        result = await complete_with_response_format(generate, MESSAGES, params(response_format))
        assert result.text == "plain words"
        assert generate.prompts[0] == MESSAGES


async def test_instruction_added_as_system_message_when_none() -> None:
    generate = ScriptedGenerator('{"x": 1}')
    await complete_with_response_format(
        generate, [ChatMessage("user", "hi")], params({"type": "json_object"})
    )
    assert [m.role for m in generate.prompts[0]] == ["system", "user"]


@pytest.mark.parametrize(
    ("response_format", "param"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema"),
        ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "response_format.json_schema.name"),
        (
            {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": SCHEMA}},
            "response_format.json_schema.name",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "t", "schema": []}},
            "response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "t", "schema": "object"}},
            "response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "t", "schema": {"type": "banana"}}},
            "response_format.json_schema.schema",
        ),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "t", "schema": {"properties": {"a": {"minimum": "x"}}}},
            },
            "response_format.json_schema.schema",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "t", "schema": SCHEMA, "strict": "yes"}},
            "response_format.json_schema.strict",
        ),
    ],
)
async def test_malformed_response_format_is_invalid_request(
    response_format: dict[str, Any], param: str
) -> None:
    generate = ScriptedGenerator()
    with pytest.raises(InvalidRequest) as caught:
        await complete_with_response_format(generate, MESSAGES, params(response_format))
    assert caught.value.param == param
    assert param.rsplit(".", 1)[-1] in caught.value.message
    assert generate.prompts == []


def test_parse_accepts_valid_schema() -> None:
    spec = parse_response_format(JSON_SCHEMA_FORMAT)
    assert spec is not None and spec.name == "trip" and spec.validator is not None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ('```\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
        ('Answer: {"a": "}"} and more', {"a": "}"}),
        ("[1, 2] done", [1, 2]),
    ],
)
def test_extract_json(text: str, value: Any) -> None:
    assert extract_json(text) == value


def test_extract_json_raises_without_json() -> None:
    with pytest.raises(ValueError):
        extract_json("no json here")
