"""The command line's input: JSONL files read line by line as a stream, each record checked, every error naming
the file and the line; and a progress bar over a file's lines."""
from __future__ import annotations

import json
import math
import shutil
import sys
from collections.abc import Iterator

from tqdm import tqdm

from .limits import NotUtf8, check_text, utf8_lines
from .templates import check_conversation


class InputError(ValueError):
    """A malformed input line."""


def read_lines(path: str) -> Iterator[tuple[int, str]]:
    """Each line of `path` with its number (`limits.utf8_lines`); errors name the file."""
    try:
        file = open(path, "rb")
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror.lower()}") from None
    with file:
        try:
            yield from utf8_lines(file)
        except NotUtf8 as error:
            raise InputError(f"{path}, {error}") from None


def jsonl_records(path: str, need_candidates: bool) -> Iterator[tuple[int, dict]]:
    """Each record of `path` with its line number, validated: InputError names the first bad line."""
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise InputError("each line must be a JSON object")
            check_conversation(record.get("messages"))
            candidates = record.get("candidates")
            if need_candidates:
                if not (isinstance(candidates, list) and candidates and all(isinstance(c, str) for c in candidates)):
                    raise InputError("'candidates' must be a non-empty list of strings")
                for k, candidate in enumerate(candidates, 1):
                    check_text(f"candidate {k}", candidate, math.inf)  # no size cap in the CLI
            # score and generate print the record back, and stdout cannot carry a lone surrogate in any field.
            try:
                json.dumps(record, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise InputError("a field is not valid Unicode (it holds a lone surrogate such as \\ud800)") from None
        except (json.JSONDecodeError, ValueError) as error:
            raise InputError(f"{path}, line {number}: {error}") from None
        yield number, record


def read_jsonl(path: str, need_candidates: bool) -> list[tuple[int, dict]]:
    """Every record of `path` with its line number, validated before any model work, so a bad line stops the run."""
    return list(jsonl_records(path, need_candidates))


def progress_bar(path: str, what: str):
    """A progress bar on stderr when it is a terminal (none in a pipe or a log), over the non-blank lines of
    `path`: counted first, in one pass that keeps nothing (and finds a file that cannot be read, before any model
    work)."""
    total = sum(1 for _, line in read_lines(path) if line.strip())
    # A terminal that reports no size (some containers) gets the usual 80 columns, not a bar of none.
    return tqdm(total=total, unit=" rows", desc=what, file=sys.stderr, disable=None,
                ncols=shutil.get_terminal_size().columns)
