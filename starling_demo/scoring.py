"""Reward scoring: candidates in batched passes, read exactly where each model card reads.

RM-7B-alpha's card pads every input to 2048 tokens and, through a quirk in how it finds the first pad,
returns the value at index 2047: an unk pad token that attends to every real token. We reproduce that
number from the real tokens plus one query position (position id 2047, attending to the real tokens
only), without computing the 2048-token padding. RM-34B reads the last real token.

The conversation a turn's candidates share is encoded once and its KV cache reused for every candidate;
batch scoring (`batching`) runs several conversations, each with its own shared prefix, in the same passes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .templates import Encoded, common_prefix_length, reward_inputs, reward_template

READOUTS = ("card", "last-token")
MIN_SHARED_PREFIX = 16  # below this, one more batched pass costs more than it saves
# Rows of the second pass go through it in runs of similar length: a run's shortest row is at least this fraction
# of its longest, so that padding is under a quarter of the run (one pass of replies of 50-400 tokens was 40%).
SUFFIX_SPREAD = 0.75


@dataclass
class Scores:
    """Rewards of N candidates, in candidate order, with what a person needs to check them."""

    rewards: list[float]
    texts: list[str]  # the exact RM input text of each candidate
    lengths: list[int]  # reply length in RM tokens
    readout: str
    reply_ids: list[list[int]] = field(default_factory=list)  # the reply's RM ids (`detokenize.token_texts` shows them)
    # With traces asked for: the v_head value at each reply token, the reward if the reply ended there (empty for a
    # server that gives no per-token values); None when not asked for.
    traces: list[list[float]] | None = None
    truncated: list[bool] = field(default_factory=list)
    rm_format: str = "rlhf"
    note: str | None = None  # why the read-out is not the one asked for (a server that cannot compute it)


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
                 per_token: bool = False, share_prefix: bool = True) -> list[Values]:
    """`Values` of each group (a conversation's candidate rows) from batched passes, whatever their number.

    The first pass runs every group's shared prefix (`split_prefixes`), right-padded; then every row's own ids,
    attending to its group's prefix in the cache, in runs of similar length (`length_runs`). With `query_position`,
    each of those rows has one extra column holding a pad token at that position id whose own key is masked: it sees
    exactly the real tokens of its row, as the card's position 2047 does. Every row needs at least 2 ids.
    """
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

    extra = int(query_position is not None)
    last, query, full = [0.0] * len(rows), [0.0] * len(rows), [[]] * len(rows)
    for run in length_runs(list(map(len, suffixes)), SUFFIX_SPREAD):
        owners = [owner[i] for i in run]
        cache.prefix_of = torch.tensor(owners, device=device)
        width = max(len(suffixes[i]) for i in run) + extra
        ids, mask = pad([suffixes[i] for i in run], pad_id, width)
        positions = torch.tensor([units[u][0] for u in owners])[:, None] + torch.arange(width)
        if extra:
            positions[:, -1] = query_position
        values = model(ids.to(device), attention_mask=torch.cat([prefix_mask[owners], mask], dim=1).to(device),
                       position_ids=positions.to(device), cache=cache, use_cache=True).float().cpu()
        for j, i in enumerate(run):
            last[i], query[i] = values[j, len(suffixes[i]) - 1].item(), values[j, -1].item()
            if per_token:
                full[i] = torch.cat([head[owner[i], : units[owner[i]][0]], values[j, : len(suffixes[i])]]).tolist()
    # A group's rows are consecutive here, in one unit or one per row.
    return per_group(groups, last, query if extra else None, full if per_token else None)


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


def resolve_readout(rm, readout: str | None, rm_format: str = "rlhf") -> tuple[str, str | None]:
    """Where `score` reads the reward of RM `rm` (a `backends.RewardModel`), and a note when that is not where
    `readout` (None: the model's default) asked: a served RM reads the last token only."""
    preset = rm.preset
    readout = readout or ("last-token" if rm_format == "rewardbench" else preset.readout)
    if readout not in READOUTS:
        raise ValueError(f"Unknown read-out {readout!r}: use card or last-token.")
    if preset.template == "chatml" and readout == "card":
        readout = "last-token"  # RM-34B's card reads the last real token
    if readout in rm.readouts:
        return readout, None
    return "last-token", (f"{preset.name} runs on {rm.where}, which reads the last token: the card's read-out at "
                          "index 2047 needs the model in process (--backend local).")


def query_position(rm, readout: str) -> int | None:
    """The position id `Values.query` is read at for `readout` (resolved): the card's index 2047 for RM-7B."""
    return rm.preset.max_length - 1 if readout == "card" else None


def encode(rm, messages: list[dict], candidates: list[str], rm_format: str = "rlhf") -> list[Encoded]:
    """The RM input of each candidate as a reply to `messages` (which end with a user turn), in `rm_format`."""
    if not candidates:
        raise ValueError("No candidates to score.")
    preset = rm.preset
    return reward_inputs(rm.tokenizer, reward_template(preset.template, rm_format), messages, candidates,
                         preset.add_bos, preset.max_length)


def scores_of(encoded: list[Encoded], values: Values, max_length: int, readout: str, note: str | None = None,
              rm_format: str = "rlhf", traces: bool = False) -> Scores:
    """The `Scores` of `encoded` candidates from their `Values`. At the card's query position a row that fills all
    `max_length` positions has its last real token there, and is read at it."""
    rewards = values.last if values.query is None else [
        end if len(e.ids) >= max_length else q for end, e, q in zip(values.last, encoded, values.query)]
    spans = [(e.reply_start, e.reply_end) for e in encoded]
    reply_values = None
    if traces:  # a server without per-token values gives empty traces
        reply_values = [v[start:end] for v, (start, end) in zip(values.per_token, spans)] if values.per_token else \
            [[] for _ in encoded]
    return Scores(
        rewards=rewards,
        texts=[e.text for e in encoded],
        lengths=[end - start for start, end in spans],
        readout=readout,
        reply_ids=[e.ids[start:end] for e, (start, end) in zip(encoded, spans)],
        traces=reply_values,
        truncated=[e.truncated for e in encoded],
        rm_format=rm_format,
        note=note,
    )


def score(rm, messages: list[dict], candidates: list[str], readout: str | None = None,
          share_prefix: bool = True, rm_format: str = "rlhf", traces: bool = False) -> Scores:
    """Score `candidates` as replies to `messages` (which end with a user turn), in batched passes.

    `rm` is a `backends.RewardModel`. `readout` "card" (RM-7B default) is the value the model card's code
    returns; "last-token" reads the last real token (RM-34B's reading, and RewardBench's). `rm_format` "rlhf"
    gives each RM the text it scored in Starling's RLHF; "rewardbench" the text RewardBench gives it, read at
    the last token unless `readout` says otherwise. A served RM that cannot read at the card's position is
    read at the last token, and `Scores.note` says so. `traces` asks for the value at every reply token too.
    """
    readout, note = resolve_readout(rm, readout, rm_format)
    encoded = encode(rm, messages, candidates, rm_format)
    [values] = rm.values([[e.ids for e in encoded]], rm.tokenizer.unk_token_id, query_position(rm, readout),
                         traces, share_prefix)
    return scores_of(encoded, values, rm.preset.max_length, readout, note, rm_format, traces)
