"""Batch scoring: many conversations' candidates in batches of similar lengths under a token budget, read as a
stream, each result equal to scoring its conversation alone (bit for bit, by default) and given back in input order."""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .scoring import Scores, encode, query_position, reply_starts, resolve_readout, scores_of
from .value_passes import Values, split_prefixes

BATCH_TOKENS = 8192  # padded ids in one batch's passes: its memory, and how long a turn may wait behind it
# The largest budget measured: 1.5x the speed of 8,192 for RM-7B in 4-bit on an H200, +10.3 GiB (RESULTS.md).
MAX_BATCH_TOKENS = 32768
WINDOW = 256  # conversations read ahead and sorted into batches together: the memory of the read-ahead
PREFIX_BUCKET = 64  # ids: conversations whose shared prefixes differ by less go into one bucket, sorted by reply length

Conversation = tuple[list[dict], list[str]]  # messages ending with a user turn, and the candidate replies


@dataclass
class Part:
    """Candidates `start:stop` of conversation `index`, their id rows, and what a pass over them costs."""

    index: int
    start: int
    stop: int
    rows: list[list[int]]
    units: int  # prefix rows in the first pass: 1 if the rows share a prefix, else one per row
    prefix: int  # the longest of them
    suffix: int  # the longest row past its prefix


def cost(parts: list[Part]) -> int:
    """Ids, padding included, that one batch of `parts` runs through the model (both passes).

    >>> cost([Part(0, 0, 2, [[0], [0]], 1, 100, 30), Part(1, 0, 1, [[0]], 1, 60, 50)])
    350
    """
    return sum(p.units for p in parts) * max(p.prefix for p in parts) + \
        sum(len(p.rows) for p in parts) * max(p.suffix for p in parts)


def parts_of(index: int, rows: list[list[int]], budget: int, share_prefix: bool = True) -> list[Part]:
    """Conversation `index`'s rows as parts that each cost at most `budget` ids (one row at least): a conversation
    with many long candidates goes through the model in several batches, each sharing the prefix.

    >>> [(p.start, p.stop) for p in parts_of(0, [[1] * 20 + [k] * 10 for k in range(2, 7)], budget=60)]
    [(0, 4), (4, 5)]
    """
    parts, start = [], 0
    while start < len(rows):
        stop = start + 1
        while stop < len(rows) and cost([_part(index, start, stop + 1, rows, share_prefix)]) <= budget:
            stop += 1
        parts.append(_part(index, start, stop, rows, share_prefix))
        start = stop
    return parts


def _part(index: int, start: int, stop: int, rows: list[list[int]], share_prefix: bool) -> Part:
    units = split_prefixes([rows[start:stop]], share_prefix)
    return Part(index, start, stop, rows[start:stop], len(units), max(shared for shared, _ in units),
                max(len(row) - shared for shared, unit_rows in units for row in unit_rows))


def plan(parts: list[Part], budget: int = BATCH_TOKENS) -> list[list[Part]]:
    """`parts` in batches of similar lengths, each costing at most `budget` ids (a part over it alone): sorted by
    prefix bucket, then by reply length, and packed in that order.

    >>> shapes = [(1, 900, 50), (1, 100, 300), (1, 920, 60), (1, 110, 280)]
    >>> parts = [Part(i, 0, 2, [[0], [0]], u, p, s) for i, (u, p, s) in enumerate(shapes)]
    >>> [[p.index for p in batch] for batch in plan(parts, budget=2500)]
    [[3, 1], [0, 2]]
    """
    order = sorted(parts, key=lambda p: (p.prefix // PREFIX_BUCKET, p.suffix))
    batches: list[list[Part]] = []
    for part in order:
        if batches and cost(batches[-1] + [part]) <= budget:
            batches[-1].append(part)
        else:
            batches.append([part])
    return batches


def joined(values: list[Values]) -> Values:
    """The `Values` of a conversation's parts, in order, as one.

    >>> joined([Values([1.0], [2.0]), Values([3.0], [4.0])])
    Values(last=[1.0, 3.0], query=[2.0, 4.0], per_token=None)
    """
    pick = lambda name: None if getattr(values[0], name) is None else [  # noqa: E731
        x for v in values for x in getattr(v, name)]
    return Values(pick("last"), pick("query"), pick("per_token"))


def gpu_budget(free_bytes: int, bytes_per_id: int) -> int:
    """A batch's token budget on a GPU with `free_bytes` free: as many ids as half of that holds at `bytes_per_id`
    (the first pass keeps every prefix id's keys and values), in steps of 1,024, from BATCH_TOKENS to
    MAX_BATCH_TOKENS. On a CPU more ids a batch gain nothing: the passes cost the same per position at any batch.

    >>> gpu_budget(7 * 2**30, 2**19)  # RM-7B (0.5 MiB of bf16 keys and values an id) on a T4 holding LM and RM
    8192
    >>> gpu_budget(24 * 2**30, 2**19)
    24576
    >>> gpu_budget(120 * 2**30, 2**19)
    32768
    """
    return max(BATCH_TOKENS, min(MAX_BATCH_TOKENS, free_bytes // 2 // bytes_per_id // 1024 * 1024))


def score_stream(rm, items: Iterable, readout: str | None = None, rm_format: str = "rlhf", traces: bool = False,
                 budget: int | None = None, window: int = WINDOW, share_prefix: bool = True,
                 run: Callable | None = None, lock: Callable = contextlib.nullcontext,
                 conversation: Callable[[Any], Conversation | None] = lambda item: item, invariant: bool = True,
                 ) -> Iterator[tuple[list[tuple[Any, Scores | ValueError | None]], int]]:
    """Score each item's conversation (`conversation(item)`; default: the item is one) with reward model `rm`, as
    `scoring.score` does, many at a time.

    Items are read `window` at a time; within a window their conversations go through the model in batches of
    similar lengths (`plan`) of at most `budget` ids (default: the model's `batch_tokens()`), each under
    `with lock():` and run by `run` (default `rm.values`; the engine's own, so that a ZeroGPU allocation wraps each
    batch). After each batch this yields the items now done, in input order (often none), each with its `Scores`,
    the ValueError that says why it cannot be scored, or None where `conversation` gave None (it passes through);
    and how many items are done so far in any order (for progress). `invariant` as in `scoring.score`: each
    reward the same as scoring its candidate alone, bit for bit.
    Closing the iterator stops the work after the current batch.
    """
    readout, note = resolve_readout(rm, readout, rm_format)
    query, pad_id, max_length = query_position(rm, readout), rm.tokenizer.unk_token_id, rm.preset.max_length
    run, budget = run or rm.values, budget or rm.batch_tokens()
    items, done = iter(items), 0
    while chunk := list(itertools.islice(items, window)):
        results: list[tuple | None] = [None] * len(chunk)  # (item, result) once done
        encoded, parts = {}, []
        for i, item in enumerate(chunk):
            try:
                pair = conversation(item)
                result = None if pair is None else encode(rm, *pair, rm_format)
            except ValueError as error:
                result = error
            if isinstance(result, list):
                encoded[i] = result
                parts += parts_of(i, [e.ids for e in result], budget, share_prefix)
            else:
                results[i], done = (item, result), done + 1
        waiting = {i: {} for i in encoded}  # per conversation: its parts' Values by first candidate
        emitted = 0
        for batch in plan(parts, budget):
            with lock():
                starts = reply_starts([encoded[p.index][p.start:p.stop] for p in batch]) if invariant else None
                values = run([part.rows for part in batch], pad_id, query, traces, share_prefix, starts)
            for part, value in zip(batch, values, strict=True):
                waiting[part.index][part.start] = value
                if sum(len(v.last) for v in waiting[part.index].values()) == len(encoded[part.index]):
                    gathered = joined([v for _, v in sorted(waiting.pop(part.index).items())])
                    results[part.index] = (chunk[part.index], scores_of(encoded[part.index], gathered, max_length,
                                                                        readout, note, rm_format, traces))
                    done += 1
            ready = list(itertools.takewhile(lambda r: r is not None, results[emitted:]))
            emitted += len(ready)
            yield ready, done
        if emitted < len(chunk):  # items not scored (passed through, or not encodable) after the last batch
            yield results[emitted:], done
