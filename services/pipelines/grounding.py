"""The rag answer check: score the answer's groundedness in its evidence and apply the policy.

    pass     the answer is sent as generated; the score is reported
    flag     the same, and `hybrid.groundedness.action` says "flag" when the score is below the threshold
    extract  an answer below the threshold is replaced by the best evidence (`quote_units` sentences),
             quoted, with its source: the user gets either a supported answer or the text it should have
             come from

An answer that says the context has no answer ("abstain") passes unchanged under `pass` and `flag`. Under
`extract` it is replaced by the quote too: the evidence passed the retrieval's relevance bar, and small
models abstain far more often than the evidence lacks the answer (benchmarks/results/grounding.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from services.pipelines.base import CheckAction, CheckedAnswer, GroundednessReport
from services.rag.groundedness import GroundednessScorer

UnsupportedAnswerPolicy = Literal["pass", "flag", "extract"]
# The quotes, best first -> the answer that quotes them (the rag template's `extract` block)
ExtractRenderer = Callable[[Sequence["EvidenceQuote"]], str]


@dataclass(frozen=True, slots=True)
class EvidenceQuote:
    text: str
    source: str


class EvidenceAnswerCheck:
    """One request's check (AnswerCheck): built with that request's evidence (best first) and question."""

    def __init__(
        self,
        scorer: GroundednessScorer,
        evidence: list[EvidenceQuote],
        question: str,
        *,
        policy: UnsupportedAnswerPolicy,
        threshold: float,
        render_extract: ExtractRenderer,
        can_extract: bool = True,
        quote_units: int = 1,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if quote_units < 1:
            raise ValueError(f"quote_units must be >= 1, got {quote_units}")
        self._quote_units = quote_units
        self._scorer = scorer
        self._evidence = evidence
        self._question = question
        self._policy = policy
        self._threshold = threshold
        self._render_extract = render_extract
        # Whole chunks (rag.context.mode: chunks) have no ranked sentences to quote: extract degrades to flag.
        self._can_extract = can_extract and bool(evidence)

    @property
    def may_replace(self) -> bool:
        return self._policy == "extract" and self._can_extract

    def check(self, answer: str) -> CheckedAnswer:
        result = self._scorer.score(answer, [e.text for e in self._evidence], self._question)
        extracting = self._policy == "extract" and self._can_extract
        if result.abstained and not extracting:
            action: CheckAction = "abstain"
        elif not result.abstained and (result.score >= self._threshold or self._policy == "pass"):
            action = "pass"
        else:
            action = "extract" if extracting else "flag"
        report = GroundednessReport(
            score=round(result.score, 3),
            unsupported=list(result.unsupported),
            abstained=result.abstained,
            threshold=self._threshold,
            action=action,
        )
        if action == "extract":
            answer = self._render_extract(self._evidence[: self._quote_units])
        return CheckedAnswer(text=answer, report=report)


__all__ = ["EvidenceAnswerCheck", "EvidenceQuote", "ExtractRenderer", "UnsupportedAnswerPolicy"]
