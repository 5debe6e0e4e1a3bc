"""Blind judging: how a person's ranking of a turn's candidates agrees with the reward model's, per turn and overall."""
from __future__ import annotations

import json
import re

from .insight import kendall_tau, ranking


def parse_ranking(ranking_, count: int) -> list[int]:
    """A person's ranking, best first, as 0-based candidate indices: from 1-based numbers in a list or a string
    ("3 1 2", "3,1,2", "#3 > #1"); it may stop early (the best only, say). ValueError saying what to fix.

    >>> parse_ranking("3, 1", 4), parse_ranking([2], 4), parse_ranking("#3 > #1 > #2", 3)
    ([2, 0], [1], [2, 0, 1])
    """
    items = re.findall(r"[^\s,>#]+", ranking_) if isinstance(ranking_, str) else list(ranking_ or [])
    if not items:
        raise ValueError("Rank the candidates first: pick at least the best one.")
    numbers = []
    for item in items:
        text = str(item).strip()
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= count):
            raise ValueError(f"{text!r} is not a candidate: rank numbers from 1 to {count}, best first.")
        numbers.append(int(text) - 1)
    if len(set(numbers)) != len(numbers):
        raise ValueError("A candidate appears twice in your ranking: rank each one once, best first.")
    return numbers


def ordered_pairs(order: list[int], count: int) -> list[tuple[int, int]]:
    """The pairs (better, worse) a ranking states: each ranked candidate above every one ranked after it and above
    every unranked one (unranked candidates are not ordered among themselves).

    >>> ordered_pairs([2, 0], 3)
    [(2, 0), (2, 1), (0, 1)]
    """
    unranked = [i for i in range(count) if i not in order]
    return [(a, b) for k, a in enumerate(order) for b in [*order[k + 1:], *unranked]]


def agreement(order: list[int], rewards: list[float]) -> dict:
    """How the reward model's `rewards` agree with a person's ranking `order` (best first, possibly partial).

    `top1`: the same best candidate. `pairwise`: the share of the person's pairs the RM orders the same way (a tie
    in reward does not agree). `kendall_tau` (tau-b of the two rankings): only for a complete ranking, else None.

    >>> agreement([1, 0, 2], [0.5, 2.0, -1.0])
    {'ranked': 3, 'top1': True, 'pairs': 3, 'agreed_pairs': 3, 'pairwise': 1.0, 'kendall_tau': 1.0}
    >>> agreement([2], [0.5, 2.0, -1.0])["pairwise"]
    0.0
    """
    count = len(rewards)
    pairs = ordered_pairs(order, count)
    agreed = sum(rewards[a] > rewards[b] for a, b in pairs)
    complete = len(order) >= count - 1  # the last one's place follows from the others
    position = {i: k for k, i in enumerate(order)}
    human = [-position.get(i, count) for i in range(count)]
    return {"ranked": len(order), "top1": ranking(rewards)[0] == order[0], "pairs": len(pairs),
            "agreed_pairs": agreed, "pairwise": agreed / len(pairs) if pairs else None,
            "kendall_tau": kendall_tau(human, rewards) if complete and count > 1 else None}


def tally(judgements: list[dict]) -> dict:
    """The session's agreement over judged turns (`agreement` results): top-1 rate, pairwise agreement over all
    pairs pooled, and the mean of the turns' Kendall tau, each with how many turns (or pairs) it rests on.

    >>> tally([agreement([0, 1], [1.0, 0.0]), agreement([1, 0, 2], [1.0, 0.0, -1.0])])
    {'turns': 2, 'top1': 0.5, 'pairs': 4, 'pairwise': 0.75, 'kendall_tau': 0.6666666666666667, 'tau_turns': 2}
    """
    pairs = sum(j["pairs"] for j in judgements)
    taus = [j["kendall_tau"] for j in judgements if j["kendall_tau"] is not None]
    return {"turns": len(judgements),
            "top1": sum(j["top1"] for j in judgements) / len(judgements) if judgements else None,
            "pairs": pairs, "pairwise": sum(j["agreed_pairs"] for j in judgements) / pairs if pairs else None,
            "kendall_tau": sum(taus) / len(taus) if taus else None, "tau_turns": len(taus)}


def judged_pairs_jsonl(turns: list[dict]) -> str:
    """Preference pairs chosen and rejected by the person (each turn's `human` ranking, 0-based, best first, is
    `human_ranking`), with the reward model's rewards and whether it agrees: a small human-labelled preference set.

    >>> turn = {"messages": [], "candidates": ["a", "b"], "rewards": [0.0, 1.0], "human": [0], "rm": "R", "lm": "L"}
    >>> json.loads(judged_pairs_jsonl([turn]))["rm_agrees"]
    False
    """
    records = []
    for turn in turns:
        candidates, rewards, order = turn["candidates"], turn["rewards"], turn.get("human")
        if not order:
            continue
        records += [{"messages": turn["messages"], "chosen": candidates[a], "rejected": candidates[b],
                     "chosen_reward": rewards[a], "rejected_reward": rewards[b], "rm_agrees": rewards[a] > rewards[b],
                     "human_ranking": order, "lm": turn.get("lm"), "rm": turn.get("rm"),
                     "seed": turn.get("seed")}
                    for a, b in ordered_pairs(order, len(candidates)) if candidates[a] != candidates[b]]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
