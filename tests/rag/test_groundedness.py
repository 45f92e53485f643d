"""The groundedness score: claims beyond the question, supported by one evidence unit, numbers strict."""

from __future__ import annotations

import pytest

from services.rag.groundedness import NUMBER_MISS_CAP, GroundednessScorer

pytestmark = pytest.mark.unit

EVIDENCE = [
    "All full-time employees receive 25 working days of paid vacation per calendar year.",
    "From your 3rd work anniversary: 26 days",
    "We ask everyone to take at least 10 days of vacation per year.",
]
QUESTION = "How many days of paid vacation do we get?"
SCORER = GroundednessScorer(["The context does not say."])


def test_a_supported_answer_scores_high() -> None:
    result = SCORER.score("You get 25 working days of paid vacation per year.", EVIDENCE, QUESTION)
    assert result.score == 1.0 and result.unsupported == () and not result.abstained


def test_a_number_the_evidence_lacks_caps_the_score_and_is_named() -> None:
    result = SCORER.score("You receive 12 paid vacation days per year.", EVIDENCE, QUESTION)
    assert result.score <= NUMBER_MISS_CAP and "12" in result.unsupported


def test_claims_stitched_from_two_units_are_not_supported_by_either() -> None:
    stitched = SCORER.score("Employees receive 26 days and must take at least 10.", EVIDENCE, QUESTION)
    single = SCORER.score("Everyone must take at least 10 days of vacation.", EVIDENCE, QUESTION)
    assert stitched.score < 0.6 <= single.score


def test_number_words_count_as_numbers() -> None:
    assert SCORER.score("At least ten days.", EVIDENCE, QUESTION).score == 1.0
    assert SCORER.score("At least eleven days.", EVIDENCE, QUESTION).score <= NUMBER_MISS_CAP


def test_echoing_the_question_or_saying_nothing_scores_zero() -> None:
    assert SCORER.score(QUESTION, EVIDENCE, QUESTION).score == 0.0
    assert SCORER.score("", EVIDENCE, QUESTION).score == 0.0


def test_the_unanswerable_phrase_is_an_abstention() -> None:
    result = SCORER.score("Sorry. The context does not say!", EVIDENCE, QUESTION)
    assert result.abstained and result.score == 1.0


def test_a_number_from_a_line_about_something_else_is_not_support() -> None:
    evidence = [*EVIDENCE, "Length of absence: 1-2 days; Request at least: 2 business days ahead"]
    assert SCORER.score("The answer is: 2", evidence, QUESTION).score < 0.6
    assert SCORER.score("The answer is: 25 working days.", evidence, QUESTION).score == 1.0


def test_a_sentence_copied_from_the_evidence_is_supported_even_off_topic() -> None:
    row = "Location of employment: Portugal; Rate: EUR 0.36 per km"
    result = SCORER.score(f"{row}.", [row], "what's the mileage rate if I drive my own car in portugal?")
    assert result.score == 1.0
    assert (
        SCORER.score("Location of employment: Portugal; Rate: EUR 0.99 per km.", [row], "rate?").score < 0.6
    )
