"""Is an answer supported by its evidence? A lexical check of content words, numbers and names.

An answer sentence's claims are its content terms (stemmed, stopwords and filler out) that the question
does not already contain, and its numbers. A sentence is supported by one evidence unit to the extent that
unit contains its claims: the best unit counts, because claims stitched together from different sentences
("12 days" from one line, "vacation" from another) are how a small model goes wrong. The unit must also be
about the question: its support is scaled down when it holds less than TOPIC_SHARE of the question's content
terms ("2" is in the evidence, but in a line about notice periods, not about the allowance asked for).
A sentence copied from an evidence unit (COPY_MIN_WORDS words or more) is supported as it stands: it states
nothing the evidence does not. A sentence with a number its best unit (or the question) lacks scores at most
NUMBER_MISS_CAP. The score is
the claim-weighted mean over sentences; an answer that claims nothing (it echoes the question, or is
empty) scores 0.

The check is deliberately strict and cheap (microseconds, no model): it cannot tell a correct paraphrase
with new words from a fabrication, so a low score means "not visibly supported", which is what the
`flag` and `extract` policies act on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from services.rag.sentences import split_sentences
from services.rag.sparse import Bm25Tokenizer

# A sentence that states a number the evidence does not contain scores at most this.
NUMBER_MISS_CAP = 0.25
# A sentence of at least this many words found verbatim (case and spacing aside) in a unit is a copy.
COPY_MIN_WORDS = 5
# A unit holding at least this share of the question's content terms supports with full weight.
TOPIC_SHARE = 0.6
_NUMBER = re.compile(r"(?<![\w.])(\d+(?:[.,:]\d+)*)")
_NUMBER_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12",
    "fifteen": "15", "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60",
    "ninety": "90", "hundred": "100",
}  # fmt: skip
_WORD = re.compile(r"[a-z]+")
_WORD_OR_NUMBER = re.compile(r"[a-z0-9]+")
# Words that carry no claim in an answer ("According to the context, ...", "you get", "yes"), and the
# question words and auxiliaries that say nothing about a question's topic.
_FILLER = frozenset(
    "according context handbook policy sources source says say said states stated answer based "
    "yes no get gets got please note also however question you your yours we our us i my me they "
    "their them it its how many much what which who whom whose when where why do does did can could "
    "should would will shall may might must is are was were be been have has had need needs".split()
)


@dataclass(frozen=True, slots=True)
class Groundedness:
    """`score` in [0, 1]; `unsupported` lists the answer's terms and numbers found in neither the evidence
    nor the question (at most a few, for the response); `abstained`: the answer says the context has none."""

    score: float
    unsupported: tuple[str, ...]
    abstained: bool = False


def _numbers(text: str) -> set[str]:
    found = {m.group(1).replace(",", "").rstrip(".:") for m in _NUMBER.finditer(text)}
    found.update(_NUMBER_WORDS[w] for w in _WORD.findall(text.lower()) if w in _NUMBER_WORDS)
    return found


class GroundednessScorer:
    def __init__(
        self, abstention_phrases: Sequence[str] = (), tokenizer: Bm25Tokenizer | None = None
    ) -> None:
        self._tokenize = tokenizer or Bm25Tokenizer()
        self._abstentions = tuple(_normalise(p) for p in abstention_phrases if p.strip())
        self._filler = frozenset(self._tokenize(" ".join(_FILLER)))

    def is_abstention(self, answer: str) -> bool:
        normalised = _normalise(answer)
        return any(phrase in normalised for phrase in self._abstentions)

    def score(self, answer: str, evidence: Sequence[str], question: str = "") -> Groundedness:
        if self.is_abstention(answer):
            return Groundedness(score=1.0, unsupported=(), abstained=True)
        question_terms = set(self._tokenize(question))
        question_numbers = _numbers(question)
        topic = question_terms - self._filler
        units = []
        for text in evidence:
            terms = set(self._tokenize(text))
            about = len(topic & terms) / len(topic) if topic else 1.0
            units.append((terms, _numbers(text), min(1.0, about / TOPIC_SHARE)))
        weighted, weight = 0.0, 0
        unsupported: list[str] = []
        copies = [f" {_copy_form(text)} " for text in evidence]
        for sentence in split_sentences(answer.strip()):
            copied = _copy_form(sentence)
            if len(copied.split()) >= COPY_MIN_WORDS and any(f" {copied} " in unit for unit in copies):
                words = len(copied.split())
                weighted += words
                weight += words
                continue
            claims = {
                t
                for t in self._tokenize(sentence)
                if t not in self._filler
                and t not in question_terms
                and not t.isdigit()
                and t not in _NUMBER_WORDS
            }
            numbers = _numbers(sentence) - question_numbers
            total = len(claims) + len(numbers)
            if total == 0:
                continue
            best_support, best_missing = 0.0, sorted(numbers) + sorted(claims)
            for terms, unit_numbers, on_topic in units:
                missing_numbers = sorted(numbers - unit_numbers)
                missing_terms = sorted(claims - terms)
                support = 1.0 - (len(missing_numbers) + len(missing_terms)) / total
                if missing_numbers:
                    support = min(support, NUMBER_MISS_CAP)
                support *= on_topic
                if support > best_support:
                    best_support, best_missing = support, missing_numbers + missing_terms
            weighted += best_support * total
            weight += total
            unsupported.extend(best_missing)
        score = weighted / weight if weight else 0.0
        return Groundedness(score=score, unsupported=tuple(dict.fromkeys(unsupported))[:8])


def _copy_form(text: str) -> str:
    """Words and numbers only, lower case: how a copied sentence is compared with its source."""
    return " ".join(_WORD_OR_NUMBER.findall(text.lower()))


def _normalise(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


__all__ = ["COPY_MIN_WORDS", "NUMBER_MISS_CAP", "TOPIC_SHARE", "Groundedness", "GroundednessScorer"]
