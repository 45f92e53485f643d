"""Writes detector_eval.jsonl: synthetic texts with labelled sensitive spans, and hard negatives.

Every value is made up here (documentation IP ranges, example.* mail domains, fictional 555-01xx and
Ofcom drama phone ranges, test card prefixes with a computed Luhn digit, IBANs with computed mod-97
check digits). Run: python corpus/privacy/make_eval_set.py  (deterministic, seed 13).
Each line: {"id", "text", "spans": [{"kind", "start", "end"}], "note"}.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

SEED = 13
OUT = Path(__file__).with_name("detector_eval.jsonl")
rng = random.Random(SEED)


def digits(n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def luhn_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return str((10 - total % 10) % 10)


def card(valid: bool = True) -> str:
    prefix, length = rng.choice(
        [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)]
    )
    body = prefix + digits(length - len(prefix) - 1)
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    number = body + check
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain":
        return number
    sep = " " if style == "space" else "-"
    if length == 15:
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, 16, 4))


def iban(valid: bool = True) -> str:
    country, make_bban = rng.choice(
        [
            ("DE", lambda: digits(18)),
            ("GB", lambda: "".join(rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(4)) + digits(14)),
            ("AT", lambda: digits(16)),
            ("CH", lambda: digits(17)),
        ]
    )
    bban = make_bban()
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    check = 98 - int(numeric) % 97
    if not valid:
        check = (check + rng.randint(1, 50)) % 97 + 2
    compact = f"{country}{check:02d}{bban}"
    if rng.random() < 0.6:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def ssn(valid: bool = True) -> str:
    if valid:
        area = rng.choice([n for n in range(1, 900) if n != 666])
        group, serial = rng.randint(1, 99), rng.randint(1, 9999)
    else:
        area, group, serial = rng.choice(
            [(0, 12, 3456), (666, 12, 3456), (900 + rng.randint(0, 99), 12, 3456)]
        )
    sep = rng.choice(["-", " "])
    return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"


def email() -> str:
    first = rng.choice(
        ["jane", "omar", "li.wei", "sofia", "t.nguyen", "priya", "marc-antoine", "ops", "hr-desk"]
    )
    tag = rng.choice(["", "", "+billing", str(rng.randint(1, 99))])
    domain = rng.choice(
        ["example.com", "example.org", "larkspur.example", "mail.example.co.uk", "corp.example.net"]
    )
    return f"{first}{tag}@{domain}"


def phone() -> str:
    line = f"01{rng.randint(0, 99):02d}"
    area = rng.choice(["415", "212", "312", "617", "206"])
    return rng.choice(
        [
            f"+1 ({area}) 555-{line}",
            f"({area}) 555-{line}",
            f"{area}-555-{line}",
            f"+1 {area} 555 {line}",
            f"+44 20 7946 0{rng.randint(0, 999):03d}",
            f"020 7946 0{rng.randint(0, 999):03d}",
            f"+49 30 {rng.randint(1000000, 9999999)}",
            f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        ]
    )


def ipv4() -> str:
    net = rng.choice(["192.0.2", "198.51.100", "203.0.113", "10.20", "172.16"])
    parts = net.count(".") + 1
    return net + "".join(f".{rng.randint(1, 254)}" for _ in range(4 - parts))


def ipv6() -> str:
    return rng.choice(
        [
            f"2001:db8::{rng.randint(1, 0xFFFF):x}",
            f"2001:db8:{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}::{rng.randint(1, 0xFF):x}",
            f"fe80::{rng.randint(1, 0xFFFF):x}:{rng.randint(1, 0xFFFF):x}",
        ]
    )


def token(alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits


def secret() -> tuple[str, str]:
    """(value, template): some secrets sit after `password=`; the span is the value only."""
    kind = rng.choice(["aws", "github", "gitlab", "slack", "stripe", "jwt", "assign", "pem"])
    if kind == "aws":
        return rng.choice(["AKIA", "ASIA"]) + token(UPPER_ALNUM, 16), "The deploy job uses {v} as its key id."
    if kind == "github":
        return "ghp_" + token(ALNUM, 36), "export GITHUB_TOKEN {v}"
    if kind == "gitlab":
        return "glpat-" + token(ALNUM + "_-", 20), "CI variable set to {v} yesterday."
    if kind == "slack":
        return f"xoxb-{digits(11)}-{digits(12)}-{token(ALNUM, 24)}", "bot token: {v}"
    if kind == "stripe":
        return "sk_live_" + token(ALNUM, 24), "Stripe says {v} was rotated."
    if kind == "jwt":
        header = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
        return f"{header}.eyJ{token(ALNUM, 30)}.{token(ALNUM + '_-', 43)}", "Authorization: Bearer {v}"
    if kind == "assign":
        value = token(ALNUM + "!#%&", rng.randint(8, 16))
        return value, rng.choice(
            ["db password={v} in staging", "api_key: '{v}'", 'secret = "{v}"', "passwd: {v}"]
        )
    body = "\n".join(token(ALNUM + "+/", 64) for _ in range(3))
    return f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----", "key:\n{v}\nthanks"


POSITIVE_TEMPLATES = {
    "email": ["Please send the form to {v}.", "{v} asked about the offsite", "cc: {v}", "Mail «{v}» today"],
    "phone": ["Call me at {v} after 5.", "Reception: {v}", "{v} is the on-call line", "ring {v} (desk)"],
    "card": ["My card is {v}, expiry 09/29.", "Charge {v} please", "card no. {v}"],
    "iban": ["Transfer to IBAN {v} by Friday.", "IBAN: {v}", "{v} is the supplier account"],
    "ssn": ["SSN {v} on the W-4.", "Her social security number is {v}.", "ssn: {v}"],
    "ipv4": ["The gateway at {v} drops packets.", "ssh admin@host via {v}", "allowlist {v} now"],
    "ipv6": ["Bind to {v} on port 8443.", "the peer {v} is down", "route via {v}."],
}
MAKERS = {"email": email, "phone": phone, "card": card, "iban": iban, "ssn": ssn, "ipv4": ipv4, "ipv6": ipv6}

NEGATIVE_MAKERS = {
    "card_luhn_fail": lambda: f"Order {card(valid=False)} shipped on Monday.",
    "iban_bad_check": lambda: f"Old account {iban(valid=False)} was closed.",
    "ssn_invalid_area": lambda: f"Form field shows {ssn(valid=False)} as a sample.",
    "version_string": lambda: (
        f"Upgrade to version {rng.randint(1, 12)}.{rng.randint(0, 20)}."
        f"{rng.randint(0, 9)}.{rng.randint(0, 99)} tonight."
    ),  # noqa: E501
    "semver": lambda: f"Released v{rng.randint(1, 5)}.{rng.randint(0, 30)}.{rng.randint(0, 9)} with fixes.",
    "date_iso": lambda: f"Meeting on 2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at 10:30.",
    "date_eu": lambda: f"Due {rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.2026 latest.",
    "date_us": lambda: f"Signed {rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}/2025 by both.",
    "amount": lambda: (
        f"Total {rng.randint(1, 999)},{rng.randint(100, 999)}.{rng.randint(10, 99)} EUR incl. VAT."
    ),
    "order_number": lambda: f"Order {digits(10)} is in transit.",
    "invoice_digits": lambda: f"Invoice INV-{digits(6)}-{digits(4)} paid.",
    "time": lambda: f"The job ran from 12:{rng.randint(10, 59)}:{rng.randint(10, 59)} to 13:05:00.",
    "bad_ip": lambda: f"Typo in config: {rng.randint(256, 999)}.{rng.randint(0, 255)}.1.1 is not an address.",
    "password_prose": lambda: "Password: must be at least 12 characters long.",
    "password_template": lambda: "password=${DB_PASSWORD} is read from the environment.",
    "cxx_scope": lambda: "Use std::vector::size() for the count.",
}


def main() -> None:
    rows: list[dict[str, object]] = []
    for kind, templates in POSITIVE_TEMPLATES.items():
        for i in range(60):
            value = MAKERS[kind]()
            template = templates[i % len(templates)]
            text = template.format(v=value)
            start = text.index(value)
            rows.append(
                {
                    "text": text,
                    "spans": [{"kind": kind, "start": start, "end": start + len(value)}],
                    "note": kind,
                }
            )
    for _ in range(80):
        value, template = secret()
        text = template.format(v=value)
        start = text.index(value)
        rows.append(
            {
                "text": text,
                "spans": [{"kind": "secret", "start": start, "end": start + len(value)}],
                "note": "secret",
            }
        )
    # Mixed texts: several kinds in one paragraph.
    for _ in range(40):
        spans, text = [], ""
        for kind in rng.sample(list(MAKERS), 3):
            value = MAKERS[kind]()
            prefix = rng.choice(["Note: ", "Also ", "FYI ", "Then "])
            start = len(text) + len(prefix)
            text += f"{prefix}{value}. "
            spans.append({"kind": kind, "start": start, "end": start + len(value)})
        rows.append({"text": text.strip(), "spans": spans, "note": "mixed"})
    for name, make in NEGATIVE_MAKERS.items():
        for _ in range(25):
            rows.append({"text": make(), "spans": [], "note": f"negative:{name}"})
    rng.shuffle(rows)
    with OUT.open("w", encoding="utf-8") as handle:
        for index, row in enumerate(rows):
            handle.write(json.dumps({"id": f"p{index:04d}", **row}, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} rows to {OUT}")  # noqa: T201


if __name__ == "__main__":
    main()
