"""Evidence units: sentences, list items with their lead-in, table rows with their headers."""

from __future__ import annotations

import pytest

from services.rag.sentences import plain_text, split_sentences, split_units

pytestmark = pytest.mark.unit

PAGE = """# Vacation

All employees receive **25 working days** per year. Part-time staff get a pro-rated share.

## Long service

Long service adds to it:

- From your 3rd anniversary: **26 days**
- From your 5th anniversary: 27 days

| Length of absence | Request at least |
|---|---|
| 1-2 days | 2 business days ahead |
| 3-5 days | 2 weeks ahead |

```
# not a heading, not a unit
```

See [the policy](https://example.com/p) for details, e.g. carry-over rules. Ask `Harbor`.
"""


def test_units_carry_lead_ins_table_headers_and_headings() -> None:
    units = split_units(PAGE)
    texts = [u.text for u in units]
    assert texts[:2] == [
        "All employees receive 25 working days per year.",
        "Part-time staff get a pro-rated share.",
    ]
    assert "Long service adds to it: From your 3rd anniversary: 26 days" in texts
    assert "Long service adds to it: From your 5th anniversary: 27 days" in texts
    assert "Length of absence: 3-5 days; Request at least: 2 weeks ahead" in texts
    assert not any("not a heading" in t for t in texts)
    assert texts[-2:] == ["See the policy for details, e.g. carry-over rules.", "Ask Harbor."]
    assert units[0].heading == "Vacation" and units[3].heading == "Long service"
    assert [u.position for u in units] == list(range(len(units)))


def test_sentences_do_not_break_at_abbreviations_or_decimals() -> None:
    assert split_sentences("Costs rose 2.5 percent, i.e. a lot. Then they fell.") == [
        "Costs rose 2.5 percent, i.e. a lot.",
        "Then they fell.",
    ]


def test_plain_text_drops_markup() -> None:
    assert (
        plain_text("**Bold** and _it_ and `code` and [a link](http://x)") == "Bold and it and code and a link"
    )


def test_a_long_paragraph_ending_in_a_colon_is_not_a_lead_in() -> None:
    long = " ".join(["word"] * 40) + ":"
    units = split_units(f"{long}\n\n- item one here\n")
    assert units[-1].text == "item one here"
