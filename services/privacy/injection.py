"""Flag instruction-like text (prompt injection) in user messages and retrieved chunks, and quote context.

A rule list, not a classifier: it catches the common phrasings and chat-template markers cheaply and
explains itself (each flag is a rule name). It is a tripwire, not a guarantee; the quoting helper below
is the structural defence: retrieved text enters the prompt as clearly delimited data.
"""

from __future__ import annotations

import re
import unicodedata

# Zero-width and bidi control characters are removed before matching so "ig\u200bnore" still matches.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad\u202a\u202b\u202c\u202d\u202e"))
_SPACES = re.compile(r"\s+")

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "ignore_previous_instructions",
        re.compile(
            r"\b(?:ignore|disregard|forget|override|bypass|skip)\s+(?:(?:all|any|the|your|my|these|those|of)\s+)*"
            r"(?:previous|prior|above|earlier|preceding|foregoing|original|initial|system|safety)\s+"
            r"(?:instructions?|prompts?|rules|directions|directives|guidelines|messages|context|constraints)"
        ),
    ),
    (
        "disregard_above",
        re.compile(
            r"\b(?:disregard|ignore|forget)\s+(?:(?:everything|all|anything|the|what\s+is|what\s+was)\s+)*"
            r"(?:(?:written|said|stated)\s+)?(?:above|before this|so far|up to now|that came before)\b"
        ),
    ),
    (
        "role_reassignment",
        re.compile(
            r"\byou\s+are\s+now\b|\bfrom\s+now\s+on,?\s+you\s+(?:are|will|must|shall)\b"
            r"|\bact\s+as\s+(?:an?\s+)?(?:unrestricted|unfiltered|jailbroken|evil|dan)\b"
            r"|\bpretend\s+(?:to\s+be|you\s+are)\s+(?:an?\s+)?(?:unrestricted|unfiltered|different|evil|dan)\b"
            r"|\b(?:developer|god|jailbreak|dan)\s+mode\b"
        ),
    ),
    (
        "reveal_system_prompt",
        re.compile(
            r"\b(?:print|reveal|show|display|output|repeat|recite|tell\s+me|leak|dump|expose|give\s+me|what\s+(?:is|are))"
            r"\s+(?:me\s+)?(?:your|the)\s+(?:full\s+|entire\s+|exact\s+|original\s+|initial\s+|hidden\s+|secret\s+)*"
            r"(?:system\s+prompt|system\s+message|hidden\s+(?:instructions?|prompt)|instructions\s+above"
            r"|initial\s+instructions?|developer\s+(?:message|prompt)|prompt\s+above|secret\s+instructions?)"
        ),
    ),
    (
        "new_instructions",
        re.compile(r"\b(?:new|updated|real|actual|revised)\s+(?:system\s+)?instructions?\s*:"),
    ),
    (
        "role_marker",
        re.compile(
            r"<\|\s*im_start\s*\|>|<\|\s*im_end\s*\|>|<\|\s*(?:system|assistant|user)\s*\|>"
            r"|<\|\s*(?:start|end)_header_id\s*\|>|<\|\s*eot_id\s*\|>|\[/?inst\]|<<\s*/?sys\s*>>"
            r"|(?:^|\n)\s*#{2,}\s*(?:system|assistant|instruction|instructions)\s*:"
            r"|(?:^|\n)\s*(?:system|assistant)\s*:\s*(?:you|ignore|new|from\s+now)"
        ),
    ),
)
# Cheap prefilter: without one of these words or markers no rule can match.
_PREFILTER = (
    "ignor", "disregard", "forget", "overrid", "bypass", "skip", "you are now", "from now on", "act as",
    "pretend", "mode", "prompt", "instruction", "system", "<|", "[inst", "[/inst", "<<", "##", "assistant",
)  # fmt: skip


def normalize_for_matching(text: str) -> str:
    """NFKC (full-width and compatibility forms fold to ASCII), casefold, no invisibles, single spaces."""
    folded = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()
    # Keep line breaks: role markers are recognised at the start of a line.
    return "\n".join(_SPACES.sub(" ", line) for line in folded.split("\n"))


class InjectionDetector:
    """`detect(text)` returns the names of the rules that match, in rule order, without duplicates."""

    rule_names: tuple[str, ...] = tuple(name for name, _ in _RULES)

    def detect(self, text: str) -> tuple[str, ...]:
        if not text:
            return ()
        normalized = normalize_for_matching(text)
        if not any(marker in normalized for marker in _PREFILTER):
            return ()
        return tuple(name for name, pattern in _RULES if pattern.search(normalized))


_CONTEXT_TAG = re.compile(r"<\s*(/?)\s*(context|document|system|instructions?)\b", re.IGNORECASE)
_CHAT_MARKER = re.compile(r"<\|")
_SOURCE_UNSAFE = re.compile(r"[\"<>\r\n\t]")


def quote_context_block(index: int, source: str, text: str) -> str:
    """Wrap retrieved `text` in a delimited block the prompt template tells the model to treat as data.

    Anything inside `text` that looks like the delimiters (`<context ...>`, `</context>`) or a chat-template
    marker (`<|im_start|>`) is escaped, so a document cannot close its block and speak as the system.
    """
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    safe_source = _SOURCE_UNSAFE.sub(" ", source).strip()
    body = _CONTEXT_TAG.sub(lambda m: f"&lt;{m.group(1)}{m.group(2)}", text)
    body = _CHAT_MARKER.sub("&lt;|", body)
    return f'<context id="{index}" source="{safe_source}">\n{body.strip()}\n</context>'


__all__ = ["InjectionDetector", "normalize_for_matching", "quote_context_block"]
