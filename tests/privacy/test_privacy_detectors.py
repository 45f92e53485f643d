"""Detector table: each kind's positives, and hard negatives that look like them."""

from __future__ import annotations

import pytest

from services.core.privacy_settings import DETECTOR_KINDS
from services.privacy.detectors import Finding, PiiDetector

pytestmark = pytest.mark.unit

DETECTOR = PiiDetector(DETECTOR_KINDS, phone_regions=["US", "GB", "DE", "FR"])

# (text, kind, value) — value is the exact span that must be found as `kind`.
POSITIVES = [
    ("write to jane.doe+hr@example.co.uk.", "email", "jane.doe+hr@example.co.uk"),
    ("Mail:ops@larkspur-analytics.example", "email", "ops@larkspur-analytics.example"),
    ("card 4111 1111 1111 1111 expires", "card", "4111 1111 1111 1111"),
    ("card 5555-5555-5555-4444.", "card", "5555-5555-5555-4444"),
    ("amex 378282246310005", "card", "378282246310005"),
    ("amex 3782 822463 10005!", "card", "3782 822463 10005"),
    ("IBAN DE89 3704 0044 0532 0130 00 PLEASE", "iban", "DE89 3704 0044 0532 0130 00"),
    ("iban GB82WEST12345698765432", "iban", "GB82WEST12345698765432"),
    ("ssn 536-22-1234 on file", "ssn", "536-22-1234"),
    ("SSN: 536221234", "ssn", "536221234"),
    ("host 10.20.30.40.", "ipv4", "10.20.30.40"),
    ("gw 2001:db8::ff00:42:8329 up", "ipv6", "2001:db8::ff00:42:8329"),
    ("loopback ::1 ok", "ipv6", "::1"),
    ("call +1 (415) 555-0132 today", "phone", "+1 (415) 555-0132"),
    ("or 415-555-0132.", "phone", "415-555-0132"),
    ("London +44 20 7946 0958", "phone", "+44 20 7946 0958"),
    ("Berlin 030 901820", "phone", "030 901820"),
    ("Paris 06 12 34 56 78", "phone", "06 12 34 56 78"),
    ("tel: 4155550132", "phone", "4155550132"),
    ("key AKIAIOSFODNN7EXAMPLE", "secret", "AKIAIOSFODNN7EXAMPLE"),
    (
        "token ghp_ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210 x",
        "secret",
        "ghp_ZyXwVuTsRqPoNmLkJiHgFeDcBa9876543210",
    ),
    ("glpat-aB3dE5fG7hJ9kL1mN3pQ here", "secret", "glpat-aB3dE5fG7hJ9kL1mN3pQ"),
    ("xoxb-2048-4096-aBcDeFgHiJkLmN", "secret", "xoxb-2048-4096-aBcDeFgHiJkLmN"),
    ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "secret", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("password=hunter2!", "secret", "hunter2!"),
    ('api_key: "q8Zr-22-Lm"', "secret", "q8Zr-22-Lm"),
    ("passwd: s3cr3tP4ss", "secret", "s3cr3tP4ss"),
    (
        "jwt eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlLXZhbHVl end",
        "secret",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlLXZhbHVl",
    ),
    (
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\nAwEHoUQDQgAE\n-----END EC PRIVATE KEY-----\nthanks",
        "secret",
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\nAwEHoUQDQgAE\n-----END EC PRIVATE KEY-----",
    ),
    ("«jane@example.org»", "email", "jane@example.org"),
    ("né: 4111111111111111—ok", "card", "4111111111111111"),
]

# Texts in which nothing at all may be found.
NEGATIVES = [
    "order 1234 5678 9012 3456 shipped",  # fails Luhn
    "order 4111 1111 1111 1112",  # fails Luhn
    "ticket 7992739871300",  # passes Luhn, but no card network starts with 7
    "iban DE89 3704 0044 0532 0130 01",  # bad mod-97
    "iban XX89 3704 0044 0532 0130 00",  # unknown country
    "ssn 666-12-3456",  # invalid area
    "ssn 900-12-3456",  # ITIN range, not an SSN
    "ssn 536-00-1234",  # group 00
    "reference 536221234",  # nine digits without SSN context
    "version 1.2.3.4 released",
    "v10.0.0.1 tag",
    "host 999.10.10.10",
    "ip 10.0.0",
    "on 2024-03-15 at 12:30:45",
    "due 15.03.2024 or 03/15/2024",
    "total 1,234,567.89 EUR",
    "build 2024.11.23.1842",
    "invoice 4155550132",  # bare digits, no phone context
    "std::vector<int>::size",
    "Password: must be 12 characters long",
    "password=${DB_PASSWORD}",
    "password: ********",
    "secret=[SECRET_1]",
    "eyJub3QiOiJqd3QifQ.eyJhIjoxfQ.c2ln",  # header is JSON but has no alg/typ
    "the private key is stored in the vault",
    "mail me at jane at example dot com",
]


@pytest.mark.parametrize(("text", "kind", "value"), POSITIVES)
def test_detects_value_with_exact_span(text: str, kind: str, value: str) -> None:
    spans = [(f.kind, text[f.start : f.end]) for f in DETECTOR.detect(text)]
    assert (kind, value) in spans


@pytest.mark.parametrize("text", NEGATIVES)
def test_hard_negative_finds_nothing(text: str) -> None:
    assert [(f.kind, text[f.start : f.end]) for f in DETECTOR.detect(text)] == []


def test_findings_do_not_overlap_and_higher_priority_wins() -> None:
    # A 16-digit Luhn-valid card is also a valid-looking digit run; it must be a card only.
    text = "pay 4111 1111 1111 1111 now"
    findings = DETECTOR.detect(text)
    assert [f.kind for f in findings] == ["card"]


def test_finding_repr_carries_no_value() -> None:
    text = "mail jane@example.org"
    (finding,) = DETECTOR.detect(text)
    assert "jane" not in repr(finding)
    assert finding == Finding("email", 5, 21, "address")


def test_only_configured_kinds_run() -> None:
    detector = PiiDetector(["email"])
    assert [f.kind for f in detector.detect("jane@example.org 4111111111111111")] == ["email"]


@pytest.mark.parametrize(
    ("kinds", "regions", "message"),
    [(["emails"], ["US"], "unknown detector kinds"), (["phone"], ["XX"], "unknown phone regions")],
)
def test_constructor_names_bad_value(kinds: list[str], regions: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PiiDetector(kinds, regions)
