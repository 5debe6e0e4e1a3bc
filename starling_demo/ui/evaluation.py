"""Handler of the batch-evaluation tab: score an uploaded file of ranked or chosen/rejected answers within the server's
limits, with one reward model or two to compare, and show its report, pictures and each row's result;
and the page's own steps around it (`starting`, `finished`): nothing of the previous file on screen while a new one
is scored, one evaluation at a time, and a status that says how far a cancelled one got."""
from __future__ import annotations

import json
import os
import threading

import gradio as gr
import pandas as pd

from ..engine import Engine
from ..eval_layouts import rows_of_file, split_errors
from ..evaluation import evaluation_result, score_rows
from ..host_memory import release_freed_memory
from ..limits import MAX_EVAL_ROWS, MAX_LINE_CHARS, MAX_UPLOAD_BYTES, NotUtf8, utf8_lines
from ..templates import check_rm_format
from .analysis import download
from .eval_plots import accuracy_plot, margin_plot
from .eval_report import REPORT_HEADERS, display_table, summary
from .inputs import models
from .models import PROBLEMS, explain

NO_COMPARISON = "none"  # the second reward model's choice that compares nothing

OWN_MACHINE = "Split it, or score it on your own machine with `python -m starling_demo eval`, which has no limit."
EVALUATE = "Evaluate with the chosen reward model"
RUNNING = "An evaluation is running: wait for it or cancel it"  # Evaluate's label (and it is off) while one runs
# The page's evaluations now asked for, by visitor (session hash): {"done": rows scored, "total": rows in the file,
# None until it is read}. `starting` adds one, the evaluation counts its rows there and removes it when it ends by
# itself; one that is still here when the page's event has ended was cancelled, and `finished` says how far it got.
# A visitor who leaves mid-evaluation leaves theirs behind: at most MAX_RUNS are kept, the oldest dropped first.
RUNS: dict[str, dict] = {}
RUNS_LOCK = threading.Lock()
MAX_RUNS = 1000


def read_upload(path: str | None) -> tuple[list[dict], list[str]]:
    """The rows and malformed rows of an uploaded evaluation file (JSONL, a JSON array or Parquet), within this
    server's limits."""
    if not path:
        raise ValueError("Upload a JSONL, JSON or Parquet file first.")
    size = os.path.getsize(path)
    if size > MAX_UPLOAD_BYTES:
        raise ValueError(f"The file has {size / 2**20:.1f} MB; this server takes at most {MAX_UPLOAD_BYTES // 2**20} "
                         f"MB. {OWN_MACHINE}")

    def lines(file_path: str):
        with open(file_path, "rb") as file:
            yield from utf8_lines(file)

    try:
        rows, count = rows_of_file(path, lines, MAX_LINE_CHARS)
        if count is None or count <= MAX_EVAL_ROWS:  # a JSON array's or Parquet's count comes before its rows
            rows, errors = split_errors(rows)
            count = len(rows)
    except NotUtf8 as error:
        raise ValueError(f"The file is not UTF-8 text (line {error.line}): upload a JSONL, JSON or Parquet "
                         "file.") from None
    except ValueError as error:  # a JSON array that is not valid JSON, a file that is not Parquet
        raise ValueError(f"The file cannot be read: {error}.") from None
    if count > MAX_EVAL_ROWS:
        raise ValueError(f"The file has {count:,} rows; this server scores at most {MAX_EVAL_ROWS:,} per file. "
                         + OWN_MACHINE)
    return rows, errors


def empty_report() -> pd.DataFrame:
    return pd.DataFrame(columns=REPORT_HEADERS)


def visitor_of(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def starting(rm: str, request: gr.Request = None) -> list:
    """What the page shows the moment Evaluate is pressed, before the job is queued: no report, pictures, rows file
    or malformed rows (nothing of the previous file), a status that says it scores, Evaluate off saying why, Cancel
    on.

    Outputs: report, malformed rows, status, accuracy picture, margin picture, rows file, Evaluate, Cancel."""
    visitor = visitor_of(request)
    if visitor:
        with RUNS_LOCK:
            RUNS.pop(visitor, None)
            RUNS[visitor] = {"done": 0, "total": None}
            while len(RUNS) > MAX_RUNS:
                del RUNS[next(iter(RUNS))]
    return [*nothing_yet(f"Scoring with **{rm}**: starting…"), gr.update(interactive=False, value=RUNNING),
            gr.update(interactive=True)]


def finished(status: str | None, request: gr.Request = None) -> list:
    """After the page's evaluation ended (it finished, failed or was cancelled): Evaluate on again, Cancel off,
    and, unless its own last frame said how it ended, a status that says how many rows had been scored (nothing is
    reported then: the rows scored so far are not kept).

    Outputs: status, Evaluate, Cancel."""
    with RUNS_LOCK:
        run = RUNS.pop(visitor_of(request), None)
    if run is None:  # it ended by itself and its last frame says how, unless Cancel was pressed as that frame came
        ended_unseen = (status or "").startswith("Scoring with")
        status = "Cancelled as it ended; nothing reported: press Evaluate again." if ended_unseen else gr.skip()
    elif run["total"] is None:  # cancelled while queued or loading, or refused by the queue (Gradio says so)
        status = "Stopped before any row was scored; nothing reported."
    else:
        how = "Stopped by an error" if run.get("failed") else "Cancelled"
        status = f"{how} after {run['done']:,} of {run['total']:,} rows; nothing reported."
    return [status, gr.update(interactive=True, value=EVALUATE), gr.update(interactive=False)]


def nothing_yet(status: str) -> list:
    """A frame with no report, pictures or rows file: while scoring, and when nothing was evaluated."""
    return [empty_report(), "", status, None, None, None]


def evaluate_file(engine: Engine, path: str | None, rm: str, readout: str, rm_format: str = "rlhf",
                  compare_rm: str = NO_COMPARISON, progress=gr.Progress(), request: gr.Request = None):
    """Score an uploaded file of ranked or chosen/rejected answers (ours, RewardBench's or RewardBench 2's); report
    accuracy per subset with its length control and intervals, the pictures, each row's result as JSONL, and the
    malformed rows; with `compare_rm`, score it again with that reward model and compare the two.

    Rows are scored in batched passes of at most `Engine.shared_batch_tokens` ids, each as batch work of the
    engine's device lock, so visitors' turns go first and wait for at most one batch; a cancelled or disconnected
    job stops after its current batch. Its progress frames hold an empty report and no malformed rows, as values:
    Gradio rebuilds a component for every property update (gr.skip() too), and a value that did not change costs
    nothing. The page has emptied both already as Evaluate was pressed (`starting`).
    Outputs: report, malformed rows, status, accuracy picture, margin picture, each row's result (a JSONL file).
    """
    visitor = visitor_of(request)
    with RUNS_LOCK:
        run = RUNS.get(visitor) if visitor else None  # the page's record of this run, if the page asked for it

    def ended() -> None:
        """This run ended by itself with a frame that says how: forget it (unless a newer one replaced it)."""
        with RUNS_LOCK:
            if run is not None and RUNS.get(visitor) is run:
                del RUNS[visitor]

    comparing = bool(compare_rm) and compare_rm != NO_COMPARISON
    try:
        models(engine, rm=rm)
        if comparing:
            models(engine, rm=compare_rm)
        check_rm_format(rm_format)
        rows, errors = read_upload(path)
        names = [rm, compare_rm] if comparing else [rm]
        scored, total = [], len(rows) * len(names)
        if run is not None:
            run["total"] = total
        for number, name in enumerate(names):
            engine.rm(name)  # here, not inside the GPU calls that score the rows
            # The second model scores copies: each row keeps the first model's rewards.
            given = rows if number == 0 else [{k: v for k, v in row.items() if k not in ("rewards", "lengths")}
                                              for row in rows]
            for _, done in score_rows(engine, given, name, readout, rm_format, engine.shared_batch_tokens(name),
                                      lambda: engine.lock("rm", name, batch=True)):
                done += number * len(rows)
                if run is not None:
                    run["done"] = done
                progress((done, total), desc="Scoring rows")
                yield nothing_yet(f"Scoring with **{name}**: {done:,} of {total:,} rows…")
            scored.append(given)
    except PROBLEMS as error:
        ended()
        gr.Warning(explain(error))
        yield nothing_yet(f"Nothing evaluated: {explain(error)}")
        return
    except Exception:
        if run is not None:
            run["failed"] = True  # Gradio shows the error; `finished` says how far it got
        raise
    finally:  # also when cancelled: the server would otherwise keep the scoring's peak for good
        release_freed_memory()
    ended()
    result = evaluation_result(scored[0], errors, scored[1] if comparing else None)
    rows_file = download("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in result["rows"]),
                         "evaluation-rows.jsonl") if result["rows"] else None
    pictures = [accuracy_plot(result["report"]), margin_plot(result["rows"])] if result["rows"] else [None, None]
    yield [pd.DataFrame(display_table(result["report"]), columns=REPORT_HEADERS),
           "\n".join(result["errors"]) or "No malformed rows.", summary(result, names), *pictures, rows_file]
