"""The person's decisions on the conversation, which run no model: continue with a candidate, judge a blind turn,
undo a turn, clear the conversation."""
from __future__ import annotations

import copy

import gradio as gr

from ..judging import parse_ranking
from .blind import hidden, judge_turn, judged_status
from .cards import unscored_edit
from .inputs import candidate_index, named_cards
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
    return view({"turns": session["turns"][:-1]}, "Removed the last turn.")


def clear(session: dict, request: gr.Request = None):
    if busy(request):
        return unchanged(BUSY)
    return view(new_session(), "Cleared the conversation.", "")
