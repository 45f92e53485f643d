"""Build the intent-router data set (direct / knowledge / out_of_scope).

Sources, in order of precedence when two of them produce the same text:

1. hand-written examples, one per line, in ``corpus/router/source/{direct,knowledge,out_of_scope}.txt``;
2. knowledge questions generated from a markdown corpus's own headings and FAQ questions
   (only with ``--corpus DIR``);
3. composed examples: hand-written templates x hand-written slot values, from the frame files in
   ``corpus/router/source/compose/<label>.<name>.txt``.

Composed examples only top up each label towards a 40/40/20 (knowledge/direct/out_of_scope) mix, so
adding a corpus replaces composed knowledge questions rather than skewing the label balance.

Every example belongs to a *group* (a hand-written line is its own group; a composed example's group is
its frame plus its first slot value; a corpus question's group is its heading or FAQ entry). Splitting
is stratified by label and keeps each group inside one split, so near-identical template variants never
sit on both sides of a train/test boundary. Texts are deduplicated on a normalised form (case,
punctuation and whitespace folded), and nothing in the generalisation set is allowed into the splits.

Outputs (written atomically, services/core/atomic.py): ``train.jsonl``, ``val.jsonl``,
``test.jsonl`` with one ``{"text": ..., "label": ...}`` per line, plus ``manifest.json`` with counts.

Usage::

    python training/build_router_data.py --corpus corpus/handbook
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.core.atomic import atomic_write

LABELS: tuple[str, ...] = ("knowledge", "direct", "out_of_scope")
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Wanted share of each label in the final data set.
LABEL_SHARE: dict[str, float] = {"knowledge": 0.4, "direct": 0.4, "out_of_scope": 0.2}

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT / "corpus" / "router" / "source"
DEFAULT_OUT = REPO_ROOT / "corpus" / "router"
DEFAULT_GENERALISATION = DEFAULT_OUT / "generalization_sourcegraph.jsonl"

ORIGIN_HAND = "hand_written"
ORIGIN_CORPUS = "corpus_generated"
ORIGIN_COMPOSED = "composed"
ORIGIN_PRIORITY: dict[str, int] = {ORIGIN_HAND: 0, ORIGIN_CORPUS: 1, ORIGIN_COMPOSED: 2}


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    origin: str
    group: str


# --------------------------------------------------------------------------------------------------
# text helpers


_NON_WORD = re.compile(r"[^\w\s]+", re.UNICODE)
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Key used for deduplication: lower case, punctuation dropped, whitespace collapsed."""
    key = _SPACES.sub(" ", _NON_WORD.sub(" ", text.casefold())).strip()
    return key or text.strip()


def clean_line(line: str) -> str:
    return _SPACES.sub(" ", line).strip()


def read_lines(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a text file."""
    out: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = clean_line(raw)
        if line and not line.startswith("#"):
            out.append(line)
    return out


# --------------------------------------------------------------------------------------------------
# hand-written examples


def load_hand_written(source_dir: Path) -> list[Example]:
    """`<label>.txt` for every label, plus any `<label>.<name>.txt` beside it (e.g. a project's packaged
    `knowledge.workplace.txt`, kept apart from the user's own `knowledge.txt`)."""
    examples: list[Example] = []
    for label in LABELS:
        path = source_dir / f"{label}.txt"
        if not path.is_file():
            raise SystemExit(f"missing hand-written source file: {path}")
        for extra in [path, *sorted(source_dir.glob(f"{label}.*.txt"))]:
            for i, line in enumerate(read_lines(extra)):
                examples.append(Example(line, label, ORIGIN_HAND, f"hand:{extra.stem}:{i}"))
    return examples


# --------------------------------------------------------------------------------------------------
# composed examples (templates x slot values)


@dataclass
class Frame:
    name: str
    label: str
    max_items: int
    templates: list[str]
    slots: dict[str, list[str]]


_SLOT_REF = re.compile(r"\{(\w+)\}")


def parse_frame(path: Path) -> Frame:
    """Parse a frame file: ``%max N``, ``[templates]`` and one ``[slot NAME]`` section per slot."""
    label, _, name = path.stem.partition(".")
    if label not in LABELS or not name:
        raise SystemExit(f"frame file must be named <label>.<name>.txt with a known label: {path}")
    frame = Frame(name=name, label=label, max_items=50, templates=[], slots={})
    section: list[str] | None = None
    for line in read_lines(path):
        if line.startswith("%max"):
            frame.max_items = int(line.split()[1])
        elif line == "[templates]":
            section = frame.templates
        elif line.startswith("[slot ") and line.endswith("]"):
            section = frame.slots.setdefault(line[6:-1].strip(), [])
        elif section is None:
            raise SystemExit(f"{path}: text outside a section: {line!r}")
        else:
            section.append(line)
    for template in frame.templates:
        missing = set(_SLOT_REF.findall(template)) - set(frame.slots)
        if missing:
            raise SystemExit(f"{path}: template {template!r} uses unknown slots {sorted(missing)}")
    if not frame.templates or not frame.slots:
        raise SystemExit(f"{path}: a frame needs templates and at least one slot")
    return frame


def compose_frame(frame: Frame, rng: random.Random) -> list[Example]:
    """A random sample (at most ``frame.max_items``) of every template x slot-value combination."""
    slot_names = list(frame.slots)
    combos: list[tuple[str, dict[str, str]]] = []
    for template in frame.templates:
        for combo in itertools.product(*(frame.slots[s] for s in slot_names)):
            combos.append((template, dict(zip(slot_names, combo, strict=True))))
    rng.shuffle(combos)
    out: list[Example] = []
    first_slot = slot_names[0]
    for template, filled in combos[: frame.max_items]:
        text = template.format(**filled)
        text = text[0].lower() + text[1:] if rng.random() < 0.15 else text
        group = f"composed:{frame.label}.{frame.name}|{filled[first_slot]}"
        out.append(Example(clean_line(text), frame.label, ORIGIN_COMPOSED, group))
    return out


def load_composed(compose_dir: Path, rng: random.Random) -> list[Example]:
    if not compose_dir.is_dir():
        return []
    examples: list[Example] = []
    for path in sorted(compose_dir.glob("*.txt")):
        examples.extend(compose_frame(parse_frame(path), rng))
    return examples


# --------------------------------------------------------------------------------------------------
# knowledge questions generated from a markdown corpus

# Headings that are not topics on their own.
GENERIC_HEADINGS: frozenset[str] = frozenset(
    {
        "overview", "introduction", "intro", "faq", "faqs", "frequently asked questions", "summary",
        "contents", "table of contents", "toc", "resources", "additional resources", "references",
        "background", "purpose", "scope", "contact", "contacts", "links", "useful links", "misc",
        "miscellaneous", "notes", "note", "appendix", "examples", "example", "tl dr", "tldr", "about",
        "about this page", "definitions", "glossary", "see also", "related", "other", "general",
        "details", "questions", "more information", "further reading", "changelog", "history",
        "reason for the policy", "policy", "process", "exceptions", "violations", "enforcement",
        "violations enforcement", "roles and responsibilities", "responsibilities", "owners", "owner",
        "support", "help", "getting help", "who to ask", "questions and contact", "next steps", "todo",
    }
)  # fmt: skip

# Phrasings for a document title (H1): the page is one topic of the handbook.
TOPIC_TEMPLATES: tuple[str, ...] = (
    "what's the {t} policy?",
    "how does {t} work here?",
    "where can I read about {t}?",
    "can you tell me about {t} at our company",
    "any info on {t}?",
    "what are the rules for {t} at work?",
    "who do I ask about {t}?",
    "{t} - what do I need to know?",
    "what does our handbook say about {t}",
    "explain our {t} rules please",
)
# Used for a title that already names a policy, plan or process.
POLICY_TOPIC_TEMPLATES: tuple[str, ...] = (
    "what's our {t}?",
    "where can I read the {t}?",
    "can you summarise the {t} for me",
    "what does the {t} say?",
    "how does the {t} work here?",
)
POLICY_WORDS: frozenset[str] = frozenset(
    {"policy", "policies", "process", "programme", "program", "guidelines", "rules", "plan", "conduct"}
)
# A multi-word section heading that names a topic on its own ("Unpaid extended leave").
SECTION_TEMPLATES: tuple[str, ...] = (
    "where can I read about {t}?",
    "any info on {t}?",
    "what does our handbook say about {t}",
    "who do I ask about {t}?",
    "{t} - what do I need to know?",
    "{p}: what about {t}?",
)
# A section heading that only makes sense with its parent topic ("Vesting" under "Retirement plan").
SUBTOPIC_TEMPLATES: tuple[str, ...] = (
    "{p}: what about {s}?",
    "question about {p} - {s}?",
    "{p} - what are the rules on {s}?",
)
# One-word section headings with a better, specific phrasing.
CONTEXT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "eligibility": ("who is eligible for {p}?", "am I eligible for {p}?"),
    "approval": ("who approves {p}?", "does {p} need approval?"),
    "approvals": ("who approves {p}?", "does {p} need approval?"),
    "budget": ("what's the budget for {p}?", "how much can I spend on {p}?"),
    "limits": ("what are the limits for {p}?", "is there a cap on {p}?"),
    "deadlines": ("what are the deadlines for {p}?", "is there a deadline for {p}?"),
    "enrolment": ("how do I enrol in {p}?", "when can I sign up for {p}?"),
    "enrollment": ("how do I enroll in {p}?", "when can I sign up for {p}?"),
    "requirements": ("what are the requirements for {p}?", "what do I need for {p}?"),
    "costs": ("what does {p} cost me?", "who pays for {p}?"),
    "timeline": ("what's the timeline for {p}?", "how long does the {p} process take?"),
    "training": ("is there training for {p}?", "what training do I need for {p}?"),
}
# Headings that are instructions ("Tell your manager", "Submit the form").
IMPERATIVE_VERBS: frozenset[str] = frozenset(
    {
        "tell", "submit", "contact", "create", "add", "get", "make", "ask", "send", "read", "notify",
        "prepare", "take", "fill", "complete", "choose", "follow", "keep", "inform", "register", "apply",
        "talk", "install", "enable", "configure",
    }
)  # fmt: skip
# Headings that open with a preposition ("During your leave", "For reviewers").
PREPOSITION_FRAMES: dict[str, str] = {
    "during": "what happens {b}?",
    "before": "what do I do {b}?",
    "after": "what happens {b}?",
    "while": "what happens {b}?",
    "once": "what happens {b}?",
    "for": "what's expected {b}?",
    "if": "what do I do {b}?",
    "when": "what do I do {b}?",
}
# Headings that are question fragments ("Who is eligible", "What it covers").
WH_WORDS: frozenset[str] = frozenset(
    {"who", "what", "when", "where", "why", "which", "how", "can", "do", "does", "is", "are"}
)

_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_MD_MARKUP = re.compile(r"[*_`~]+")
_EMOJI_ETC = re.compile(r"[^\w\s'’&/+.,:;?()-]+", re.UNICODE)
_NUMBERING = re.compile(r"^(?:\d+[.)]\s*|step\s+\d+\s*[:.-]\s*|q\s*[.:]\s*)", re.IGNORECASE)
_EMAIL = re.compile(r"[\w.+-]+@([\w-]+)\.[\w.-]+")


def clean_heading(raw: str) -> str:
    text = _MD_LINK.sub(r"\1", raw)
    text = _MD_MARKUP.sub("", text)
    text = _EMOJI_ETC.sub(" ", text)
    text = _NUMBERING.sub("", clean_line(text))
    text = re.sub(r"\([^)]*\)", "", text)  # "(US only)" and similar asides
    return clean_line(text).strip(" :;.,-")


def _is_acronym_or_brand(word: str) -> bool:
    """PTO, MFA, GitHub, LinkedIn: upper case inside a word part (hyphenated parts checked apart)."""
    for part in word.strip("'’()").split("-"):
        if len(part) > 1 and (part.isupper() or any(c.isupper() for c in part[1:])):
            return True
    return False


def chat_case(heading: str, proper_nouns: frozenset[str] | None = None) -> str:
    """Lower-case a heading for use inside a sentence.

    Acronyms and CamelCase brands are kept. With ``proper_nouns`` (lower-cased words that the corpus
    capitalises mid-sentence and never writes in lower case), exactly those words keep their capital
    letter ("Lisbon", tool names); without it, a title-case heading is lowered word by word and a
    sentence-case heading only loses the capital of its first word.
    """
    words = heading.split()
    title_case = sum(w[:1].isupper() for w in words) > max(1, len(words) // 2)
    out: list[str] = []
    for i, word in enumerate(words):
        lowered = word.lower()
        parts = [q for q in re.split(r"[-/]", lowered.strip("'’,.()")) if q]
        if _is_acronym_or_brand(word) or not word[:1].isupper():
            out.append(word)
        elif proper_nouns is not None:
            out.append(word if any(q in proper_nouns for q in parts) else lowered)
        elif i == 0 or title_case:
            out.append(lowered)
        else:
            out.append(word)
    text = " ".join(out)
    return re.sub(r"^(the|a|an|our|your)\s+", "", text, flags=re.IGNORECASE)


def find_proper_nouns(bodies: Iterable[str]) -> frozenset[str]:
    """Words written with a capital after a lower-case word, and never in lower case (body text only)."""
    lower: set[str] = set()
    capitalised: set[str] = set()
    for body in bodies:
        for line in body.splitlines():
            if line.lstrip().startswith("#"):
                continue
            lower.update(re.findall(r"\b[a-z][a-z']+\b", line))
            capitalised.update(w.lower() for w in re.findall(r"(?<=[a-z,] )([A-Z][a-z']+)\b", line))
    return frozenset(capitalised - lower)


def second_person_to_first(text: str) -> str:
    """Turn "before your leave" into "before my leave", "while you are away" into "while I am away"."""
    text = re.sub(r"\byou are\b", "I am", text, flags=re.IGNORECASE)
    text = re.sub(r"\byour\b", "my", text, flags=re.IGNORECASE)
    text = re.sub(r"\byourself\b", "myself", text, flags=re.IGNORECASE)
    return re.sub(r"\byou\b", "I", text, flags=re.IGNORECASE)


def company_patterns(names: Iterable[str]) -> list[tuple[re.Pattern[str], str]]:
    patterns: list[tuple[re.Pattern[str], str]] = []
    for name in names:
        esc = re.escape(name)
        patterns += [
            (re.compile(rf"\b(at|in|for|with|joined)\s+{esc}\b", re.IGNORECASE), r"\1 the company"),
            (re.compile(rf"\b{esc}['’]s\b", re.IGNORECASE), "the company's"),
            (re.compile(rf"\b{esc}\b", re.IGNORECASE), "the company"),
        ]
    return patterns


def detect_company_names(texts: Iterable[str]) -> list[str]:
    """Guess the company name from the most common e-mail domain (``people@acme.example`` -> acme)."""
    domains = Counter(m.group(1).lower() for text in texts for m in _EMAIL.finditer(text))
    if not domains:
        return []
    name, count = domains.most_common(1)[0]
    return [name] if count >= 3 and name not in {"gmail", "example", "users", "noreply"} else []


def scrub_company(text: str, patterns: Sequence[tuple[re.Pattern[str], str]]) -> str:
    for pattern, repl in patterns:
        text = pattern.sub(repl, text)
    return text


@dataclass(frozen=True)
class Heading:
    level: int
    text: str  # cleaned
    parent: str  # cleaned text of the nearest higher-level topic heading ("" at top level)
    file: str


def iter_headings(path: Path, root: Path) -> Iterable[Heading | tuple[str, str]]:
    """Yield headings, and ``("faq", question)`` pairs for bold FAQ questions (``**Can I ...?**``)."""
    stack: list[tuple[int, str]] = []
    in_code = False
    rel = path.relative_to(root).as_posix()
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if raw.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code:
            continue
        m = re.match(r"^(#{1,4})\s+(.+?)\s*#*\s*$", raw)
        if m:
            level = len(m.group(1))
            text = clean_heading(m.group(2))
            while stack and stack[-1][0] >= level:
                stack.pop()
            parent = next((t for _, t in reversed(stack) if normalise(t) not in GENERIC_HEADINGS), "")
            yield Heading(level, text, parent, rel)
            stack.append((level, text))
            continue
        q = re.match(r"^\s*(?:[-*]\s+)?\*\*([^*]{8,200}\?)\*\*", raw)
        if q:
            yield ("faq", clean_line(q.group(1)))


def content_words(text: str) -> list[str]:
    stop = {"the", "a", "an", "of", "and", "or", "to", "for", "in", "on", "at", "your", "our", "my", "it"}
    return [w for w in normalise(text).split() if w not in stop]


def heading_questions(
    h: Heading, rng: random.Random, per_heading: int, proper_nouns: frozenset[str] | None = None
) -> list[str]:
    """Chat-style questions for one heading; [] for generic or unusable headings."""
    text = h.text
    key = normalise(text)
    if not text or key in GENERIC_HEADINGS or len(text) > 80 or not re.search(r"[A-Za-z]", text):
        return []
    if text.endswith("?"):  # a heading that already is a question ("Q: Can I ...?")
        return [text[0].lower() + text[1:] if rng.random() < 0.5 else text]
    if ":" in text or key.startswith("not "):
        return []
    words = key.split()
    parent = chat_case(h.parent.rpartition(":")[2].strip(), proper_nouns) if h.parent else ""
    phrase = chat_case(text, proper_nouns)
    if h.level == 1 or not parent:
        if len(words) > 6 or words[0] in WH_WORDS | IMPERATIVE_VERBS | set(PREPOSITION_FRAMES):
            return []
        templates = POLICY_TOPIC_TEMPLATES if words[-1] in POLICY_WORDS else TOPIC_TEMPLATES
        options = [t.format(t=phrase) for t in templates]
        return rng.sample(options, k=min(per_heading + 1, len(options)))
    if words[0] == "how" and len(words) > 2 and words[1] in {"to", "do", "we", "i"}:
        rest = re.sub(r"^(how\s+)(to|do|we|i)\s+((i|we)\s+)?", "", phrase, flags=re.IGNORECASE)
        rest = second_person_to_first(re.sub(r"\bit\b", parent, rest))
        if len(content_words(rest)) >= 2:
            options = [f"how do I {rest}?", f"how do we {rest} here", f"what's the process to {rest}?"]
        else:
            options = [f"{parent}: how do I {rest}?", f"how do I {rest} - {parent}?"]
        return rng.sample(options, k=min(per_heading, len(options)))
    if words[0] == "your" and 1 < len(words) <= 4:
        mine = phrase if not phrase.lower().startswith("your ") else phrase[5:]
        return [rng.choice([f"{parent}: what about my {mine}?", f"question about my {mine} ({parent})"])]
    if words[0] in IMPERATIVE_VERBS and len(words) > 1:
        body = second_person_to_first(text[0].lower() + text[1:])
        return [rng.choice([f"{parent}: do I need to {body}?", f"{parent}: when should I {body}?"])]
    if words[0] in PREPOSITION_FRAMES and len(words) > 1:
        body = second_person_to_first(text[0].lower() + text[1:])
        return [f"{parent}: " + PREPOSITION_FRAMES[words[0]].format(b=body)]
    if len(words) == 1 and words[0] in CONTEXT_TEMPLATES:
        return [rng.choice(CONTEXT_TEMPLATES[words[0]]).format(p=parent)]
    if words[0] in WH_WORDS | {"your"}:
        if len(words) < 3 and words[0] != "how":
            return []
        body = second_person_to_first(phrase)
        if words[0] == "who" and len(words) <= 3 and words[-1] in {"eligible", "qualifies"}:
            return [f"{body} for {parent}?"]
        return [rng.choice([f"{parent}: {body}?", f"question about {parent} - {body}?"])]
    if len(content_words(text)) >= 2 and len(words) <= 6:
        options = [t.format(t=phrase, p=parent) for t in SECTION_TEMPLATES]
        return rng.sample(options, k=min(per_heading, len(options)))
    return [rng.choice(SUBTOPIC_TEMPLATES).format(p=parent, s=phrase)]


def load_corpus_questions(
    corpus_dir: Path, rng: random.Random, per_heading: int, max_questions: int, company: Sequence[str]
) -> list[Example]:
    files = sorted(p for p in corpus_dir.rglob("*.md") if p.is_file())
    if not files:
        raise SystemExit(f"no markdown files under {corpus_dir}")
    bodies = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    names = list(company) or detect_company_names(bodies)
    patterns = company_patterns(names)
    proper_nouns = find_proper_nouns(bodies)
    by_file: dict[str, list[Example]] = defaultdict(list)
    for path in files:
        rel = path.relative_to(corpus_dir).as_posix()
        for item in iter_headings(path, corpus_dir):
            if isinstance(item, Heading):
                texts = heading_questions(item, rng, per_heading, proper_nouns)
                group = f"corpus:{rel}#{normalise(item.text)}"
            else:
                texts = [item[1]]
                group = f"corpus:{rel}#faq:{normalise(item[1])}"
            for text in texts:
                text = clean_line(scrub_company(text, patterns))
                if 2 <= len(text.split()) <= 40:
                    by_file[rel].append(Example(text, "knowledge", ORIGIN_CORPUS, group))
    # Round-robin over files so that a cap does not drop whole documents.
    queues = [by_file[k] for k in sorted(by_file)]
    for queue in queues:
        rng.shuffle(queue)
    out: list[Example] = []
    while any(queues) and len(out) < max_questions:
        for queue in queues:
            if queue and len(out) < max_questions:
                out.append(queue.pop())
    return out


# --------------------------------------------------------------------------------------------------
# assembling, balancing and splitting


def load_generalisation_keys(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    keys: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            keys.add(normalise(json.loads(line)["text"]))
    return keys


def deduplicate(examples: Sequence[Example], banned: set[str]) -> tuple[list[Example], Counter[str]]:
    """Keep the first text per normalised key, preferring hand-written, then corpus, then composed."""
    dropped: Counter[str] = Counter()
    seen: dict[str, Example] = {}
    order = sorted(range(len(examples)), key=lambda i: (ORIGIN_PRIORITY[examples[i].origin], i))
    for i in order:
        ex = examples[i]
        key = normalise(ex.text)
        if not key:
            dropped["empty"] += 1
        elif key in banned:
            dropped["in_generalisation_set"] += 1
        elif key in seen:
            other = seen[key]
            if other.label != ex.label:
                if ex.origin == ORIGIN_HAND and other.origin == ORIGIN_HAND:
                    raise SystemExit(
                        f"conflicting hand-written labels for {ex.text!r}: {other.label}/{ex.label}"
                    )
                dropped["label_conflict"] += 1
            else:
                dropped["duplicate"] += 1
        else:
            seen[key] = ex
    return list(seen.values()), dropped


def balance(examples: Sequence[Example], rng: random.Random) -> list[Example]:
    """Trim composed examples so each label approaches LABEL_SHARE; never drops other origins."""
    fixed: dict[str, list[Example]] = defaultdict(list)
    composed: dict[str, list[Example]] = defaultdict(list)
    for ex in examples:
        (composed if ex.origin == ORIGIN_COMPOSED else fixed)[ex.label].append(ex)
    # The "direct" label (all of it) sets the scale; the others are sized relative to it.
    unit = (len(fixed["direct"]) + len(composed["direct"])) / LABEL_SHARE["direct"]
    out: list[Example] = []
    for label in LABELS:
        target = round(unit * LABEL_SHARE[label])
        budget = max(0, target - len(fixed[label]))
        pool = composed[label]
        out.extend(fixed[label])
        out.extend(round_robin_sample(pool, budget, rng))
    return out


def round_robin_sample(pool: Sequence[Example], k: int, rng: random.Random) -> list[Example]:
    """Up to k examples spread evenly over frames."""
    by_frame: dict[str, list[Example]] = defaultdict(list)
    for ex in pool:
        by_frame[ex.group.split("|", 1)[0]].append(ex)
    queues = [by_frame[k_] for k_ in sorted(by_frame)]
    for queue in queues:
        rng.shuffle(queue)
    out: list[Example] = []
    while any(queues) and len(out) < k:
        for queue in queues:
            if queue and len(out) < k:
                out.append(queue.pop())
    return out


def split_examples(
    examples: Sequence[Example], fractions: Sequence[float], rng: random.Random
) -> dict[str, list[Example]]:
    """Stratified by label; whole groups go to one split, filling the emptiest split (by target)."""
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for label in LABELS:
        groups: dict[str, list[Example]] = defaultdict(list)
        for ex in examples:
            if ex.label == label:
                groups[ex.group].append(ex)
        keys = sorted(groups)
        rng.shuffle(keys)
        # Big groups first so they cannot overshoot the small splits late in the process.
        keys.sort(key=lambda g: -len(groups[g]))
        total = sum(len(v) for v in groups.values())
        filled = dict.fromkeys(SPLITS, 0)
        for g in keys:
            deficit = {s: fractions[i] * total - filled[s] for i, s in enumerate(SPLITS)}
            target = max(SPLITS, key=lambda s: (deficit[s], -SPLITS.index(s)))
            splits[target].extend(groups[g])
            filled[target] += len(groups[g])
    for name in SPLITS:
        rng.shuffle(splits[name])
    return splits


# --------------------------------------------------------------------------------------------------
# output


def to_jsonl(examples: Iterable[Example]) -> str:
    return "".join(
        json.dumps({"text": e.text, "label": e.label}, ensure_ascii=False) + "\n" for e in examples
    )


def verify(out_dir: Path) -> dict[str, Counter[str]]:
    """Re-read the written files: every line parses, labels are known, no text is in two splits."""
    counts: dict[str, Counter[str]] = {}
    owner: dict[str, str] = {}
    for split in SPLITS:
        counts[split] = Counter()
        for n, line in enumerate((out_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            if set(row) != {"text", "label"} or row["label"] not in LABELS or not row["text"].strip():
                raise SystemExit(f"{split}.jsonl:{n}: bad row {row!r}")
            key = normalise(row["text"])
            if key in owner:
                raise SystemExit(f"{split}.jsonl:{n}: text also in {owner[key]}: {row['text']!r}")
            owner[key] = split
            counts[split][row["label"]] += 1
    return counts


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="hand-written sources")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSONL splits go")
    parser.add_argument("--corpus", type=Path, default=None, help="markdown folder to derive questions from")
    parser.add_argument("--company-name", action="append", default=[],
                        help="company name to replace with 'the company' in corpus questions "
                             "(repeatable; default: guessed from the corpus's e-mail domain)")  # fmt: skip
    parser.add_argument("--per-heading", type=int, default=2, help="questions per corpus heading")
    parser.add_argument("--max-corpus-questions", type=int, default=300)
    parser.add_argument("--generalisation-set", type=Path, default=DEFAULT_GENERALISATION,
                        help="JSONL whose texts must never appear in the splits")  # fmt: skip
    parser.add_argument(
        "--split", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST")
    )
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    if abs(sum(args.split) - 1.0) > 1e-6 or min(args.split) < 0:
        parser.error("--split fractions must be non-negative and sum to 1")
    if args.corpus is not None and not args.corpus.is_dir():
        parser.error(f"--corpus {args.corpus} is not a directory")
    return args


def build_dataset(
    source: Path,
    out: Path,
    *,
    corpus: Path | None = None,
    company: Sequence[str] = (),
    per_heading: int = 2,
    max_corpus_questions: int = 300,
    generalisation_set: Path = DEFAULT_GENERALISATION,
    split: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 13,
) -> dict[str, object]:
    """Build the splits from `source` (and `corpus`'s headings) into `out`; return the manifest written."""
    rng = random.Random(seed)

    examples = load_hand_written(source)
    if corpus is not None:
        examples += load_corpus_questions(corpus, rng, per_heading, max_corpus_questions, company)
    examples += load_composed(source / "compose", rng)

    unique, dropped = deduplicate(examples, load_generalisation_keys(generalisation_set))
    final = balance(unique, rng)
    splits = split_examples(final, split, rng)

    for name in SPLITS:
        atomic_write(out / f"{name}.jsonl", to_jsonl(splits[name]))
    counts = verify(out)

    by_origin: dict[str, Counter[str]] = {o: Counter() for o in ORIGIN_PRIORITY}
    for ex in final:
        by_origin[ex.origin][ex.label] += 1
    manifest: dict[str, object] = {
        "seed": seed,
        "corpus": None if corpus is None else os.path.relpath(corpus.resolve(), REPO_ROOT),
        "split_fractions": list(split),
        "counts": {s: {label: counts[s][label] for label in LABELS} for s in SPLITS},
        "by_origin": {o: {label: by_origin[o][label] for label in LABELS} for o in by_origin},
        "dropped": dict(sorted(dropped.items())),
        "total": sum(sum(c.values()) for c in counts.values()),
    }
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    manifest = build_dataset(
        args.source,
        args.out,
        corpus=args.corpus,
        company=args.company_name,
        per_heading=args.per_heading,
        max_corpus_questions=args.max_corpus_questions,
        generalisation_set=args.generalisation_set,
        split=args.split,
        seed=args.seed,
    )
    json.dump(manifest, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
