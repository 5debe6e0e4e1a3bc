"""Reward scoring: candidates in batched passes, read exactly where each model card reads.

RM-7B-alpha's card pads every input to 2048 tokens and, through a quirk in how it finds the first pad,
returns the value at index 2047: an unk pad token that attends to every real token. We reproduce that
number from the real tokens plus one query position (position id 2047, attending to the real tokens
only), without computing the 2048-token padding. RM-34B reads the last real token.

The passes are in `value_passes`: by default each candidate's reply runs in a pass of its own after the
conversation's (`invariant_values`), so that a reward is the same bits whatever it was scored with.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .templates import Encoded, reward_inputs, reward_template
from .value_passes import Values

READOUTS = ("card", "last-token")


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


def reply_starts(conversations: list[list[Encoded]]) -> list[list[int]]:
    """Per conversation, the index of each candidate's first reply id: what `invariant_values` runs apart."""
    return [[e.reply_start for e in encoded] for encoded in conversations]


def score(rm, messages: list[dict], candidates: list[str], readout: str | None = None,
          share_prefix: bool = True, rm_format: str = "rlhf", traces: bool = False, invariant: bool = True) -> Scores:
    """Score `candidates` as replies to `messages` (which end with a user turn), in batched passes.

    `rm` is a `backends.RewardModel`. `readout` "card" (RM-7B default) is the value the model card's code
    returns; "last-token" reads the last real token (RM-34B's reading, and RewardBench's). `rm_format` "rlhf"
    gives each RM the text it scored in Starling's RLHF; "rewardbench" the text RewardBench gives it, read at
    the last token unless `readout` says otherwise. A served RM that cannot read at the card's position is
    read at the last token, and `Scores.note` says so. `traces` asks for the value at every reply token too.
    `invariant` (default): each reward the same bits however many candidates are scored with it
    (`value_passes.invariant_values`); False: the candidates in padded batches (`value_passes.value_groups`), faster
    on a GPU, a reward moving with its batch.
    """
    readout, note = resolve_readout(rm, readout, rm_format)
    encoded = encode(rm, messages, candidates, rm_format)
    [values] = rm.values([[e.ids for e in encoded]], rm.tokenizer.unk_token_id, query_position(rm, readout),
                         traces, share_prefix, reply_starts([encoded]) if invariant else None)
    return scores_of(encoded, values, rm.preset.max_length, readout, note, rm_format, traces)
