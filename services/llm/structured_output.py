"""Make a generator honour OpenAI's `response_format` by prompting, validating and repairing once.

Used where decoding cannot be constrained: backends that enforce `response_format` themselves (an
upstream's guided decoding, the ONNX backend's guidance) get it in `params` and skip this wrapper.
Flow: check the request's response_format (malformed -> InvalidRequest naming the field), add an
instruction to the prompt, extract JSON from the output (code fences stripped), validate it with
`jsonschema`, and on failure ask once more with the validation error; still failing -> StructuredOutputError.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from services.core.errors import InvalidRequest, StructuredOutputError
from services.core.types import ChatMessage, GenerationParams, GenerationResult

logger = logging.getLogger(__name__)

GenerateFn = Callable[[Sequence[ChatMessage], GenerationParams], Awaitable[GenerationResult]]

_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
# Keep error text short in a repair prompt: a long schema dump helps a small model less than the path.
_MAX_ERROR_CHARS = 400


@dataclass(frozen=True, slots=True)
class ResponseFormatSpec:
    """A checked response_format: `kind` json_object or json_schema; no `validator` for json_object."""

    kind: str
    name: str | None
    schema: dict[str, Any] | None
    validator: Validator | None


def parse_response_format(response_format: dict[str, Any] | None) -> ResponseFormatSpec | None:
    """Check an OpenAI-shaped response_format; None for absent or `text`. Raises InvalidRequest."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise InvalidRequest("response_format must be an object", param="response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormatSpec("json_object", None, None, None)
    if kind != "json_schema":
        raise InvalidRequest(
            f"response_format.type must be one of text, json_object, json_schema; got {kind!r}",
            param="response_format.type",
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise InvalidRequest(
            "response_format.json_schema must be an object with name and schema",
            param="response_format.json_schema",
        )
    name = spec.get("name")
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        raise InvalidRequest(
            "response_format.json_schema.name must be 1-64 letters, digits, _ or -",
            param="response_format.json_schema.name",
        )
    strict = spec.get("strict", False)
    if strict is not None and not isinstance(strict, bool):
        raise InvalidRequest(
            "response_format.json_schema.strict must be a boolean", param="response_format.json_schema.strict"
        )
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise InvalidRequest(
            "response_format.json_schema.schema must be a JSON Schema object",
            param="response_format.json_schema.schema",
        )
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequest(
            f"response_format.json_schema.schema is not a valid JSON Schema: {_short(exc.message)}",
            param="response_format.json_schema.schema",
        ) from None
    return ResponseFormatSpec("json_schema", name, schema, validator_class(schema))


def format_instruction(spec: ResponseFormatSpec) -> str:
    if spec.schema is None:
        return "Respond with a single JSON object only: no prose, no code fences."
    schema_text = json.dumps(spec.schema, separators=(",", ":"), ensure_ascii=False)
    return (
        "Respond with a single JSON value only (no prose, no code fences) that validates against "
        f"this JSON Schema: {schema_text}"
    )


def guidance_schema(spec: ResponseFormatSpec) -> str:
    """The JSON Schema a guided decoder constrains output to: the request's, or any object for json_object."""
    return json.dumps(spec.schema if spec.schema is not None else {"type": "object"}, ensure_ascii=False)


def with_instruction(messages: Sequence[ChatMessage], instruction: str) -> list[ChatMessage]:
    """Append the instruction to the leading system message, or add one: templates expect one system turn."""
    if messages and messages[0].role == "system":
        first = messages[0]
        return [ChatMessage("system", f"{first.content}\n\n{instruction}"), *messages[1:]]
    return [ChatMessage("system", instruction), *messages]


def extract_json(text: str) -> Any:
    """The first JSON value in `text`: inside a code fence when there is one. Raises ValueError."""
    fenced = _FENCE.search(text)
    candidate = fenced.group(1) if fenced else text
    candidate = candidate.strip()
    try:
        return json.loads(candidate)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]", candidate):
        try:
            value, _ = decoder.raw_decode(candidate, match.start())
        except json.JSONDecodeError:
            continue
        return value
    raise ValueError("no JSON value found in the output")


def validation_error(spec: ResponseFormatSpec, text: str) -> tuple[Any, str | None]:
    """(parsed value, None) when `text` satisfies `spec`, else (None, a short reason)."""
    try:
        value = extract_json(text)
    except ValueError as exc:
        return None, str(exc)
    if spec.kind == "json_object" and not isinstance(value, dict):
        return None, f"expected a JSON object, got {type(value).__name__}"
    if spec.validator is not None:
        error = jsonschema.exceptions.best_match(spec.validator.iter_errors(value))
        if error is not None:
            path = "/".join(str(part) for part in error.absolute_path) or "<root>"
            return None, _short(f"at {path}: {error.message}")
    return value, None


def _short(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _combined(first: GenerationResult, second: GenerationResult, text: str) -> GenerationResult:
    # Both calls were paid for: tokens and busy time add up; time to first token is the first call's.
    return replace(
        second,
        text=text,
        prompt_tokens=first.prompt_tokens + second.prompt_tokens,
        completion_tokens=first.completion_tokens + second.completion_tokens,
        cached_prompt_tokens=first.cached_prompt_tokens + second.cached_prompt_tokens,
        ttft_s=first.ttft_s,
        busy_s=first.busy_s + second.busy_s,
    )


async def complete_with_response_format(
    generate: GenerateFn, messages: Sequence[ChatMessage], params: GenerationParams
) -> GenerationResult:
    """Generate, and when `params.response_format` asks for JSON, return only valid JSON (compact text).

    Raises InvalidRequest for a malformed response_format, StructuredOutputError when the model fails
    twice (the first answer and one repair attempt).
    """
    spec = parse_response_format(params.response_format)
    if spec is None:
        return await generate(messages, params)
    prompt = with_instruction(messages, format_instruction(spec))
    first = await generate(prompt, params)
    value, error = validation_error(spec, first.text)
    if error is None:
        return replace(first, text=json.dumps(value, ensure_ascii=False))
    logger.info("structured output invalid on the first attempt (%s); asking for a repair", spec.kind)
    repair = [
        *prompt,
        ChatMessage("assistant", first.text),
        ChatMessage(
            "user",
            f"That reply is not valid: {error}. Reply again with only the corrected JSON, nothing else.",
        ),
    ]
    second = await generate(repair, params)
    value, error = validation_error(spec, second.text)
    if error is None:
        return _combined(first, second, json.dumps(value, ensure_ascii=False))
    logger.warning("structured output invalid after a repair attempt (%s)", spec.kind)
    raise StructuredOutputError(
        f"the model did not produce output matching response_format ({spec.kind}) after one repair: {error}",
        param="response_format",
    )


__all__ = [
    "ResponseFormatSpec",
    "complete_with_response_format",
    "extract_json",
    "format_instruction",
    "guidance_schema",
    "parse_response_format",
    "validation_error",
    "with_instruction",
]
