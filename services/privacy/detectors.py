"""Find sensitive values in text: where they are and of which kind, never what they are.

A `Finding` carries kind, rule and offsets only, so logging or returning one cannot leak the value; the
value leaves this module only through the redaction map (redaction.py).

Each kind is a precompiled candidate regex (cheap) followed by a validator (checksum, number plan,
address parser) that runs only on candidates. Checksums come from python-stdnum (Luhn, ISO 13616
mod-97 with per-country lengths and formats, US SSN area/group/serial rules), phone numbers from
phonenumbers (Google's libphonenumber metadata); see README.md for why not Presidio or detect-secrets.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn
from stdnum.us import ssn as stdnum_ssn

from services.core.privacy_settings import DETECTOR_KINDS


@dataclass(frozen=True, slots=True)
class Finding:
    """One sensitive value: `text[start:end]`. `rule` names the pattern that matched (`aws_access_key_id`)."""

    kind: str
    start: int
    end: int
    rule: str = ""


# When two findings overlap, the kind earlier here wins (a card number is not also a phone number).
KIND_PRIORITY: dict[str, int] = {
    kind: rank
    for rank, kind in enumerate(("secret", "card", "iban", "ssn", "email", "ipv6", "ipv4", "phone"))
}

_DIGIT = re.compile(r"\d")

# --- email -------------------------------------------------------------------------------------------
_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)

# --- payment cards -----------------------------------------------------------------------------------
_CARD = re.compile(r"(?<![\w.,-])\d(?:[ -]?\d){12,18}(?![\w]|[.,-]\d)")
# Issuer prefixes (IIN ranges) and lengths of the networks people paste; an order number that happens to
# pass Luhn but starts with 1, 7, 8, 9 or 0 is not a card.
_CARD_IIN = re.compile(
    r"^(?:4\d{12}(?:\d{3}){0,2}"  # Visa 13/16/19
    r"|(?:5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # Amex
    r"|3(?:0[0-5]|[68]\d)\d{11,16}"  # Diners
    r"|(?:6011|65\d{2}|64[4-9]\d)\d{12,15}"  # Discover
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB
    r"|62\d{14,17}"  # UnionPay
    r"|(?:5018|5020|5038|5893|6304|6759|676[1-3])\d{8,15})$"  # Maestro
)
_CARD_GROUPINGS: frozenset[tuple[int, ...]] = frozenset(
    {(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4), (4, 4, 4, 1), (4, 4, 4, 2), (4, 4, 4, 3), (4, 4, 5)}
)

# --- IBAN --------------------------------------------------------------------------------------------
_IBAN = re.compile(r"(?<![\w])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}(?![\w])")

# --- US SSN ------------------------------------------------------------------------------------------
_SSN_FORMATTED = re.compile(r"(?<![\w-])\d{3}([- ])\d{2}\1\d{4}(?![\w]|-\d)")
_SSN_BARE = re.compile(r"(?<![\w-])\d{9}(?![\w]|-\d)")
_SSN_CONTEXT = re.compile(r"(?i)\b(?:ssn|social security|soc\.? sec\.?|tin|taxpayer)\b")

# --- IP addresses ------------------------------------------------------------------------------------
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3}|:)?(?![\w:]|\.\d)"
)
# A dotted quad right after these words is a version or build number, not an address.
_VERSION_CONTEXT = re.compile(r"(?i)(?:version|release|ver\.?|build|firmware|v)\s*$")

# --- phone numbers -----------------------------------------------------------------------------------
_PHONE = re.compile(r"(?<![\w+/.,-])(?:\+|00)?\(?\d[\d \t().\-/]{5,22}\d(?!\w|[.,/-]\d)")
_PHONE_CONTEXT = re.compile(r"(?i)\b(?:tel|phone|call|mobile|cell|fax|whatsapp|sms|ring|dial)\b")
_DATE_LIKE = re.compile(
    r"^(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})"
    r"(?:[ T]\d{1,2}[:.]\d{2}(?:[:.]\d{2})?)?$"
)
_DATE_RANGE = re.compile(r"^\d{4}\s*[-/]\s*\d{4}$|^\d{1,2}[./]\d{1,2}\s*-\s*\d{1,2}[./]\d{1,2}")
_DOTTED_VERSION = re.compile(r"^\d{1,4}(?:\.\d{1,4}){2,}$")
# The SSN layout (3-2-4) is never how a phone number is written, also when the SSN itself is invalid.
# Digit groups right after "DE89 " or "GB82 WEST " are the rest of an account number, not a phone.
_ACCOUNT_PREFIX = re.compile(r"[A-Z]{2}\d{2}(?: [A-Z0-9]{4})* $")
_SSN_SHAPE = re.compile(r"^\d{3}([- ])\d{2}\1\d{4}$")

# --- secrets -----------------------------------------------------------------------------------------
_SECRET_PATTERNS: tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...] = (
    # (rule, substrings of which one must be present: the cheap prefilter, pattern)
    (
        "aws_access_key_id",
        ("AKIA", "ASIA", "ABIA", "ACCA", "A3T"),
        re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Za-z0-9])"),
    ),
    (
        "github_token",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        re.compile(r"(?<![\w])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,255})(?![\w])"),
    ),
    (
        "gitlab_token",
        ("gl",),
        re.compile(
            r"(?<![\w-])gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-[A-Za-z0-9_\-]{20,1024}(?![\w-])"
        ),
    ),
    (
        "slack_token",
        ("xox", "hooks.slack.com"),
        re.compile(
            r"(?<![\w-])xox[abposre]-[A-Za-z0-9-]{10,250}(?![\w-])"
            r"|https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+"
        ),
    ),
    (
        "stripe_key",
        ("_live_", "_test_"),
        re.compile(r"(?<![\w])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}(?![\w])"),
    ),
    (
        "private_key_block",
        ("PRIVATE KEY", "PuTTY-User-Key-File"),
        # A block cut short (no END line) is still a key: the body up to the first non-base64 line counts.
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=:,\- \t\r\n]*)"
            r"|PuTTY-User-Key-File-\d:[^\n]*(?:\n[A-Za-z0-9+/=:\- ]+)*",
            re.DOTALL,
        ),
    ),
    (
        "jwt",
        ("eyJ",),
        re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{4,}={0,2}\.[A-Za-z0-9_-]{4,}={0,2}\.[A-Za-z0-9_-]*(?![\w-])"),
    ),
)
_ASSIGNMENT_KEYWORDS = (
    "pass",
    "pwd",
    "secret",
    "api_key",
    "api-key",
    "apikey",
    "token",
)
_ASSIGNMENT = re.compile(
    r"(?i)\b(?:password|passwd|passphrase|pwd|secret|client[_-]?secret|api[_-]?key|"
    r"access[_-]?token|auth[_-]?token|secret[_-]?key|private[_-]?key)\b"
    r"[\"']?[ \t]*(?P<sep>[:=]|=>|:=)[ \t]*"
    r"(?:\"(?P<dq>[^\"\n]{1,256})\"|'(?P<sq>[^'\n]{1,256})'|(?P<bare>[^\s,;'\"<>]{1,256}))"
)
# Values that are obviously not a secret: masks, template variables, our own placeholders.
_NOT_A_SECRET_VALUE = re.compile(
    r"^(?:\*+|x+|X+|\.+|-+|null|none|true|false|\$\{?[A-Za-z_][\w.]*\}?|\{\{.*\}\}|<[^>]*>|\[[A-Z0-9_]+\]|%\(\w+\)s)$"
)


def _luhn_card(candidate: str) -> bool:
    digits = candidate.replace(" ", "").replace("-", "")
    if not _CARD_IIN.match(digits) or not luhn.is_valid(digits):
        return False
    groups = tuple(len(part) for part in re.split(r"[ -]", candidate))
    # Unseparated, or grouped the way cards are printed; "1234-5678-9012" style ids are not cards.
    return len(groups) == 1 or groups in _CARD_GROUPINGS


def _valid_ipv4(candidate: str) -> bool:
    try:
        ipaddress.IPv4Address(candidate)
    except ValueError:
        return False
    return True


def _valid_ipv6(candidate: str) -> bool:
    if candidate.count(":") < 2 or not any(ch not in ":." for ch in candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _jwt_header_is_json(candidate: str) -> bool:
    header = candidate.split(".", 1)[0].rstrip("=")
    try:
        decoded = base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))
        parsed = json.loads(decoded)
    except (binascii.Error, ValueError):
        return False
    return isinstance(parsed, dict) and bool({"alg", "typ", "kid", "enc"} & parsed.keys())


def _looks_like_secret_value(value: str, separator: str, quoted: bool) -> bool:
    if len(value) < 3 or _NOT_A_SECRET_VALUE.match(value):
        return False
    if separator != ":" or quoted:
        return True
    # "Password: must be 12 characters" is prose, not an assignment: after a colon, an unquoted plain
    # lowercase word counts only when it is long enough to be a pass phrase.
    return not value.isalpha() or len(value) >= 12 or not value.islower()


class PiiDetector:
    """Finds the kinds in `kinds` (a subset of DETECTOR_KINDS) in text. Thread-safe: holds no state."""

    def __init__(self, kinds: Iterable[str] = DETECTOR_KINDS, phone_regions: Sequence[str] = ("US",)) -> None:
        self.kinds = frozenset(kinds)
        unknown = sorted(self.kinds - set(DETECTOR_KINDS))
        if unknown:
            raise ValueError(f"unknown detector kinds {unknown}; known: {list(DETECTOR_KINDS)}")
        self.phone_regions = tuple(region.upper() for region in phone_regions)
        bad_regions = [r for r in self.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if bad_regions:
            raise ValueError(f"unknown phone regions {bad_regions}")
        scanners: list[tuple[str, Callable[[str], Iterable[Finding]]]] = [
            ("secret", self._secrets),
            ("card", self._cards),
            ("iban", self._ibans),
            ("ssn", self._ssns),
            ("email", self._emails),
            ("ipv6", self._ipv6),
            ("ipv4", self._ipv4),
            ("phone", self._phones),
        ]
        self._scanners = [scan for kind, scan in scanners if kind in self.kinds]
        # Kinds that cannot occur in text without a digit: their scans are skipped for digit-free text.
        self._digit_free_scanners = [
            scan for kind, scan in scanners if kind in self.kinds and kind in ("secret", "email", "ipv6")
        ]

    def detect(self, text: str) -> list[Finding]:
        """Non-overlapping findings sorted by start; on overlap the higher-priority kind wins."""
        if not text:
            return []
        found: list[Finding] = []
        scanners = self._scanners if _DIGIT.search(text) else self._digit_free_scanners
        for scan in scanners:
            found.extend(scan(text))
        return _resolve_overlaps(found)

    # Each scanner yields validated findings of its kind; overlaps are resolved afterwards.

    def _secrets(self, text: str) -> Iterable[Finding]:
        for rule, prefilter, pattern in _SECRET_PATTERNS:
            if not any(marker in text for marker in prefilter):
                continue
            for match in pattern.finditer(text):
                if rule == "jwt" and not _jwt_header_is_json(match.group()):
                    continue
                end = match.end()
                if rule == "private_key_block":
                    end = match.start() + len(match.group().rstrip())
                yield Finding("secret", match.start(), end, rule)
        lowered = text.lower()
        if any(keyword in lowered for keyword in _ASSIGNMENT_KEYWORDS):
            for match in _ASSIGNMENT.finditer(text):
                group = "dq" if match.group("dq") is not None else "sq" if match.group("sq") else "bare"
                value = match.group(group)
                if value is None or not _looks_like_secret_value(value, match.group("sep"), group != "bare"):
                    continue
                yield Finding("secret", match.start(group), match.end(group), "credential_assignment")

    def _cards(self, text: str) -> Iterable[Finding]:
        for match in _CARD.finditer(text):
            if _luhn_card(match.group()):
                yield Finding("card", match.start(), match.end(), "luhn")

    def _ibans(self, text: str) -> Iterable[Finding]:
        for match in _IBAN.finditer(text):
            candidate = match.group()
            # The candidate regex is greedy and can swallow a following word ("... 0130 00 AND"): drop
            # trailing space-separated groups until the checksum holds or too little is left.
            parts = candidate.split(" ")
            while parts:
                joined = " ".join(parts)
                compact = joined.replace(" ", "").upper()
                if len(compact) < 15:
                    break
                if stdnum_iban.is_valid(compact):
                    yield Finding("iban", match.start(), match.start() + len(joined), "mod97")
                    break
                parts.pop()

    def _ssns(self, text: str) -> Iterable[Finding]:
        for match in _SSN_FORMATTED.finditer(text):
            # python-stdnum's compact form drops dashes only; "536 22 1234" is written with spaces too.
            if stdnum_ssn.is_valid(match.group().replace(" ", "-")):
                yield Finding("ssn", match.start(), match.end(), "formatted")
        for match in _SSN_BARE.finditer(text):
            # Nine bare digits are usually an order or account number; only near "SSN" are they one.
            window = text[max(0, match.start() - 32) : match.start()]
            if _SSN_CONTEXT.search(window) and stdnum_ssn.is_valid(match.group()):
                yield Finding("ssn", match.start(), match.end(), "context")

    def _emails(self, text: str) -> Iterable[Finding]:
        if "@" not in text:
            return
        for match in _EMAIL.finditer(text):
            yield Finding("email", match.start(), match.end(), "address")

    def _ipv4(self, text: str) -> Iterable[Finding]:
        if "." not in text:
            return
        for match in _IPV4.finditer(text):
            if not _valid_ipv4(match.group()):
                continue
            if _VERSION_CONTEXT.search(text[max(0, match.start() - 12) : match.start()]):
                continue
            yield Finding("ipv4", match.start(), match.end(), "dotted_quad")

    def _ipv6(self, text: str) -> Iterable[Finding]:
        if ":" not in text:
            return
        for match in _IPV6.finditer(text):
            if _valid_ipv6(match.group()):
                yield Finding("ipv6", match.start(), match.end(), "address")

    def _phones(self, text: str) -> Iterable[Finding]:
        for match in _PHONE.finditer(text):
            candidate = match.group()
            start = match.start()
            # An opening parenthesis the regex took without its closing one is punctuation, not the number.
            if candidate.startswith("(") and ")" not in candidate:
                candidate = candidate[1:]
                start += 1
            if self._is_phone(candidate, text, start):
                yield Finding("phone", start, start + len(candidate), "libphonenumber")

    def _is_phone(self, candidate: str, text: str, start: int) -> bool:
        digits = sum(ch.isdigit() for ch in candidate)
        if not 7 <= digits <= 15:
            return False
        if any(shape.match(candidate) for shape in (_DATE_LIKE, _DATE_RANGE, _DOTTED_VERSION, _SSN_SHAPE)):
            return False
        international = candidate.startswith(("+", "00"))
        # National numbers, trunk prefix included, have at most 12 digits (DE mobiles); longer runs are
        # account or card numbers.
        if not international and digits > 12:
            return False
        if _ACCOUNT_PREFIX.search(text[max(0, start - 24) : start]):
            return False
        has_separator = any(not ch.isdigit() for ch in candidate)
        if not international and not has_separator:
            # A bare run of digits is an order, invoice or account number unless the text says "phone".
            if not _PHONE_CONTEXT.search(text[max(0, start - 24) : start]):
                return False
        if international:
            number = "+" + candidate[2:] if candidate.startswith("00") else candidate
            return _phone_valid(number, None)
        return any(_phone_valid(candidate, region) for region in self.phone_regions)


def _phone_valid(candidate: str, region: str | None) -> bool:
    try:
        parsed = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(parsed))


def _resolve_overlaps(found: list[Finding]) -> list[Finding]:
    if len(found) <= 1:
        return found
    # Highest priority first, then longest; a finding is kept when it overlaps nothing already kept.
    ranked = sorted(found, key=lambda f: (KIND_PRIORITY[f.kind], -(f.end - f.start), f.start))
    kept: list[Finding] = []
    for finding in ranked:
        if all(finding.end <= other.start or finding.start >= other.end for other in kept):
            kept.append(finding)
    kept.sort(key=lambda f: f.start)
    return kept


__all__ = ["KIND_PRIORITY", "Finding", "PiiDetector"]
