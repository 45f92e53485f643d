"""Traffic mixes: parse `knowledge=0.5,direct=0.33,out_of_scope=0.17`, draw a seeded workload at a mix.

A mix is the share of requests per request class. The classes are the eval set's routes, named as users
think of them: `knowledge` questions need the handbook (route `rag`), `direct` ones need none, and
`out_of_scope` ones should be refused.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.evaluation.scoring import EvalItem

# Request class -> the eval file's route name.
CLASS_ROUTES: dict[str, str] = {"knowledge": "rag", "direct": "direct", "out_of_scope": "out_of_scope"}
ROUTE_CLASSES: dict[str, str] = {route: name for name, route in CLASS_ROUTES.items()}
DEFAULT_MIX_TEXT = "knowledge=0.5,direct=0.33,out_of_scope=0.17"
MIX_REASON = (
    "an internal assistant's traffic: half the requests ask the handbook, a third ask for general help "
    "(writing, arithmetic, translation) and a sixth are off-topic, the mix issue 23 names; the eval file's "
    "own mix reflects how the eval set was written, not how people use an assistant"
)


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares per request class, summing to 1 (classes absent from the text have share 0)."""

    shares: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        for name, share in self.shares:
            if name not in CLASS_ROUTES:
                raise ValueError(f"mix class must be one of {', '.join(CLASS_ROUTES)}, got {name!r}")
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"mix share must be in [0, 1], got {name}={share:g}")
        total = sum(share for _, share in self.shares)
        if abs(total - 1.0) > 0.011:  # two-decimal shares such as 0.33 + 0.17 + 0.5 are fine
            raise ValueError(f"mix shares must sum to 1, got {total:g} in {self.text()!r}")

    def share(self, name: str) -> float:
        """The normalised share of a class (0 when the mix omits it)."""
        total = sum(share for _, share in self.shares)
        return dict(self.shares).get(name, 0.0) / total

    def as_dict(self) -> dict[str, float]:
        return {name: self.share(name) for name in CLASS_ROUTES}

    def text(self) -> str:
        return ",".join(f"{name}={share:g}" for name, share in self.shares)


def parse_mix(text: str) -> Mix:
    """`knowledge=0.5,direct=0.33,out_of_scope=0.17` -> Mix; ValueError naming the bad part."""
    shares: list[tuple[str, float]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"mix part must be CLASS=SHARE, got {part!r}")
        if name in dict(shares):
            raise ValueError(f"mix class given twice: {name!r}")
        try:
            share = float(value)
        except ValueError as exc:
            raise ValueError(f"mix share must be a number, got {part!r}") from exc
        shares.append((name, share))
    if not shares:
        raise ValueError(f"mix needs at least one CLASS=SHARE, got {text!r}")
    return Mix(tuple(shares))


def with_knowledge_share(knowledge: float, base: Mix) -> Mix:
    """`base` with its knowledge share set to `knowledge` and the rest split as in `base` (evenly if none)."""
    others = [name for name in CLASS_ROUTES if name != "knowledge"]
    rest = sum(base.share(name) for name in others)
    weights = {n: base.share(n) / rest if rest > 0 else 1.0 / len(others) for n in others}
    return Mix((("knowledge", knowledge), *((n, (1.0 - knowledge) * weights[n]) for n in others)))


def class_counts(mix: Mix, n: int) -> dict[str, int]:
    """n requests split by the mix, by largest remainder, so the counts sum to n exactly."""
    if n <= 0:
        raise ValueError(f"workload size must be > 0, got {n}")
    exact = {name: mix.share(name) * n for name in CLASS_ROUTES}
    counts = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(CLASS_ROUTES, key=lambda name: (-(exact[name] - counts[name]), name))
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    return counts


def draw_workload(items: Sequence[EvalItem], mix: Mix, n: int, seed: int) -> list[EvalItem]:
    """n items at the mix, seeded: each class's items shuffled and taken in turn (again from the start,
    reshuffled, only when a class has fewer items than asked), then the whole workload shuffled."""
    pools: dict[str, list[EvalItem]] = {name: [] for name in CLASS_ROUTES}
    for item in items:
        pools[ROUTE_CLASSES[item.route]].append(item)
    rng = random.Random(seed)
    drawn: list[EvalItem] = []
    for name, count in class_counts(mix, n).items():
        if count and not pools[name]:
            raise ValueError(f"mix asks for {name} requests but the eval file has none")
        taken: list[EvalItem] = []
        while len(taken) < count:
            batch = list(pools[name])
            rng.shuffle(batch)
            taken += batch[: count - len(taken)]
        drawn += taken
    rng.shuffle(drawn)
    return drawn


def measured_mix(items: Sequence[EvalItem]) -> dict[str, float]:
    """The shares a drawn workload actually has."""
    counts: Mapping[str, int] = {
        name: sum(1 for i in items if i.route == route) for name, route in CLASS_ROUTES.items()
    }
    return {name: count / len(items) if items else 0.0 for name, count in counts.items()}
