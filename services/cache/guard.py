"""Decides whether two queries that embed close may share an answer: they must carry the same numbers,
negations, polarity, named entities and quantities. Embeddings place "turn off dark mode" next to "turn on
dark mode" and "5 vacation days" next to "15 vacation days"; these markers are what tells them apart.

Every check errs towards a miss: a marker one query has and the other lacks blocks the hit, so a false
miss costs one generation while a false hit would serve a wrong answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

# Cardinal and ordinal number words, and their multipliers; a run of them is one number ("twenty five").
_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
    "first": 1, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9,
    "tenth": 10, "twelfth": 12, "twentieth": 20, "dozen": 12, "half": 0.5, "quarter": 0.25,
    "once": 1, "twice": 2, "thrice": 3, "single": 1, "double": 2, "triple": 3,
}  # fmt: skip
_MULTIPLIERS = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
# Suffix multipliers written against digits: 5k, 2M, 1.5bn.
_DIGIT_SUFFIX = {"k": 1_000, "m": 1_000_000, "mn": 1_000_000, "bn": 1_000_000_000, "b": 1_000_000_000}

# Negation cues (closed class). "n't" is split off by the tokenizer; "cannot" is one word for "can not".
_NEGATIONS = frozenset(
    {"not", "n't", "no", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "without",
     "cannot", "nope", "non", "excluding", "except", "lack", "lacking"}
)  # fmt: skip

# Words with a direction on an axis: two queries must agree on each axis they mention. Grouped by axis,
# so that "turn off" and "disable" agree while "turn off" and "turn on" do not.
_POLARITY: dict[str, tuple[str, int]] = {}
for _axis, _plus, _minus in (
    (
        "active",
        "enable enabled enabling activate activated start started starting turn_on switch_on "
        "open opened unlock unlocked allow allowed permit permitted install connect subscribe login "
        "join accept approve approved include included true",
        "disable disabled disabling deactivate deactivated stop stopped stopping turn_off switch_off "
        "close closed lock locked deny denied forbid forbidden blocked uninstall disconnect "
        "unsubscribe logout reject rejected decline exclude excluded false",
    ),
    (
        "amount",
        "increase increased raise raised more most maximum higher highest add added grow "
        "above exceed upgrade",
        "decrease decreased lower lowered less least fewer minimum lowest "
        "reduce reduced remove removed cut shrink below downgrade",
    ),
    ("time", "after later next following future since", "before earlier previous last prior past until"),
    (
        "transfer",
        "buy purchase import upload receive incoming inbound",
        "sell export download send outgoing outbound",
    ),
    ("sign", "positive plus gain profit", "negative minus loss"),
):
    for _word in _plus.split():
        _POLARITY[_word] = (_axis, 1)
    for _word in _minus.split():
        _POLARITY[_word] = (_axis, -1)
# Particles that form a phrasal verb with the verb before them ("turn the lights off").
_PARTICLES = {"on": "turn_on", "off": "turn_off"}
_SWITCH_VERBS = frozenset({"turn", "turned", "turning", "switch", "switched", "switching", "toggle", "set",
                           "put", "keep", "flip", "shut", "power", "powered", "log", "sign"})  # fmt: skip
_PARTICLE_WINDOW = 4

# Unit spellings -> one name, so "5 GB" and "5 gigabytes" agree and "5 days" and "5 weeks" do not.
_UNIT_ALIASES = {
    "%": "percent", "pct": "percent", "percentage": "percent", "$": "usd", "usd": "usd", "dollar": "usd",
    "€": "eur", "eur": "eur", "euro": "eur", "£": "gbp", "gbp": "gbp", "pound": "gbp",
    "s": "second", "sec": "second", "secs": "second", "min": "minute", "mins": "minute", "h": "hour",
    "hr": "hour", "hrs": "hour", "d": "day", "wk": "week", "wks": "week", "mo": "month", "yr": "year",
    "yrs": "year", "am": "am", "pm": "pm", "kb": "kb", "kilobyte": "kb", "mb": "mb", "megabyte": "mb",
    "gb": "gb", "gigabyte": "gb", "tb": "tb", "terabyte": "tb", "km": "km", "kilometre": "km",
    "kilometer": "km", "mi": "mile", "m": "metre", "meter": "metre", "cm": "cm", "mm": "mm", "kg": "kg",
    "kilogram": "kg", "g": "gram", "lb": "pound_mass", "lbs": "pound_mass", "x": "times",
}  # fmt: skip
# Units under their own name; with the aliases, what a quantity's unit is looked for first.
_UNIT_NAMES = frozenset(
    """second minute hour day night week weekend month quarter year decade business_day shift
    percent usd eur gbp dollar cent euro pound kb mb gb tb byte bit km mile metre cm mm kg gram ton litre
    degree celsius fahrenheit person people employee user seat time""".split()
) | frozenset(_UNIT_ALIASES.values())
# Comparators that give the number after them a direction ("over $500" is not "under $500").
_COMPARATORS = {
    "over": 1, "above": 1, "exceeding": 1, "beyond": 1, "past": 1, "under": -1, "below": -1, "within": -1,
    "upto": -1,
}  # fmt: skip
# Words starting with "un" that are not "un-" + a word (a negation).
_NOT_UN_NEGATIONS = ("uni", "under", "until", "unto", "unless", "uncle")
# Words that may stand between a number and its unit without being the unit ("5 more days").
_UNIT_SKIP = frozenset({"more", "extra", "additional", "other", "whole", "full", "of", "the", "a", "per"})

# Sentence-initial words that are not names even though they are capitalised: function words and the
# verbs a request starts with. Any other capitalised first word counts as a name (the safe direction).
_NOT_NAMES = frozenset(
    """a an the this that these those there here it its i i'm i've i'd me my mine we our us you your
    he she they them their his her what whats what's which who whom whose when where why how whether if
    is are was were be been am do does did done have has had can could will would shall should may might
    must please tell give show list explain describe summarise summarize write help find let lets let's
    turn switch set enable disable reset change update add remove create delete book request submit
    check get make send open close cancel apply schedule register compare calculate convert translate
    and or but so then also any some all each every no not yes ok okay hi hello hey thanks thank
    in on at for from to of by with about into over under after before during since until as
    quick just still now today tomorrow yesterday again hmm well so""".split()
)

_TOKEN = re.compile(
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"  # email
    r"|https?://\S+"  # url
    r"|[$€£]"  # currency sign
    r"|\d+(?:[.,]\d+)*(?:st|nd|rd|th)?"  # number (1,000 / 2.5 / 3rd)
    r"|n't"
    r"|[^\W\d_]+(?:['’][^\W\d_]+)*"  # word, with an inner apostrophe
    r"|%"
    r"|[.!?;:]"  # sentence / clause ends
)
_CURRENCY_SIGNS = frozenset("$€£")
_RATE_WORDS = frozenset({"per", "each", "every"})
# Prefixes that negate the word they are put on ("unpaid" / "paid", "non-exempt" / "exempt").
_NEGATING_PREFIXES = ("non-", "non", "un", "dis", "in", "im", "ir", "il", "de", "anti-", "anti")
# Always capitalised, never a name.
_CAPITALISED_WORDS = frozenset({"i", "i'm", "i've", "i'd", "i'll"})
_QUOTED = re.compile(r"[\"“”]([^\"“”]{1,80})[\"“”]|(?<!\w)['‘]([^'‘’]{1,80})['’](?!\w)")
_SENTENCE_END = frozenset({".", "!", "?", ";", ":"})


@dataclass(frozen=True, slots=True)
class QueryMarkers:
    """What must be equal between a query and a cached query for the cached answer to apply."""

    numbers: tuple[float, ...]
    negations: int
    polarity: frozenset[tuple[str, int]]
    # In order of first appearance: "from Lisbon to Berlin" is not "from Berlin to Lisbon".
    entities: tuple[str, ...]
    quantities: frozenset[tuple[float, str]]
    words: frozenset[str]


_IRREGULAR_NEGATIVES = {"can": "can n't", "won": "will n't", "shan": "shall n't"}


def _tokens(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).replace("’", "'")
    # Split contractions so "don't" yields "do" + "n't" and "can't" / "won't" their verbs.
    text = re.sub(r"(?i)\b(can|won|shan)'t\b", lambda m: _IRREGULAR_NEGATIVES[m.group(1).lower()], text)
    text = re.sub(r"(?i)(\w)n't\b", r"\1 n't", text)
    return _TOKEN.findall(text)


def _digit_value(token: str) -> float | None:
    core = re.sub(r"(st|nd|rd|th)$", "", token.lower())
    # "1,000" groups thousands; "2,5" (a decimal comma) is rare in English and read as two numbers' text.
    if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", core):
        core = core.replace(",", "")
    try:
        return float(core)
    except ValueError:
        return None


def _read_numbers(words: list[str]) -> list[tuple[int, int, float]]:
    """(first index, last index, value) of each number: digits, or a run of number words."""
    found: list[tuple[int, int, float]] = []
    i = 0
    while i < len(words):
        word = words[i].lower()
        value = _digit_value(word) if word[0].isdigit() else None
        if value is not None:
            end = i
            if i + 1 < len(words) and words[i + 1].lower() in _DIGIT_SUFFIX:
                value *= _DIGIT_SUFFIX[words[i + 1].lower()]
                end = i + 1
            elif i + 1 < len(words) and words[i + 1].lower() in _MULTIPLIERS:
                value *= _MULTIPLIERS[words[i + 1].lower()]
                end = i + 1
            found.append((i, end, value))
            i = end + 1
            continue
        if word in _UNITS or word in _MULTIPLIERS:
            start, total, current = i, 0.0, 0.0
            while i < len(words) and _continues_number_words(words, i, start):
                w = words[i].lower()
                if w in _UNITS:
                    current += _UNITS[w]
                elif w in _MULTIPLIERS:
                    current = max(current, 1.0) * _MULTIPLIERS[w]
                    if _MULTIPLIERS[w] >= 1000:
                        total, current = total + current, 0.0
                i += 1
            found.append((start, i - 1, total + current))
            continue
        i += 1
    return found


def _continues_number_words(words: list[str], i: int, start: int) -> bool:
    """True while words[i] extends the run of number words begun at `start` ("two hundred and five")."""
    word = words[i].lower()
    if word in _UNITS or word in _MULTIPLIERS:
        return True
    return word == "and" and i > start and i + 1 < len(words) and words[i + 1].lower() in _UNITS


def _singular(word: str) -> str:
    if len(word) > 3 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _known_unit(word: str) -> str | None:
    lower = word.lower()
    for form in (lower, _singular(lower)):
        if form in _UNIT_ALIASES:
            return _UNIT_ALIASES[form]
        if form in _UNIT_NAMES:
            return form
    return None


def _unit_after(words: list[str], index: int) -> str | None:
    """The unit of the number ending at `index`: a known unit among the next three words ("5 unused
    vacation days"), else the first word after it that is not a filler."""
    for word in words[index + 1 : index + 4]:
        if word in _SENTENCE_END:
            break
        unit = _known_unit(word)
        if unit is not None:
            return unit
    for word in words[index + 1 : index + 4]:
        lower = word.lower()
        if lower in _SENTENCE_END:
            return None
        if lower in _UNIT_SKIP:
            continue
        if lower in _UNIT_ALIASES:
            return _UNIT_ALIASES[lower]
        singular = _singular(lower)
        if singular in _UNIT_ALIASES:
            return _UNIT_ALIASES[singular]
        return singular if lower.isalpha() else None
    return None


def _polarity(lowered: list[str], number_starts: set[int]) -> frozenset[tuple[str, int]]:
    found: set[tuple[str, int]] = set()
    for i, word in enumerate(lowered):
        if word in _COMPARATORS:
            # "over $500", "under 5 days": the sign of a bound, only when a number follows.
            after = i + 2 if i + 1 < len(lowered) and lowered[i + 1] in _CURRENCY_SIGNS else i + 1
            if after in number_starts:
                found.add(("bound", _COMPARATORS[word]))
            continue
        if word in _PARTICLES:
            # "on"/"off" are a direction only after a switch verb ("turn the VPN off"), or at the very end.
            before = lowered[max(0, i - _PARTICLE_WINDOW) : i]
            if any(v in _SWITCH_VERBS for v in before) or i == len(lowered) - 1:
                found.add(_POLARITY[_PARTICLES[word]])
            continue
        if word in _POLARITY:
            found.add(_POLARITY[word])
    return frozenset(found)


def _entities(text: str, words: list[str]) -> tuple[str, ...]:
    """Names: capitalised words (a sentence's first too, unless a function or request word), acronyms,
    e-mail addresses, URLs and quoted strings; compared case-folded,
    each once, in order."""
    quoted = (double or single for double, single in _QUOTED.findall(text))
    found: dict[str, None] = {match.casefold().strip(): None for match in quoted}
    sentence_start = True
    for word in words:
        if word in _SENTENCE_END:
            sentence_start = True
            continue
        first, sentence_start = sentence_start, False
        if "@" in word or word.lower().startswith(("http://", "https://")):
            found[word.casefold().rstrip(".,")] = None
        elif word.lower() in _CAPITALISED_WORDS:
            continue
        elif word.lower() in _UNIT_ALIASES or _singular(word.lower()) in _UNIT_ALIASES:
            continue  # a unit ("GB", "USD") is compared as part of its quantity
        elif word[0].isupper() and not (first and word.lower() in _NOT_NAMES):
            found[word.casefold()] = None
    return tuple(found)


def markers(text: str) -> QueryMarkers:
    words = _tokens(text)
    lowered = [w.lower() for w in words]
    numbers = _read_numbers(words)
    quantities: set[tuple[float, str]] = set()
    for i, word in enumerate(lowered[:-1]):
        unit = _known_unit(lowered[i + 1]) if word in _RATE_WORDS else None
        if unit is not None:
            quantities.add((1.0, unit))  # a rate: "per mile" is not "per kilometre"
    for start, end, value in numbers:
        unit = _unit_after(words, end)
        if start > 0 and words[start - 1] in _CURRENCY_SIGNS:
            unit = _UNIT_ALIASES[words[start - 1]]
        if unit is not None:
            quantities.add((value, unit))
    return QueryMarkers(
        numbers=tuple(sorted(value for _, _, value in numbers)),
        negations=sum(1 for w in lowered if w in _NEGATIONS or _negated_word(w)),
        polarity=_polarity(lowered, {start for start, _, _ in numbers}),
        entities=_entities(text, words),
        quantities=frozenset(quantities),
        words=frozenset(w for w in lowered if w.isalpha() or "-" in w),
    )


def mismatch(query: QueryMarkers, cached: QueryMarkers) -> str | None:
    """The first marker that differs (numbers, negation, polarity, entities, quantities), or None."""
    if Counter(query.numbers) != Counter(cached.numbers):
        return "numbers"
    if query.negations != cached.negations:
        return "negation"
    if query.polarity != cached.polarity:
        return "polarity"
    if query.entities != cached.entities:
        return "entities"
    if query.quantities != cached.quantities:
        return "quantities"
    if _negated_by_prefix(query.words, cached.words) or _negated_by_prefix(cached.words, query.words):
        return "negation"
    return None


def _negated_word(word: str) -> bool:
    """ "unpaid", "non-exempt", "nonrefundable": a word negated by its un-/non- prefix."""
    if word.startswith("non") and len(word) >= 6 and word not in ("nonetheless", "noncommittal"):
        return word[3:4] == "-" or word[3:4].isalpha()
    return word.startswith("un") and len(word) >= 6 and not word.startswith(_NOT_UN_NEGATIONS)


def _negated_by_prefix(words: frozenset[str], other: frozenset[str]) -> bool:
    """True when a word only `words` has is a word only `other` has with a negating prefix."""
    only_other = other - words
    return any(
        word.startswith(prefix) and word[len(prefix) :] in only_other
        for word in words - other
        for prefix in _NEGATING_PREFIXES
    )


def same_meaning_markers(query: str, cached: str) -> bool:
    return mismatch(markers(query), markers(cached)) is None
