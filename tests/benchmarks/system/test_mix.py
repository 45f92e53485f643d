from collections import Counter

import pytest

from benchmarks.system.compare import build_parser
from benchmarks.system.mix import (
    DEFAULT_MIX_TEXT,
    class_counts,
    draw_workload,
    measured_mix,
    parse_mix,
    with_knowledge_share,
)
from services.evaluation.scoring import EvalItem

pytestmark = pytest.mark.unit

ITEMS = (
    [EvalItem(f"k{i}", "rag", f"knowledge question {i}") for i in range(40)]
    + [EvalItem(f"d{i}", "direct", f"direct question {i}") for i in range(12)]
    + [EvalItem(f"o{i}", "out_of_scope", f"off-topic question {i}") for i in range(3)]
)


def test_parse_mix_reads_shares_and_fills_missing_classes():
    mix = parse_mix(DEFAULT_MIX_TEXT)
    assert mix.as_dict() == pytest.approx({"knowledge": 0.5, "direct": 0.33, "out_of_scope": 0.17})
    assert parse_mix("knowledge=1").as_dict() == {"knowledge": 1.0, "direct": 0.0, "out_of_scope": 0.0}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("knowledge=0.5,chitchat=0.5", "'chitchat'"),
        ("knowledge=half,direct=0.5", "'knowledge=half'"),
        ("knowledge", "'knowledge'"),
        ("knowledge=0.5,direct=0.2", "0.7"),
        ("knowledge=1.5", "knowledge=1.5"),
        ("knowledge=0.5,knowledge=0.5", "'knowledge'"),
        ("", "''"),
    ],
)
def test_bad_mix_is_one_error_naming_the_value(text, named):
    with pytest.raises(ValueError) as caught:
        parse_mix(text)
    message = str(caught.value)
    assert named in message and "\n" not in message


def test_bad_mix_on_the_command_line_exits_2_naming_it(capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--mix", "knowledge=0.5,trivia=0.5"])
    assert caught.value.code == 2
    assert "'trivia'" in capsys.readouterr().err.strip().splitlines()[-1]


def test_class_counts_sum_to_n_by_largest_remainder():
    assert class_counts(parse_mix(DEFAULT_MIX_TEXT), 30) == {"knowledge": 15, "direct": 10, "out_of_scope": 5}
    counts = class_counts(parse_mix(DEFAULT_MIX_TEXT), 7)  # 3.5, 2.31, 1.19
    assert counts == {"knowledge": 4, "direct": 2, "out_of_scope": 1}


def test_seeded_draws_reproduce_and_match_the_mix():
    mix = parse_mix(DEFAULT_MIX_TEXT)
    first = draw_workload(ITEMS, mix, 30, seed=7)
    assert [i.item_id for i in first] == [i.item_id for i in draw_workload(ITEMS, mix, 30, seed=7)]
    assert [i.item_id for i in first] != [i.item_id for i in draw_workload(ITEMS, mix, 30, seed=8)]
    assert measured_mix(first) == pytest.approx({"knowledge": 0.5, "direct": 1 / 3, "out_of_scope": 1 / 6})
    # 5 out-of-scope requests from 3 items: every item once before any repeats.
    repeats = Counter(i.item_id for i in first if i.route == "out_of_scope")
    assert sorted(repeats.values()) == [1, 2, 2]
    knowledge = [i.item_id for i in first if i.route == "rag"]
    assert len(set(knowledge)) == len(knowledge)  # enough items: no repeats


def test_a_mix_asking_for_a_class_the_file_lacks_is_an_error():
    with pytest.raises(ValueError, match="mix asks for direct requests but the eval file has none"):
        draw_workload(ITEMS[:40], parse_mix(DEFAULT_MIX_TEXT), 10, seed=0)


def test_knowledge_share_keeps_the_rest_split_as_the_base():
    mix = with_knowledge_share(0.8, parse_mix(DEFAULT_MIX_TEXT))
    assert mix.as_dict() == pytest.approx(
        {"knowledge": 0.8, "direct": 0.2 * 0.66, "out_of_scope": 0.2 * 0.34}
    )
    assert with_knowledge_share(0.0, parse_mix("knowledge=1")).as_dict() == pytest.approx(
        {"knowledge": 0.0, "direct": 0.5, "out_of_scope": 0.5}
    )
