"""The engine behind the app and the CLI: lazily loaded models, candidate generation and reward scoring.

It knows nothing of the UI; the UI and the CLI receive one and call these methods.
"""
from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from .detokenize import TextStream
from .generation import EOT_ID, Candidates, fit_prompt, stream_candidates
from .loading import Loaded, load_lm, load_rm
from .presets import lm_preset, rm_preset
from .scoring import Scores, score
from .templates import Encoded


@dataclass
class Settings:
    """How to sample a turn's candidates."""

    n: int = 4
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = None  # None: a fresh random seed, reported so the turn can be repeated
    mode: str = "gpt4"  # "gpt4" or "code"
    system: str = ""


@dataclass
class Generation:
    """A streaming update: the N partial replies and what produced them."""

    texts: list[str]
    token_counts: list[int]
    finished: list[str | None]
    prompt: Encoded
    seed: int
    warning: str | None = None

    @property
    def done(self) -> bool:
        return all(self.finished)


@dataclass
class Engine:
    """One LM and up to `max_rms` reward models, loaded on first use and then kept."""

    lm_name: str = "starling-lm-7b-beta"
    rm_name: str = "starling-rm-7b-alpha"
    precision: str = "4bit"
    device: str = "auto"
    rm_kind: str | None = None  # layout of a local reward-model directory
    max_rms: int = 2
    _models: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def is_loaded(self, kind: str, name: str) -> bool:
        return (kind, name) in self._models

    def lm(self, name: str | None = None) -> Loaded:
        name = name or self.lm_name
        with self._lock:
            if ("lm", name) not in self._models:
                preset = lm_preset(name)
                for key in [k for k in self._models if k[0] == "lm"]:
                    del self._models[key]  # one LM at a time: a 7B LM is most of a small GPU
                self._models[("lm", name)] = load_lm(preset, self.precision, self.device)
            return self._models[("lm", name)]

    def rm(self, name: str | None = None) -> Loaded:
        name = name or self.rm_name
        with self._lock:
            if ("rm", name) not in self._models:
                kind = self.rm_kind if name == self.rm_name else None
                preset = rm_preset(name, kind)
                loaded_rms = [k for k in self._models if k[0] == "rm"]
                for key in loaded_rms[: max(0, len(loaded_rms) - self.max_rms + 1)]:
                    del self._models[key]
                self._models[("rm", name)] = load_rm(preset, self.precision, self.device)
            return self._models[("rm", name)]

    def prompt(self, messages: list[dict], settings: Settings, lm: str | None = None) -> tuple[Encoded, str | None]:
        """The exact LM prompt for `messages`, trimmed to leave room for the reply."""
        loaded = self.lm(lm)
        budget = loaded.model.config.max_position_embeddings - settings.max_new_tokens
        return fit_prompt(loaded.tokenizer, messages, budget, settings.mode, settings.system)

    def generate(self, messages: list[dict], settings: Settings, lm: str | None = None) -> Iterator[Generation]:
        """Stream `settings.n` candidate replies to `messages` (which end with a user turn)."""
        loaded = self.lm(lm)
        prompt, warning = self.prompt(messages, settings, lm)
        seed = settings.seed if settings.seed is not None else random.randrange(2**31)
        tokenizer = loaded.tokenizer
        stop_ids = frozenset({EOT_ID, tokenizer.eos_token_id} - {None})
        # Each step decodes only the newest tokens; a finished reply is decoded whole, once.
        streams = [TextStream(tokenizer) for _ in range(settings.n)]
        finals: list[str | None] = [None] * settings.n
        state: Candidates
        for state in stream_candidates(loaded.model, prompt.ids, settings.n, settings.temperature, settings.top_p,
                                       settings.max_new_tokens, seed, stop_ids):
            for i, (stream, ids) in enumerate(zip(streams, state.ids)):
                if finals[i] is None:
                    for token in ids[len(stream.ids):]:
                        stream.push(token)
                    if state.finished[i]:
                        finals[i] = tokenizer.decode(ids, skip_special_tokens=True)
            texts = [stream.text if final is None else final for stream, final in zip(streams, finals)]
            yield Generation(texts, [len(ids) for ids in state.ids], state.finished, prompt, seed, warning)

    def score(self, messages: list[dict], candidates: list[str], rm: str | None = None,
              readout: str | None = None, rm_format: str = "rlhf") -> Scores:
        """Rewards of `candidates` as replies to `messages`, in candidate order, from one batched pass."""
        return score(self.rm(rm), messages, candidates, readout, rm_format=rm_format)
