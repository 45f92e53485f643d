"""Replace sensitive values by placeholders (`[EMAIL_1]`) and put them back, consistently within a request.

The map from placeholder to value lives in memory only, on one `Redactor`, for one request: the same
value gets the same placeholder in every message and every retrieved chunk of that request, so the model
can still tell "the same address" from "another address". Nothing here logs or returns a value except
`restore`, whose output goes to the user who sent the value.

Streaming: `StreamingTextFilter` applies a text transform (redact, restore, or both) to a stream of chunks
while holding back a bounded tail, so neither a placeholder nor a value split across chunk boundaries
slips through half-transformed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence

from services.privacy.detectors import Finding

PLACEHOLDER_LABELS: dict[str, str] = {
    "email": "EMAIL",
    "phone": "PHONE",
    "card": "CARD",
    "iban": "IBAN",
    "ssn": "SSN",
    "ipv4": "IPV4",
    "ipv6": "IPV6",
    "secret": "SECRET",
}
PLACEHOLDER_PATTERN = re.compile(r"\[(?:" + "|".join(PLACEHOLDER_LABELS.values()) + r")_\d{1,6}\]")
# The longest placeholder a stream may be waiting to see completed ("[SECRET_999999]").
_MAX_PLACEHOLDER_CHARS = 2 + max(len(label) for label in PLACEHOLDER_LABELS.values()) + 7
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")


def _normalized(kind: str, value: str) -> str:
    # "4111 1111 1111 1111" and "4111-1111-1111-1111" are the same card; Jane@X.org and jane@x.org the
    # same address. Secrets and IPv6 compare as written (case can matter in a token).
    if kind in ("card", "iban", "phone", "ssn"):
        return _NON_ALNUM.sub("", value).upper()
    if kind == "email":
        return value.lower()
    return value


class Redactor:
    """Per-request placeholder map. `detect` finds values; `should_redact` says which findings to replace."""

    def __init__(
        self,
        detect: Callable[[str], list[Finding]],
        should_redact: Callable[[Finding], bool] = lambda finding: True,
    ) -> None:
        self._detect = detect
        self._should_redact = should_redact
        self._placeholder_by_value: dict[tuple[str, str], str] = {}
        self._value_by_placeholder: dict[str, str] = {}
        self._counters: dict[str, int] = {}

    def __repr__(self) -> str:  # never show the map
        return f"Redactor(placeholders={len(self._value_by_placeholder)})"

    def placeholder_for(self, kind: str, value: str) -> str:
        key = (kind, _normalized(kind, value))
        existing = self._placeholder_by_value.get(key)
        if existing is not None:
            return existing
        number = self._counters.get(kind, 0) + 1
        self._counters[kind] = number
        placeholder = f"[{PLACEHOLDER_LABELS[kind]}_{number}]"
        self._placeholder_by_value[key] = placeholder
        self._value_by_placeholder[placeholder] = value
        return placeholder

    def redact_findings(self, text: str, findings: Sequence[Finding]) -> str:
        """Replace the given findings of `text` (non-overlapping, from `text`) by their placeholders."""
        if not findings:
            return text
        pieces: list[str] = []
        position = 0
        for finding in sorted(findings, key=lambda f: f.start):
            pieces.append(text[position : finding.start])
            pieces.append(self.placeholder_for(finding.kind, text[finding.start : finding.end]))
            position = finding.end
        pieces.append(text[position:])
        return "".join(pieces)

    def redact(self, text: str) -> str:
        """Detect values in `text` and replace those the policy says to redact."""
        return self.redact_findings(text, [f for f in self._detect(text) if self._should_redact(f)])

    def restore(self, text: str, *, except_kinds: Collection[str] = ()) -> str:
        """Put the values back in place of this request's placeholders; unknown placeholders stay.

        Placeholders of `except_kinds` stay too (e.g. a secret is never written back into an answer).
        """
        if not self._value_by_placeholder or "[" not in text:
            return text
        kept_labels = tuple(f"[{PLACEHOLDER_LABELS[kind]}_" for kind in except_kinds)

        def value_of(match: re.Match[str]) -> str:
            placeholder = match.group()
            if kept_labels and placeholder.startswith(kept_labels):
                return placeholder
            return self._value_by_placeholder.get(placeholder, placeholder)

        return PLACEHOLDER_PATTERN.sub(value_of, text)


class StreamingTextFilter:
    """Applies `transform` to a stream of text chunks; `feed(chunk) -> str`, then `flush() -> str` once.

    It emits only a prefix it can transform safely and keeps the rest (a bounded tail) for the next chunk:
    - at least `holdback_chars` characters, cut at whitespace, so a token split across chunks is seen whole;
    - never cutting through a finding of `detect` (a card or phone number with spaces in it);
    - never cutting inside `[LABEL_n` (a placeholder not yet closed) or an unterminated PEM block.
    When the buffer exceeds `max_buffer_chars` without a safe cut, it cuts anyway: `transform` still
    redacts what it recognises in the part it emits.
    """

    def __init__(
        self,
        transform: Callable[[str], str],
        detect: Callable[[str], list[Finding]] | None,
        holdback_chars: int = 96,
        max_buffer_chars: int = 16_384,
    ) -> None:
        if holdback_chars < _MAX_PLACEHOLDER_CHARS:
            raise ValueError(f"holdback_chars must be >= {_MAX_PLACEHOLDER_CHARS}, got {holdback_chars}")
        if max_buffer_chars < 2 * holdback_chars:
            raise ValueError(
                "max_buffer_chars must be >= 2 * holdback_chars, "
                f"got {max_buffer_chars} < 2 * {holdback_chars}"
            )
        self._transform = transform
        self._detect = detect
        self._holdback = holdback_chars
        self._max_buffer = max_buffer_chars
        self._buffer = ""
        self._closed = False

    def feed(self, chunk: str) -> str:
        if self._closed:
            raise RuntimeError("feed() after flush()")
        self._buffer += chunk
        cut = self._safe_cut(self._buffer)
        if cut <= 0:
            return ""
        ready, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return self._transform(ready)

    def flush(self) -> str:
        self._closed = True
        rest, self._buffer = self._buffer, ""
        return self._transform(rest) if rest else ""

    def _safe_cut(self, buffer: str) -> int:
        tail = buffer[-self._holdback :]
        word_start = max(buffer.rfind(" "), buffer.rfind("\n"), buffer.rfind("\t")) + 1
        if not _inside_pem_block(buffer):
            if not _may_hold_a_finding(tail):
                # Plain prose: every multi-word value we detect has digits, a placeholder bracket, a PEM
                # dash run or a `key=`-style marker in it; one-word values are never split at whitespace.
                # So only the word still being written is held back, and streaming stays token by token.
                return word_start
            if not _has_a_marker(tail) and len(buffer) < self._max_buffer:
                # Digits are the only risk: hold back the trailing run of number-like words (a card, a
                # phone number, an IBAN's groups may still be growing), not a fixed window. A list's
                # "1." followed by words leaves at once.
                return self._not_through_a_finding(buffer, _number_run_start(buffer, word_start))
        if len(buffer) <= self._holdback:
            return 0
        forced = len(buffer) >= self._max_buffer
        cut = len(buffer) - self._holdback
        whitespace = max(buffer.rfind(" ", 0, cut), buffer.rfind("\n", 0, cut), buffer.rfind("\t", 0, cut))
        if whitespace >= 0:
            cut = whitespace + 1
        elif not forced:
            return 0
        if not forced:
            pem_start = buffer.rfind("-----BEGIN", 0, cut)
            if pem_start >= 0 and buffer.find("-----END", pem_start) < 0:
                cut = pem_start
        return self._not_through_a_finding(buffer, cut, findings=not forced)

    def _not_through_a_finding(self, buffer: str, cut: int, *, findings: bool = True) -> int:
        """`cut`, moved back to the start of a finding or an open placeholder bracket it would split."""
        if self._detect is not None and findings:
            for finding in self._detect(buffer):
                if finding.start < cut < finding.end:
                    cut = finding.start
        bracket = buffer.rfind("[", max(0, cut - _MAX_PLACEHOLDER_CHARS), cut)
        if bracket >= 0 and "]" not in buffer[bracket:cut]:
            cut = bracket
        return cut


_RISKY_TAIL = re.compile(r"[0-9\[=:@]|-----|pass|secret|token|key|bearer", re.IGNORECASE)


_MARKER = re.compile(r"[\[=:@]|-----|pass|secret|token|key|bearer", re.IGNORECASE)
# Words that may be part of a card, phone, SSN or IBAN still being written: digits and separators only, or a
# short capital group such as "GB82" and "WEST" in "GB82 WEST 1234 ...". "part0" or "4th" are not.
_NUMBER_WORD = re.compile(r"[\d()+\-./]+|[A-Z0-9]{1,4}")


def _may_hold_a_finding(text: str) -> bool:
    return _RISKY_TAIL.search(text) is not None


def _has_a_marker(text: str) -> bool:
    """A risk other than digits: a placeholder, an assignment, an address, a key block, a secret's name."""
    return _MARKER.search(text) is not None


def _number_run_start(buffer: str, word_start: int) -> int:
    """Where the whitespace-separated words before `word_start` stop looking like parts of one number."""
    start = word_start
    for match in reversed(list(re.finditer(r"\S+", buffer[:word_start]))):
        if not _NUMBER_WORD.fullmatch(match.group()):
            break
        start = match.start()
    return start


def _inside_pem_block(buffer: str) -> bool:
    begin = buffer.rfind("-----BEGIN")
    return begin >= 0 and buffer.find("-----END", begin) < 0


__all__ = ["PLACEHOLDER_LABELS", "PLACEHOLDER_PATTERN", "Redactor", "StreamingTextFilter"]
