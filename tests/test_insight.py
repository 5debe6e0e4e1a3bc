import json
import math
import re
from pathlib import Path

import pytest

from starling_demo.insight import (
    best_of_n,
    kendall_tau,
    length_bias,
    length_penalised,
    nectar_jsonl,
    nectar_prompt,
    pairs_jsonl,
    plackett_luce_probability,
    ranking,
    spearman,
    tie_margin,
    top1_agreement,
    turn_insight,
    win_probabilities,
)

USER = [{"role": "user", "content": "Hi"}]


def test_win_probabilities():
    p = win_probabilities([1.0, 0.0, 3.0])
    assert p[0][1] == pytest.approx(0.7310585786)
    assert p[1][0] == pytest.approx(1 - 0.7310585786)
    assert p[2][1] == pytest.approx(1 / (1 + math.exp(-3)))
    assert [p[i][i] for i in range(3)] == [0.5, 0.5, 0.5]


def test_win_probabilities_large_gap_is_stable():
    p = win_probabilities([1000.0, -1000.0])
    assert p[0][1] == 1.0
    assert p[1][0] == 0.0


def test_ranking_stable_ties():
    assert ranking([1.0, 3.0, 1.0, 3.0]) == [1, 3, 0, 2]
    assert ranking([]) == []


def test_plackett_luce():
    e = math.e
    expected = e**2 / (e**2 + e + 1) * e / (e + 1)
    assert plackett_luce_probability([2.0, 1.0, 0.0]) == pytest.approx(expected)
    assert plackett_luce_probability([0.0, 1.0, 2.0]) == pytest.approx(expected)
    worst = 1 / (e**2 + e + 1) * e / (e + e**2)
    assert plackett_luce_probability([2.0, 1.0, 0.0], order=[2, 1, 0]) == pytest.approx(worst)


def test_plackett_luce_all_orders_sum_to_one_and_large_rewards():
    from itertools import permutations

    r = [0.3, -1.2, 2.0]
    assert sum(plackett_luce_probability(r, list(o)) for o in permutations(range(3))) == pytest.approx(1.0)
    assert plackett_luce_probability([1000.0, 999.0]) == pytest.approx(1 / (1 + math.exp(-1)))
    with pytest.raises(ValueError):
        plackett_luce_probability([1.0, 2.0], order=[0, 0])


def test_spearman_and_kendall():
    # Hand-computed: ranks y=[1,3,2] vs x=[1,2,3] -> d^2 = 2 -> 1 - 6*2/(3*8) = 0.5
    assert spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)
    # Ties get average ranks: y ranks [1.5, 1.5, 3] -> Pearson on ranks = sqrt(3)/2
    assert spearman([1, 2, 3], [5, 5, 9]) == pytest.approx(math.sqrt(3) / 2)
    # One discordant pair of three -> (2 - 1) / 3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_correlations_undefined_return_none():
    assert spearman([1], [2]) is None
    assert spearman([1, 2, 3], [4, 4, 4]) is None
    assert kendall_tau([], []) is None
    assert kendall_tau([7, 7], [1, 2]) is None


def test_top1_agreement():
    assert top1_agreement([1, 3, 2], [0, 9, 5]) is True
    assert top1_agreement([1, 3, 2], [9, 0, 5]) is False


def test_length_bias_longest_wins():
    out = length_bias([0.5, 2.5, 1.0], [40, 120, 80])
    assert out == {"spearman": pytest.approx(1.0), "longest_wins": True, "best": 1, "longest": 1}


def test_length_bias_shorter_wins_and_shared_max_length():
    out = length_bias([3.0, 1.0, 2.0], [10, 90, 50])
    assert out == {"spearman": pytest.approx(-1.0), "longest_wins": False, "best": 0, "longest": 1}
    assert length_bias([1.0, 2.0], [50, 50])["longest_wins"] is True


def test_length_penalised_and_best_of_n():
    assert length_penalised([2.0, 1.0], [200, 50], 0.5) == pytest.approx([1.0, 0.75])
    assert length_penalised([2.0, 1.0], [200, 50], 0.0) == [2.0, 1.0]
    assert best_of_n([2.0, 1.0]) == 0
    assert best_of_n([2.0, 1.0], [200, 50]) == 0
    assert best_of_n([2.0, 1.0], [200, 50], alpha=0.5) == 0  # 1.0 vs 0.75
    assert best_of_n([2.0, 1.0], [200, 50], alpha=1.0) == 1  # 0.0 vs 0.5
    assert best_of_n([1.0, 1.0, 0.0]) == 0


TURN = {
    "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                 {"role": "user", "content": "Café?"}],
    "candidates": ["A", "B", "C"],
    "rewards": [0.5, 2.0, -1.0],
    "lengths": [3, 7, 1],
    "chosen": 0,
    "settings": {"temperature": 0.7},
    "lm": "lm-x",
    "rm": "rm-y",
    "seed": 11,
}


def test_pairs_jsonl_exact_records():
    text = pairs_jsonl([TURN, {**TURN, "candidates": ["only"], "rewards": [1.0], "lengths": [1]}])
    assert "Café" in text  # ensure_ascii=False
    records = [json.loads(line) for line in text.splitlines()]
    base = {"messages": TURN["messages"], "chosen": "B", "chosen_reward": 2.0, "lm": "lm-x", "rm": "rm-y",
            "seed": 11}
    assert records == [
        {**base, "rejected": "A", "rejected_reward": 0.5},
        {**base, "rejected": "C", "rejected_reward": -1.0},
    ]
    assert pairs_jsonl([]) == ""


def test_nectar_jsonl_exact_record():
    text = nectar_jsonl([TURN])
    assert text.endswith("\n") and text.count("\n") == 1
    assert json.loads(text) == {
        "prompt": "\n\nHuman: Hi\n\nAssistant: Yo\n\nHuman: Café?\n\nAssistant:",
        "messages": TURN["messages"],
        "answers": [
            {"answer": "A", "rank": 2, "reward": 0.5, "length": 3, "chosen": True},
            {"answer": "B", "rank": 1, "reward": 2.0, "length": 7, "chosen": False},
            {"answer": "C", "rank": 3, "reward": -1.0, "length": 1, "chosen": False},
        ],
        "settings": {"temperature": 0.7, "seed": 11},
        "lm": "lm-x",
        "rm": "rm-y",
        "num_responses": 3,
    }


def test_exports_carry_the_seed_the_turn_used():
    random_seed = {**TURN, "settings": {"temperature": 0.7, "seed": None}, "seed": 123456}
    assert json.loads(nectar_jsonl([random_seed]))["settings"] == {"temperature": 0.7, "seed": 123456}
    assert {json.loads(line)["seed"] for line in pairs_jsonl([random_seed]).splitlines()} == {123456}
    assert random_seed["settings"]["seed"] is None  # the turn itself is left as it was
    unknown = {k: v for k, v in random_seed.items() if k != "seed"}
    assert json.loads(nectar_jsonl([unknown]))["settings"]["seed"] is None


def test_identical_replies_make_no_pair_and_share_a_nectar_rank():
    greedy = {**TURN, "candidates": ["Same.", "Same.", "Same."], "rewards": [0.7, 0.7000001, 0.6999999]}
    assert pairs_jsonl([greedy]) == ""
    answers = json.loads(nectar_jsonl([greedy]))["answers"]
    assert [a["rank"] for a in answers] == [1, 1, 1] and [a["answer"] for a in answers] == ["Same."] * 3
    assert [a["reward"] for a in answers] == greedy["rewards"]  # each keeps the reward it was scored
    mixed = {**TURN, "candidates": ["X", "Y", "X", "Z"], "rewards": [1.0, 2.0, 1.2, 1.0], "lengths": [1, 1, 1, 1]}
    pairs = [json.loads(line) for line in pairs_jsonl([mixed]).splitlines()]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("Y", "X"), ("Y", "X"), ("Y", "Z")]
    assert [a["rank"] for a in json.loads(nectar_jsonl([mixed]))["answers"]] == [2, 1, 2, 4]
    best_copied = {**mixed, "candidates": ["Y", "Y", "X", "Z"]}
    assert [(p["chosen"], p["rejected"]) for p in map(json.loads, pairs_jsonl([best_copied]).splitlines())] == [
        ("Y", "X"), ("Y", "Z")]


def test_equal_rewards_state_no_preference():
    tied = {**TURN, "candidates": ["P", "Q", "R"], "rewards": [1.5, 1.5, 0.0]}
    pairs = [json.loads(line) for line in pairs_jsonl([tied]).splitlines()]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("P", "R")]
    assert [a["rank"] for a in json.loads(nectar_jsonl([tied]))["answers"]] == [1, 1, 3]


def test_nectar_prompt_with_system():
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert nectar_prompt(msgs) == "Be brief.\n\nHuman: Hi\n\nAssistant:"


def test_turn_insight_gathers_the_panels_figures():
    turn = {"rewards": [2.0, 1.0, 0.0], "lengths": [300, 20, 10],
            "traces": [[0.3], [0.2], [0.1]], "readout": "card", "rm": "A", "rm2": "B", "rewards2": [0.0, 1.0, 2.0]}
    tokens = [["a"], ["b"], ["c"]]
    facts = turn_insight(turn, tokens, alpha=1.0)
    assert facts["ranking"] == [0, 1, 2]
    assert facts["win_probabilities"][0][1] == pytest.approx(1 / (1 + math.exp(-1)))
    # Plackett-Luce of 0 > 1 > 2 with exp(r): e^2/(e^2+e+1) * e/(e+1)
    e = math.e
    assert facts["plackett_luce"] == pytest.approx(e**2 / (e**2 + e + 1) * e / (e + 1))
    assert facts["length_bias"]["longest_wins"] and facts["length_bias"]["spearman"] == pytest.approx(1.0)
    assert facts["length_penalised_rewards"] == pytest.approx([-1.0, 0.8, -0.1])
    assert facts["length_penalised_best"] == 1
    assert facts["traces"][2] == {"tokens": ["c"], "values": [0.1]}
    assert facts["comparison"]["kendall_tau"] == pytest.approx(-1.0) and not facts["comparison"]["top1_agreement"]
    assert "comparison" not in turn_insight(turn | {"rewards2": None}, tokens)


@pytest.mark.parametrize("device, precision, margin, says", [
    ("cuda", "4bit", 0.189, "measured in 4-bit on a GPU"),
    ("cuda:1", "bf16", 0.116, "measured in bf16 on a GPU"),
    ("cpu", "fp32", 0.0005, "half the last shown digit; on CPU in fp32 padded batches moved a reward by at most "
                            "4.2e-7 ("),
    ("cuda", "fp16", 0.189, "not measured for fp16 on a GPU"),
    ("cuda", "fp32", 0.189, "not measured for fp32 on a GPU"),
    ("cpu", "4bit", 0.189, "not measured for 4-bit on CPU"),
    ("mps", "fp32", 0.189, "not measured for fp32 on MPS"),
    ("vllm", "bf16", 0.189, "not measured for bf16 on a served model"),
    ("http://rm:8000/v1", "4bit", 0.189, "not measured for 4-bit on a served model"),
])
def test_tie_margin_follows_the_measured_batch_noise(device, precision, margin, says):
    value, note = tie_margin(device, precision)
    assert value == margin
    assert note.startswith(f"{margin:g}: ") and says in note
    assert note.endswith("benchmarks/RESULTS.md, batch invariance).")


def test_tie_margins_are_the_largest_differences_in_the_batch_invariance_table():
    results = (Path(__file__).parent.parent / "benchmarks" / "RESULTS.md").read_text()
    table = results[results.index("Batch invariance: each of 8 candidates"):]
    rows = {m.group(1): max(float(x) for x in m.group(2).split(" | "))
            for m in re.finditer(r"^\| (4-bit|bf16|fp32 \(CPU, small model\)) \| ([^|]+(?: \| [^|]+){3}) \|",
                                 table, re.M)}
    assert tie_margin("cuda", "4bit")[0] == rows["4-bit"] and tie_margin("cuda", "bf16")[0] == rows["bf16"]
    assert rows["fp32 (CPU, small model)"] == 4.2e-7 < tie_margin("cpu", "fp32")[0] == 0.0005
