"""The person's decisions on the conversation, which run no model: continue with a candidate, judge a blind turn,
undo a turn, clear the conversation (keeping the session's tallies), clear the tallies too."""
from __future__ import annotations

import copy

import gradio as gr

from ..judging import parse_ranking
from .blind import (MAX_CLEARED, cleared, conversation_number, hidden, judge_turn, judged_status, judging_json,
                    kept_turn)
from .cards import unscored_edit
from .inputs import candidate_index, named_cards
from .probing import kept_probes, probe_count
from .view import BUSY, busy, current_turn, new_session, unchanged, view


@named_cards
def use_candidate(session: dict, number: float, request: gr.Request = None, *cards: str):
    """Continue the conversation with candidate `number` (1-based) instead of the best one."""
    if busy(request):
        return unchanged(BUSY)
    turn = current_turn(session)
    if not turn or not turn["candidates"]:
        return unchanged("There are no candidates to pick from yet: send a message first.")
    edit = unscored_edit(turn, cards, "pick")
    if edit:
        return unchanged(edit)
    try:
        k = candidate_index(number, len(turn["candidates"]))
    except ValueError as error:
        return unchanged(str(error))
    work = copy.deepcopy(session)
    if hidden(turn):  # picking the best is the person's verdict
        judge_turn(current_turn(work), [k])
        return view(work, judged_status(current_turn(work)))
    current_turn(work).update(chosen=k, picked_by="you")
    return view(work, f"Continuing with candidate {k + 1}.")


@named_cards
def judge(session: dict, ranking, request: gr.Request = None, *cards: str):
    """Rank a blind turn's candidates (1-based numbers, best first; the best alone will do), then see the RM's."""
    if busy(request):
        return unchanged(BUSY)
    turn = current_turn(session)
    if not turn or not turn.get("rewards"):
        return unchanged("Nothing to judge yet: send a message and let its candidates be scored first.")
    if not hidden(turn):
        return unchanged("This turn's rewards are already shown: tick “Judge first” before sending, to judge the "
                         "next turn blind.")
    edit = unscored_edit(turn, cards, "judge")
    if edit:
        return unchanged(edit)
    try:
        order = parse_ranking(ranking, len(turn["candidates"]))
    except ValueError as error:
        return unchanged(str(error))
    work = copy.deepcopy(session)
    judge_turn(current_turn(work), order)
    return view(work, judged_status(current_turn(work)))


def undo(session: dict, request: gr.Request = None):
    if busy(request):
        return unchanged(BUSY)
    if not session["turns"]:
        return unchanged("Nothing to undo: the conversation is empty.")
    # The session's cleared turns stay (`clear`); the last turn goes, its judgement and probes with it.
    return view({**session, "turns": session["turns"][:-1]}, "Removed the last turn.")


def kept_status(session: dict, dropped: int = 0) -> str:
    """What the session's tallies still hold after Clear (nothing when they are empty)."""
    judged, probed = judging_json(session)["tally"]["turns"], probe_count(session)
    kept = ([f"blind-judging tally ({judged} judged turn{'s' * (judged != 1)})"] if judged else []) + (
        [f"probe results ({probed} probed candidate{'s' * (probed != 1)})"] if probed else [])
    if not kept:
        return ""
    oldest = (f" The oldest {dropped} cleared turn{'s were' if dropped != 1 else ' was'} dropped: a session keeps "
              f"the last {MAX_CLEARED}." if dropped else "")
    return (f" Your {' and '.join(kept)} {'are' if probed else 'is'} kept: press “Clear all” to reset "
            f"{'them' if probed else 'it'} too.{oldest}")


def clear(session: dict, request: gr.Request = None):
    """Start a new conversation; the session's blind-judging tally and probe results keep its judged and probed
    turns (in `session["cleared"]`, only what they and `/export_judged` need), until “Clear all” (`clear_all`)."""
    if busy(request):
        return unchanged(BUSY)
    number = conversation_number(session)
    kept = [({"conversation": number, "turn": k}, kept_turn(turn) | kept_probes(turn))
            for k, turn in enumerate(session["turns"], 1)]
    earlier = [*cleared(session), *(numbers | facts for numbers, facts in kept if facts)]
    dropped = max(0, len(earlier) - MAX_CLEARED)
    work = new_session() | ({"cleared": copy.deepcopy(earlier[dropped:])} if earlier else {})
    return view(work, "Cleared the conversation." + kept_status(work, dropped), "")


def clear_all(session: dict, request: gr.Request = None):
    """Clear the conversation and the session's tallies: its blind judging and probe results."""
    if busy(request):
        return unchanged(BUSY)
    reset = " and the session's blind-judging tally and probe results" if cleared(session) or any(
        turn.get("judgement") or turn.get("probes") for turn in session["turns"]) else ""
    return view(new_session(), f"Cleared the conversation{reset}.", "")
