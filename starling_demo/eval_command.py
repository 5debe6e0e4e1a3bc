"""The command line's `eval`: a file of ranked or chosen/rejected answers (ours, RewardBench's or RewardBench 2's;
JSONL, a JSON array or Parquet) scored by one reward model, or two to compare them, printed as one JSON object."""
from __future__ import annotations

import argparse
import json
import sys

from .engine import Engine
from .eval_layouts import rows_of_file
from .evaluation import TABLE_COLUMNS, evaluate, evaluation_result, report_table
from .jsonl_input import InputError, progress_bar, read_lines, regular_file
from .scoring import READOUTS


def add_eval_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compare-rm", help="a second reward model (preset name, or a local folder of "
                                             "--reward-kind's layout) scored on the same rows, to compare")
    parser.add_argument("--compare-readout", choices=READOUTS,
                        help="the second model's read-out (default: --readout); without --compare-rm, compares "
                             "two read-outs of --reward-model")


def run_eval(engine: Engine, args: argparse.Namespace, out) -> None:
    """Score the file (twice with --compare-rm or --compare-readout) and print {"layout", "report", "columns",
    "table", "rows", "skipped"} (and "comparison"); malformed rows are listed on stderr and skipped."""
    regular_file(args.file)
    lines = lambda path: read_lines(path, args.max_line_bytes)  # noqa: E731
    comparing = args.compare_rm is not None or args.compare_readout is not None
    runs = [(args.reward_model, args.readout)]
    if comparing:
        runs.append((args.compare_rm or args.reward_model, args.compare_readout or args.readout))
    scored = []
    for number, (rm, readout) in enumerate(runs, 1):
        try:  # a JSON array is parsed here, a Parquet file opened: before any model work
            rows, total = rows_of_file(args.file, lines)
        except ValueError as error:
            raise InputError(f"{args.file}: {error}") from None
        what = "Scoring" if not comparing else f"Scoring with {rm} ({number} of 2)"
        with progress_bar(args.file, what, args.max_line_bytes, total) as bar:
            scored.append(evaluate(engine, rows, rm, readout, args.rm_format, args.batch_tokens,
                                   progress=lambda done: bar.update(done - bar.n)))
    result = evaluation_result(scored[0], [], scored[1] if comparing else None)
    for error in result["errors"]:
        print(f"skipped {error}", file=sys.stderr)
    print(result["layout"], file=sys.stderr)
    output = {"layout": result["layout"], "report": result["report"], "columns": TABLE_COLUMNS,
              "table": report_table(result["report"]), "rows": result["rows"], "skipped": result["errors"]}
    if comparing:
        output["comparison"] = {"a": list(runs[0]), "b": list(runs[1]), **result["comparison"]}
    print(json.dumps(output, ensure_ascii=False), file=out)
