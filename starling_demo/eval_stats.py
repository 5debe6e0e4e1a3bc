"""Evaluation statistics: pairwise and best-of-K accuracy with their length control and bootstrap intervals, the
RewardBench 2 Ties score, and two reward models compared on the same rows. Pure functions of rewards, lengths and
tiers (0 = the best answers; chosen/rejected rows are tiers 0 and 1, a ranking 0, 1, 2, ...)."""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats

from .probes import CONFIDENCE, RESAMPLES

PAIRWISE_CHANCE = 0.5
# Per-row numbers that the group statistics sum or average (see `row_measures`).
FIELDS = ("pairwise", "pairs", "longer_pairs", "longer_right", "shorter_pairs", "shorter_right", "longer_wins",
          "best", "best_chance", "best_longer_wins", "best_shorter_wins")
# The accuracies that get an interval, in the order `_statistic` returns them.
METRICS = ("pairwise", "pairwise_chosen_longer", "pairwise_chosen_shorter", "pairwise_balanced", "pairwise_longer_wins",
           "best", "best_chosen_longest", "best_chosen_shortest", "best_balanced", "best_longer_wins",
           "best_shorter_wins")


def _tie_broken(top: list[float], rest: list[float]) -> float:
    """The chance that every value of `top` ranks above every value of `rest` when equal values are ordered at random.

    >>> _tie_broken([3, 2], [1]), _tie_broken([2], [2, 2]), _tie_broken([1], [2])
    (1.0, 0.3333333333333333, 0.0)
    """
    low, high = min(top), max(rest)
    if low != high:
        return float(low > high)
    a, b = top.count(low), rest.count(low)  # the values at the boundary: all a of top must come before all b
    return 1 / math.comb(a + b, a)


def row_measures(rewards: list[float], lengths: list[int], tiers: list[int]) -> dict:
    """One row's numbers: its pairs (i better than j by `tiers`) and whether the RM orders each right (equal rewards
    count as wrong, as in RewardBench), split by whether the better answer is the longer or the shorter one; the
    longer-wins judge (equal lengths count half); and best-of-K: every best-tier answer outscores every other one
    (chance 1/C(K, best answers)), with the length judges' chance of the same, and the chosen answer's length rank
    (`stratum`: (K, answers longer than it)) when there is one chosen answer whose length no other answer shares.

    >>> m = row_measures([2.0, 1.0, 3.0], [10, 30, 20], [0, 1, 1])
    >>> m["pairwise"], m["best"], m["best_chance"], m["longer_right"], m["shorter_right"], m["stratum"]
    (0.5, 0.0, 0.3333333333333333, 0, 1, (3, 2))
    """
    k = len(rewards)
    pairs = [(i, j) for i in range(k) for j in range(k) if tiers[i] < tiers[j]]
    if not pairs:
        raise ValueError("a row needs answers in at least two tiers")
    right = [rewards[i] > rewards[j] for i, j in pairs]
    longer = [lengths[i] > lengths[j] for i, j in pairs]
    shorter = [lengths[i] < lengths[j] for i, j in pairs]
    best_tier = [i for i in range(k) if tiers[i] == 0]
    others = [i for i in range(k) if tiers[i] != 0]
    chosen_length = lengths[best_tier[0]]
    unique = len(best_tier) == 1 and all(lengths[i] != chosen_length for i in others)
    return {
        "pairwise": sum(right) / len(pairs), "pairs": len(pairs),
        "longer_pairs": sum(longer), "longer_right": sum(r and g for r, g in zip(right, longer)),
        "shorter_pairs": sum(shorter), "shorter_right": sum(r and s for r, s in zip(right, shorter)),
        "longer_wins": (sum(longer) + 0.5 * (len(pairs) - sum(longer) - sum(shorter))) / len(pairs),
        "best": float(min(rewards[i] for i in best_tier) > max(rewards[i] for i in others)),
        "best_chance": 1 / math.comb(k, len(best_tier)),
        "best_longer_wins": _tie_broken([lengths[i] for i in best_tier], [lengths[i] for i in others]),
        "best_shorter_wins": _tie_broken([-lengths[i] for i in best_tier], [-lengths[i] for i in others]),
        "stratum": (k, sum(lengths[i] > chosen_length for i in others)) if unique else None,
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.maximum(denominator, 1), np.nan)


def _statistic(columns: dict[str, np.ndarray], strata: list[tuple[int, int]], stratum_of: np.ndarray):
    """The function of resampled row indices (any leading shape, rows last) that returns every METRICS value."""

    def statistic(index: np.ndarray, axis: int = -1) -> np.ndarray:
        index = index.astype(np.intp)
        total = lambda name: columns[name][index].sum(axis=-1)  # noqa: E731
        mean = lambda name: columns[name][index].mean(axis=-1)  # noqa: E731
        chosen_longer = _ratio(total("longer_right"), total("longer_pairs"))
        chosen_shorter = _ratio(total("shorter_right"), total("shorter_pairs"))
        in_stratum = stratum_of[index]
        best = columns["best"][index]
        shape = index.shape[:-1]
        by_k: dict[int, list[np.ndarray]] = {}  # K -> accuracy at each length rank of the chosen answer
        counts: dict[int, np.ndarray] = {}
        longest, shortest = [np.zeros(shape), np.zeros(shape)], [np.zeros(shape), np.zeros(shape)]  # right, rows
        for s, (k, rank) in enumerate(strata):
            member = in_stratum == s
            n, right = member.sum(axis=-1), (best * member).sum(axis=-1)
            by_k.setdefault(k, []).append(_ratio(right, n))
            counts[k] = counts.get(k, 0) + n
            for ends, at in ((longest, rank == 0), (shortest, rank == k - 1)):
                if at:
                    ends[0], ends[1] = ends[0] + right, ends[1] + n
        balanced = np.full(shape, np.nan)
        if by_k and all(len(accuracies) == k for k, accuracies in by_k.items()):  # else a length rank has no rows
            balanced = sum(counts[k] * np.mean(np.stack(accuracies), axis=0) for k, accuracies in by_k.items()) \
                / sum(counts.values())
        return np.stack([mean("pairwise"), chosen_longer, chosen_shorter, (chosen_longer + chosen_shorter) / 2,
                         mean("longer_wins"), best.mean(axis=-1), _ratio(*longest), _ratio(*shortest), balanced,
                         mean("best_longer_wins"), mean("best_shorter_wins")])

    return statistic


def _intervals(n: int, statistic, outputs: int, confidence: float, resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap intervals of a vector-valued `statistic` of resampled indices 0..n-1 (rows, or prompts),
    seeded; NaN where there are fewer than 2 of them. A resample where a value is undefined (an empty split) is left
    out of that value's percentiles."""
    if n < 2:
        return np.full(outputs, np.nan), np.full(outputs, np.nan)
    with warnings.catch_warnings():  # identical values, or an empty split in some resamples
        warnings.simplefilter("ignore")
        result = stats.bootstrap((np.arange(n, dtype=float),), statistic, n_resamples=resamples, method="percentile",
                                 rng=np.random.default_rng(0), batch=256)
        tail = 100 * (1 - confidence) / 2
        return tuple(np.nanpercentile(result.bootstrap_distribution, [tail, 100 - tail], axis=-1))


def _number(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def group_summary(measures: list[dict], confidence: float = CONFIDENCE, resamples: int = RESAMPLES) -> dict:
    """Every METRICS accuracy of a group of rows (`row_measures`), with its percentile bootstrap interval over rows
    (`resamples` resamples, seeded: the same rows give the same intervals; none for fewer than 2 rows), the chance
    levels, and the counts behind each length split.

    Length-balanced accuracy weighs the length splits equally: for pairs, the mean of the accuracy on pairs whose
    better answer is the longer one and on those where it is the shorter one; for best-of-K, the mean over the chosen
    answer's length ranks (longest, ..., shortest) of K answers, so that a judge of length alone scores exactly 1/K.
    It is undefined (None) when a split has no rows: such a file cannot tell reward from length.

    >>> s = group_summary([row_measures([2.0, 1.0], [20, 10], [0, 1]), row_measures([2.0, 1.0], [10, 20], [0, 1])])
    >>> s["pairwise"]["accuracy"], s["pairwise"]["balanced"]["accuracy"], s["pairwise"]["longer_wins"]
    (1.0, 1.0, 0.5)
    """
    n = len(measures)
    if n == 0:
        return {"n": 0}
    columns = {name: np.array([m[name] for m in measures], dtype=float) for name in FIELDS}
    strata = sorted({m["stratum"] for m in measures if m["stratum"] is not None})
    stratum_of = np.array([strata.index(m["stratum"]) if m["stratum"] is not None else -1 for m in measures])
    statistic = _statistic(columns, strata, stratum_of)
    point = statistic(np.arange(n))
    low, high = _intervals(n, statistic, len(METRICS), confidence, resamples)
    value = {name: {"accuracy": _number(p), "low": _number(lo), "high": _number(hi)}
             for name, p, lo, hi in zip(METRICS, point, low, high)}
    ranks = [m["stratum"] for m in measures if m["stratum"] is not None]
    pairwise = {**value["pairwise"], "chance": PAIRWISE_CHANCE, "pairs": int(columns["pairs"].sum()),
                "longer_wins": value["pairwise_longer_wins"]["accuracy"],
                "shorter_wins": _number(1 - point[METRICS.index("pairwise_longer_wins")]),
                "longer_wins_interval": _interval(value["pairwise_longer_wins"]),
                "shorter_wins_interval": _interval(value["pairwise_longer_wins"], complement=True),
                "chosen_longer": {**value["pairwise_chosen_longer"], "n": int(columns["longer_pairs"].sum())},
                "chosen_shorter": {**value["pairwise_chosen_shorter"], "n": int(columns["shorter_pairs"].sum())},
                "equal_lengths": int((columns["pairs"] - columns["longer_pairs"] - columns["shorter_pairs"]).sum()),
                "balanced": value["pairwise_balanced"]}
    best = {**value["best"], "chance": float(columns["best_chance"].mean()),
            "longer_wins": value["best_longer_wins"]["accuracy"], "shorter_wins": value["best_shorter_wins"]["accuracy"],
            "longer_wins_interval": _interval(value["best_longer_wins"]),
            "shorter_wins_interval": _interval(value["best_shorter_wins"]),
            "chosen_longest": {**value["best_chosen_longest"], "n": sum(rank == 0 for _, rank in ranks)},
            "chosen_shortest": {**value["best_chosen_shortest"], "n": sum(rank == k - 1 for k, rank in ranks)},
            "not_ranked_by_length": n - len(ranks), "balanced": value["best_balanced"]}
    return {"n": n, "pairwise": pairwise, "best_of_k": best}


def _interval(value: dict, complement: bool = False) -> list:
    """[low, high] of an accuracy's interval, or of 1 minus it (the other length-only judge of pairs)."""
    if complement:
        return [None if value["high"] is None else 1 - value["high"], None if value["low"] is None else 1 - value["low"]]
    return [value["low"], value["high"]]


def overlap(a: dict, b: dict) -> bool | None:
    """Whether two accuracies' intervals ({"low", "high"}) overlap; None when either has none.

    >>> overlap({"low": 0.1, "high": 0.5}, {"low": 0.4, "high": 0.9}), overlap({"low": 0.1, "high": 0.3}, {"low": 0.4, "high": 0.9})
    (True, False)
    """
    if None in (a.get("low"), a.get("high"), b.get("low"), b.get("high")):
        return None
    return a["low"] <= b["high"] and b["low"] <= a["high"]


def paired_difference(a: list[float], b: list[float], confidence: float = CONFIDENCE,
                      resamples: int = RESAMPLES) -> dict:
    """mean(b) - mean(a) over the same rows, with a paired percentile bootstrap interval (the same resampled rows
    for both, seeded), and whether it excludes 0.

    >>> paired_difference([1, 0, 1, 0], [1, 1, 1, 1])["difference"]
    0.5
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    difference = b - a
    statistic = lambda index, axis=-1: difference[index.astype(np.intp)].mean(axis=-1)[None]  # noqa: E731
    (low,), (high,) = _intervals(len(a), statistic, 1, confidence, resamples)
    low, high = _number(low), _number(high)
    return {"difference": float(b.mean() - a.mean()), "low": low, "high": high,
            "excludes_zero": None if low is None else bool(low > 0 or high < 0)}


def _prompt_stats(rewards: list[float], tiers: list[int]) -> tuple[bool, float | None, float]:
    correct = [r for r, t in zip(rewards, tiers) if t == 0]
    incorrect = [r for r, t in zip(rewards, tiers) if t != 0]
    spread = max(correct) - min(correct) if len(correct) > 1 else None
    margin = min(correct) - max(incorrect)
    return margin > 0, spread, margin


def ties_score(rows: list[dict], confidence: float = CONFIDENCE, resamples: int = RESAMPLES) -> dict | None:
    """RewardBench 2's Ties score of rows with ids "ref:N" (one correct answer) and "tied:N" (several), each with
    "rewards" and "tiers" (correct answers tier 0): 0.30 x accuracy on tied prompts + 0.30 x on reference prompts
    (accurate: the worst correct answer outscores the best incorrect one) + 0.20 x the share of prompts N whose
    correct-incorrect margin exceeds the spread among their correct answers + 0.20 x the same with the smaller of the
    tied and reference margins + 0.01 x mean tanh(that margin / spread - 1), as its `process_single_model` computes
    it; with a percentile bootstrap interval over prompts for the score and the two accuracies. None when no row has
    such an id.

    >>> ties_score([{"id": "ref:0", "rewards": [3.0, 1.0], "tiers": [0, 1]},
    ...             {"id": "tied:0", "rewards": [3.0, 2.5, 1.0], "tiers": [0, 0, 1]}])["score"]  # 1 + 0.01 tanh(3)
    1.009640275800758
    """
    ref, tied = {}, {}
    for row in rows:
        kind, _, prompt = str(row.get("id", "")).partition(":")
        if kind in ("ref", "tied") and prompt:
            (ref if kind == "ref" else tied)[prompt] = _prompt_stats(row["rewards"], row["tiers"])
    if not ref and not tied:
        return None
    prompts = sorted(set(ref) | set(tied))
    nan = float("nan")
    ref_right = np.array([float(ref[p][0]) if p in ref else nan for p in prompts])
    tied_right = np.array([float(tied[p][0]) if p in tied else nan for p in prompts])
    both = np.array([p in ref and p in tied and tied[p][1] is not None for p in prompts])
    spread = np.array([tied[p][1] if b else nan for p, b in zip(prompts, both)], dtype=float)
    tied_margin = np.array([tied[p][2] if b else nan for p, b in zip(prompts, both)], dtype=float)
    harder = np.array([min(ref[p][2], tied[p][2]) if b else nan for p, b in zip(prompts, both)], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_prompt = {"preferred": (tied_margin > spread).astype(float), "hard": (harder > spread).astype(float),
                      "margin": np.nan_to_num(np.tanh(harder / spread - 1), nan=0.0)}

    def statistic(index: np.ndarray, axis: int = -1) -> np.ndarray:
        """Over resampled prompts (a prompt brings its ref and its tied rows): the score and its parts; a part with
        no prompt counts 0, as RewardBench 2's does."""
        index = index.astype(np.intp)

        def mean(values: np.ndarray, member: np.ndarray) -> np.ndarray:
            count = member[index].sum(axis=-1)
            return np.where(count > 0, np.where(member, values, 0.0)[index].sum(axis=-1) / np.maximum(count, 1), 0.0)

        ref_accuracy = mean(ref_right, ~np.isnan(ref_right))
        tied_accuracy = mean(tied_right, ~np.isnan(tied_right))
        preferred, hard, margin = (mean(per_prompt[k], both) for k in ("preferred", "hard", "margin"))
        score = 0.30 * tied_accuracy + 0.30 * ref_accuracy + 0.20 * preferred + 0.20 * hard + 0.01 * margin
        return np.stack([score, ref_accuracy, tied_accuracy, preferred, hard, margin])

    point = statistic(np.arange(len(prompts)))
    low, high = _intervals(len(prompts), statistic, len(point), confidence, resamples)
    names = ("score", "ref_accuracy", "tied_accuracy", "correctness_preferred", "correctness_preferred_hard",
             "margin_score")
    result = {name: float(value) for name, value in zip(names, point)}
    for name, lo, hi in list(zip(names, low, high))[:3]:  # the score and the two accuracies get an interval
        result[f"{name}_interval"] = [_number(lo), _number(hi)]
    return {**result, "ref_prompts": len(ref), "tied_prompts": len(tied)}
