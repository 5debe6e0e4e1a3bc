"""Reward scoring: all candidates of a turn in one batched pass, read exactly where each model card reads.

RM-7B-alpha's card pads every input to 2048 tokens and, through a quirk in how it finds the first pad,
returns the value at index 2047: an unk pad token that attends to every real token. We reproduce that
number from the real tokens plus one query position (position id 2047, attending to the real tokens
only), without computing the 2048-token padding. RM-34B reads the last real token.

The conversation the candidates share is encoded once and its KV cache reused for every candidate.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from .detokenize import token_texts
from .templates import common_prefix_length, reward_inputs, reward_template

READOUTS = ("card", "last-token")
MIN_SHARED_PREFIX = 16  # below this, one more batched pass costs more than it saves


@dataclass
class Scores:
    """Rewards of N candidates, in candidate order, with what a person needs to check them."""

    rewards: list[float]
    traces: list[list[float]]  # v_head value at each reply token: the reward if the reply ended there
    tokens: list[list[str]]  # the reply tokens as text, for the trace
    texts: list[str]  # the exact RM input text of each candidate
    lengths: list[int]  # reply length in RM tokens
    readout: str
    truncated: list[bool] = field(default_factory=list)
    rm_format: str = "rlhf"
    note: str | None = None  # why the read-out is not the one asked for (a server that cannot compute it)


class SharedPrefixCache(DynamicCache):
    """A batch-1 prefix that every row of the next forward attends to, without N stored copies.

    Once frozen, each layer returns the prefix expanded to the batch before the new keys and stores
    nothing: the N-fold keys exist one layer at a time, not for all layers at once.
    """

    frozen = False

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if not self.frozen:
            return super().update(key_states, value_states, layer_idx, *args, **kwargs)
        layer, rows = self.layers[layer_idx], key_states.shape[0]
        return (torch.cat([layer.keys.expand(rows, -1, -1, -1), key_states], dim=-2),
                torch.cat([layer.values.expand(rows, -1, -1, -1), value_states], dim=-2))


def pad_rows(rows: list[list[int]], pad_id: int, offset: int, query_position: int | None):
    """Right-padded ids, attention mask (covering `offset` cached positions) and position ids.

    With `query_position`, one extra column holds a pad token at that position id whose own key is
    masked: it sees exactly the real tokens of its row, as the card's position 2047 does.
    """
    n, width = len(rows), max(map(len, rows))
    extra = int(query_position is not None)
    ids = torch.full((n, width + extra), pad_id, dtype=torch.long)
    mask = torch.zeros((n, offset + width + extra), dtype=torch.long)
    mask[:, :offset] = 1
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, offset: offset + len(row)] = 1
    positions = torch.arange(offset, offset + width + extra).repeat(n, 1)
    if extra:
        positions[:, -1] = query_position
    return ids, mask, positions


@torch.inference_mode()
def value_rows(model, rows: list[list[int]], pad_id: int, query_position: int | None, share_prefix: bool = True):
    """v_head values at every real position of each row, and at the query column (or None).

    Rows that share a prefix of at least MIN_SHARED_PREFIX ids run it once, batch 1, then reuse its
    KV cache for all rows; otherwise all rows go in one dynamically padded batch.
    """
    device = model.device
    shared = common_prefix_length(rows[0], rows[-1]) if len(rows) > 1 else 0
    for row in rows[1:-1]:
        shared = min(shared, common_prefix_length(rows[0], row))
    shared = min(shared, min(map(len, rows)) - 1)  # every row keeps a token of its own
    cache, head = None, torch.empty(0, device=device)
    if not share_prefix or shared < MIN_SHARED_PREFIX:
        shared = 0
    else:
        cache = SharedPrefixCache(config=model.config)
        head = model(torch.tensor([rows[0][:shared]], device=device), cache=cache, use_cache=True)[0]
        cache.frozen = True
    ids, mask, positions = pad_rows([row[shared:] for row in rows], pad_id, shared, query_position)
    values = model(ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                   cache=cache, use_cache=cache is not None)
    per_row = [torch.cat([head, values[i, : len(row) - shared]]).float().tolist() for i, row in enumerate(rows)]
    query = values[:, -1].float().tolist() if query_position is not None else None
    return per_row, query


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


def score(rm, messages: list[dict], candidates: list[str], readout: str | None = None,
          share_prefix: bool = True, rm_format: str = "rlhf") -> Scores:
    """Score `candidates` as replies to `messages` (which end with a user turn), in one batched pass.

    `rm` is a `backends.RewardModel`. `readout` "card" (RM-7B default) is the value the model card's code
    returns; "last-token" reads the last real token (RM-34B's reading, and RewardBench's). `rm_format` "rlhf"
    gives each RM the text it scored in Starling's RLHF; "rewardbench" the text RewardBench gives it, read at
    the last token unless `readout` says otherwise. A served RM that cannot read at the card's position is
    read at the last token, and `Scores.note` says so.
    """
    preset, tokenizer = rm.preset, rm.tokenizer
    template = reward_template(preset.template, rm_format)
    readout, note = resolve_readout(rm, readout, rm_format)
    if not candidates:
        raise ValueError("No candidates to score.")
    encoded = reward_inputs(tokenizer, template, messages, candidates, preset.add_bos, preset.max_length)
    rows = [e.ids for e in encoded]
    query = preset.max_length - 1 if readout == "card" else None
    per_token, last, at_query = rm.values(rows, tokenizer.unk_token_id, query, share_prefix)
    rewards = last if at_query is None else [end if len(row) >= preset.max_length else q
                                             for end, row, q in zip(last, rows, at_query)]
    return Scores(
        rewards=rewards,
        traces=[v[e.reply_start: e.reply_end] for v, e in zip(per_token, encoded)] if per_token else
        [[] for _ in encoded],
        tokens=[token_texts(tokenizer, e.ids[e.reply_start: e.reply_end]) for e in encoded],
        texts=[e.text for e in encoded],
        lengths=[e.reply_end - e.reply_start for e in encoded],
        readout=readout,
        truncated=[e.truncated for e in encoded],
        rm_format=rm_format,
        note=note,
    )
