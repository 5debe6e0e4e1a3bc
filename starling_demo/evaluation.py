"""Batch evaluation: score ranked or chosen/rejected conversations and report pairwise accuracy."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

from .engine import Engine
from .limits import check_text, json_row
from .templates import check_conversation, check_rm_format

NO_SUBSET = "all"  # the subset of rows that name none: a key of the report's "subsets" (the CLI prints it as JSON)
# Names in the report table: "all" alone reads like the whole file, which is "overall".
ALL_ROWS_LABEL, NO_SUBSET_LABEL = "all rows", "(no subset)"


def pairwise_accuracy(rewards_best_first: list[float], tie: float = 0.0) -> float:
    """Fraction of pairs (i < j) with r_i > r_j for answers given best first; a tie counts `tie`.

    For a reward model ties count as wrong, as in RewardBench; the length baseline counts them half,
    as a coin flip would.

    >>> pairwise_accuracy([3.0, 1.0, 2.0]), pairwise_accuracy([5, 5], tie=0.5)
    (0.6666666666666666, 0.5)
    """
    r = rewards_best_first
    if len(r) < 2:
        raise ValueError("pairwise accuracy needs at least 2 answers")
    pairs = [(i, j) for i in range(len(r)) for j in range(i + 1, len(r))]
    return sum(1.0 if r[i] > r[j] else tie if r[i] == r[j] else 0.0 for i, j in pairs) / len(pairs)


def _parse_row(obj) -> tuple[dict | None, str | None]:
    if not isinstance(obj, dict):
        return None, "expected a JSON object"
    try:
        check_conversation(obj.get("messages"))
    except ValueError as error:
        return None, str(error)
    if "candidates" in obj and ("chosen" in obj or "rejected" in obj):
        return None, "use either 'candidates' or 'chosen'/'rejected', not both"
    if "candidates" in obj:
        candidates = obj["candidates"]
        if not isinstance(candidates, list) or len(candidates) < 2:
            return None, "'candidates' needs at least 2 strings"
    elif "chosen" in obj and "rejected" in obj:
        candidates = [obj["chosen"], obj["rejected"]]
    else:
        return None, "needs 'candidates' or both 'chosen' and 'rejected'"
    if not all(isinstance(c, str) for c in candidates):
        return None, "candidates must be strings"
    empty = [k for k, c in enumerate(candidates, 1) if not c.strip()]
    if empty:
        return None, f"candidate {empty[0]} is empty"
    subset = obj.get("subset")
    if subset is not None and not isinstance(subset, str):
        return None, "'subset' must be a string"
    texts = {f"candidate {k}": c for k, c in enumerate(candidates, 1)} | {"'subset'": subset or ""}
    try:
        for what, text in texts.items():
            check_text(what, text, math.inf)
    except ValueError as error:
        return None, str(error)
    messages = [{"role": m["role"], "content": m["content"]} for m in obj["messages"]]
    return {"messages": messages, "candidates": candidates, "subset": subset or NO_SUBSET}, None


def eval_rows(lines: Iterable[tuple[int, str]], max_line_chars: int | None = None) -> Iterator[dict]:
    """Each non-blank line (numbered) as a normalised row, or as {"line", "error"} when it is malformed.

    Each line holds `messages` plus either `candidates` (best first) or `chosen`/`rejected`, and an optional
    `subset`. A line longer than `max_line_chars` is an error.

    >>> list(eval_rows([(1, '{"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hi", "rejected": "Go"}'),
    ...                 (2, "[]")]))
    [{'line': 1, 'messages': [{'role': 'user', 'content': 'Hi'}], 'candidates': ['Hi', 'Go'], 'subset': 'all'}, \
{'line': 2, 'error': 'line 2: expected a JSON object'}]
    """
    for n, line in lines:
        if not line.strip():
            continue
        if max_line_chars is not None and len(line) > max_line_chars:
            yield {"line": n, "error": f"line {n}: {len(line):,} characters; a row may have at most {max_line_chars:,}"}
            continue
        try:
            obj = json_row(line)
        except ValueError as error:
            yield {"line": n, "error": f"line {n}: {error}"}
            continue
        row, error = _parse_row(obj)
        yield {"line": n, "error": f"line {n}: {error}"} if error else {"line": n, **row}


def parse_eval_jsonl(text: str, max_line_chars: int | None = None) -> tuple[list[dict], list[str]]:
    """The rows of an evaluation JSONL text, and one error per malformed line (`eval_rows`).

    >>> rows, errors = parse_eval_jsonl('{"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello", "rejected": "Go"}\\n[]')
    >>> rows[0]["candidates"], errors
    (['Hello', 'Go'], ['line 2: expected a JSON object'])
    """
    # Lines end at "\n" only: JSON strings may hold U+2028 and other characters that splitlines() splits at.
    parsed = list(eval_rows(enumerate(text.split("\n"), 1), max_line_chars))
    return [row for row in parsed if "error" not in row], [row["error"] for row in parsed if "error" in row]


def _mean_accuracy(scores_per_row: list[list[float]], tie: float) -> float | None:
    if not scores_per_row:
        return None
    return sum(pairwise_accuracy(scores, tie) for scores in scores_per_row) / len(scores_per_row)


def _summary(rewards: list[list[float]], lengths: list[list[int]]) -> dict:
    return {"n": len(rewards), "accuracy": _mean_accuracy(rewards, tie=0.0),
            "length_baseline": _mean_accuracy(lengths, tie=0.5)}


def evaluation_report(rows: list[dict], rewards_per_row: list[list[float]], lengths_per_row: list[list[int]]) -> dict:
    """Mean pairwise accuracy of the RM, and of a longer-is-better baseline, overall and per subset.

    >>> evaluation_report([{"subset": "chat"}], [[1.0, 2.0]], [[30, 10]])["overall"]
    {'n': 1, 'accuracy': 0.0, 'length_baseline': 1.0}
    """
    if not len(rows) == len(rewards_per_row) == len(lengths_per_row):
        raise ValueError("rows, rewards_per_row and lengths_per_row differ in length")
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.get("subset", NO_SUBSET), []).append(i)
    subsets = {
        name: _summary([rewards_per_row[i] for i in idx], [lengths_per_row[i] for i in idx])
        for name, idx in sorted(groups.items())
    }
    return {"overall": _summary(rewards_per_row, lengths_per_row), "subsets": subsets}


def report_table(report: dict) -> list[list]:
    """Display rows [name, n, accuracy, length baseline]: "all rows", each named subset, then "(no subset)".

    "all rows" is the report's "overall": the mean over every scored row, each row weighing the same.
    "(no subset)" is the subset "all", the rows that named none; when no row named one it would repeat
    "all rows", and is left out.

    >>> summary = {"n": 1, "accuracy": 1.0, "length_baseline": 0.0}
    >>> report_table({"overall": summary, "subsets": {"all": summary}})
    [['all rows', 1, 1.0, 0.0]]
    >>> [row[0] for row in report_table({"overall": summary, "subsets": {"all": summary, "chat": summary}})]
    ['all rows', 'chat', '(no subset)']
    """
    subsets = dict(report["subsets"])
    unnamed = subsets.pop(NO_SUBSET, None)
    items = [(ALL_ROWS_LABEL, report["overall"]), *subsets.items()]
    if unnamed and subsets:
        items.append((NO_SUBSET_LABEL, unnamed))
    return [[name, s["n"], s["accuracy"], s["length_baseline"]] for name, s in items]


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


def evaluate(engine: Engine, lines: Iterable[tuple[int, str]], rm: str | None = None,
             readout: str | None = None, rm_format: str = "rlhf", budget: int | None = None,
             progress=lambda done: None) -> dict:
    """Score every well-formed row of an evaluation JSONL (numbered lines), read as a stream; report
    accuracy per subset beside a length-only baseline.

    Rows give candidates best first (or chosen/rejected). Malformed rows are listed under "errors" by line and
    skipped. The result holds "report", "rows" (each scored row's line, subset, rewards and lengths; not its texts,
    so memory stays small) and "errors". `progress(done)` is called with the rows done after each batch.
    """
    check_rm_format(rm_format)  # before the rows, whose own errors are collected one by one
    kept = []
    for given, done in score_rows(engine, eval_rows(lines), rm, readout, rm_format, budget):
        kept += [{k: row[k] for k in ("line", "subset", "rewards", "lengths", "error") if k in row} for row in given]
        progress(done)
    return evaluation_result(kept, [])


def evaluation_result(rows: list[dict], errors: list[str]) -> dict:
    """The report of scored rows, the rows themselves, and every malformed line (parse and scoring errors)."""
    scored = [row for row in rows if "rewards" in row]
    errors = errors + [row["error"] for row in rows if "error" in row]
    report = evaluation_report(scored, [row["rewards"] for row in scored], [row["lengths"] for row in scored])
    return {"report": report, "rows": scored, "errors": errors}
