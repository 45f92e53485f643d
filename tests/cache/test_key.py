"""Cache keys: every part that decides an answer changes the key; layout-only differences do not."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from services.cache.key import CacheKey, cache_key, normalise_text
from services.core.types import ChatMessage, GenerationParams

pytestmark = pytest.mark.unit

QUESTION = (ChatMessage("user", "How many vacation days do I get?"),)
BASE: dict[str, Any] = {
    "pipeline": "hybrid",
    "route": "rag",
    "template": ("rag", "1"),
    "index_version": "2026-12-01T00:00:00Z-ab12",
    "adapter": ("grounding", "v1"),
    "params": GenerationParams(max_tokens=64),
    "deployment": "d1",
    "messages": QUESTION,
}


def key(**changes: Any) -> CacheKey:
    return cache_key(**{**BASE, **changes})


def test_layout_does_not_change_the_key_but_wording_and_punctuation_do() -> None:
    same = key(messages=(ChatMessage("user", "  how many VACATION days\n do I  get? "),))
    assert same == replace(key(), query=same.query)
    assert key(messages=(ChatMessage("user", "How many vacation days do I get"),)).exact != key().exact
    assert key(messages=(ChatMessage("user", "How many sick days do I get?"),)).exact != key().exact


@pytest.mark.parametrize(
    "change",
    [
        {"pipeline": "rag"},
        {"route": "prompt"},
        {"template": ("rag", "2")},
        {"index_version": "2026-12-02T00:00:00Z-cd34"},
        {"adapter": ("grounding", "v2")},
        {"adapter": None},
        {"params": GenerationParams(max_tokens=65)},
        {"params": GenerationParams(max_tokens=64, temperature=0.7, seed=3)},
        {"params": GenerationParams(max_tokens=64, top_p=0.9)},
        {"params": GenerationParams(max_tokens=64, stop=("\n",))},
        {"params": GenerationParams(max_tokens=64, response_format={"type": "json_object"})},
        {"deployment": "d2"},
    ],
)
def test_every_non_message_part_changes_context_and_key(change: dict[str, Any]) -> None:
    changed = key(**change)
    assert changed.context != key().context
    assert changed.exact != key().exact


def test_earlier_turns_are_part_of_the_context_and_the_last_user_message_is_the_query() -> None:
    first = (ChatMessage("user", "Tell me about Lisbon."), ChatMessage("assistant", "Lisbon is..."))
    other = (ChatMessage("user", "Tell me about Berlin."), ChatMessage("assistant", "Berlin is..."))
    follow_up = ChatMessage("user", "How many vacation days do I get there?")
    a, b = key(messages=(*first, follow_up)), key(messages=(*other, follow_up))
    assert a.context != b.context and a.exact != b.exact
    assert a.query == follow_up.content


def test_a_conversation_not_ending_with_a_user_message_has_no_semantic_query() -> None:
    ended = key(messages=(*QUESTION, ChatMessage("assistant", "25 days.")))
    assert ended.query is None
    assert ended.exact != key().exact


def test_normalise_text_folds_case_and_whitespace_only() -> None:
    assert normalise_text("  Ｈello\tWORLD \n") == "hello world"
    assert normalise_text("don't") != normalise_text("do not")
