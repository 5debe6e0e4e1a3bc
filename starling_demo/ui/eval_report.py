"""The batch evaluation's report as the tab shows it: the table's cells as text (each accuracy with its interval),
and the status that says which layout was read, what the headline numbers mean and how two reward models compare."""
from __future__ import annotations

from ..eval_layouts import NO_SUBSET
from ..evaluation import BEST_OF_K, NO_SUBSET_LABEL, PAIRWISE, TIES_SCORE, measures_of, report_groups, report_table

# Each accuracy with its 95% interval in brackets.
REPORT_HEADERS = ["subset", "rows", "accuracy of", "RM accuracy", "chance", "length-balanced", "longer wins",
                  "shorter wins", "chosen longer", "chosen shorter"]
COLUMN_WIDTHS = ["130px", "64px", "104px", "190px", "72px", "190px", "190px", "190px", "250px", "250px"]


def _value(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def with_interval(x: float | None, low: float | None, high: float | None) -> str:
    """An accuracy and its interval, as the table shows them.

    >>> with_interval(0.6123, 0.58, 0.641), with_interval(None, None, None), with_interval(1.0, None, None)
    ('0.612 (0.580–0.641)', '—', '1.000')
    """
    if x is None:
        return "—"
    return _value(x) if low is None else f"{x:.3f} ({low:.3f}–{high:.3f})"


def _split(x: float | None, low: float | None, high: float | None, n: int | None, unit: str) -> str:
    return "—" if not n else f"{with_interval(x, low, high)} · {n:,} {unit}"


def display_table(report: dict) -> list[list]:
    """`evaluation.report_table`'s rows as REPORT_HEADERS cells, each accuracy with its interval: the chosen-longer
    and chosen-shorter splits with their counts (pairs for pairwise accuracy, rows for best-of-K), "—" where a value
    is undefined."""
    cells = []
    for (name, n, metric, accuracy, low, high, chance, longer, longer_low, longer_high, shorter, shorter_low,
         shorter_high, on_longer, on_longer_low, on_longer_high, n_longer, on_shorter, on_shorter_low,
         on_shorter_high, n_shorter, balanced, balanced_low, balanced_high) in report_table(report):
        if metric == TIES_SCORE:
            cells.append([name, n, metric, with_interval(accuracy, low, high), *[""] * (len(REPORT_HEADERS) - 4)])
            continue
        unit = "rows" if metric == BEST_OF_K else "pairs"
        cells.append([name, n, metric, with_interval(accuracy, low, high), _value(chance),
                      with_interval(balanced, balanced_low, balanced_high),
                      with_interval(longer, longer_low, longer_high), with_interval(shorter, shorter_low, shorter_high),
                      _split(on_longer, on_longer_low, on_longer_high, n_longer, unit),
                      _split(on_shorter, on_shorter_low, on_shorter_high, n_shorter, unit)])
    return cells


def length_warning(report: dict) -> str:
    """A sentence naming the groups where a length-only judge scores within the RM's interval or above it."""
    alike = []
    for name, s in report_groups(report):
        if not s.get("n"):
            continue
        m = measures_of(s, s["headline"])
        best_length = max(x for x in (m["longer_wins"], m["shorter_wins"]) if x is not None)
        if m["high"] is not None and best_length >= m["low"]:
            alike.append(name)
    if not alike:
        return "On every subset the RM beats both length-only judges beyond its interval."
    return ("A length-only judge (longer wins, or shorter wins) scores within the RM's 95% interval or above it on: "
            + ", ".join(alike) + "; see the length-balanced accuracy.")


def comparison_sentence(comparison: dict, names: list[str]) -> str:
    """How the second reward model compares with the first overall, on both accuracies."""
    overall = comparison["overall"]
    parts = [f"**{names[1]}** against **{names[0]}**: they prefer the same answer on {overall['agreement']:.0%} of "
             f"rows."]
    for metric in (PAIRWISE, BEST_OF_K):
        c = overall[metric]
        if c["low"] is None:
            continue
        verdict = "resolved" if c["excludes_zero"] else "not resolved by these rows"
        apart = "overlap" if c["intervals_overlap"] else "do not overlap"
        parts.append(f"{metric} accuracy {c['b']['accuracy']:.3f} vs {c['a']['accuracy']:.3f}: difference "
                     f"{c['difference']:+.3f} (paired 95% interval {c['low']:+.3f} to {c['high']:+.3f}, {verdict}); "
                     f"their own intervals {apart}.")
    return " ".join(parts)


def comparison_table(comparison: dict, report: dict, names: list[str]) -> str:
    """Per subset (when there are several), on its own accuracy (best-of-K or pairwise): both models' accuracy, the
    share of rows where they prefer the same answer, and the difference with its paired interval, as a Markdown table.

    >>> one = {"n": 4, "agreement": 0.5, "pairwise": {"a": {"accuracy": 0.5}, "b": {"accuracy": 0.75},
    ...        "difference": 0.25, "low": -0.25, "high": 0.75, "excludes_zero": False}}
    >>> subsets = {"x": {"headline": "pairwise"}, "y": {"headline": "pairwise"}}
    >>> print(comparison_table({"subsets": {"x": one, "y": one}}, {"subsets": subsets}, ["A", "B"]).splitlines()[2])
    | x | 4 | 50% | pairwise | 0.500 | 0.750 | +0.250 (−0.250 to +0.750) |
    """
    if len(comparison["subsets"]) < 2:
        return ""
    lines = [f"| subset | rows | same answer | accuracy of | {names[0]} | {names[1]} | difference (paired 95%) |",
             "|---|---|---|---|---|---|---|"]
    for name, c in comparison["subsets"].items():
        metric = report["subsets"][name]["headline"]
        m = c[metric]
        interval = "" if m["low"] is None else f" ({m['low']:+.3f} to {m['high']:+.3f})".replace("-", "−")
        difference = f"{m['difference']:+.3f}".replace("-", "−") + interval
        if m.get("excludes_zero"):
            difference = f"**{difference}**"
        label = NO_SUBSET_LABEL if name == NO_SUBSET else name
        lines.append(f"| {label} | {c['n']:,} | {c['agreement']:.0%} | {metric} | {m['a']['accuracy']:.3f} | "
                     f"{m['b']['accuracy']:.3f} | {difference} |")
    return "\n".join(lines)


def summary(result: dict, names: list[str]) -> str:
    """The status after an evaluation: how many rows, with which model(s), read as which layout; the length warning;
    and with two models, their comparison."""
    lines = [f"Evaluated {len(result['rows'])} rows with **{' and '.join(names)}**; "
             f"{len(result['errors'])} malformed row(s) skipped. {result['layout']}"]
    if "rewardbench2_score" in result["report"]:
        lines.append(f"RewardBench 2 score (the mean over its subsets of best-of-K accuracy, the Ties score for Ties): "
                     f"**{result['report']['rewardbench2_score']:.3f}**.")
    if result["rows"]:
        lines.append(length_warning(result["report"]))
    if result.get("comparison"):
        lines.append(comparison_sentence(result["comparison"], names))
        table = comparison_table(result["comparison"], result["report"], names)
        if table:
            lines.append("Per subset (a difference in bold is resolved: its interval leaves out 0):\n\n" + table)
    return "\n\n".join(lines)
