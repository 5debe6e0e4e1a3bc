"""Handlers of the analysis panels of the latest turn: ranking, reward trace, win probabilities, length bias, exports."""
from __future__ import annotations

import atexit
import html
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from .. import insight
from ..detokenize import token_texts
from ..engine import Engine
from ..judging import judged_pairs_jsonl
from ..limits import ALPHA_RANGE, check_number
from .blind import JUDGE_FIRST, NOT_JUDGED, WAIT_FOR_JUDGING, cleared, hidden
from .cards import candidate_choices
from .render import (comparison_rows, comparison_text, length_bias_text, length_frame,
                     model_inputs_text, plackett_luce_text, reward_read_note,
                     trace_frame, trace_html, win_matrix_html)
from .view import current_turn

COMPARE_HEADERS = ["candidate", "reward (main RM)", "rank (main)", "reward (second RM)", "rank (second)"]
NOT_SCORED = "*Send a message: this panel fills in once the candidates are scored.*"
EXPORTS = Path(tempfile.mkdtemp(prefix="starling-exports-"))  # one folder per process, removed when it exits
atexit.register(shutil.rmtree, EXPORTS, ignore_errors=True)


# The length-bias plot's colour for each kind of point (`render.length_frame`), in the legend's order: Tailwind
# green-700, purple-700, orange-700 and gray-500 (mid tones; checked on the light theme only).
LENGTH_COLOURS = {"best": "#15803d", "best & longest": "#7e22ce", "longest": "#c2410c", "other": "#6b7280"}
LENGTH_KINDS = list(LENGTH_COLOURS)

NO_TRACE_HTML = ("<p class='muted'>This reward model's server gives no per-token values, only the reward: start it "
                 "with <code>--pooler-config '{\"task\": \"token_classify\"}'</code> to see the trace.</p>")


def scored_turn(session: dict) -> dict | None:
    """The latest turn if its rewards may be shown: scored, and judged if it was scored blind."""
    turn = current_turn(session)
    return turn if turn and turn.get("rewards") and not hidden(turn) else None


def waiting(session: dict) -> str:
    """What a panel says while `scored_turn` is None (Markdown)."""
    return WAIT_FOR_JUDGING if hidden(current_turn(session)) else NOT_SCORED


def waiting_html(session: dict) -> str:
    return f"<p class='muted'>{html.escape(waiting(session).strip('*'))}</p>"


def reply_tokens(engine: Engine, turn: dict, k: int) -> list[str]:
    """The text of each RM token of candidate `k`'s reply, for its trace: worked out only for a trace on show."""
    return token_texts(engine.tokenizer("rm", turn["rm"]), turn["reply_ids"][k])


def trace_panel(engine: Engine, session: dict, number: str | None) -> list:
    """Token-level values of one candidate: highlighted text and a line chart."""
    turn = scored_turn(session)
    if not turn:
        return [waiting_html(session), None]
    choices = [str(i + 1) for i in range(len(turn["candidates"]))]
    k = int(number) - 1 if number in choices else insight.ranking(turn["rewards"])[0]
    tokens, values = reply_tokens(engine, turn, k), turn["traces"][k]
    trace = trace_html(tokens, values) if values or not tokens else NO_TRACE_HTML
    return [trace + reward_read_note(turn["rewards"][k], turn["readout"], turn.get("readout_note")),
            trace_frame(tokens, values)]


def bias_panel(session: dict, alpha: float) -> list:
    turn = scored_turn(session)
    if not turn:
        return [waiting(session), None]
    try:
        alpha = check_number("α", alpha, *ALPHA_RANGE)
    except ValueError as error:
        return [str(error), gr.skip()]
    rewards, lengths = turn["rewards"], turn["lengths"]
    frame = length_frame(rewards, lengths)
    # Each kind keeps its colour whatever its legend entry says; the legend lists the best first.
    roles = dict(zip(frame["role"], frame["kind"]))
    legend = sorted(roles, key=lambda role: LENGTH_KINDS.index(roles[role]))
    # Pad the axes so that points on the extremes are not clipped at the plot's edges.
    spread = max(rewards) - min(rewards) or 1.0
    plot = gr.update(value=frame, color_map={role: LENGTH_COLOURS[kind] for role, kind in roles.items()},
                     colors_in_legend=legend, x_lim=[min(lengths) - 1, max(lengths) + 1],
                     y_lim=[min(rewards) - 0.1 * spread, max(rewards) + 0.1 * spread])
    return [length_bias_text(rewards, lengths, alpha), plot]


def panels(engine: Engine, session: dict, number: str | None, alpha: float) -> list:
    """Every analysis output for the current turn, in the order `page.build_demo` lists them (placeholders
    while the turn is not scored)."""
    turn = scored_turn(session)
    choices = candidate_choices(turn)
    best = str(insight.ranking(turn["rewards"])[0] + 1) if turn else None
    number = number if number in [value for _, value in choices] else best
    if turn:
        wins = win_matrix_html(turn["rewards"])
        luce = plackett_luce_text(turn["rewards"])
        compare = comparison_text(turn) if turn.get("rewards2") else "*Choose a second reward model in the " \
                                                                        "settings to compare rankings.*"
        compare_rows = comparison_rows(turn) if turn.get("rewards2") else []
    else:
        wins, luce, compare, compare_rows = waiting_html(session), "", waiting(session), []
    lm_text, rm_text = model_inputs_text(session["turns"][-1]) if session["turns"] else ("", "")
    return [gr.update(choices=choices, value=number),
            *trace_panel(engine, session, number), wins, luce, *bias_panel(session, alpha),
            compare, pd.DataFrame(compare_rows, columns=COMPARE_HEADERS), lm_text, rm_text]


def insight_json(engine: Engine, session: dict, alpha: float):
    """The current turn's insight as JSON: ranking, win probabilities, Plackett-Luce, length bias, traces."""
    turn = scored_turn(session)
    try:
        alpha = check_number("α", alpha, *ALPHA_RANGE)
    except ValueError as error:
        gr.Warning(str(error))
        return gr.skip()
    if not turn:
        gr.Warning(JUDGE_FIRST if hidden(current_turn(session)) else "Nothing to explain yet: send a message and "
                                                                      "let its candidates be scored first.")
        return gr.skip()
    return insight.turn_insight(turn, [reply_tokens(engine, turn, k) for k in range(len(turn["candidates"]))], alpha)


EXPORTERS = {"pairs": insight.pairs_jsonl, "nectar": insight.nectar_jsonl, "judged": judged_pairs_jsonl}


def export_file(session: dict, kind: str):
    """Write the session's turns as JSONL (a kind of EXPORTERS) and return the file path. A turn still hidden
    for blind judging is left out; "judged" takes the judged turns only, those of conversations cleared since
    (which Clear keeps, `blind.cleared`) first; the other kinds, the current conversation's."""
    turns = [*cleared(session), *session["turns"]] if kind == "judged" else session["turns"]
    turns = [t for t in turns if t.get("rewards") and not hidden(t) and (kind != "judged" or t.get("human"))]
    if not turns:
        gr.Warning(NOT_JUDGED.strip("*") if kind == "judged" else
                   "Nothing to export yet: send a message and let its candidates be scored first.")
        return gr.skip()
    return download(EXPORTERS[kind](turns), f"starling-{kind}.jsonl")


def download(text: str, name: str) -> str:
    """`text` written to a new file called `name` for a gr.File output; the path. Files sent over a minute ago go:
    Gradio copied each into its own cache (cleaned by delete_cache) when it was sent."""
    for old in EXPORTS.iterdir():
        if time.time() - old.stat().st_mtime > 60:
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(dir=EXPORTS)) / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def export_pairs(session: dict):
    """Chosen/rejected preference pairs of the current conversation, as JSONL."""
    return export_file(session, "pairs")


def export_nectar(session: dict):
    """Nectar-style K-wise rankings of the current conversation, one record per turn, as JSONL."""
    return export_file(session, "nectar")


def export_judged(session: dict):
    """The pairs you ranked in blind judging this session (cleared conversations included), chosen/rejected by you
    with the RM's rewards, as JSONL."""
    return export_file(session, "judged")
