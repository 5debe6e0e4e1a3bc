"""What moves the reward: perturbation probes and sentence attribution, every variant of a candidate scored in
batched passes that encode the conversation once (`batching.score_stream`), never one call per variant."""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats

from .edits import Edit, text_of, units, without
from .batching import score_stream

CONFIDENCE = 0.95
RESAMPLES = 2000


def text_rewards(rm, messages: list[dict], texts: list[str], readout: str | None = None, rm_format: str = "rlhf",
                 lock: Callable = contextlib.nullcontext, budget: int | None = None,
                 ) -> tuple[dict[str, float], str, str | None]:
    """The reward of each distinct text of `texts` as a reply to `messages`, with the read-out used and its note.

    The distinct texts are the candidates of one conversation in `batching.score_stream`: its encoding runs once per
    batch of at most `budget` ids (default: the model's `batch_tokens()`), the replies in runs of similar length.
    Each reward equals `score(rm, messages, [text])`: a pass shares the conversation's encoding, not the numbers.
    Each pass runs inside `with lock():`, so that a long probe lets others' turns use the device between its passes.
    """
    distinct = list(dict.fromkeys(texts))
    [(_, scores)] = [pair for ready, _ in score_stream(rm, [(messages, distinct)], readout, rm_format, lock=lock,
                                                       budget=budget) for pair in ready]
    if isinstance(scores, ValueError):
        raise scores
    return dict(zip(distinct, scores.rewards)), scores.readout, scores.note


def probe(rm, messages: list[dict], candidates: list[str], edits: list[Edit], readout: str | None = None,
          rm_format: str = "rlhf", lock: Callable = contextlib.nullcontext, budget: int | None = None) -> dict:
    """Each candidate as written and under each edit, scored together: per candidate its reward and, per edit,
    the variant's reward and `delta` (variant minus candidate). A text is scored once however many edits give it,
    and an edit that leaves a candidate as it was is `changed` False, delta 0. `lock` and `budget` as in
    `text_rewards`.
    """
    variants = [[edit.apply(text) for edit in edits] for text in candidates]
    reward_of, readout, note = text_rewards(rm, messages, [*candidates, *(v for row in variants for v in row)],
                                            readout, rm_format, lock, budget)
    results = [{"candidate": k, "reward": reward_of[text], "edits": [
        {"edit": edit.name, "description": edit.description, "text": variant, "changed": variant != text,
         "reward": reward_of[variant], "delta": reward_of[variant] - reward_of[text]}
        for edit, variant in zip(edits, edited)]} for k, (text, edited) in enumerate(zip(candidates, variants))]
    return {"readout": readout, "readout_note": note, "rm_format": rm_format, "candidates": results}


def attribute(rm, messages: list[dict], candidate: str, readout: str | None = None, rm_format: str = "rlhf",
              lock: Callable = contextlib.nullcontext, budget: int | None = None) -> dict:
    """The reward of `candidate` with each of its `edits.units` (sentences, list items, code blocks) left out, all
    in batched passes (`lock` and `budget` as in `text_rewards`): per unit its text, span, `reward_without` and
    `drop` (the reward minus that).

    A positive drop is reward the unit earns: without it the reply scores lower.
    """
    parts = units(candidate)
    leaving = [without(candidate, u) for u in parts]
    reward_of, readout, note = text_rewards(rm, messages, [candidate, *leaving], readout, rm_format, lock, budget)
    base = reward_of[candidate]
    return {"reward": base, "readout": readout, "readout_note": note, "rm_format": rm_format, "units": [
        {"start": u.start, "end": u.end, "kind": u.kind, "text": text_of(candidate, u), "reward_without": reward_of[t],
         "drop": base - reward_of[t]} for u, t in zip(parts, leaving)]}


def mean_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None]:
    """The mean of `values` and its percentile bootstrap interval (RESAMPLES resamples, seeded: the same values
    give the same interval); no interval for fewer than 2 values.

    >>> mean_interval([1.0]), mean_interval([2.0, 2.0])
    ((1.0, None, None), (2.0, 2.0, 2.0))
    """
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, None, None
    with warnings.catch_warnings():  # identical values: a degenerate but well-defined interval
        warnings.simplefilter("ignore")
        result = stats.bootstrap((np.asarray(values, dtype=float),), np.mean, confidence_level=confidence,
                                 n_resamples=RESAMPLES, method="percentile", rng=np.random.default_rng(0))
    low, high = result.confidence_interval
    return mean, float(low), float(high)


def aggregate(runs: list[dict]) -> list[dict]:
    """Per edit over every probed candidate of `runs` (`probe` results): the mean change in reward with its
    bootstrap interval, over the candidates the edit changed (`n`), the edit that raises the reward most first.
    An edit that changed none of them has no row; two own edits ("custom") that differ have a row each.

    >>> run = {"candidates": [{"edits": [{"edit": "repeat", "description": "twice", "changed": True, "delta": d}]}
    ...                       for d in (1.0, 3.0)]}
    >>> [(a["edit"], a["mean"], a["n"]) for a in aggregate([run])]
    [('repeat', 2.0, 2)]
    """
    deltas: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        for candidate in run["candidates"]:
            for edit in candidate["edits"]:
                if edit["changed"]:  # own edits are told apart by what they do
                    deltas.setdefault((edit["edit"], edit["description"]), []).append(edit["delta"])
    rows = []
    for (name, description), values in deltas.items():
        mean, low, high = mean_interval(values)
        rows.append({"edit": name, "description": description, "mean": mean, "low": low, "high": high,
                     "n": len(values)})
    return sorted(rows, key=lambda row: -row["mean"])
