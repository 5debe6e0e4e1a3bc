"""Batch evaluation: score ranked or chosen/rejected conversations and report pairwise accuracy."""
from __future__ import annotations

from collections.abc import Callable

from .engine import Engine
from .insight import evaluation_report, parse_eval_jsonl


def evaluate(engine: Engine, text: str, rm: str | None = None, readout: str | None = None,
             progress: Callable[[int, int], None] | None = None) -> dict:
    """Score every well-formed row of a JSONL text; report accuracy per subset beside a length-only baseline.

    Rows give candidates best first (or chosen/rejected). Malformed rows are listed under "errors"
    by line and skipped. The result holds "report", "rows" (each with its "rewards") and "errors".
    """
    rows, errors = parse_eval_jsonl(text)
    rewards, lengths = [], []
    for done, row in enumerate(rows):
        if progress:
            progress(done, len(rows))
        try:
            scores = engine.score(row["messages"], row["candidates"], rm, readout)
        except ValueError as error:  # e.g. turns that do not alternate
            errors.append(f"line {row['line']}: {error}")
            continue
        row["rewards"] = scores.rewards
        rewards.append(scores.rewards)
        lengths.append(scores.lengths)
    if progress:
        progress(len(rows), len(rows))
    scored = [row for row in rows if "rewards" in row]
    return {"report": evaluation_report(scored, rewards, lengths), "rows": scored, "errors": errors}
