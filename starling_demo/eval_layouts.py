"""The rows an evaluation reads, as they come: our JSONL (candidates best first, or chosen/rejected), RewardBench's
pairs and RewardBench 2's lists, from JSONL, a JSON array or Parquet; each row checked and put in one shape."""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from .limits import MAX_JSON_DEPTH, check_text, json_row
from .templates import check_conversation

NO_SUBSET = "all"  # the subset of rows that name none: a key of the report's "subsets"
RANKED, PAIRED, REWARDBENCH, REWARDBENCH2 = "ranked", "chosen/rejected", "RewardBench", "RewardBench 2"
LAYOUTS = {  # how each layout is named in the sentence that says which one a file was read as
    RANKED: "ranked rows (messages; candidates best first)",
    PAIRED: "chosen/rejected rows (messages; chosen and rejected)",
    REWARDBENCH: "RewardBench rows (a prompt; one chosen and one rejected answer)",
    REWARDBENCH2: "RewardBench 2 rows (a prompt; lists of chosen and rejected answers)",
}
TIES = "ties"  # RewardBench 2's subset with several correct answers (case as written: "Ties")


def _answers(value) -> list | None:
    """`value` as a list of answers: a string is one answer."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        return value
    return None


def parse_row(obj) -> tuple[dict | None, str | None]:
    """A row normalised to {"messages", "candidates", "tiers", "subset", "id", "layout"}, or the reason it is not one.

    `tiers` ranks the candidates, 0 the best: a ranking gives 0, 1, 2...; chosen and rejected give 0 and 1 (several
    chosen answers, as in RewardBench 2's Ties, share tier 0). A RewardBench `prompt` string is one user turn.

    >>> parse_row({"prompt": "Hi", "chosen": ["Hello"], "rejected": ["Go", "No"], "subset": "Focus", "id": 7})[0]
    {'messages': [{'role': 'user', 'content': 'Hi'}], 'candidates': ['Hello', 'Go', 'No'], 'tiers': [0, 1, 1], \
'subset': 'Focus', 'id': '7', 'layout': 'RewardBench 2'}
    >>> parse_row({"prompt": "Hi", "chosen": "Hello"})
    (None, "needs 'candidates' or both 'chosen' and 'rejected'")
    """
    if not isinstance(obj, dict):
        return None, "expected a JSON object"
    if "messages" in obj and "prompt" in obj:
        return None, "use either 'messages' or 'prompt', not both"
    if "prompt" in obj:
        prompt = obj["prompt"]
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        elif isinstance(prompt, list):
            messages = prompt
        else:
            return None, "'prompt' must be a string (one user turn) or a list of messages"
    elif "messages" in obj:
        messages = obj["messages"]
    else:
        return None, "needs 'messages' (or RewardBench's 'prompt')"
    try:
        check_conversation(messages)
    except ValueError as error:
        return None, str(error)
    if "candidates" in obj and ("chosen" in obj or "rejected" in obj):
        return None, "use either 'candidates' or 'chosen'/'rejected', not both"
    if "candidates" in obj:
        candidates = obj["candidates"]
        if not isinstance(candidates, list) or len(candidates) < 2:
            return None, "'candidates' needs at least 2 strings"
        tiers, layout = list(range(len(candidates))), RANKED
    elif "chosen" in obj and "rejected" in obj:
        chosen, rejected = _answers(obj["chosen"]), _answers(obj["rejected"])
        if chosen is None or rejected is None:
            return None, "'chosen' and 'rejected' must each be a string or a non-empty list of strings"
        given = obj.get("num_correct")
        if given is not None and given != len(chosen):
            return None, f"'num_correct' is {given!r} but 'chosen' has {len(chosen)} answers"
        candidates, tiers = chosen + rejected, [0] * len(chosen) + [1] * len(rejected)
        layout = PAIRED if "messages" in obj else \
            REWARDBENCH2 if isinstance(obj["chosen"], list) or isinstance(obj["rejected"], list) else REWARDBENCH
    else:
        return None, "needs 'candidates' or both 'chosen' and 'rejected'"
    if not all(isinstance(c, str) for c in candidates):
        return None, "candidates must be strings"
    empty = [k for k, c in enumerate(candidates, 1) if not c.strip()]
    if empty:
        return None, f"candidate {empty[0]} is empty"
    subset, row_id = obj.get("subset"), obj.get("id")
    if subset is not None and not isinstance(subset, str):
        return None, "'subset' must be a string"
    if row_id is not None and (isinstance(row_id, bool) or not isinstance(row_id, (str, int))):
        return None, "'id' must be a string or a whole number"
    texts = {f"candidate {k}": c for k, c in enumerate(candidates, 1)} | {"'subset'": subset or "",
                                                                          "'id'": str(row_id or "")}
    try:
        for what, text in texts.items():
            check_text(what, text, math.inf)
    except ValueError as error:
        return None, str(error)
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    return {"messages": messages, "candidates": candidates, "tiers": tiers, "subset": subset or NO_SUBSET,
            "id": None if row_id is None else str(row_id), "layout": layout}, None


def eval_rows(lines: Iterable[tuple[int, str]], max_line_chars: int | None = None) -> Iterator[dict]:
    """Each non-blank JSONL line (numbered) as a normalised row (`parse_row`) with its "line", or as {"line",
    "error"} when it is malformed. A line longer than `max_line_chars` is an error.

    >>> list(eval_rows([(1, '{"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hi", "rejected": "Go"}'),
    ...                 (2, "[]")]))[1]
    {'line': 2, 'error': 'line 2: expected a JSON object'}
    """
    for n, line in lines:
        if not line.strip():
            continue
        if max_line_chars is not None and len(line) > max_line_chars:
            yield {"line": n, "error": f"line {n}: {len(line):,} characters; a row may have at most {max_line_chars:,}"}
            continue
        try:
            obj = json_row(line)
        except ValueError as error:
            yield {"line": n, "error": f"line {n}: {error}"}
            continue
        yield _numbered(n, obj, "line")


def _numbered(n: int, obj, unit: str) -> dict:
    row, error = parse_row(obj)
    return {"line": n, "error": f"{unit} {n}: {error}"} if error else {"line": n, **row}


def object_rows(objects: Iterable[tuple[int, object]], max_row_chars: int | None = None) -> Iterator[dict]:
    """`eval_rows` for rows already parsed (a JSON array's items), numbered "row N"; a row longer than
    `max_row_chars` as JSON is an error."""
    for n, obj in objects:
        # default=str: Parquet's extra columns may hold dates or bytes, which JSON has no type for.
        size = len(json.dumps(obj, ensure_ascii=False, default=str)) if max_row_chars is not None else 0
        if max_row_chars is not None and size > max_row_chars:
            yield {"line": n, "error": f"row {n}: {size:,} characters; a row may have at most {max_row_chars:,}"}
        else:
            yield _numbered(n, obj, "row")


def split_errors(parsed: Iterable[dict]) -> tuple[list[dict], list[str]]:
    """The well-formed rows, and the malformed rows' errors."""
    parsed = list(parsed)
    return [row for row in parsed if "error" not in row], [row["error"] for row in parsed if "error" in row]


def file_kind(path: str) -> str:
    """"parquet", "json" (an array of rows) or "jsonl", by the file's name and, for .json, its first character.

    A .json file that does not start with "[" is read as JSONL (many datasets name their JSONL .json)."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".parquet":
        return "parquet"
    if suffix == ".json":
        with open(path, "rb") as file:
            start = file.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        return "json" if start.startswith(b"[") else "jsonl"
    return "jsonl"


def json_array(text: str) -> list:
    """The items of a JSON array of rows; ValueError when the text is not one."""
    items = json_row(text, MAX_JSON_DEPTH + 1)  # + 1: the array around the rows
    if not isinstance(items, list):
        raise ValueError("a .json file must hold an array of rows (or one row per line)")
    return items


def parquet_records(path: str, batch_rows: int = 256) -> Iterator[dict]:
    """The records of a Parquet file, read `batch_rows` at a time."""
    for batch in _parquet_file(_pyarrow_parquet(), path).iter_batches(batch_size=batch_rows):
        yield from batch.to_pylist()


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("reading .parquet needs pyarrow (pip install pyarrow), or save the rows as JSONL") from None
    return pq


def _parquet_file(pq, path: str):
    try:
        return pq.ParquetFile(path)
    except Exception as error:  # pyarrow's own errors: a file that is not Parquet, or one cut short
        raise ValueError(f"not a Parquet file that pyarrow can read ({error})") from None


def rows_of_file(path: str, lines: Callable[[str], Iterable[tuple[int, str]]], max_line_chars: int | None = None,
                 ) -> tuple[Iterator[dict], int | None]:
    """The rows of an evaluation file by its kind (`file_kind`: JSONL lines as `lines(path)` reads them, a JSON array,
    or Parquet), and how many there are when that is known before reading them (None for JSONL)."""
    kind = file_kind(path)
    if kind == "parquet":
        count = _parquet_file(_pyarrow_parquet(), path).metadata.num_rows
        return object_rows(enumerate(parquet_records(path), 1), max_line_chars), count
    if kind == "json":
        items = json_array("".join(line for _, line in lines(path)))
        return object_rows(enumerate(items, 1), max_line_chars), len(items)
    return eval_rows(lines(path), max_line_chars), None


def layout_sentence(rows: Iterable[dict]) -> str:
    """Which layout(s) the rows were read as, in one sentence, with how Ties rows are scored when there are any.

    >>> layout_sentence([{"layout": "RewardBench"}] * 2)
    'Read as RewardBench rows (a prompt; one chosen and one rejected answer): 2 rows.'
    """
    rows = list(rows)
    counts = Counter(row["layout"] for row in rows)
    if not counts:
        return "No well-formed rows."
    parts = [f"{LAYOUTS[layout]}: {n:,} rows" for layout, n in counts.most_common()]
    sentence = "Read as " + "; and as ".join(parts) + "."
    if any(row.get("subset", "").lower() == TIES for row in rows):
        sentence += (" Ties rows also get RewardBench 2's Ties score (accuracy on its ref: and tied: prompts, and "
                     "whether correct answers are separated from incorrect ones by more than they differ).")
    return sentence
