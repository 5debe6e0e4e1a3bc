"""N candidates decoded on a static KV cache: on a GPU each step is one replayed CUDA graph, and the host reads the
new tokens a frame at a time, not at every step.

A decode step of a 7B model launches about 1,300 kernels; launched from Python they keep the GPU waiting (a step
took 31-42 ms where its kernels take 6-13). Captured once per (N, cache length) as a CUDA graph, a step is one
launch. Sampling stays outside the graph (a few kernels, queued without waiting), and finished candidates keep
their rows (a graph has fixed shapes) with their tokens ignored. On a CPU the same code runs without a graph, so the
tests check there that it gives the tokens of `generation.stream_candidates`.
"""
from __future__ import annotations

import collections
import logging
import time
import weakref
from collections.abc import Iterator

import torch
from transformers.cache_utils import Cache, StaticLayer

from .generation import EOT_ID, Candidates, GrowingCache, sample

LENGTH_BUCKET = 512  # cache lengths are rounded up to this, so that turns of similar lengths replay one graph
FRAME_SECONDS = 0.1  # how often the host reads the new tokens (the page's frame rate)
RUN_AHEAD = 4  # steps the host may queue before the GPU has run them: Stop waits for at most these
log = logging.getLogger(__name__)


class DecodeStep:
    """One decoding step for `n` rows on a static cache of `length` positions: feed `tokens` at `position` (device
    tensors, set in place), `run(model)` gives the next logits [n, vocab]. With `graph`, captured as a CUDA graph.
    It holds no reference to the model, so that a model switched away from is freed."""

    def __init__(self, model, n: int, length: int, graph: bool):
        config, device = model.config, model.device
        self.n, self.length = n, length
        # Full-length layers for every layer, a sliding-window model's too: the mask below enforces its window.
        self.cache = Cache(layers=[StaticLayer(max_cache_len=length) for _ in range(config.num_hidden_layers)])
        self.tokens = torch.zeros((n, 1), dtype=torch.long, device=device)
        self.position = torch.zeros((), dtype=torch.long, device=device)
        self.keys = torch.arange(length, device=device)
        self.window = getattr(config, "sliding_window", None)
        self.graph = None
        if graph:
            stream = torch.cuda.Stream(device)
            stream.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(stream):  # warm-up off the default stream, as capture requires
                for _ in range(2):
                    self._forward(model)
            torch.cuda.current_stream(device).wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = self._forward(model)

    def _forward(self, model) -> torch.Tensor:
        # The mask from the position on the device, so that a replay needs nothing from the host.
        allowed = self.keys <= self.position
        if self.window:
            allowed &= self.keys > self.position - self.window
        dtype = model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min).expand(self.n, 1, 1, -1)
        return model(self.tokens, attention_mask=mask, position_ids=self.position.expand(self.n, 1),
                          cache=self.cache, use_cache=True).logits[:, -1]

    def start(self, prefix: GrowingCache, length: int) -> None:
        """Put the prompt's `length` keys and values (`prefix`, one row) in every row; the next step is at `length`."""
        for layer, source in zip(self.cache.layers, prefix.layers, strict=True):
            if not layer.is_initialized:
                rows = self.n, -1, -1, -1
                layer.lazy_initialization(source.keys.expand(*rows), source.values.expand(*rows))
            layer.keys[:, :, :length] = source.keys[:, :, :length]
            layer.values[:, :, :length] = source.values[:, :, :length]
            layer.cumulative_length.fill_(length)
        self.position.fill_(length)

    def run(self, model) -> torch.Tensor:
        if self.graph is None:
            logits = self._forward(model)
        else:
            self.graph.replay()
            logits = self.logits
        self.position.add_(1)
        return logits


_steps = weakref.WeakKeyDictionary()  # per model: the last step built, whose cache and graph are reused
_no_graph = weakref.WeakKeyDictionary()  # per model: why its capture failed, so that it is not tried at every turn


def decode_step(model, n: int, length: int, graph: bool) -> DecodeStep | None:
    """The `DecodeStep` for (n, length) on `model`, built or reused (one per model: a static cache of 8 x 4,096
    positions is 4 GiB for a 7B model), so turns on one model must run one at a time, as the engine's device lock has
    them; None where a graph was asked for and cannot be captured (logged once)."""
    key = model
    step = _steps.get(key)
    if step is not None and (step.n, step.length, step.graph is not None) == (n, length, graph):
        return step
    if graph and key in _no_graph:
        return None
    _steps.pop(key, None)
    try:
        step = DecodeStep(model, n, length, graph)
    except Exception as error:  # noqa: BLE001 - any failure to capture means: decode eagerly
        if not graph:
            raise
        _no_graph[key] = f"{type(error).__name__}: {error}"
        log.warning("CUDA graph capture failed (%s): decoding eagerly.", _no_graph[key])
        torch.cuda.empty_cache()
        return None
    _steps[key] = step
    return step


def cache_length(prompt: int, max_new_tokens: int, context: int) -> int:
    """The static cache's length: prompt and reply, rounded up to LENGTH_BUCKET, at most the model's context.

    >>> cache_length(416, 256, 8192), cache_length(7000, 2048, 8192)
    (1024, 8192)
    """
    return min(context, -(-(prompt + max_new_tokens) // LENGTH_BUCKET) * LENGTH_BUCKET)


@torch.inference_mode()
def stream_static(model, prompt_ids: list[int], n: int, temperature: float = 0.7, top_p: float = 1.0,
                  max_new_tokens: int = 512, seed: int = 0, stop_ids: frozenset = frozenset({EOT_ID}),
                  graph: bool = False) -> Iterator[Candidates] | None:
    """`generation.stream_candidates` on a static cache (with `graph`, each step a replayed CUDA graph), yielding
    the candidates about every FRAME_SECONDS instead of every token; None where the graph cannot be captured."""
    device = model.device
    length = cache_length(len(prompt_ids), max_new_tokens, model.config.max_position_embeddings)
    step = decode_step(model, n, length, graph)
    return None if step is None else _decode(model, step, prompt_ids, n, temperature, top_p, max_new_tokens,
                                             torch.Generator(device=device).manual_seed(seed), stop_ids)


@torch.inference_mode()
def _decode(model, step: DecodeStep, prompt_ids, n, temperature, top_p, max_new_tokens, generator, stop_ids):
    device = model.device
    prefix = GrowingCache()
    logits = model(torch.tensor([prompt_ids], device=device), cache=prefix, use_cache=True,
                   logits_to_keep=1).logits[:, -1].expand(n, -1)
    step.start(prefix, len(prompt_ids))
    del prefix
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    new = torch.empty((n, max_new_tokens), dtype=torch.long, device=device)
    state = Candidates([[] for _ in range(n)], [None] * n)
    queued = collections.deque()  # an event per step the GPU may not have run yet
    read, last_read = 0, time.monotonic()
    for i in range(max_new_tokens):
        uniform = torch.rand((n, 1), generator=generator, device=device)  # one per candidate, as the eager path
        tokens = torch.where(done, EOT_ID, sample(logits, temperature, top_p, uniform))
        done |= torch.isin(tokens, stops)
        new[:, i] = tokens
        if i in (0, max_new_tokens - 1) or time.monotonic() - last_read >= FRAME_SECONDS:
            _take(state, new[:, read:i + 1].tolist(), stop_ids, last=i == max_new_tokens - 1)
            read, last_read = i + 1, time.monotonic()
            yield Candidates([list(ids) for ids in state.ids], list(state.finished))
            if all(state.finished):
                return
        step.tokens.copy_(tokens[:, None])
        logits = step.run(model)
        if device.type == "cuda":
            queued.append(torch.cuda.Event())
            queued[-1].record()
            if len(queued) > RUN_AHEAD:
                queued.popleft().synchronize()


def _take(state: Candidates, block: list[list[int]], stop_ids: frozenset, last: bool) -> None:
    """Add each unfinished candidate's tokens of `block` (a row per candidate) to `state`, finishing it at a stop
    token ("stop") or, on the `last` step, at the length limit."""
    for candidate, tokens in enumerate(block):
        for token in tokens:
            if state.finished[candidate]:
                break
            if token in stop_ids:
                state.finished[candidate] = "stop"
            else:
                state.ids[candidate].append(token)
        if last and not state.finished[candidate]:
            state.finished[candidate] = "length"
