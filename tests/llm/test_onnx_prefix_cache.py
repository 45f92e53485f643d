"""The prefix cache's choices (which kept generator a prompt gets), with a stand-in for og.Generator."""

from __future__ import annotations

import pytest

from services.llm.onnx_prefix_cache import MIN_PREFILLED_TOKENS, PrefixCache, shared_prefix_length

SYSTEM = list(range(100, 140))  # a pipeline's rendered system prompt
OTHER_SYSTEM = list(range(500, 540))


class FakeGenerator:
    """og.Generator's sequence bookkeeping: append, rewind, and the tokens of an answer."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sequence: list[int] = []

    def rewind_to(self, length: int) -> None:
        assert length <= len(self.sequence) or (length == 0 and not self.sequence)
        del self.sequence[length:]

    def append_tokens(self, tokens: list[int]) -> None:
        self.sequence.extend(tokens)

    def generate(self, tokens: list[int]) -> None:
        self.sequence.extend(tokens)


class Factory:
    def __init__(self) -> None:
        self.made: list[FakeGenerator] = []

    def __call__(self) -> FakeGenerator:
        generator = FakeGenerator(f"g{len(self.made)}")
        self.made.append(generator)
        return generator


def serve(
    cache: PrefixCache, make: Factory, prompt: list[int], answer: list[int], key: str = "greedy"
) -> int:
    """One request through the cache, as the backend runs it; returns how many prompt tokens were reused."""
    lease = cache.take(key, prompt, make)
    assert lease is not None
    lease.generator.append_tokens(prompt[lease.reused :])
    lease.generator.generate(answer)
    cache.give_back(lease, intact=True)
    return lease.reused


def test_shared_prefix_length() -> None:
    assert shared_prefix_length([1, 2, 3], [1, 2, 4, 5]) == 2
    assert shared_prefix_length([], [1]) == 0
    assert shared_prefix_length([1, 2], [1, 2, 3]) == 2


def test_a_second_prompt_reuses_the_shared_system_prompt_once_every_slot_is_made() -> None:
    cache, make = PrefixCache(slots=2, tokens=1000), Factory()
    assert serve(cache, make, SYSTEM + [1, 2, 3], [7, 8]) == 0
    # A free slot gets a new generator: the first prompt's own prefix stays for its next turn.
    assert serve(cache, make, SYSTEM + [4, 5], [9]) == 0
    assert serve(cache, make, SYSTEM + [1, 2, 3, 7, 6], [9]) == len(SYSTEM) + 3
    assert serve(cache, make, SYSTEM + [6, 6], [9]) == len(SYSTEM)
    assert len(make.made) == 2


def test_the_next_turn_reuses_the_previous_prompt_but_not_its_answer() -> None:
    cache, make = PrefixCache(slots=2, tokens=1000), Factory()
    first = SYSTEM + [1, 2]
    serve(cache, make, first, [7, 8, 9])
    # The answer's KV came from one-token decode steps, which round otherwise than a prefill.
    assert serve(cache, make, first + [7, 8, 9, 3], [5]) == len(first)
    assert len(make.made) == 1


def test_a_prompt_that_is_all_held_still_prefills_its_last_tokens() -> None:
    cache, make = PrefixCache(slots=1, tokens=1000), Factory()
    serve(cache, make, SYSTEM + [1, 2], [7])
    lease = cache.take("greedy", SYSTEM + [1, 2], make)
    assert lease is not None and lease.reused == len(SYSTEM) + 2 - MIN_PREFILLED_TOKENS
    assert lease.generator.sequence == SYSTEM
    cache.give_back(lease, intact=False)
    short = cache.take("greedy", [4], make)
    assert short is not None and short.reused == 0


def test_each_pipelines_system_prompt_keeps_its_own_generator() -> None:
    cache, make = PrefixCache(slots=2, tokens=1000), Factory()
    serve(cache, make, SYSTEM + [1, 1], [7])
    assert serve(cache, make, OTHER_SYSTEM + [1, 1], [7]) == 0
    assert serve(cache, make, SYSTEM + [2, 2], [7]) == len(SYSTEM)
    assert serve(cache, make, OTHER_SYSTEM + [2, 2], [7]) == len(OTHER_SYSTEM)
    assert serve(cache, make, SYSTEM + [3, 3], [7]) == len(SYSTEM)
    assert len(make.made) == 2


def test_a_tie_rewinds_the_least_recently_used_so_the_last_prompt_keeps_its_next_turn() -> None:
    cache, make = PrefixCache(slots=2, tokens=1000), Factory()
    serve(cache, make, SYSTEM + [1, 1], [7])
    serve(cache, make, SYSTEM + [2, 2], [7])
    serve(cache, make, SYSTEM + [3, 3], [7])  # rewinds the [1, 1] generator
    assert serve(cache, make, SYSTEM + [2, 2, 7, 5, 5], [7]) == len(SYSTEM) + 2
    assert serve(cache, make, SYSTEM + [3, 3, 7, 5, 5], [7]) == len(SYSTEM) + 2


def test_when_every_slot_is_made_the_longest_shared_prefix_is_rewound() -> None:
    cache, make = PrefixCache(slots=2, tokens=1000), Factory()
    serve(cache, make, SYSTEM + [1, 1], [7])
    serve(cache, make, OTHER_SYSTEM + [1, 1], [7])
    assert serve(cache, make, SYSTEM[:3] + [9, 9], [7]) == 3
    assert len(make.made) == 2


def test_another_keys_least_recently_used_generator_makes_room() -> None:
    cache, make = PrefixCache(slots=2, tokens=1000), Factory()
    serve(cache, make, SYSTEM, [7], key="a")
    serve(cache, make, SYSTEM, [7], key="b")
    serve(cache, make, SYSTEM, [7], key="a")  # "b" is now the least recently used
    assert serve(cache, make, SYSTEM, [7], key="c") == 0
    assert len(make.made) == 3
    assert serve(cache, make, SYSTEM + [1, 1], [7], key="a") == len(SYSTEM)  # "a" was kept
    assert serve(cache, make, SYSTEM + [1, 1], [7], key="b") == 0  # "b" was dropped
    assert len(make.made) == 4


def test_generators_are_never_shared_between_keys() -> None:
    cache, make = PrefixCache(slots=1, tokens=1000), Factory()
    serve(cache, make, SYSTEM, [7], key="greedy")
    assert serve(cache, make, SYSTEM + [1, 1], [7], key="sampled") == 0
    assert make.made[1].sequence[: len(SYSTEM)] == SYSTEM


def test_with_every_slot_lent_a_request_gets_none() -> None:
    cache, make = PrefixCache(slots=1, tokens=1000), Factory()
    lease = cache.take("greedy", SYSTEM, make)
    assert lease is not None
    assert cache.take("greedy", SYSTEM, make) is None
    lease.generator.append_tokens(SYSTEM)
    cache.give_back(lease, intact=True)
    assert cache.take("greedy", SYSTEM, make) is not None


def test_a_generator_that_failed_is_dropped() -> None:
    cache, make = PrefixCache(slots=1, tokens=1000), Factory()
    lease = cache.take("greedy", SYSTEM, make)
    assert lease is not None
    cache.give_back(lease, intact=False)
    assert serve(cache, make, SYSTEM + [1, 1], [7]) == 0
    assert len(make.made) == 2


def test_a_failed_create_frees_its_slot() -> None:
    cache = PrefixCache(slots=1, tokens=1000)

    def broken() -> FakeGenerator:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        cache.take("greedy", SYSTEM, broken)
    assert cache.take("greedy", SYSTEM, Factory()) is not None


def test_fits_bounds_a_request_by_the_kept_buffer() -> None:
    assert PrefixCache(slots=2, tokens=100).fits(100)
    assert not PrefixCache(slots=2, tokens=100).fits(101)
    assert not PrefixCache(slots=0, tokens=100).fits(10)


def test_clear_drops_idle_generators_and_those_given_back_later() -> None:
    cache, make = PrefixCache(slots=2, tokens=1000), Factory()
    serve(cache, make, SYSTEM, [7])
    lease = cache.take("greedy", OTHER_SYSTEM, make)
    assert lease is not None
    cache.clear()
    cache.give_back(lease, intact=True)
    assert not cache.fits(10)
    assert cache.take("greedy", SYSTEM, make) is None
