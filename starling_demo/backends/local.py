"""The in-process backend: a transformers model on this machine's CPU or GPU, with the project's tokenizer."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..batching import BATCH_TOKENS, gpu_budget
from ..generation import Candidates, stream_candidates
from ..presets import LMPreset, RMPreset
from ..scoring import READOUTS
from ..value_passes import value_groups
from ..static_decoding import stream_static


@dataclass
class Loaded:
    """A model loaded in this process, with its tokenizer and the preset it came from."""

    model: nn.Module
    tokenizer: object
    preset: LMPreset | RMPreset
    precision: str
    device: str

    in_process = True
    readouts = READOUTS

    @property
    def where(self) -> str:
        return self.device

    @property
    def context(self) -> int:
        return self.model.config.max_position_embeddings

    def stream(self, prompt_ids: list[int], n: int, temperature: float, top_p: float, max_new_tokens: int,
               seed: int, stop_ids: frozenset) -> Iterator[Candidates]:
        """On a GPU each decode step is a replayed CUDA graph (`static_decoding`), except on ZeroGPU, where every
        call runs in a process of its own and a graph would be captured again each turn; elsewhere, or where the
        capture fails, the eager path. Both give the same tokens for a seed."""
        if self.model.device.type == "cuda" and not os.environ.get("SPACES_ZERO_GPU"):
            steps = stream_static(self.model, prompt_ids, n, temperature, top_p, max_new_tokens, seed, stop_ids,
                                  graph=True)
            if steps is not None:
                return steps
        return stream_candidates(self.model, prompt_ids, n, temperature, top_p, max_new_tokens, seed, stop_ids)

    def values(self, groups: list[list[list[int]]], pad_id: int, query_position: int | None, per_token: bool = False,
               share_prefix: bool = True, starts: list[list[int]] | None = None):
        return value_groups(self.model, groups, pad_id, query_position, per_token, share_prefix, starts)

    def batch_tokens(self) -> int:
        """Ids in one batch of many conversations scored together (`batching.score_stream`): BATCH_TOKENS, or on
        a GPU as many as half its free memory holds in bf16 keys and values (`batching.gpu_budget`)."""
        if self.model.device.type != "cuda":
            return BATCH_TOKENS
        config = self.model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        per_id = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 2
        return gpu_budget(torch.cuda.mem_get_info(self.model.device)[0], per_id)
