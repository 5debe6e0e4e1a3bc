"""Handlers of the insight panels: ranking, reward trace, win probabilities, length bias, exports, batch evaluation."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from . import insight
from .engine import Engine
from .evaluation import evaluation_result, parse_eval_jsonl, report_table, score_rows
from .limits import (ALPHA_RANGE, EVAL_CHUNK_ROWS, MAX_EVAL_ROWS, MAX_LINE_CHARS, MAX_UPLOAD_BYTES, NotUtf8,
                     check_number, utf8_lines)
from .templates import check_rm_format
from .ui_inputs import models
from .ui_models import PROBLEMS, explain
from .ui_render import (RANKING_HEADERS, REPORT_HEADERS, comparison_rows, comparison_text, length_bias_text,
                        length_frame, model_inputs_text, plackett_luce_text, ranking_rows, reward_frame,
                        reward_read_note, trace_frame, trace_html, win_matrix_html)

COMPARE_HEADERS = ["candidate", "reward (main RM)", "rank (main)", "reward (second RM)", "rank (second)"]
NOT_SCORED = "*Send a message: this panel fills in once the candidates are scored.*"
NOT_SCORED_HTML = f"<p class='muted'>{NOT_SCORED.strip('*')}</p>"  # for the HTML panels
EXPORTS = Path(tempfile.mkdtemp(prefix="starling-exports-"))  # one folder per process, removed when it exits
atexit.register(shutil.rmtree, EXPORTS, ignore_errors=True)
OWN_MACHINE = "Split it, or score it on your own machine with `python -m starling_demo eval`, which has no limit."


def scored_turn(session: dict) -> dict | None:
    turn = session["turns"][-1] if session["turns"] else None
    return turn if turn and turn.get("rewards") else None


def trace_panel(session: dict, number: str | None) -> list:
    """Token-level values of one candidate: highlighted text and a line chart."""
    turn = scored_turn(session)
    if not turn:
        return [NOT_SCORED_HTML, None]
    choices = [str(i + 1) for i in range(len(turn["candidates"]))]
    k = int(number) - 1 if number in choices else insight.ranking(turn["rewards"])[0]
    tokens, values = turn["tokens"][k], turn["traces"][k]
    return [trace_html(tokens, values) + reward_read_note(turn["rewards"][k], turn["readout"]),
            trace_frame(tokens, values)]


def bias_panel(session: dict, alpha: float) -> list:
    turn = scored_turn(session)
    if not turn:
        return [NOT_SCORED, None]
    try:
        alpha = check_number("α", alpha, *ALPHA_RANGE)
    except ValueError as error:
        return [str(error), gr.skip()]
    rewards, lengths = turn["rewards"], turn["lengths"]
    # Pad the axes so that points on the extremes are not clipped at the plot's edges.
    spread = max(rewards) - min(rewards) or 1.0
    plot = gr.update(value=length_frame(rewards, lengths), x_lim=[min(lengths) - 1, max(lengths) + 1],
                     y_lim=[min(rewards) - 0.1 * spread, max(rewards) + 0.1 * spread])
    return [length_bias_text(rewards, lengths, alpha), plot]


def panels(session: dict, number: str | None, alpha: float) -> list:
    """Every insight output for the current turn, in the order `ui.build_demo` lists them."""
    turn = scored_turn(session)
    choices = [str(i + 1) for i in range(len(turn["candidates"]))] if turn else []
    best = str(insight.ranking(turn["rewards"])[0] + 1) if turn else None
    number = number if number in choices else best
    ranking = pd.DataFrame(ranking_rows(turn), columns=RANKING_HEADERS)
    if turn:
        wins = win_matrix_html(turn["rewards"])
        luce = plackett_luce_text(turn["rewards"])
        compare = comparison_text(turn) if turn.get("rewards2") else "*Choose a second reward model in the " \
                                                                        "settings to compare rankings.*"
        compare_rows = comparison_rows(turn) if turn.get("rewards2") else []
    else:
        wins, luce, compare, compare_rows = NOT_SCORED_HTML, "", NOT_SCORED, []
    lm_text, rm_text = model_inputs_text(session["turns"][-1]) if session["turns"] else ("", "")
    return [ranking, reward_frame(turn), gr.update(choices=choices, value=number),
            *trace_panel(session, number), wins, luce, *bias_panel(session, alpha),
            compare, pd.DataFrame(compare_rows, columns=COMPARE_HEADERS), lm_text, rm_text]


def insight_json(session: dict, alpha: float):
    """The current turn's insight as JSON: ranking, win probabilities, Plackett-Luce, length bias, traces."""
    turn = scored_turn(session)
    try:
        alpha = check_number("α", alpha, *ALPHA_RANGE)
    except ValueError as error:
        gr.Warning(str(error))
        return gr.skip()
    if not turn:
        gr.Warning("Nothing to explain yet: send a message and let its candidates be scored first.")
        return gr.skip()
    return insight.turn_insight(turn, alpha)


def export_file(session: dict, kind: str):
    """Write the session's turns as JSONL (`pairs` or `nectar`) and return the file path."""
    turns = [t for t in session["turns"] if t.get("rewards")]
    if not turns:
        gr.Warning("Nothing to export yet: send a message and let its candidates be scored first.")
        return gr.skip()
    text = insight.pairs_jsonl(turns) if kind == "pairs" else insight.nectar_jsonl(turns)
    for old in EXPORTS.iterdir():  # Gradio copied each into its own cache (cleaned by delete_cache) when it was sent
        if time.time() - old.stat().st_mtime > 60:
            shutil.rmtree(old, ignore_errors=True)
    path = Path(tempfile.mkdtemp(dir=EXPORTS)) / f"starling-{kind}.jsonl"
    path.write_text(text, encoding="utf-8")
    return str(path)


def export_pairs(session: dict):
    """Chosen/rejected preference pairs of this session, as JSONL."""
    return export_file(session, "pairs")


def export_nectar(session: dict):
    """Nectar-style K-wise rankings of this session, one record per turn, as JSONL."""
    return export_file(session, "nectar")


def read_upload(path: str | None) -> tuple[list[dict], list[str]]:
    """The rows and malformed lines of an uploaded evaluation file, within this server's limits."""
    if not path:
        raise ValueError("Upload a JSONL file first.")
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"The file has {size / 2**20:.1f} MB; this server takes at most {MAX_UPLOAD_BYTES // 2**20} "
                         f"MB. {OWN_MACHINE}")
    try:
        with open(path, "rb") as file:
            text = "".join(line for _, line in utf8_lines(file))
    except NotUtf8 as error:
        raise ValueError(f"The file is not UTF-8 text (line {error.line}): upload a JSONL file.") from None
    rows, errors = parse_eval_jsonl(text, MAX_LINE_CHARS)
    if len(rows) > MAX_EVAL_ROWS:
        raise ValueError(f"The file has {len(rows):,} rows; this server scores at most {MAX_EVAL_ROWS:,} per file. "
                         + OWN_MACHINE)
    return rows, errors


def evaluate_file(engine: Engine, path: str | None, rm: str, readout: str, rm_format: str = "rlhf",
                  progress=gr.Progress()):
    """Score an uploaded JSONL of ranked or chosen/rejected conversations; report accuracy and bad rows.

    Rows are scored a few at a time, as batch work of the engine's device lock, so visitors' turns go first
    and wait for at most one chunk; a cancelled or disconnected job stops after its current chunk.
    """
    empty = pd.DataFrame(columns=REPORT_HEADERS)
    try:
        models(engine, rm=rm)
        check_rm_format(rm_format)
        rows, errors = read_upload(path)
        engine.rm(rm)  # here, not inside the GPU calls that score the rows
        for done in score_rows(engine, rows, rm, readout, rm_format, EVAL_CHUNK_ROWS, engine.device_lock.batch):
            progress((done, len(rows)), desc="Scoring rows")
            yield [gr.skip(), gr.skip(), f"Scoring with **{rm}**: {done:,} of {len(rows):,} rows…"]
    except PROBLEMS as error:
        gr.Warning(explain(error))
        yield [empty, "", f"Nothing evaluated: {explain(error)}"]
        return
    result = evaluation_result(rows, errors)
    table = [[name, n, *(None if x is None else round(x, 3) for x in metrics)]
             for name, n, *metrics in report_table(result["report"])]
    status = (f"Evaluated {len(result['rows'])} rows with **{rm}**; "
              f"{len(result['errors'])} malformed row(s) skipped.")
    yield [pd.DataFrame(table, columns=REPORT_HEADERS), "\n".join(result["errors"]) or "No malformed rows.", status]
