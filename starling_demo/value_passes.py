"""The reward model's passes over id rows: each row's value at its last token, at a query position, at every token.

The conversation a turn's candidates share is encoded once and its KV cache reused for every candidate. By default
each candidate's reply then runs in a pass of its own (`invariant_values`), so that a reward is the same bits
whatever it was scored with; `value_groups` also batches rows (padded, several conversations in the same passes),
faster on a GPU but a reward then moves with its batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from .templates import common_prefix_length

MIN_SHARED_PREFIX = 16  # below this, one more batched pass costs more than it saves
# Rows of the second pass go through it in runs of similar length: a run's shortest row is at least this fraction
# of its longest, so that padding is under a quarter of the run (one pass of replies of 50-400 tokens was 40%).
SUFFIX_SPREAD = 0.75
# Per device type, batch-invariant passes are padded to a multiple of this many ids (`invariant_values`); on a CPU
# shapes cost nothing to set up, and padding would only add work.
SHAPE_BUCKETS = {"cuda": 64}


@dataclass
class Values:
    """What a reward model gives for one conversation's rows: the value at each row's last token, at the query
    position (None without one), and at every token (None unless asked for, or from a server that gives none)."""

    last: list[float]
    query: list[float] | None = None
    per_token: list[list[float]] | None = None


def per_group(groups: list[list], last: list[float], query: list[float] | None = None,
              per_token: list[list[float]] | None = None) -> list[Values]:
    """Values of the rows of all `groups` together (in order), as one `Values` per group.

    >>> per_group([[[1, 2]], [[3, 4], [5, 6]]], [0.5, 1.0, 2.0])
    [Values(last=[0.5], query=None, per_token=None), Values(last=[1.0, 2.0], query=None, per_token=None)]
    """
    results, i = [], 0
    for group in groups:
        j = i + len(group)
        results.append(Values(last[i:j], query and query[i:j], per_token and per_token[i:j]))
        i = j
    return results


class SharedPrefixCache(DynamicCache):
    """Prefixes (a batch of them) that the rows of the next forward attend to, each row its own, without storing
    a copy per row.

    Once `prefix_of` is set (for each row of the next forward, the index of its prefix), each layer returns its
    rows' prefixes before the new keys and stores nothing: the row-fold keys exist one layer at a time.
    """

    prefix_of: torch.Tensor | None = None

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self.prefix_of is None:
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)
        layer = self.layers[layer_idx]
        return (torch.cat([self._rows(layer.keys), key_states], dim=-2),
                torch.cat([self._rows(layer.values), value_states], dim=-2))

    def _rows(self, prefixes: torch.Tensor) -> torch.Tensor:
        if prefixes.shape[0] == 1:  # one conversation: a view, not copies
            return prefixes.expand(len(self.prefix_of), -1, -1, -1)
        return prefixes.index_select(0, self.prefix_of)


def shared_prefix_length(rows: list[list[int]], share_prefix: bool = True) -> int:
    """How many leading ids all `rows` share and run once for them: 0 when fewer than MIN_SHARED_PREFIX (or not
    `share_prefix`); always leaving each row an id of its own.

    >>> shared_prefix_length([[1] * 20 + [2], [1] * 20 + [3, 4]]), shared_prefix_length([[1] * 5 + [2], [1] * 5])
    (20, 0)
    """
    shared = min(common_prefix_length(rows[0], row) for row in rows)
    shared = min(shared, min(map(len, rows)) - 1)
    return shared if share_prefix and shared >= MIN_SHARED_PREFIX else 0


def split_prefixes(groups: list[list[list[int]]], share_prefix: bool = True) -> list[tuple[int, list[list[int]]]]:
    """Each group as (prefix length, rows) units whose rows share that prefix, every prefix at least one id: a group
    that shares too little becomes a unit per row, its prefix all but the row's last id.

    >>> [(shared, len(rows)) for shared, rows in split_prefixes([[[1] * 20 + [2], [1] * 20 + [3]], [[5, 6], [7, 8, 9]]])]
    [(20, 2), (1, 1), (2, 1)]
    """
    units = []
    for rows in groups:
        shared = shared_prefix_length(rows, share_prefix)
        units += [(shared, rows)] if shared else [(len(row) - 1, [row]) for row in rows]
    return units


def pad(rows: list[list[int]], pad_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and their attention mask, `width` columns (default: the longest row)."""
    width = width or max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


@torch.inference_mode()
def value_groups(model, groups: list[list[list[int]]], pad_id: int, query_position: int | None,
                 per_token: bool = False, share_prefix: bool = True, starts: list[list[int]] | None = None,
                 ) -> list[Values]:
    """`Values` of each group (a conversation's candidate rows) from batched passes, whatever their number.

    The first pass runs every group's shared prefix (`split_prefixes`), right-padded; then every row's own ids,
    attending to its group's prefix in the cache, in runs of similar length (`length_runs`). With `query_position`,
    each of those rows has one extra column holding a pad token at that position id whose own key is masked: it sees
    exactly the real tokens of its row, as the card's position 2047 does. Every row needs at least 2 ids.
    With `starts` (per group, each row's reply start) the values are batch invariant instead (`invariant_values`).
    """
    if starts is not None:
        return invariant_values(model, groups, starts, pad_id, query_position, per_token)
    device = model.device
    units = split_prefixes(groups, share_prefix)
    prefixes = [rows[0][:shared] for shared, rows in units]
    owner = [u for u, (_, rows) in enumerate(units) for _ in rows]
    rows = [row for _, unit_rows in units for row in unit_rows]
    suffixes = [row[units[u][0]:] for u, row in zip(owner, rows)]

    cache = SharedPrefixCache(config=model.config)
    ids, prefix_mask = pad(prefixes, pad_id)
    # No mask: causal attention keeps each real id from the right-padding after it, and the padding's keys are
    # masked in the second pass. A padding mask would cost the attention its fast causal kernel (2.4x on CPU).
    head = model(ids.to(device), cache=cache, use_cache=True)
    head = head.float().cpu() if per_token else None

    last, query, full = [0.0] * len(rows), [0.0] * len(rows), [[]] * len(rows)
    for run in length_runs(list(map(len, suffixes)), SUFFIX_SPREAD):
        owners = [owner[i] for i in run]
        values = suffix_pass(model, cache, owners, [units[u][0] for u in owners], prefix_mask,
                             [suffixes[i] for i in run], pad_id, query_position)
        for j, i in enumerate(run):
            last[i], query[i] = values[j, len(suffixes[i]) - 1].item(), values[j, -1].item()
            if per_token:
                full[i] = torch.cat([head[owner[i], : units[owner[i]][0]], values[j, : len(suffixes[i])]]).tolist()
    # A group's rows are consecutive here, in one unit or one per row.
    return per_group(groups, last, query if query_position is not None else None, full if per_token else None)


def invariant_values(model, groups: list[list[list[int]]], starts: list[list[int]], pad_id: int,
                     query_position: int | None, per_token: bool = False) -> list[Values]:
    """`Values` as `value_groups` gives them, each row's depending on that row alone: the same bits whether it is
    scored alone, among a turn's N, in a file or in a probe.

    A row's prompt (its ids before `starts`, at least one id, leaving one) runs in a pass of its own shape, once for
    the rows that share it; then each row's reply in a pass of one row after it. Batching rows changes the shapes
    of the matrix products, and a GPU then picks other kernels that sum in another order. On a GPU both passes are
    right-padded to a multiple of SHAPE_BUCKETS["cuda"] (a width that depends on the row alone), so that turns
    repeat a few shapes and a GPU's set-up per new shape (cuDNN's attention plans, for one) runs once per bucket.
    """
    device = model.device
    bucket = SHAPE_BUCKETS.get(device.type, 1)
    rows = [row for group in groups for row in group]
    cuts = [min(max(start, 1), len(row) - 1) for row, start in zip(rows, (s for group in starts for s in group))]
    sharing: dict[tuple, list[int]] = {}
    for i, (row, cut) in enumerate(zip(rows, cuts)):
        sharing.setdefault(tuple(row[:cut]), []).append(i)
    last, query, full = [0.0] * len(rows), [0.0] * len(rows), [[]] * len(rows)
    for prompt, members in sharing.items():
        cache = SharedPrefixCache(config=model.config)
        ids, prefix_mask = pad([list(prompt)], pad_id, bucketed(len(prompt), bucket))
        head = model(ids.to(device), cache=cache, use_cache=True)  # no mask: as in `value_groups`
        head = head[0, : len(prompt)].float().cpu() if per_token else None
        for i in members:
            suffix = rows[i][len(prompt):]
            width = bucketed(len(suffix) + (query_position is not None), bucket)
            values = suffix_pass(model, cache, [0], [len(prompt)], prefix_mask, [suffix], pad_id, query_position,
                                 width)
            last[i], query[i] = values[0, len(suffix) - 1].item(), values[0, -1].item()
            if per_token:
                full[i] = torch.cat([head, values[0, : len(suffix)]]).tolist()
    return per_group(groups, last, query if query_position is not None else None, full if per_token else None)


def bucketed(length: int, bucket: int) -> int:
    """`length` rounded up to a multiple of `bucket`.

    >>> bucketed(200, 64), bucketed(192, 64), bucketed(5, 1)
    (256, 192, 5)
    """
    return -(-length // bucket) * bucket


def suffix_pass(model, cache: SharedPrefixCache, owners: list[int], prefix_lengths: list[int],
                prefix_mask: torch.Tensor, suffixes: list[list[int]], pad_id: int, query_position: int | None,
                width: int | None = None) -> torch.Tensor:
    """The values [rows, width] of `suffixes`, each after prefix `owners[j]` of `cache` (`prefix_lengths[j]` real ids
    in `prefix_mask`), right-padded to `width` (default: the longest), the last column a query at `query_position`
    (if any) whose own key is masked."""
    device = model.device
    cache.prefix_of = torch.tensor(owners, device=device)
    extra = int(query_position is not None)
    width = width or max(map(len, suffixes)) + extra
    ids, mask = pad(suffixes, pad_id, width)
    positions = torch.tensor(prefix_lengths)[:, None] + torch.arange(width)
    if extra:
        positions[:, -1] = query_position
    return model(ids.to(device), attention_mask=torch.cat([prefix_mask[owners], mask], dim=1).to(device),
                 position_ids=positions.to(device), cache=cache, use_cache=True).float().cpu()


def length_runs(lengths: list[int], spread: float = SUFFIX_SPREAD) -> list[list[int]]:
    """Indices of `lengths`, longest first, in runs whose shortest is at least `spread` of their longest: the rows
    of a run are padded to its longest, so padding stays under 1 - `spread` of a run.

    >>> length_runs([10, 400, 390, 100, 320], spread=0.75)
    [[1, 2, 4], [3], [0]]
    """
    runs: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if runs and lengths[i] >= spread * lengths[runs[-1][0]]:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
