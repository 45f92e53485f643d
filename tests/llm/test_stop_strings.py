from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.llm.stop_strings import StopStringMatcher

pytestmark = pytest.mark.unit


def _run(pieces: list[str], stops: tuple[str, ...]) -> tuple[str, bool]:
    matcher = StopStringMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


def test_stop_split_across_pieces_is_caught_and_never_leaks() -> None:
    matcher = StopStringMatcher(["END"])
    assert matcher.feed("hello E") == ("hello ", False)  # "E" is held back
    assert matcher.feed("N") == ("", False)
    assert matcher.feed("D and more") == ("", True)


def test_false_start_is_released() -> None:
    assert _run(["abc E", "Xyz"], ("END",)) == ("abc EXyz", False)


def test_earliest_of_several_stops_wins() -> None:
    assert _run(["one two three"], ("three", "two")) == ("one ", True)


@given(st.text(alphabet="abcXY", max_size=40), st.lists(st.integers(1, 5), max_size=12))
def test_any_chunking_gives_the_same_result_as_whole_text(text: str, sizes: list[int]) -> None:
    stops = ("XY", "bca")
    pieces, i = [], 0
    for size in sizes:
        pieces.append(text[i : i + size])
        i += size
    pieces.append(text[i:])
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    expected = (text[:cut], True) if cut >= 0 else (text, False)
    assert _run(pieces, stops) == expected
