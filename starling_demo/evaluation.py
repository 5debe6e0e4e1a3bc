"""Batch evaluation: score rows of ranked or chosen/rejected answers, and report accuracy per subset with its
length control and intervals, each row's result, and the comparison of two reward models on the same rows."""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from .engine import Engine
from .eval_layouts import NO_SUBSET, REWARDBENCH2, TIES, layout_sentence
from .eval_stats import group_summary, overlap, paired_difference, row_measures, ties_score
from .templates import check_rm_format

# Names in the report table: "all" alone reads like the whole file, which is "overall".
ALL_ROWS_LABEL, NO_SUBSET_LABEL = "all rows", "(no subset)"
PAIRWISE, BEST_OF_K, TIES_SCORE = "pairwise", "best-of-K", "Ties score"
# "chosen longer": accuracy where the chosen answer is the longer one (best-of-K: the longest), and its count (pairs
# for pairwise accuracy, rows for best-of-K); "chosen shorter" likewise (best-of-K: the shortest). Each accuracy is
# followed by its 95% interval's low and high.
TABLE_COLUMNS = ["subset", "rows", "accuracy of", "accuracy", "low", "high", "chance",
                 "longer wins", "longer wins low", "longer wins high", "shorter wins", "shorter wins low",
                 "shorter wins high", "chosen longer", "chosen longer low", "chosen longer high", "chosen longer n",
                 "chosen shorter", "chosen shorter low", "chosen shorter high", "chosen shorter n",
                 "length-balanced", "length-balanced low", "length-balanced high"]
KEPT = ("line", "id", "subset", "layout", "tiers", "rewards", "lengths", "error")  # of a scored row: no texts


def score_rows(engine: Engine, rows: Iterable[dict], rm: str | None = None, readout: str | None = None,
               rm_format: str = "rlhf", budget: int | None = None, lock=contextlib.nullcontext,
               ) -> Iterator[tuple[list[dict], int]]:
    """Score `rows` (`eval_rows`' rows; an "error" row passes through) in batched passes, `Engine.score_stream`.

    Yields after each batch the rows now done in input order, each with "rewards" and "lengths" or an "error",
    and how many rows are done in any order: a caller reports progress there, and closing the iterator stops the
    work within one batch. Each batch runs inside `with lock():`; between batches the device is free for others.
    """
    conversation = lambda row: None if "error" in row else (row["messages"], row["candidates"])  # noqa: E731
    for ready, done in engine.score_stream(rows, rm, readout, rm_format, budget=budget, lock=lock,
                                           conversation=conversation):
        for row, scores in ready:
            if isinstance(scores, ValueError):  # e.g. turns that do not alternate
                row["error"] = f"line {row['line']}: {scores}"
            elif scores is not None:
                row["rewards"], row["lengths"] = scores.rewards, scores.lengths
        yield [row for row, _ in ready], done


def evaluate(engine: Engine, rows: Iterable[dict], rm: str | None = None, readout: str | None = None,
             rm_format: str = "rlhf", budget: int | None = None, progress=lambda done: None) -> list[dict]:
    """Score every well-formed row of `rows` (`eval_layouts`' rows, read as a stream) and keep each row's line, id,
    subset, layout, tiers, rewards and lengths (not its texts, so memory stays small), or its error.
    `progress(done)` is called with the rows done after each batch."""
    check_rm_format(rm_format)  # before the rows, whose own errors are collected one by one
    kept = []
    for given, done in score_rows(engine, rows, rm, readout, rm_format, budget):
        kept += [{k: row[k] for k in KEPT if k in row} for row in given]
        progress(done)
    return kept


def row_result(row: dict) -> dict:
    """A scored row as it is reported: its id and line, subset, rewards and lengths in the file's order, tiers (0 =
    best), whether it is correct (every best answer outscores every other), its pairwise accuracy, and the margin
    (the worst best answer's reward minus the best other one's: chosen minus best rejected) beside the same two
    answers' length difference in RM tokens.

    >>> row_result({"line": 1, "subset": "chat", "tiers": [0, 1, 1], "rewards": [2.0, 1.0, 2.5], "lengths": [9, 4, 7]})
    {'id': None, 'line': 1, 'subset': 'chat', 'tiers': [0, 1, 1], 'rewards': [2.0, 1.0, 2.5], 'lengths': [9, 4, 7], \
'correct': False, 'pairwise': 0.5, 'margin': -0.5, 'length_difference': 2}
    """
    rewards, lengths, tiers = row["rewards"], row["lengths"], row["tiers"]
    best = [i for i, t in enumerate(tiers) if t == 0]
    others = [i for i, t in enumerate(tiers) if t != 0]
    worst_best = min(best, key=lambda i: rewards[i])
    best_other = max(others, key=lambda i: rewards[i])
    measures = row_measures(rewards, lengths, tiers)
    return {"id": row.get("id"), "line": row["line"], "subset": row["subset"], "tiers": tiers, "rewards": rewards,
            "lengths": lengths, "correct": bool(measures["best"]), "pairwise": measures["pairwise"],
            "margin": rewards[worst_best] - rewards[best_other],
            "length_difference": lengths[worst_best] - lengths[best_other]}


def preferred(rewards: list[float]) -> int:
    """The index of the answer a reward model prefers (the first of equal best rewards).

    >>> preferred([1.0, 3.0, 3.0])
    1
    """
    return max(range(len(rewards)), key=rewards.__getitem__)


def headline(rows: list[dict]) -> str:
    """The accuracy a group's layout calls for: best-of-K when some row has more than one rejected (or more than one
    chosen) answer, as in RewardBench 2; else pairwise (pairs, and rankings: the mean over all pairs, as the RM-34B
    card defines it)."""
    return BEST_OF_K if any(len(r["tiers"]) > 2 and max(r["tiers"]) == 1 for r in rows) else PAIRWISE


def _summary(rows: list[dict]) -> dict:
    summary = group_summary([row_measures(r["rewards"], r["lengths"], r["tiers"]) for r in rows])
    if rows:
        summary["headline"] = headline(rows)
        # The report's first keys as before: mean pairwise accuracy and the longer-wins baseline.
        summary = {"n": summary["n"], "accuracy": summary["pairwise"]["accuracy"],
                   "length_baseline": summary["pairwise"]["longer_wins"], **summary}
    return summary


def _groups(rows: list[dict]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.get("subset", NO_SUBSET), []).append(i)
    return dict(sorted(groups.items()))


def evaluation_report(rows: list[dict]) -> dict:
    """Accuracy overall and per subset (`eval_stats.group_summary`: pairwise and best-of-K accuracy with intervals,
    chance, the length-only judges, the length splits and length-balanced accuracy), RewardBench 2's Ties score for
    a Ties subset, and for RewardBench 2 rows of several subsets `rewardbench2_score`, its leaderboard's kind of
    score: the mean over subsets of best-of-K accuracy (the Ties score for Ties).

    >>> report = evaluation_report([{"subset": "chat", "tiers": [0, 1], "rewards": [1.0, 2.0], "lengths": [30, 10]}])
    >>> report["overall"]["accuracy"], report["overall"]["length_baseline"], report["overall"]["headline"]
    (0.0, 1.0, 'pairwise')
    """
    subsets = {}
    for name, index in _groups(rows).items():
        members = [rows[i] for i in index]
        subsets[name] = _summary(members)
        if name.lower() == TIES:
            subsets[name]["ties"] = ties_score(members)
    report = {"overall": _summary(rows), "subsets": subsets}
    if rows and all(row.get("layout") == REWARDBENCH2 for row in rows) and len(subsets) > 1:
        report["rewardbench2_score"] = sum(
            s["ties"]["score"] if s.get("ties") else s["best_of_k"]["accuracy"] for s in subsets.values()) / len(subsets)
    return report


def report_groups(report: dict) -> list[tuple[str, dict]]:
    """The report's groups as they are shown, with their labels: "all rows" (the report's "overall": every scored row
    weighing the same), each named subset, then "(no subset)", the subset "all" of the rows that named none; when no
    row named one it would repeat "all rows", and is left out.

    >>> [name for name, _ in report_groups({"overall": {}, "subsets": {"all": {}, "chat": {}}})]
    ['all rows', 'chat', '(no subset)']
    """
    subsets = dict(report["subsets"])
    unnamed = subsets.pop(NO_SUBSET, None)
    groups = [(ALL_ROWS_LABEL, report["overall"]), *subsets.items()]
    if unnamed is not None and subsets:
        groups.append((NO_SUBSET_LABEL, unnamed))
    return groups


def measures_of(summary: dict, metric: str) -> dict:
    """A group summary's numbers for `metric` (PAIRWISE or BEST_OF_K)."""
    return summary["best_of_k" if metric == BEST_OF_K else "pairwise"]


def report_table(report: dict) -> list[list]:
    """The report as rows of TABLE_COLUMNS, group by group (`report_groups`): each group's headline accuracy first,
    then best-of-K or pairwise beside it when its rows have more than two answers, and a Ties subset's Ties score.

    >>> s = group_summary([row_measures([2.0, 1.0], [20, 10], [0, 1])])
    >>> table = report_table({"overall": {**s, "headline": "pairwise"}, "subsets": {"all": {**s, "headline": "pairwise"}}})
    >>> [row[:4] for row in table]
    [['all rows', 1, 'pairwise', 1.0]]
    """
    table = []
    for name, summary in report_groups(report):
        if not summary.get("n"):
            table.append([name, 0, PAIRWISE, *[None] * (len(TABLE_COLUMNS) - 3)])
            continue
        several = summary["pairwise"]["pairs"] > summary["n"]  # some row has more than two answers
        metrics = [summary["headline"]] + ([BEST_OF_K if summary["headline"] == PAIRWISE else PAIRWISE]
                                           if several else [])
        for metric in metrics:
            m = measures_of(summary, metric)
            longer, shorter = (m["chosen_longest"], m["chosen_shortest"]) if metric == BEST_OF_K else \
                (m["chosen_longer"], m["chosen_shorter"])
            table.append([name, summary["n"], metric, m["accuracy"], m["low"], m["high"], m["chance"],
                          m["longer_wins"], *m["longer_wins_interval"], m["shorter_wins"], *m["shorter_wins_interval"],
                          longer["accuracy"], longer["low"], longer["high"], longer["n"],
                          shorter["accuracy"], shorter["low"], shorter["high"], shorter["n"],
                          m["balanced"]["accuracy"], m["balanced"]["low"], m["balanced"]["high"]])
        if summary.get("ties"):
            table.append([name, summary["n"], TIES_SCORE, summary["ties"]["score"], *summary["ties"]["score_interval"],
                          *[None] * (len(TABLE_COLUMNS) - 6)])
    return table


def comparison(a_rows: list[dict], b_rows: list[dict]) -> dict:
    """Two reward models (or read-outs) on the same rows, overall and per subset: the share of rows where both
    prefer the same answer (`agreement`), and for pairwise and best-of-K accuracy each model's accuracy, B minus A
    with a paired bootstrap interval, and whether A's and B's own intervals overlap."""
    a_by_line = {row["line"]: row for row in a_rows}
    pairs = [(a_by_line[row["line"]], row) for row in b_rows if row["line"] in a_by_line]

    def compare(members: list[tuple[dict, dict]]) -> dict:
        a_measures = [row_measures(a["rewards"], a["lengths"], a["tiers"]) for a, _ in members]
        b_measures = [row_measures(b["rewards"], b["lengths"], b["tiers"]) for _, b in members]
        a_summary, b_summary = group_summary(a_measures), group_summary(b_measures)
        agree = [preferred(a["rewards"]) == preferred(b["rewards"]) for a, b in members]
        result = {"n": len(members), "agreement": sum(agree) / len(members) if members else None}
        for metric, key in ((PAIRWISE, "pairwise"), (BEST_OF_K, "best")):
            a, b = measures_of(a_summary, metric), measures_of(b_summary, metric)
            result[metric] = {"a": {k: a[k] for k in ("accuracy", "low", "high")},
                              "b": {k: b[k] for k in ("accuracy", "low", "high")},
                              **paired_difference([m[key] for m in a_measures], [m[key] for m in b_measures]),
                              "intervals_overlap": overlap(a, b)}
        return result

    groups: dict[str, list[tuple[dict, dict]]] = {}
    for a, b in pairs:
        groups.setdefault(b["subset"], []).append((a, b))
    return {"overall": compare(pairs), "subsets": {name: compare(m) for name, m in sorted(groups.items())}}


def evaluation_result(rows: list[dict], errors: list[str], compare_rows: list[dict] | None = None) -> dict:
    """The report of scored rows, each row's result (`row_result`), every malformed line (parse and scoring errors),
    which layout the rows were read as, and with `compare_rows` (the same rows scored by a second reward model or
    read-out) the comparison, each row's second rewards and whether the two agree."""
    scored = [row for row in rows if "rewards" in row]
    errors = errors + [row["error"] for row in rows if "error" in row]
    result = {"layout": layout_sentence(scored), "report": evaluation_report(scored),
              "rows": [row_result(row) for row in scored], "errors": errors}
    if compare_rows is not None:
        other = {row["line"]: row for row in compare_rows if "rewards" in row}
        result["errors"] += [row["error"] for row in compare_rows if "error" in row and row["error"] not in errors]
        result["comparison"] = comparison(scored, list(other.values()))
        for record in result["rows"]:
            b = other.get(record["line"])
            if b is not None:
                b_result = row_result(b)
                record.update(rewards_b=b["rewards"], correct_b=b_result["correct"], margin_b=b_result["margin"],
                              agree=preferred(record["rewards"]) == preferred(b["rewards"]))
    return result
