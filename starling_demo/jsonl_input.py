"""The command line's input: JSONL files read line by line as a stream, each record checked, every error naming
the file and the line; and a progress bar over a file's lines."""
from __future__ import annotations

import json
import math
import os
import shutil
import stat
import sys
from collections.abc import Iterator

from tqdm import tqdm

from .limits import NotUtf8, check_text, json_row, utf8_lines

MAX_LINE_BYTES = 16 * 2**20  # a line is read at most this far (--max-line-bytes): memory stays bounded
from .templates import check_conversation


class InputError(ValueError):
    """A malformed input line."""


def read_lines(path: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """Each line of `path` with its number (`limits.utf8_lines`), none longer than `max_line_bytes`; errors name
    the file. Only a regular file: the commands read their file twice (first to count its lines), and a pipe with
    no writer or a device such as /dev/zero would hang or never end."""
    regular_file(path)
    try:
        file = open(path, "rb")
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror.lower()}") from None
    with file:
        try:
            yield from utf8_lines(capped_lines(file, max_line_bytes))
        except NotUtf8 as error:
            raise InputError(f"{path}, {error}") from None
        except LineTooLong as error:
            raise InputError(f"{path}, line {error.args[0]}: longer than {max_line_bytes:,} bytes; raise "
                             "--max-line-bytes to read it.") from None


def regular_file(path: str) -> None:
    """InputError unless `path` is a regular file that exists."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise InputError(f"{path} is not a regular file (a pipe, a device or a folder): save the input to a "
                             "file and give its path.")
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror.lower()}") from None


class LineTooLong(ValueError):
    """Line `args[0]` of a file is longer than the cap."""


def capped_lines(file, max_bytes: int) -> Iterator[bytes]:
    r"""The lines of binary `file`, each read at most `max_bytes` + 1 bytes far: LineTooLong for a longer one.

    >>> import io
    >>> list(capped_lines(io.BytesIO(b"abc\nd"), 3))
    [b'abc\n', b'd']
    >>> list(capped_lines(io.BytesIO(b"abcd\n"), 3))
    Traceback (most recent call last):
    starling_demo.jsonl_input.LineTooLong: 1
    """
    number = 0
    while line := file.readline(max_bytes + 1):
        number += 1
        if len(line) > max_bytes and not (len(line) == max_bytes + 1 and line.endswith(b"\n")):
            raise LineTooLong(number)
        yield line


def jsonl_records(path: str, need_candidates: bool, max_line_bytes: int = MAX_LINE_BYTES,
                  ) -> Iterator[tuple[int, dict]]:
    """Each record of `path` with its line number, validated: InputError names the first bad line."""
    for number, line in read_lines(path, max_line_bytes):
        if not line.strip():
            continue
        try:
            record = json_row(line)
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
        except ValueError as error:
            raise InputError(f"{path}, line {number}: {error}") from None
        yield number, record


def read_jsonl(path: str, need_candidates: bool, max_line_bytes: int = MAX_LINE_BYTES) -> list[tuple[int, dict]]:
    """Every record of `path` with its line number, validated before any model work, so a bad line stops the run."""
    return list(jsonl_records(path, need_candidates, max_line_bytes))


def progress_bar(path: str, what: str, max_line_bytes: int = MAX_LINE_BYTES, total: int | None = None):
    """A progress bar on stderr when it is a terminal (none in a pipe or a log), over `total` rows, or else the
    non-blank lines of `path`: counted first, in one pass that keeps nothing (and finds a file that cannot be read,
    before any model work)."""
    if total is None:
        total = sum(1 for _, line in read_lines(path, max_line_bytes) if line.strip())
    # A terminal that reports no size (some containers) gets the usual 80 columns, not a bar of none.
    return tqdm(total=total, unit=" rows", desc=what, file=sys.stderr, disable=None,
                ncols=shutil.get_terminal_size().columns)
