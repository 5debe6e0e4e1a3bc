"""What one visitor may ask of a shared server, stated once, and the checks that say so in a sentence.

The app checks every text and number against these before any model work; README's "Limits" section
lists them (a test keeps the two equal). The CLI applies only the checks that keep input well-formed:
a user scoring their own file may send as much as they like.
"""
from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Iterable, Iterator

MAX_MESSAGE_CHARS = 20_000  # a message, your own candidate, an edited card
MAX_SYSTEM_CHARS = 8_000
MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # an evaluation file
MAX_REQUEST_BYTES = 2 * 1024 * 1024  # any other request: every text at its limit fits, JSON-escaped
MAX_EVAL_ROWS = 2_000
MAX_LINE_CHARS = 200_000  # one row of an evaluation file
# Ids, padding included, in one batch of the batch work that shares the device with visitors' turns (an evaluation,
# a probe, an attribution): a turn may wait for one. On a GPU, about a turn's own scoring (4 candidates of 512
# tokens after a 1,000-token conversation take about 3,000); on a CPU, where a batch's time grows with its ids,
# fewer: the largest probe took no longer in all in batches of 2,048 than of 8,192 (RESULTS.md, issue 26).
SHARED_BATCH_TOKENS = {"cuda": 4096, "cpu": 2048}
# Queued or running jobs of one browser session: a turn and one waiting behind it (a Score pressed while the
# candidates stream), one probe or attribution, and one evaluation; and of one client (an address:
# `ui.server.client_of`), however many sessions it opens (or none): two sessions' worth, for people behind one address.
MAX_JOBS_PER_VISITOR = {"gpu": 2, "probe": 1, "eval": 1}
# A session (its conversation, tallies and probes: up to about 7 MB) is forgotten this long after its last change,
# and the server keeps at most this many, the least recently used going first; of one client's (an address), at most
# MAX_SESSIONS_PER_CLIENT, its least recently used idle one going first: a client with new session ids would
# otherwise hold a share of the server's memory that grows with them.
SESSION_SECONDS = 3 * 3600
MAX_SESSIONS = 1000
MAX_SESSIONS_PER_CLIENT = 16
MAX_JOBS_PER_CLIENT = {"gpu": 4, "probe": 2, "eval": 2}
# Requests for those jobs (accepted or refused) from one client: a burst, then this many a second; one that would
# wait longer than PACE_SECONDS for its turn waits that long and is refused. A script that resends each refused job
# at once would otherwise cost the server its answers as fast as it can ask (75 a second in bench_load).
JOB_REQUESTS_PER_SECOND, JOB_REQUEST_BURST, PACE_SECONDS = 2, 20, 10
MAX_NEW_TOKENS = 2048
TEMPERATURE_RANGE = (0.0, 2.0)
TOP_P_RANGE = (0.05, 1.0)
ALPHA_RANGE = (0.0, 5.0)


def shown_as_text(text: str) -> bool:
    """Whether `text` is valid Unicode, which a page can show (a lone surrogate is not).

    >>> shown_as_text("ok"), shown_as_text("ok " + chr(0xD800))
    (True, False)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(what: str, text: str, limit: int) -> str:
    """`text` when it is valid Unicode of at most `limit` characters; else ValueError saying what to do.

    >>> check_text("The system prompt", "b" * 9, 8)
    Traceback (most recent call last):
    ValueError: The system prompt has 9 characters; shorten it to at most 8.
    """
    if len(text) > limit:
        raise ValueError(f"{what} has {len(text):,} characters; shorten it to at most {limit:,}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = text[error.start]
        raise ValueError(f"{what} is not valid Unicode (a lone surrogate \\u{ord(bad):04x} at character "
                         f"{error.start + 1}): remove it.") from None
    return text


class NotUtf8(ValueError):
    """A line of an input file that is not UTF-8 text: its `line` number, the `byte` and its `column`."""

    def __init__(self, line: int, byte: int, column: int):
        super().__init__(f"line {line}: not UTF-8 text (byte 0x{byte:02x} at column {column})")
        self.line, self.byte, self.column = line, byte, column


def utf8_lines(lines: Iterable[bytes]) -> Iterator[tuple[int, str]]:
    r"""Each line (bytes, as a file opened "rb" yields them) with its number, decoded; a byte-order mark
    before line 1 is dropped, and a byte that is not UTF-8 raises NotUtf8 naming its line.

    >>> list(utf8_lines([b"\xef\xbb\xbf{}\n", b"caf\xc3\xa9\n"]))
    [(1, '{}\n'), (2, 'café\n')]
    """
    for number, line in enumerate(lines, 1):
        if number == 1:
            line = line.removeprefix(codecs.BOM_UTF8)
        try:
            yield number, line.decode("utf-8")
        except UnicodeDecodeError as error:
            column = len(line[:error.start].decode("utf-8")) + 1  # in characters, as an editor counts
            raise NotUtf8(number, line[error.start], column) from None


MAX_JSON_DEPTH = 32  # arrays and objects in one row: a conversation needs 3; Python's parser fails near 1,000
_JSON_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')


def json_row(text: str, max_depth: int = MAX_JSON_DEPTH):
    """`text` parsed as JSON; ValueError saying what is wrong when it is not JSON or nests arrays and objects
    deeper than `max_depth` (measured before parsing: a row nested 100,000 deep would exhaust the parser).

    >>> json_row('{"messages": [{"role": "user", "content": "[[[["}]}')
    {'messages': [{'role': 'user', 'content': '[[[['}]}
    >>> json_row("[" * 40 + "]" * 40)
    Traceback (most recent call last):
    ValueError: arrays and objects nested 40 deep; a row may nest at most 32
    """
    depth = deepest = 0
    for bracket in re.findall(r"[\[\]{}]", _JSON_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    if deepest > max_depth:
        raise ValueError(f"arrays and objects nested {deepest:,} deep; a row may nest at most {max_depth}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"invalid JSON ({error.msg})") from None


def check_number(what: str, value, low: float, high: float, whole: bool = False) -> float | int:
    """`value` as a number in [low, high] (an int when `whole`); NaN, infinity and text are refused.

    >>> check_number("top_p", float("nan"), 0.05, 1.0)
    Traceback (most recent call last):
    ValueError: top_p must be a number from 0.05 to 1, not nan.
    >>> check_number("N", 4.0, 1, 8, whole=True)
    4
    """
    span = f"{'a whole number' if whole else 'a number'} from {low:g} to {high:g}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and low <= number <= high) or isinstance(value, bool) or (whole and number % 1):
        raise ValueError(f"{what} must be {span}, not {value!r}.")
    return int(number) if whole else number


def max_new_tokens_for(context: int) -> int:
    """The longest reply the slider offers for an LM with `context` positions: half of it, at most 2048.

    >>> max_new_tokens_for(1024), max_new_tokens_for(8192)
    (512, 2048)
    """
    return max(1, min(MAX_NEW_TOKENS, context // 2))
