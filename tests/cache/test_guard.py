"""The semantic guard: queries that embed close but differ in a number, a negation, a direction, a name or
a quantity never share an answer; paraphrases that keep all of them may."""

from __future__ import annotations

import pytest

from services.cache.guard import markers, mismatch, same_meaning_markers

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("query", "cached", "reason"),
    [
        ("Turn off dark mode", "Turn on dark mode", "polarity"),
        ("How do I turn the VPN off?", "How do I enable the VPN?", "polarity"),
        ("Who approves expenses over $500?", "Who approves expenses under $500?", "polarity"),
        ("Should tests run before every merge?", "Should tests run after every merge?", "polarity"),
        ("Can I carry over 5 days?", "Can I carry over 15 days?", "numbers"),
        ("What is 12 times 12?", "What is twelve times thirteen?", "numbers"),
        ("Is twenty five days the limit?", "Is 24 days the limit?", "numbers"),
        ("Is dental covered?", "Is dental not covered?", "negation"),
        ("Can I take a day off with a note?", "Can I take a day off without a note?", "negation"),
        ("I don't want the plan", "I want the plan", "negation"),
        ("Is paid leave allowed?", "Is unpaid leave allowed?", "negation"),
        ("Is the role exempt?", "Is the role non-exempt?", "negation"),
        ("What are the office hours in Berlin?", "What are the office hours in Munich?", "entities"),
        ("Lisbon office hours?", "Porto office hours?", "entities"),
        ("Translate 'good morning' into Spanish", "Translate 'good night' into Spanish", "entities"),
        ("Convert 100 Fahrenheit to Celsius", "Convert 100 Celsius to Fahrenheit", "entities"),
        ("Write to hr@larkspur.example", "Write to it@larkspur.example", "entities"),
        ("Can I work remotely for 2 weeks?", "Can I work remotely for 2 months?", "quantities"),
        ("Carry over 5 unused vacation days?", "Carry over 5 unused vacation weeks?", "quantities"),
        ("Who approves $500?", "Who approves 500 euros?", "quantities"),
        ("What is the rate per mile?", "What is the rate?", "quantities"),
    ],
)
def test_near_misses_are_told_apart(query: str, cached: str, reason: str) -> None:
    assert mismatch(markers(query), markers(cached)) == reason
    assert mismatch(markers(cached), markers(query)) == reason


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("How many vacation days do I get per year?", "how many days of vacation do I get each year"),
        ("Can I carry over 5 unused days?", "Can I carry over five unused days?"),
        ("Is twenty-five days the limit?", "Is 25 days the limit?"),
        ("How do I turn dark mode off?", "How can I disable dark mode?"),
        ("I don't want the plan", "I do not want the plan"),
        ("Who approves $1,000 expenses?", "Who approves expenses of 1000 dollars?"),
        ("What are the office hours in Berlin?", "What are the Berlin office's hours?"),
        ("How much time off do I get?", "How much time off am I given?"),
    ],
)
def test_paraphrases_keep_the_same_markers(query: str, cached: str) -> None:
    assert same_meaning_markers(query, cached), mismatch(markers(query), markers(cached))


def test_markers_read_numbers_quantities_and_names() -> None:
    found = markers("Can Ana in Lisbon carry over two hundred and five dollars or 3 GB per month?")
    assert found.numbers == (3.0, 205.0)
    assert (205.0, "usd") in found.quantities and (3.0, "gb") in found.quantities
    assert (1.0, "month") in found.quantities
    assert found.entities == ("ana", "lisbon")
    assert found.negations == 0


def test_a_capitalised_first_word_is_a_name_unless_it_is_a_function_or_request_word() -> None:
    assert markers("What is the policy?").entities == ()
    assert markers("Explain the policy.").entities == ()
    assert markers("Berlin policy?").entities == ("berlin",)
    assert markers("Can I go? Zendesk asks.").entities == ("zendesk",)
