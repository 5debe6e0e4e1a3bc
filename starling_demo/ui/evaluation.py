"""Handler of the batch-evaluation tab: score an uploaded JSONL of ranked conversations within the server's limits."""
from __future__ import annotations

import os

import gradio as gr
import pandas as pd

from ..engine import Engine
from ..evaluation import evaluation_result, parse_eval_jsonl, report_table, score_rows
from ..limits import EVAL_BATCH_TOKENS, MAX_EVAL_ROWS, MAX_LINE_CHARS, MAX_UPLOAD_BYTES, NotUtf8, utf8_lines
from ..templates import check_rm_format
from .inputs import models
from .models import PROBLEMS, explain
from .render import REPORT_HEADERS

OWN_MACHINE = "Split it, or score it on your own machine with `python -m starling_demo eval`, which has no limit."


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

    Rows are scored in batched passes of at most EVAL_BATCH_TOKENS ids, each as batch work of the engine's device
    lock, so visitors' turns go first and wait for at most one batch; a cancelled or disconnected job stops after
    its current batch.
    """
    empty = pd.DataFrame(columns=REPORT_HEADERS)
    try:
        models(engine, rm=rm)
        check_rm_format(rm_format)
        rows, errors = read_upload(path)
        engine.rm(rm)  # here, not inside the GPU calls that score the rows
        for _, done in score_rows(engine, rows, rm, readout, rm_format, EVAL_BATCH_TOKENS,
                                  lambda: engine.lock("rm", rm, batch=True)):
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
