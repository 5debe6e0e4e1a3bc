"""The tally of blind judging, on hand-made rankings."""
import json

import pytest

from starling_demo.judging import agreement, judged_pairs_jsonl, ordered_pairs, parse_ranking, tally


def test_parse_ranking_takes_numbers_best_first_and_names_mistakes():
    assert parse_ranking("2 4 1", 4) == [1, 3, 0] and parse_ranking(["3"], 3) == [2]
    for bad, message in [("", "Rank the candidates first"), ("5", "'5' is not a candidate: rank numbers from 1 to 4"),
                         ("1 1", "appears twice"), ("a", "'a' is not a candidate"), ("0", "'0' is not")]:
        with pytest.raises(ValueError, match=message):
            parse_ranking(bad, 4)


def test_pairs_of_a_partial_ranking():
    assert ordered_pairs([1, 3, 0, 2], 4) == [(1, 3), (1, 0), (1, 2), (3, 0), (3, 2), (0, 2)]
    assert ordered_pairs([2], 3) == [(2, 0), (2, 1)]
    assert ordered_pairs([0, 1], 2) == [(0, 1)]


def test_agreement_on_hand_made_rankings():
    rewards = [0.1, 2.0, -1.0, 0.5]  # the RM ranks 2 > 4 > 1 > 3 (1-based)
    full = agreement([1, 3, 0, 2], rewards)
    assert full == {"ranked": 4, "top1": True, "pairs": 6, "agreed_pairs": 6, "pairwise": 1.0, "kendall_tau": 1.0}
    reversed_ = agreement([2, 0, 3, 1], rewards)
    assert reversed_["top1"] is False and reversed_["agreed_pairs"] == 0 and reversed_["kendall_tau"] == -1.0
    one_swap = agreement([3, 1, 0, 2], rewards)  # 4 > 2 swapped: 5 of 6 pairs, tau = (5 - 1) / 6
    assert one_swap["agreed_pairs"] == 5 and one_swap["kendall_tau"] == pytest.approx(4 / 6)
    best_only = agreement([0], rewards)  # "1 is best": pairs 1>2, 1>3, 1>4; the RM agrees on 1>3 only
    assert best_only == {"ranked": 1, "top1": False, "pairs": 3, "agreed_pairs": 1, "pairwise": 1 / 3,
                         "kendall_tau": None}
    assert agreement([1, 0, 3], rewards)["kendall_tau"] is not None  # the last place follows from the others
    tie = agreement([0, 1], [1.0, 1.0])
    assert tie["agreed_pairs"] == 0 and tie["top1"] is True  # a tie is no agreement; ties go to the lower index


def test_tally_pools_pairs_and_averages_tau_over_complete_rankings():
    judged = [agreement([1, 3, 0, 2], [0.1, 2.0, -1.0, 0.5]),  # 6/6, tau 1, top-1 yes
              agreement([0], [0.1, 2.0, -1.0, 0.5]),  # 1/3, no tau, top-1 no
              agreement([1, 0], [0.0, 1.0])]  # 1/1, tau 1, top-1 yes
    assert tally(judged) == {"turns": 3, "top1": 2 / 3, "pairs": 10, "pairwise": 0.8, "kendall_tau": 1.0,
                             "tau_turns": 2}
    assert tally([]) == {"turns": 0, "top1": None, "pairs": 0, "pairwise": None, "kendall_tau": None,
                         "tau_turns": 0}


def test_judged_pairs_are_the_persons_with_the_rms_verdict():
    turn = {"messages": [{"role": "user", "content": "Hi"}], "candidates": ["a", "b", "c", "a"],
            "rewards": [1.0, 3.0, 2.0, 1.0], "human": [2, 0], "lm": "L", "rm": "R", "seed": 3}
    records = [json.loads(line) for line in judged_pairs_jsonl([turn, {**turn, "human": None}]).splitlines()]
    assert [(r["chosen"], r["rejected"], r["rm_agrees"]) for r in records] == [
        ("c", "a", True), ("c", "b", False), ("c", "a", True), ("a", "b", False)]  # "a" vs its copy: no pair
    assert records[0]["human_ranking"] == [2, 0] and records[0]["chosen_reward"] == 2.0
