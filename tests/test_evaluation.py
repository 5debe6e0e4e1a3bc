"""Batch evaluation: the three layouts and the file kinds, the accuracies and length splits against hand-computed
values, the bootstrap against a known case, the Ties score, and two reward models compared (maths and end to end)."""
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from starling_demo.cli import main
from starling_demo.eval_layouts import eval_rows, layout_sentence, parse_row, rows_of_file, split_errors
from starling_demo.eval_stats import group_summary, overlap, paired_difference, row_measures, ties_score
from starling_demo.evaluation import (TABLE_COLUMNS, comparison, evaluation_report, evaluation_result, report_table,
                                      row_result)
from starling_demo.probes import mean_interval

USER = [{"role": "user", "content": "Hi"}]


def scored(subset, tiers, rewards, lengths, line=1, id=None):
    return {"line": line, "id": id, "subset": subset, "tiers": tiers, "rewards": rewards, "lengths": lengths,
            "layout": "RewardBench"}


# Four pairs and three RewardBench 2-style rows of 1 chosen + 2 rejected, each computed by hand in the tests below.
PAIRS = [scored("chat", [0, 1], [2.0, 1.0], [10, 20]),  # right, the chosen answer shorter
         scored("chat", [0, 1], [1.0, 2.0], [30, 5]),  # wrong, chosen longer
         scored("chat", [0, 1], [3.0, 1.0], [8, 4]),  # right, chosen longer
         scored("chat", [0, 1], [1.0, 1.0], [5, 5])]  # equal rewards count as wrong; equal lengths
TRIPLES = [scored("focus", [0, 1, 1], [3.0, 1.0, 2.0], [10, 20, 30]),  # right; chosen shortest
           scored("focus", [0, 1, 1], [1.0, 2.0, 0.0], [30, 20, 10]),  # wrong; chosen longest
           scored("focus", [0, 1, 1], [2.0, 1.0, 3.0], [20, 10, 30])]  # wrong; chosen in the middle


# --- layouts and files -------------------------------------------------------------------------------------------

def test_each_layout_is_read_into_one_shape():
    ours = parse_row({"messages": USER, "candidates": ["a", "b", "c"], "subset": "chat"})[0]
    assert (ours["candidates"], ours["tiers"], ours["layout"], ours["id"]) == (["a", "b", "c"], [0, 1, 2], "ranked", None)
    paired = parse_row({"messages": USER, "chosen": "x", "rejected": ["y", "z"]})[0]
    assert (paired["tiers"], paired["layout"], paired["subset"]) == ([0, 1, 1], "chosen/rejected", "all")
    rb = parse_row({"prompt": "Hi", "chosen": "x", "rejected": "y", "subset": "alpacaeval-easy", "id": 30,
                    "chosen_model": "gpt4", "rejected_model": "llama"})[0]
    assert rb == {"messages": USER, "candidates": ["x", "y"], "tiers": [0, 1], "subset": "alpacaeval-easy",
                  "id": "30", "layout": "RewardBench"}
    ties = parse_row({"prompt": "Pick a number", "chosen": ["1", "2"], "rejected": ["no", "12", "x"],
                      "num_correct": 2, "subset": "Ties", "id": "tied:4"})[0]
    assert (ties["tiers"], ties["layout"], ties["id"]) == ([0, 0, 1, 1, 1], "RewardBench 2", "tied:4")
    # A RewardBench preference set's prompt may be the conversation itself.
    assert parse_row({"prompt": USER, "chosen": "x", "rejected": "y"})[0]["messages"] == USER
    assert layout_sentence([rb, ties]).startswith("Read as RewardBench rows (a prompt; one chosen and one rejected "
                                                  "answer): 1 rows; and as RewardBench 2 rows")
    assert "Ties score" in layout_sentence([ties]) and "Ties" not in layout_sentence([rb])


def test_malformed_rows_of_every_layout_are_named_by_line():
    bad = ["{not json", "[1, 2]", json.dumps({"candidates": ["a", "b"]}),
           json.dumps({"messages": [{"role": "bot", "content": "x"}], "candidates": ["a", "b"]}),
           json.dumps({"messages": USER + [{"role": "assistant", "content": "x"}], "candidates": ["a", "b"]}),
           json.dumps({"messages": USER, "candidates": ["a"]}),
           json.dumps({"messages": USER, "candidates": ["a", 3]}),
           json.dumps({"messages": USER, "chosen": "a", "rejected": "  "}),
           json.dumps({"messages": USER, "chosen": "a"}),
           json.dumps({"messages": USER, "candidates": ["a", "b"], "subset": 5}),
           json.dumps({"prompt": 5, "chosen": "a", "rejected": "b"}),  # RewardBench
           json.dumps({"prompt": "Hi", "messages": USER, "chosen": "a", "rejected": "b"}),
           json.dumps({"prompt": "Hi", "chosen": ["a"], "rejected": []}),  # RewardBench 2
           json.dumps({"prompt": "Hi", "chosen": ["a", "b"], "rejected": ["c"], "num_correct": 1}),
           json.dumps({"prompt": "Hi", "chosen": "a", "rejected": "b", "id": [1]})]
    good = json.dumps({"prompt": "Hi", "chosen": ["a"], "rejected": ["b", "c"]})
    rows, errors = split_errors(eval_rows(enumerate(bad + [good], 1)))
    assert [r["line"] for r in rows] == [16] and errors[0].startswith("line 1: invalid JSON")
    assert errors[1:] == [
        "line 2: expected a JSON object",
        "line 3: needs 'messages' (or RewardBench's 'prompt')",
        "line 4: message 1 should be a user message with text content; turns must alternate user/assistant "
        "after an optional system message",
        "line 5: the last message must be from the user",
        "line 6: 'candidates' needs at least 2 strings",
        "line 7: candidates must be strings",
        "line 8: candidate 2 is empty",
        "line 9: needs 'candidates' or both 'chosen' and 'rejected'",
        "line 10: 'subset' must be a string",
        "line 11: 'prompt' must be a string (one user turn) or a list of messages",
        "line 12: use either 'messages' or 'prompt', not both",
        "line 13: 'chosen' and 'rejected' must each be a string or a non-empty list of strings",
        "line 14: 'num_correct' is 1 but 'chosen' has 2 answers",
        "line 15: 'id' must be a string or a whole number",
    ]


def lines_of(path):
    with open(path, encoding="utf-8") as file:
        yield from enumerate(file, 1)


def test_json_arrays_and_parquet_are_read_as_rows(tmp_path):
    records = [{"prompt": "Hi", "chosen": ["a"], "rejected": ["b", "c"], "subset": "Math", "id": "1"},
               {"prompt": "Hi", "chosen": ["a"], "rejected": [], "subset": "Math", "id": "2"}]
    array = tmp_path / "rows.json"
    array.write_text(json.dumps(records, indent=2), encoding="utf-8")
    rows, count = rows_of_file(str(array), lines_of)
    rows = list(rows)
    assert count == 2 and rows[0]["candidates"] == ["a", "b", "c"] and rows[1]["error"].startswith("row 2: ")
    jsonl_named_json = tmp_path / "lines.json"  # many datasets name their JSONL .json
    jsonl_named_json.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    assert [r["line"] for r in rows_of_file(str(jsonl_named_json), lines_of)[0]] == [1, 2]
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(records), parquet)
    rows, count = rows_of_file(str(parquet), lines_of)
    rows = list(rows)
    assert count == 2 and rows[0]["layout"] == "RewardBench 2" and rows[1]["error"].startswith("row 2: 'chosen'")
    not_parquet = tmp_path / "broken.parquet"
    not_parquet.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match="not a Parquet file that pyarrow can read"):
        rows_of_file(str(not_parquet), lines_of)
    not_an_array = tmp_path / "object.json"
    not_an_array.write_text('[{"a": 1}', encoding="utf-8")
    with pytest.raises(ValueError, match="invalid JSON"):
        rows_of_file(str(not_an_array), lines_of)


# --- accuracies, length control, intervals -----------------------------------------------------------------------

def test_pairwise_accuracy_and_its_length_splits_by_hand():
    s = group_summary([row_measures(r["rewards"], r["lengths"], r["tiers"]) for r in PAIRS])["pairwise"]
    assert s["accuracy"] == 0.5 and s["chance"] == 0.5
    assert (s["longer_wins"], s["shorter_wins"]) == (0.625, 0.375)  # equal lengths count half
    assert (s["chosen_longer"]["accuracy"], s["chosen_longer"]["n"]) == (0.5, 2)
    assert (s["chosen_shorter"]["accuracy"], s["chosen_shorter"]["n"], s["equal_lengths"]) == (1.0, 1, 1)
    assert s["balanced"]["accuracy"] == 0.75


def test_best_of_k_and_pairwise_accuracy_of_k_wise_rows_by_hand():
    summary = group_summary([row_measures(r["rewards"], r["lengths"], r["tiers"]) for r in TRIPLES])
    best, pairwise = summary["best_of_k"], summary["pairwise"]
    assert best["accuracy"] == pytest.approx(1 / 3) and best["chance"] == pytest.approx(1 / 3)
    assert (best["longer_wins"], best["shorter_wins"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert (best["chosen_longest"]["accuracy"], best["chosen_longest"]["n"]) == (0.0, 1)
    assert (best["chosen_shortest"]["accuracy"], best["chosen_shortest"]["n"]) == (1.0, 1)
    assert best["balanced"]["accuracy"] == pytest.approx(1 / 3)  # mean of 0 (longest), 0 (middle), 1 (shortest)
    assert pairwise["accuracy"] == pytest.approx(2 / 3) and pairwise["longer_wins"] == 0.5
    assert (pairwise["chosen_longer"]["accuracy"], pairwise["chosen_longer"]["n"]) == (pytest.approx(2 / 3), 3)
    assert (pairwise["chosen_shorter"]["accuracy"], pairwise["chosen_shorter"]["n"]) == (pytest.approx(2 / 3), 3)
    # A chosen answer tied in length with a rejected one has no length rank; several chosen answers neither.
    assert row_measures([2.0, 1.0, 0.0], [5, 5, 3], [0, 1, 1])["stratum"] is None
    assert row_measures([2.0, 1.0, 0.0], [5, 4, 3], [0, 0, 1])["best_chance"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("judge", [1, -1])  # longer wins, shorter wins
def test_a_length_only_judge_scores_exactly_chance_on_length_balanced_accuracy(judge):
    pairs = [([10, 20], [0, 1]), ([20, 10], [0, 1]), ([30, 5], [0, 1])]
    triples = [([10, 20, 30], [0, 1, 1]), ([20, 10, 30], [0, 1, 1]), ([30, 20, 10], [0, 1, 1]), ([31, 2, 9], [0, 1, 1])]
    s = group_summary([row_measures([judge * x for x in lengths], lengths, tiers) for lengths, tiers in pairs])
    assert s["pairwise"]["accuracy"] != 0.5 and s["pairwise"]["balanced"]["accuracy"] == 0.5
    s = group_summary([row_measures([judge * x for x in lengths], lengths, tiers) for lengths, tiers in triples])
    assert s["best_of_k"]["accuracy"] != pytest.approx(1 / 3)
    assert s["best_of_k"]["balanced"]["accuracy"] == pytest.approx(1 / 3) == s["best_of_k"]["chance"]
    # Without rows at every length rank, length and reward cannot be told apart: no length-balanced accuracy.
    s = group_summary([row_measures([judge * x for x in lengths], lengths, tiers) for lengths, tiers in triples[:2]])
    assert s["best_of_k"]["balanced"]["accuracy"] is None


def test_the_bootstrap_interval_is_scipys_over_rows_and_seeded():
    rng = np.random.default_rng(3)
    right = rng.random(300) < 0.7
    rows = [row_measures([2.0, 1.0] if r else [1.0, 2.0], [5, 6], [0, 1]) for r in right]
    s = group_summary(rows)["pairwise"]
    mean, low, high = mean_interval(right.astype(float).tolist())  # scipy.stats.bootstrap on the values themselves
    assert (s["accuracy"], s["low"], s["high"]) == (pytest.approx(mean), pytest.approx(low), pytest.approx(high))
    assert low < mean < high and high - low == pytest.approx(2 * 1.96 * math.sqrt(0.7 * 0.3 / 300), rel=0.2)
    assert group_summary(rows)["pairwise"]["low"] == s["low"]  # the same rows give the same interval
    all_right = group_summary([row_measures([2.0, 1.0], [5, 6], [0, 1])] * 5)["pairwise"]
    assert (all_right["low"], all_right["high"]) == (1.0, 1.0)
    assert group_summary(rows[:1])["pairwise"]["low"] is None  # no interval from one row
    assert overlap({"low": 0.1, "high": 0.5}, {"low": 0.5, "high": 0.9}) and \
        not overlap({"low": 0.1, "high": 0.3}, {"low": 0.4, "high": 0.9})


def test_the_report_and_its_table():
    report = evaluation_report(PAIRS + TRIPLES)
    assert report["overall"]["accuracy"] == pytest.approx((0.5 * 4 + 2) / 7)  # mean pairwise accuracy over rows
    assert (report["subsets"]["chat"]["headline"], report["subsets"]["focus"]["headline"]) == ("pairwise", "best-of-K")
    assert "rewardbench2_score" not in report  # RewardBench rows, not RewardBench 2's
    table = report_table(report)
    assert [row[:3] for row in table] == [["all rows", 7, "best-of-K"], ["all rows", 7, "pairwise"],
                                          ["chat", 4, "pairwise"], ["focus", 3, "best-of-K"], ["focus", 3, "pairwise"]]
    chat = dict(zip(TABLE_COLUMNS, table[2]))
    assert [chat[k] for k in ("accuracy", "chance", "longer wins", "shorter wins", "chosen longer", "chosen longer n",
                              "chosen shorter", "chosen shorter n", "length-balanced")] == \
        [0.5, 0.5, 0.625, 0.375, 0.5, 2, 1.0, 1, 0.75]
    assert chat["low"] <= 0.5 <= chat["high"] and chat["shorter wins low"] == pytest.approx(1 - chat["longer wins high"])
    unnamed = evaluation_report([scored("all", [0, 1], [2.0, 1.0], [1, 2]), scored("chat", [0, 1], [1.0, 2.0], [2, 1])])
    assert [row[0] for row in report_table(unnamed)] == ["all rows", "chat", "(no subset)"]
    assert [row[0] for row in report_table(evaluation_report(PAIRS[:1]))] == ["all rows", "chat"]


def test_each_rows_result_carries_what_users_join_on():
    result = evaluation_result([{**PAIRS[1], "id": "p2", "line": 4}, {"line": 5, "error": "line 5: bad"}], [])
    assert result["rows"] == [{"id": "p2", "line": 4, "subset": "chat", "tiers": [0, 1], "rewards": [1.0, 2.0],
                               "lengths": [30, 5], "correct": False, "pairwise": 0.0, "margin": -1.0,
                               "length_difference": 25}]
    assert result["errors"] == ["line 5: bad"]
    # A Ties row's margin: its worst correct answer against the best incorrect one.
    assert row_result(scored("Ties", [0, 0, 1], [3.0, 2.0, 2.5], [7, 4, 9]))["margin"] == -0.5


def test_the_ties_score_as_rewardbench_2_computes_it():
    rows = [{"id": "ref:1", "rewards": [3.0, 1.0, 2.0], "tiers": [0, 1, 1]},  # accurate, margin 1
            {"id": "tied:1", "rewards": [5.0, 4.0, 1.0, 2.0], "tiers": [0, 0, 1, 1]},  # accurate, spread 1, margin 2
            {"id": "ref:2", "rewards": [1.0, 2.0], "tiers": [0, 1]},  # margin -1
            {"id": "tied:2", "rewards": [3.0, 1.0, 2.0], "tiers": [0, 0, 1]}]  # spread 2, margin -1
    t = ties_score(rows)
    assert (t["ref_accuracy"], t["tied_accuracy"]) == (0.5, 0.5)
    assert (t["correctness_preferred"], t["correctness_preferred_hard"]) == (0.5, 0.0)  # 1 > 1 is not preferred
    assert t["margin_score"] == pytest.approx((math.tanh(0) + math.tanh(-1.5)) / 2)
    assert t["score"] == pytest.approx(0.3 * 0.5 + 0.3 * 0.5 + 0.2 * 0.5 + 0.01 * (math.tanh(-1.5) / 2))
    assert ties_score([{"id": "7", "rewards": [1.0, 0.0], "tiers": [0, 1]}]) is None
    # Its interval resamples prompts, each with its ref and tied rows: here every resample is one of four kinds.
    low, high = t["score_interval"]
    assert low < t["score"] < high and t["ref_accuracy_interval"] == [0.0, 1.0]
    assert ties_score(rows[:2])["score_interval"] == [None, None]  # one prompt: no interval


def test_two_reward_models_compared_on_the_same_rows_by_hand():
    a = [scored("chat", [0, 1], r, [5, 6], line=i) for i, r in enumerate([[2.0, 1.0], [2.0, 1.0], [1.0, 2.0],
                                                                           [1.0, 2.0]], 1)]
    b = [scored("chat", [0, 1], r, [5, 6], line=i) for i, r in enumerate([[2.0, 1.0], [1.0, 2.0], [2.0, 1.0],
                                                                           [2.0, 1.0]], 1)]
    c = comparison(a, b)["overall"]
    assert c["agreement"] == 0.25 and c["pairwise"]["difference"] == 0.25
    assert (c["pairwise"]["a"]["accuracy"], c["pairwise"]["b"]["accuracy"]) == (0.5, 0.75)
    assert c["pairwise"]["low"] < 0.25 < c["pairwise"]["high"] and c["pairwise"]["intervals_overlap"]
    same = paired_difference([1, 0, 1, 1, 0], [1, 0, 1, 1, 0])
    assert (same["difference"], same["low"], same["high"], same["excludes_zero"]) == (0.0, 0.0, 0.0, False)
    better = paired_difference([0] * 40, [1] * 30 + [0] * 10)
    assert better["excludes_zero"] and better["low"] > 0.5
    rows = evaluation_result(a, [], b)["rows"]
    assert [r["agree"] for r in rows] == [True, False, False, False]
    assert [r["correct_b"] for r in rows] == [True, False, True, True] and rows[1]["rewards_b"] == [1.0, 2.0]


# --- end to end --------------------------------------------------------------------------------------------------

def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


RB2 = [{"prompt": f"Question {i}?", "chosen": [f"A careful answer {i}."], "rejected": ["No.", f"Maybe {i}", "?"],
        "subset": ["Focus", "Math"][i % 2], "id": str(i)} for i in range(6)] + \
      [{"prompt": "Pick a number", "chosen": ["1", "2"], "rejected": ["nothing"], "subset": "Ties", "id": "tied:0"},
       {"prompt": "Pick a number", "chosen": ["1"], "rejected": ["nothing"], "subset": "Ties", "id": "ref:0"}]


def test_eval_reads_rewardbench_2_parquet_and_compares_two_reward_models(tmp_path, capsys):
    path = tmp_path / "rb2.parquet"
    pq.write_table(pa.Table.from_pylist(RB2 + [{**RB2[0], "rejected": [], "id": "bad"}]), path)
    code, out, err = run(capsys, "eval", "--reward-model", "tiny", "--precision", "fp32", "--compare-rm", "tiny-34b",
                         str(path))
    result = out[0]
    assert code == 0 and "Read as RewardBench 2 rows" in err and "skipped row 9: 'chosen'" in err
    assert result["layout"].startswith("Read as RewardBench 2 rows") and result["skipped"][0].startswith("row 9")
    assert set(result["report"]["subsets"]) == {"Focus", "Math", "Ties"}
    subsets = result["report"]["subsets"]
    assert subsets["Ties"]["ties"]["tied_prompts"] == 1
    assert result["report"]["rewardbench2_score"] == pytest.approx(
        (subsets["Focus"]["best_of_k"]["accuracy"] + subsets["Math"]["best_of_k"]["accuracy"]
         + subsets["Ties"]["ties"]["score"]) / 3)
    assert result["report"]["overall"]["headline"] == "best-of-K"
    assert [r[2] for r in result["table"] if r[0] == "Ties"] == ["best-of-K", "pairwise", "Ties score"]
    assert len(result["rows"]) == 8 and {"id", "rewards", "lengths", "correct", "rewards_b", "agree"} <= set(
        result["rows"][0])
    assert result["comparison"]["a"] == ["tiny", None] and result["comparison"]["b"] == ["tiny-34b", None]
    assert result["comparison"]["overall"]["n"] == 8
    # The same rows compared with themselves (two read-outs that agree) agree everywhere.
    code, out, _ = run(capsys, "eval", "--reward-model", "tiny", "--precision", "fp32", "--compare-readout", "card",
                       str(path))
    assert code == 0 and out[0]["comparison"]["overall"]["agreement"] == 1.0
    assert out[0]["comparison"]["overall"]["best-of-K"]["difference"] == 0.0


def test_eval_of_a_file_pyarrow_cannot_read_says_so(tmp_path, capsys):
    path = tmp_path / "rows.parquet"
    path.write_text('{"prompt": "Hi", "chosen": "a", "rejected": "b"}\n', encoding="utf-8")
    code, out, err = run(capsys, "eval", "--reward-model", "tiny", "--precision", "fp32", str(path))
    assert code == 1 and out == [] and "not a Parquet file that pyarrow can read" in err


def test_eval_reads_rewardbench_pairs_from_a_json_array_and_names_a_bad_byte_by_line(tmp_path, capsys):
    rows = [{"prompt": f"Say hi {i}", "chosen": "Hello there, my friend!" if i % 2 else "Hi.", "rejected": "Go.",
             "chosen_model": "a", "rejected_model": "b", "subset": "alpacaeval-easy", "id": i} for i in range(5)]
    path = tmp_path / "rewardbench.json"
    path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    code, out, err = run(capsys, "eval", "--reward-model", "tiny", "--precision", "fp32", str(path))
    result = out[0]
    assert code == 0 and result["layout"] == "Read as RewardBench rows (a prompt; one chosen and one rejected " \
                                             "answer): 5 rows."
    assert [row[:3] for row in result["table"]] == [["all rows", 5, "pairwise"], ["alpacaeval-easy", 5, "pairwise"]]
    assert [row["id"] for row in result["rows"]] == ["0", "1", "2", "3", "4"] and result["skipped"] == []
    split = result["report"]["overall"]["pairwise"]
    assert split["chosen_longer"]["n"] + split["chosen_shorter"]["n"] + split["equal_lengths"] == 5
    start = json.dumps(rows, indent=1).encode()[:40]
    path.write_bytes(start + b"\xff\n" + json.dumps(rows).encode())
    code, out, err = run(capsys, "eval", "--reward-model", "tiny", "--precision", "fp32", str(path))
    line = start.count(b"\n") + 1
    assert code == 1 and out == [] and f"line {line}: not UTF-8 text" in err


def test_the_tab_reads_parquet_and_refuses_an_array_over_the_row_limit_before_parsing_it(engine, tmp_path,
                                                                                          monkeypatch):
    from starling_demo.ui import evaluation

    import datetime

    path = tmp_path / "rb2.parquet"  # with a column JSON has no type for, as a dataset's extra columns may be
    pq.write_table(pa.Table.from_pylist([{**row, "added": datetime.date(2025, 6, 1)} for row in RB2]), path)
    *_, (report, errors, status, accuracy, margins, rows_file) = evaluation.evaluate_file(
        engine, str(path), "tiny", "card", progress=lambda *a, **k: None)
    assert "Read as RewardBench 2 rows" in status and "RewardBench 2 score" in status
    assert "Ties score" in list(report["accuracy of"]) and errors == "No malformed rows."
    assert len(open(rows_file, encoding="utf-8").readlines()) == len(RB2)
    *_, (_, _, status, _, _, rows_file) = evaluation.evaluate_file(
        engine, str(path), "tiny", "card", compare_rm="tiny-34b", progress=lambda *a, **k: None)
    assert "**tiny-34b** against **tiny**" in status and "| Ties | 2 |" in status and "| Focus | 3 |" in status
    assert all("agree" in json.loads(line) for line in open(rows_file, encoding="utf-8"))
    monkeypatch.setattr(evaluation, "MAX_EVAL_ROWS", 3)
    monkeypatch.setattr(evaluation, "split_errors", lambda rows: pytest.fail("the rows were parsed"))
    with pytest.warns(UserWarning, match="The file has 8 rows; this server scores at most 3 per file"):
        list(evaluation.evaluate_file(engine, str(path), "tiny", "card", progress=lambda *a, **k: None))
    broken = tmp_path / "broken.json"
    broken.write_text('[{"prompt": "Hi",', encoding="utf-8")
    with pytest.warns(UserWarning, match="The file cannot be read: invalid JSON"):
        list(evaluation.evaluate_file(engine, str(broken), "tiny", "card", progress=lambda *a, **k: None))
