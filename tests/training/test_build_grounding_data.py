"""The grounding adapter's data: answer-line selection, unanswerable construction, shuffling, the held-out
file split and determinism (plain strings), and one build over a real (tiny) index through the real rag
pipeline with a fake embedder."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from services.core.settings import PromptSettings
from services.core.types import Chunk, ScoredChunk
from services.llm.prompts import PromptLibrary
from services.rag.evidence import EvidenceSelection, EvidenceUnit
from services.rag.ingest import ingest
from services.rag.service import RetrievalService
from tests.rag.conftest import HashingEmbedder, rag_settings
from training.build_generator_data import Fact
from training.build_grounding_data import (
    answer_line,
    build_grounding_data,
    clause_question,
    drop_unit,
    edit_selection,
    evidence_lines,
    fact_text,
    heldout_sources,
    holds_fact,
    mentions_fact,
    partial_question,
    questions_for,
    strip_title,
    unanswerable_plan,
    usable_fact,
)

CARRY = "Up to 5 unused vacation days carry over into the next year."


def _fact(text: str, value: str, question: str = "Q?", title: str = "Vacation", key: str = "v.md#1") -> Fact:
    return Fact(key, "benefits/vacation.md", title, question, f"{text} Source: {title}.", (value,))


def _chunk(chunk_id: str, source: str, text: str = "") -> Chunk:
    return Chunk(chunk_id=chunk_id, source=source, text=text, title=source)


def _selection() -> EvidenceSelection:
    a, b, c = _chunk("a", "x.md"), _chunk("b", "y.md"), _chunk("c", "z.md")
    units = [
        EvidenceUnit("a1 states 5 days", a, 0.9),
        EvidenceUnit("b1 unrelated", b, 0.8),
        EvidenceUnit("a2 more", a, 0.7),
        EvidenceUnit("c1 other", c, 0.6),
    ]
    chunks = [ScoredChunk(chunk=x, score=s) for x, s in ((a, 0.9), (b, 0.8), (c, 0.6))]
    return EvidenceSelection(units=units, chunks=chunks, token_count=20, select_ms=1.0)


# --------------------------------------------------------------------------- target selection


@pytest.mark.unit
def test_the_answer_line_states_the_value_and_most_of_the_words() -> None:
    fact = _fact(CARRY, "5 unused vacation days")
    lines = [
        "Everyone gets 25 working days of paid vacation per year.",
        "Unused days expire after 5 unused vacation days are counted.",  # the value, few of the words
        "Up to five unused vacation days carry over into the next year.",  # the words, not the value
        CARRY,
    ]
    assert fact_text(fact) == CARRY
    assert [holds_fact(line, CARRY, fact.expected) for line in lines] == [False, False, False, True]
    assert answer_line(lines, CARRY, fact.expected) == CARRY
    assert answer_line(lines[:3], CARRY, fact.expected) is None


@pytest.mark.unit
def test_of_two_lines_holding_the_fact_the_closer_one_wins_and_ties_go_to_the_first() -> None:
    longer = f"Carry-over rules: {CARRY} Ask your manager first."
    assert answer_line([longer, CARRY], CARRY, ["5 unused vacation days"]) in (longer, CARRY)
    assert answer_line([CARRY, CARRY + " "], CARRY, ["5 unused vacation days"]) == CARRY


@pytest.mark.unit
def test_a_fact_without_a_value_needs_nearly_all_its_words() -> None:
    answer = "Yes, with the usual approval of your manager."
    assert holds_fact("Yes, with the usual approval of your manager.", answer, ())
    assert not holds_fact("Approval is usual.", answer, ())


@pytest.mark.unit
def test_evidence_lines_are_the_dash_lines_of_the_user_message() -> None:
    message = (
        '<context id="1" source="a.md">\n- first line\n- second - line\n</context>\n\n'
        "Question: what?\nAnswer in one or two sentences."
    )
    assert evidence_lines(message) == ["first line", "second - line"]


@pytest.mark.unit
def test_values_inside_a_larger_token_make_no_usable_fact() -> None:
    assert usable_fact(_fact(CARRY, "5 unused vacation days"))
    assert usable_fact(_fact("Submit within 30 days.", "30"))
    assert not usable_fact(_fact("Tickets are answered from 07:00 Lisbon time.", "00"))
    assert not usable_fact(_fact("Draft the 30-60-90 plan.", "30"))


# --------------------------------------------------------------------------- unanswerable and shuffling


@pytest.mark.unit
def test_every_line_that_may_state_the_fact_is_removed_for_an_unanswerable_example() -> None:
    values = ["USD 2,000 / EUR 1,850"]
    text = "Courses costing more than USD 2,000 / EUR 1,850 are repaid if you resign within 12 months."
    assert mentions_fact("Anything above USD 2,000 / EUR 1,850 needs approval.", text, values)  # the value
    assert mentions_fact("In the euro area the limit is EUR 1,850.", text, values)  # one of its numbers
    assert mentions_fact("Courses are repaid if you resign within a year of costing more.", text, values)
    assert not mentions_fact("Conferences are booked through Waypoint.", text, values)  # a distractor


@pytest.mark.unit
def test_edit_selection_drops_units_and_the_blocks_they_leave_empty() -> None:
    selection = _selection()
    edited = edit_selection(selection, drop=lambda u: u.chunk.chunk_id == "b" or "5 days" in u.text)
    assert [u.text for u in edited.units] == ["a2 more", "c1 other"]
    assert [c.chunk.chunk_id for c in edited.chunks] == ["a", "c"]
    assert edit_selection(selection) == selection


@pytest.mark.unit
def test_drop_unit_removes_heldout_sources_and_fact_lines() -> None:
    unit = EvidenceUnit("Up to 5 unused vacation days carry over.", _chunk("a", "benefits/vacation.md"), 1.0)
    assert drop_unit(unit, heldout={"benefits/vacation.md"}, fact=None)
    assert not drop_unit(unit, heldout=set(), fact=None)
    assert drop_unit(unit, heldout=set(), fact=(CARRY, ["5 unused vacation days"]))


@pytest.mark.unit
def test_shuffling_is_a_seeded_permutation_of_lines_and_blocks() -> None:
    selection = _selection()
    first = edit_selection(selection, shuffle=random.Random(3))
    again = edit_selection(selection, shuffle=random.Random(3))
    assert first == again
    assert sorted(u.text for u in first.units) == sorted(u.text for u in selection.units)
    assert sorted(c.chunk.chunk_id for c in first.chunks) == ["a", "b", "c"]
    orders = {
        tuple(u.text for u in edit_selection(selection, shuffle=random.Random(s)).units) for s in range(20)
    }
    assert len(orders) > 5  # not always the original order


@pytest.mark.unit
def test_unanswerable_plan_hits_the_share_half_from_each_pool() -> None:
    found, missed = list(range(100)), list(range(100, 140))
    chosen = unanswerable_plan(found, missed, 0.18, seed=7)
    from_found = len(chosen & set(found))
    examples = len(found) - from_found + len(chosen)
    assert abs(len(chosen) / examples - 0.18) < 0.01
    assert abs(from_found - len(chosen & set(missed))) <= 1
    assert chosen == unanswerable_plan(found, missed, 0.18, seed=7)
    assert chosen != unanswerable_plan(found, missed, 0.18, seed=8)
    few_missed = unanswerable_plan(found, [100], 0.18, seed=7)
    assert len(few_missed & set(found)) == len(few_missed) - 1  # the rest comes from `found`
    with pytest.raises(ValueError):
        unanswerable_plan(found, missed, 1.0, seed=7)


# --------------------------------------------------------------------------- questions and split


@pytest.mark.unit
def test_less_lexical_questions() -> None:
    question = "Per the Vacation policy, up to how many unused vacation days carry over into the next year?"
    base = strip_title(question, "Vacation")
    assert base == "Up to how many unused vacation days carry over into the next year?"
    assert strip_title("Vacation: how many days?", "Vacation") == "How many days?"
    assert clause_question("Role changes: access is removed within how many business days, then added?") == (
        "Access is removed within how many business days?"
    )
    partial = partial_question(base, random.Random(1))
    assert partial is not None and partial.startswith("How many unused vacation days ")
    assert partial == partial_question(base, random.Random(1))
    assert len(partial.split()) < len(base.split())


@pytest.mark.unit
def test_questions_are_unique_and_seeded() -> None:
    facts = [
        _fact(
            CARRY,
            "5",
            question=f"Per the Vacation policy, up to how many days carry over ({i})?",
            key=f"k{i}",
        )
        for i in range(40)
    ]
    questions = questions_for(facts, seed=7, variant_share=0.5)
    texts = [q.text for q in questions]
    assert len(texts) == len(set(texts))
    assert sum(q.style == "as_built" for q in questions) == 40
    assert 5 < sum(q.style != "as_built" for q in questions) < 35
    assert texts == [q.text for q in questions_for(facts, seed=7, variant_share=0.5)]


@pytest.mark.unit
def test_heldout_sources_are_a_seeded_share_of_the_files() -> None:
    files = [f"dir/{i}.md" for i in range(40)]
    held = heldout_sources(files, 0.15, seed=7)
    assert len(held) == 6 and held <= set(files)
    assert held == heldout_sources(list(reversed(files)), 0.15, seed=7)  # order of discovery is irrelevant
    assert held != heldout_sources(files, 0.15, seed=8)
    assert len(heldout_sources(files[:3], 0.15, seed=7)) == 1  # at least one file
    assert heldout_sources(files[:1], 0.15, seed=7) == set()  # never every file
    assert heldout_sources(files, 0.0, seed=7) == set()


# --------------------------------------------------------------------------- a real build


TINY_CORPUS = {
    "benefits/vacation.md": (
        "# Vacation\n\nAll employees receive 25 working days of paid vacation per year.\n\n"
        "## Carry-over\n\nUp to 5 unused vacation days carry over into the next year.\n"
        "Carried-over days must be used by 31 March.\n"
    ),
    "benefits/sick-leave.md": (
        "# Sick Leave\n\nYou receive 12 paid sick days per calendar year.\n\n"
        "## Notes\n\nA doctor's note is needed after 3 consecutive calendar days.\n"
    ),
    "expenses/travel.md": (
        "# Travel\n\nBook flights through **Waypoint**.\n\n"
        "## Receipts\n\nSubmit receipts within 30 days of the trip in **Ledgerly**.\n\n"
        "## Hotels\n\nThe hotel cap is USD 230 per night in Port Aldren.\n"
    ),
    "it-security/laptops.md": (
        "# Laptops\n\nLaptops are replaced every 36 months, or sooner if they fail.\n\n"
        "## Lost devices\n\nReport a lost laptop within 2 hours to the security team.\n"
    ),
    "people/onboarding.md": (
        "# Onboarding\n\nYour laptop ships 7 business days before your start date.\n\n"
        "## Buddy\n\nEvery new joiner gets an onboarding buddy for 60 days.\n"
    ),
}


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, RetrievalService]:
    root = tmp_path_factory.mktemp("grounding")
    corpus = root / "handbook"
    for relative, text in TINY_CORPUS.items():
        path = corpus / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    settings = rag_settings(root / "index", relevance={"min_dense_score": -1.0})
    embedder = HashingEmbedder()
    ingest([corpus], settings, embedder=embedder, progress=False)
    service = RetrievalService(settings, embedder=embedder)
    service.warm_up()
    return root, corpus, service


def _build(service: RetrievalService, corpus: Path, out: Path, seed: int = 7) -> dict[str, object]:
    return build_grounding_data(
        service,
        out,
        corpus_dir=corpus,
        system_prompt=PromptSettings().system_prompt,
        seed=seed,
        heldout_fraction=0.2,
        unanswerable_share=0.3,
        shuffle_share=0.5,
    )


@pytest.mark.integration
def test_build_writes_pipeline_prompts_with_copied_lines_or_the_unanswerable_text(
    tiny_build: tuple[Path, Path, RetrievalService],
) -> None:
    root, corpus, service = tiny_build
    manifest = _build(service, corpus, root / "out")
    prompts = PromptLibrary()
    unanswerable = prompts.render_block("rag", "unanswerable")
    system = prompts.render_block("rag", "system", system_prompt=PromptSettings().system_prompt)
    heldout = set(manifest["heldout_sources"])  # type: ignore[call-overload]
    assert len(heldout) == 1

    rows = {
        split: [json.loads(line) for line in (root / "out" / f"{split}.jsonl").read_text().splitlines()]
        for split in ("train", "val")
    }
    assert rows["train"] and rows["val"]
    kinds = [r["kind"] for split in rows.values() for r in split]
    assert "answerable" in kinds and "unanswerable" in kinds
    for split, split_rows in rows.items():
        for row in split_rows:
            system_message, user, assistant = row["messages"]
            assert (system_message["role"], user["role"], assistant["role"]) == (
                "system",
                "user",
                "assistant",
            )
            assert system_message["content"] == system
            assert user["content"].startswith('<context id="1" source="')
            assert user["content"].endswith("Answer in one or two sentences, using the words of the context.")
            lines = evidence_lines(user["content"])
            assert lines
            if row["kind"] == "answerable":
                assert assistant["content"] in lines  # copied verbatim
                assert any(v.lower() in assistant["content"].lower() for v in row["expected"])
            else:
                assert assistant["content"] == unanswerable
                assert not any(_states(line, v) for line in lines for v in row["expected"])
            sources = set(_quoted_sources(user["content"]))
            if split == "val":
                assert row["source"] in heldout
            else:
                assert row["source"] not in heldout and not sources & heldout


@pytest.mark.integration
def test_build_is_reproducible_with_the_seed(tiny_build: tuple[Path, Path, RetrievalService]) -> None:
    root, corpus, service = tiny_build
    _build(service, corpus, root / "a")
    _build(service, corpus, root / "b")
    _build(service, corpus, root / "c", seed=8)
    for name in ("train.jsonl", "val.jsonl", "manifest.json"):
        assert (root / "a" / name).read_bytes() == (root / "b" / name).read_bytes()
    assert (root / "a" / "train.jsonl").read_bytes() != (root / "c" / "train.jsonl").read_bytes()


def _states(line: str, value: str) -> bool:
    return re.search(rf"(?<![\w.,]){re.escape(value.lower())}(?!\w)", line.lower()) is not None


def _quoted_sources(user: str) -> list[str]:
    return [line.split('source="', 1)[1].split('"', 1)[0] for line in user.splitlines() if "source=" in line]
