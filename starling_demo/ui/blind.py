"""Blind judging in the UI: what a turn shows while its rewards are hidden, the person's ranking, and the tally."""
from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from .. import insight
from ..judging import agreement, tally

# Whatever would tell a person the reward model's verdict before they give theirs.
SECRET = ("rewards", "rewards2", "traces", "chosen", "picked_by", "probes", "attribution")
JUDGE_FIRST = ("Judge first: rank the candidates (press “Rank next” on each card, best first) or pick the best with "
               "“Use this reply”; then the reward model's ranking is revealed beside yours.")
TALLY_HEADERS = ["turn", "your ranking", "RM ranking", "same best", "pairs agreed", "Kendall τ"]
NOT_JUDGED = ("*No turn judged yet: tick “Judge first” beside the status line, send a message, and rank its "
              "replies.*")
WAIT_FOR_JUDGING = "*Judge first: this panel fills in once you have ranked the candidates or picked the best.*"
# What Clear keeps of a judged turn for the tally and `/export_judged` (`judged_pairs_jsonl`), and how many cleared
# turns a session keeps at most (the oldest go first): the session is deep-copied by every event.
JUDGED_KEYS = ("messages", "candidates", "rewards", "human", "judgement", "rm", "lm", "seed")
MAX_CLEARED = 200


def hidden(turn: dict | None) -> bool:
    """Whether `turn` was scored blind and its person has not judged it yet: then no reward may reach the page."""
    return bool(turn and turn.get("blind") and turn.get("rewards") and turn.get("human") is None)


def shown(turn: dict | None) -> dict | None:
    """The turn as the page may see it: without rewards, traces and choice while it is `hidden`.

    >>> shown({"blind": True, "rewards": [1.0], "candidates": ["a"]})
    {'blind': True, 'candidates': ['a'], 'hidden': True}
    """
    if not hidden(turn):
        return turn
    return {key: value for key, value in turn.items() if key not in SECRET} | {"hidden": True}


def judge_turn(turn: dict, order: list[int]) -> None:
    """Record the person's ranking (0-based, best first) and its agreement with the RM; their best continues."""
    turn.update(human=order, judgement=agreement(order, turn["rewards"]), chosen=order[0], picked_by="you")


def judged_status(turn: dict) -> str:
    judgement, rewards = turn["judgement"], turn["rewards"]
    rm_best = insight.ranking(rewards)[0]
    pairs = f"{judgement['agreed_pairs']} of {judgement['pairs']} pairs" if judgement["pairs"] else "no pairs"
    tau = "" if judgement["kendall_tau"] is None else f" · Kendall τ {judgement['kendall_tau']:.2f}"
    return (f"Revealed: **{turn['rm']}** ranks candidate {rm_best + 1} best (reward {rewards[rm_best]:.3f}); you "
            f"ranked candidate {turn['human'][0] + 1} best · {'same best' if judgement['top1'] else 'different best'}"
            f" · it agrees on {pairs}{tau}. Continuing with your best.")


def cleared(session: dict) -> list[dict]:
    """The judged or probed turns of the session's cleared conversations, oldest first, kept by Clear for the
    tallies (`choices.clear`): each has its `conversation` and `turn` numbers and what `kept_turn` keeps."""
    return session.get("cleared", [])


def conversation_number(session: dict) -> int:
    """The current conversation's number: 1 + the last cleared one's (conversations that left no judged or probed
    turn are not counted).

    >>> conversation_number({"turns": []}), conversation_number({"turns": [], "cleared": [{"conversation": 2}]})
    (1, 3)
    """
    earlier = cleared(session)
    return earlier[-1]["conversation"] + 1 if earlier else 1


def tallied_turns(session: dict) -> list[dict]:
    """Every turn the session's tallies count, the cleared ones first, each with its `conversation` and `turn`
    (1-based within its conversation) numbers.

    >>> [(t["conversation"], t["turn"]) for t in tallied_turns({"turns": [{}], "cleared": [
    ...     {"conversation": 1, "turn": 2}]})]
    [(1, 2), (2, 1)]
    """
    number = conversation_number(session)
    return [*cleared(session), *({**turn, "conversation": number, "turn": k}
                                 for k, turn in enumerate(session["turns"], 1))]


def kept_turn(turn: dict) -> dict:
    """What the blind-judging tally and `/export_judged` need of a `turn` once its conversation is cleared: nothing
    unless it was judged.

    >>> kept_turn({"human": None, "candidates": ["a"]}), sorted(kept_turn({"human": [0], "judgement": {"top1": True},
    ...     "candidates": ["a"], "rewards": [1.0], "messages": [], "traces": [[0.5]]}))
    ({}, ['candidates', 'human', 'judgement', 'lm', 'messages', 'rewards', 'rm', 'seed'])
    """
    return {key: turn.get(key) for key in JUDGED_KEYS} if turn.get("judgement") else {}


def numbers(order: list[int]) -> str:
    return " > ".join(f"#{i + 1}" for i in order)


def tally_view(session: dict) -> tuple[str, pd.DataFrame]:
    """The session's agreement between the person and the RM (`judging_json`), and a row per judged turn."""
    judged = judging_json(session)
    current = conversation_number(session)
    rows = [[turn["turn"] if turn["conversation"] == current else
             f"{turn['turn']} · cleared conv. {turn['conversation']}", numbers(turn["human"]),
             numbers(turn["ranking"]),
             "yes" if turn["judgement"]["top1"] else "no",
             f"{turn['judgement']['agreed_pairs']}/{turn['judgement']['pairs']}",
             "—" if turn["judgement"]["kendall_tau"] is None else round(turn["judgement"]["kendall_tau"], 3)]
            for turn in judged["turns"]]
    frame = pd.DataFrame(rows, columns=TALLY_HEADERS)
    if not rows:
        return NOT_JUDGED, frame
    facts = judged["tally"]
    tau = ("undefined: no turn was ranked completely" if facts["kendall_tau"] is None else
           f"**{facts['kendall_tau']:.3f}** (mean over {facts['tau_turns']} fully ranked "
           f"turn{'s' * (facts['tau_turns'] != 1)})")
    pairwise = "no pairs" if facts["pairwise"] is None else f"**{facts['pairwise']:.0%}** of {facts['pairs']} pairs"
    earlier = sum(turn["conversation"] != current for turn in judged["turns"])
    earlier = f" ({earlier} of them in cleared conversations)" if earlier else ""
    text = (f"Over **{facts['turns']}** judged turn{'s' * (facts['turns'] != 1)}{earlier}: the RM picks your best in "
            f"**{facts['top1']:.0%}**; it orders {pairwise} as you did; Kendall τ {tau}.")
    return text, frame


def hidden_ranking_html(turn: dict) -> str:
    n = len(turn["candidates"])
    return (f"<p class='muted rank-empty'>Scored {n} candidates; their rewards stay hidden until you judge. "
            f"{html.escape(JUDGE_FIRST)}</p>")


def judging_json(session: dict) -> dict:
    """The session's blind judging as JSON (the `/judging` endpoint): the tally and each judged turn, rankings
    0-based and best first, those of conversations cleared since (kept by Clear) included: `conversation` tells
    them apart (the current one is the last) and `turn` is the turn's number within it."""
    turns = [turn for turn in tallied_turns(session) if turn.get("judgement")]
    return {"tally": tally([turn["judgement"] for turn in turns]),
            "turns": [{"conversation": turn["conversation"], "turn": turn["turn"], "human": turn["human"],
                       "ranking": insight.ranking(turn["rewards"]), "rewards": turn["rewards"],
                       "judgement": turn["judgement"]} for turn in turns]}


def judge_panel(session: dict) -> list:
    """The ranking box, emptied unless the turn waits to be judged (the person may have begun with the cards' "Rank
    next" the moment they came), and the session's tally. The row of the box is shown by the stylesheet while a card
    has "Rank next"."""
    turn = session["turns"][-1] if session["turns"] else None
    return [gr.skip() if hidden(turn) else "", *tally_view(session)]
