"""Where the models run: in this process (`local`) or on a serving engine (`vllm`), behind two small interfaces.

A language model streams the token ids of N candidates for a prompt given as ids; a reward model gives the
value at the tokens of id rows, a batch of conversations at a time. The engine uses nothing else, so another serving engine (SGLang, a hosted
endpoint) is one more module here with `connect(kind, preset, url)`, not changes across the app.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Protocol

from ..generation import Candidates
from ..presets import LMPreset, RMPreset
from ..value_passes import Values

BACKENDS = ("local", "vllm")


class ServerError(RuntimeError):
    """A serving engine refused or broke off a request; the message says what to do."""


class LanguageModel(Protocol):
    preset: LMPreset
    tokenizer: object  # the project's own: prompts are built and replies decoded here, whatever the server
    in_process: bool  # runs on this process's device (and so takes the device lock)
    where: str  # "cuda", "cpu" or a server's URL, for messages

    @property
    def context(self) -> int: ...

    def stream(self, prompt_ids: list[int], n: int, temperature: float, top_p: float, max_new_tokens: int,
               seed: int, stop_ids: frozenset) -> Iterator[Candidates]:
        """The N candidates' ids after each step; closing the iterator stops the decoding."""


class RewardModel(Protocol):
    preset: RMPreset
    tokenizer: object
    in_process: bool
    where: str
    readouts: tuple[str, ...]  # the read-outs it can compute ("card" needs a query at position 2047)

    def values(self, groups: list[list[list[int]]], pad_id: int, query_position: int | None, per_token: bool = False,
               share_prefix: bool = True, starts: list[list[int]] | None = None) -> list[Values]:
        """The `value_passes.Values` of each group of id rows (a conversation's candidates), in order: the value at each
        row's last token, at the query position (with one), and with `per_token` at every token where the backend
        gives them. The groups' rows go through the model together; a group's shared prefix runs once. With
        `starts` (each row's reply start), each row's values depend on that row alone where the backend can."""


def connect(backend: str, kind: str, preset: LMPreset | RMPreset, url: str) -> LanguageModel | RewardModel:
    """The `kind` ("lm" or "rm") model of `preset` served by `backend` at `url`."""
    if backend not in BACKENDS or backend == "local":
        raise ValueError(f"Unknown serving backend {backend!r}: use {' or '.join(b for b in BACKENDS if b != 'local')}.")
    return importlib.import_module(f".{backend}", __name__).connect(kind, preset, url)
