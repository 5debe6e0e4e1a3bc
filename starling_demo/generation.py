"""N candidate replies for one prompt: prefill once, decode the N in one batch, stream token by token."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer

from .templates import Encoded, openchat_prompt

EOT_ID = 32000  # <|end_of_turn|>: Starling-LM ends every turn with it, whatever the repo's eos says
MAX_CANDIDATES = 8


def sample(logits: torch.Tensor, temperature: float, top_p: float, uniform: torch.Tensor) -> torch.Tensor:
    """One token per row of `logits` [rows, vocab], drawn with `uniform` [rows, 1] (in [0, 1)); temperature 0 is
    greedy, top_p keeps the nucleus.

    >>> sample(torch.tensor([[0.0, 3.0, 1.0]]), 0.0, 1.0, torch.rand(1, 1)).tolist()
    [1]
    >>> sample(torch.tensor([[0.0, 3.0, 1.0]] * 2), 1.0, 1.0, torch.tensor([[0.01], [0.99]])).tolist()
    [0, 2]
    """
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Drop a token when the tokens ranked above it already reach top_p; the first always stays.
        sorted_probs[(sorted_probs.cumsum(-1) - sorted_probs) > top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    # Inverse-CDF draw: one uniform per row; on CPU an order of magnitude cheaper than torch.multinomial.
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)


class GrowingLayer(DynamicLayer):
    """A cache layer that writes each step's keys into spare room instead of concatenating.

    `torch.cat` copies the whole cache at every step: for 8 candidates of 2k tokens that is more bytes
    than the 4-bit weights a decode step reads. Here a key is copied once, plus once per `ROOM` tokens.
    A sliding-window model stays exact: its attention mask, not the cache, enforces the window.
    """

    ROOM = 256
    room: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.get_seq_length()
        end = length + key_states.shape[-2]
        room = self.room
        if room is None or end > room[0].shape[-2] or self.keys.data_ptr() != room[0].data_ptr():
            # Full, or the rows were repeated or selected (new tensors): move into a larger buffer.
            room = tuple(s.new_empty(*s.shape[:-2], end + self.ROOM, s.shape[-1]) for s in (key_states, value_states))
            if length:
                room[0][..., :length, :], room[1][..., :length, :] = self.keys, self.values
            self.room = room
        room[0][..., length:end, :], room[1][..., length:end, :] = key_states, value_states
        self.keys, self.values = room[0][..., :end, :], room[1][..., :end, :]
        return self.keys, self.values


class GrowingCache(DynamicCache):
    """A DynamicCache whose layers grow in place (`GrowingLayer`)."""

    def __init__(self):
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)


@dataclass
class Candidates:
    """The state of N candidates after a decoding step."""

    ids: list[list[int]]
    finished: list[str | None]  # None while decoding, then "stop" (end of turn) or "length"


@torch.inference_mode()
def stream_candidates(model, prompt_ids: list[int], n: int, temperature: float = 0.7, top_p: float = 1.0,
                      max_new_tokens: int = 512, seed: int = 0, stop_ids: frozenset = frozenset({EOT_ID}),
                      ) -> Iterator[Candidates]:
    """Yield N candidates after every token. The prompt is prefilled once and its KV cache repeated N times.

    Finished candidates leave the batch, so the last long reply decodes alone. Each step draws one uniform per
    candidate, finished or not, so that a candidate's draws do not depend on when the others finished (and the
    static-cache path, `static_decoding`, which keeps every row, draws the same).
    """
    if not 1 <= n <= MAX_CANDIDATES:
        raise ValueError(f"The number of candidates must be between 1 and {MAX_CANDIDATES}, not {n}.")
    device = model.device
    generator = torch.Generator(device=device).manual_seed(seed)
    cache = GrowingCache()
    logits = model(torch.tensor([prompt_ids], device=device), cache=cache, use_cache=True,
                   logits_to_keep=1).logits[:, -1]
    cache.batch_repeat_interleave(n)
    logits = logits.expand(n, -1)
    state = Candidates([[] for _ in range(n)], [None] * n)
    active = list(range(n))  # the candidate each batch row decodes
    for step in range(max_new_tokens):
        uniform = torch.rand((n, 1), generator=generator, device=device)
        tokens = sample(logits, temperature, top_p, uniform if len(active) == n else uniform[active])
        keep = []
        for row, token in enumerate(tokens.tolist()):
            candidate = active[row]
            if token in stop_ids:
                state.finished[candidate] = "stop"
                continue
            state.ids[candidate].append(token)
            keep.append(row)
        if step == max_new_tokens - 1:
            for row in keep:
                state.finished[active[row]] = "length"
            keep = []
        yield Candidates([list(ids) for ids in state.ids], list(state.finished))  # a snapshot per step
        if not keep:
            return
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            tokens, active = tokens[index], [active[row] for row in keep]
        logits = model(tokens[:, None], cache=cache, use_cache=True).logits[:, -1]


def fit_prompt(tokenizer, messages: list[dict], budget: int, mode: str = "gpt4", system: str = "",
               ) -> tuple[Encoded, str | None]:
    """The OpenChat prompt, dropping the oldest turns until it fits `budget` tokens; and a warning if it had to.

    Raises ValueError when the last user message alone does not fit.
    """
    dropped = 0
    head = [m for m in messages[:1] if m["role"] == "system"]
    turns = messages[len(head):]
    while True:
        prompt = openchat_prompt(tokenizer, head + turns, mode, system)
        if len(prompt.ids) <= budget:
            break
        if len(turns) <= 1:
            raise ValueError(f"The message is {len(prompt.ids)} tokens long with the template, but at most {budget} "
                             "fit beside the reply: shorten it or lower max new tokens.")
        turns, dropped = turns[2:], dropped + 1
    warning = (f"The conversation was too long for the model's context: the {dropped} oldest "
               f"turn{'s' if dropped > 1 else ''} {'were' if dropped > 1 else 'was'} left out of the prompt.") if dropped else None
    return prompt, warning
