"""The engine behind the app and the CLI: lazily loaded models, candidate generation and reward scoring.

It knows nothing of the UI; the UI and the CLI receive one and call these methods.
"""
from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from . import backends, batching, probes
from .backends import LanguageModel, RewardModel
from .detokenize import TextStream
from .device_lock import DeviceLock
from .generation import EOT_ID, Candidates, fit_prompt
from .host_memory import release_freed_memory
from .limits import SHARED_BATCH_TOKENS, max_new_tokens_for
from .loading import load_lm, load_rm, lm_tokenizer, rm_tokenizer
from .presets import RM_PRESETS, LMPreset, RMPreset, lm_preset, rm_preset
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
    """One LM and up to `max_rms` reward models, loaded on first use and then kept.

    With `backend` "vllm", the launched LM (`lm_name`) runs on the server at `lm_url` and the launched RM at
    `rm_url`, when given; every other model, and one without a URL, runs in this process. A model in this
    process is run under `device_lock` (`lock()`): turns with `with`, a long batch job chunk by chunk with
    `.batch()`, so that turns go first; a served one needs no lock, its server batches requests. `allowed`
    (kind -> names) limits what visitors may load on a shared server; None allows any preset or local
    directory, as the CLI does.
    """

    lm_name: str = "starling-lm-7b-beta"
    rm_name: str = "starling-rm-7b-alpha"
    precision: str = "4bit"
    device: str = "auto"
    rm_kind: str | None = None  # layout of a local reward-model directory
    max_rms: int = 2
    allowed: dict[str, tuple[str, ...]] | None = None
    backend: str = "local"
    lm_url: str | None = None
    rm_url: str | None = None
    _models: dict = field(default_factory=dict, repr=False)
    _tokenizers: dict = field(default_factory=dict, repr=False)
    _loading: threading.Lock = field(default_factory=threading.Lock, repr=False)
    device_lock: DeviceLock = field(default_factory=DeviceLock, repr=False)

    def __post_init__(self):
        if self.backend not in backends.BACKENDS:
            raise ValueError(f"Unknown backend {self.backend!r}: use {' or '.join(backends.BACKENDS)}.")
        urls = [f"--{kind}-url" for kind, url in (("lm", self.lm_url), ("rm", self.rm_url)) if url]
        if self.backend == "local" and urls:
            raise ValueError(f"{urls[0]} needs --backend vllm (the local backend runs the models in this process).")
        if self.backend != "local" and not urls:
            raise ValueError(f"--backend {self.backend} needs --lm-url, --rm-url or both: where the server runs.")

    def url(self, kind: str, name: str | None = None) -> str | None:
        """The server that runs model `name` of `kind` (default: the launched one), or None if it runs here."""
        launched, url = (self.lm_name, self.lm_url) if kind == "lm" else (self.rm_name, self.rm_url)
        return url if self.backend != "local" and (name or launched) == launched else None

    def lock(self, kind: str, name: str | None = None, batch: bool = False, held=None):
        """What a turn (or, with `batch`, a chunk of batch work) holds while it runs model `name` of `kind`:
        the device lock for a model in this process, nothing for a served one, nor where the turn already holds
        it (`held`: what an earlier call gave it)."""
        if self.url(kind, name) or (held is self.device_lock and not batch):
            return contextlib.nullcontext()
        return self.device_lock.batch() if batch else self.device_lock

    def is_loaded(self, kind: str, name: str) -> bool:
        return (kind, name) in self._models

    def loaded(self, kind: str) -> list[str]:
        """Names of the loaded models of `kind` ("lm" or "rm"), oldest first."""
        return [name for k, name in list(self._models) if k == kind]

    def preset(self, kind: str, name: str) -> LMPreset | RMPreset:
        """The preset of model `name` of `kind` ("lm" or "rm"); ValueError for a model this engine may not use.

        A visitor of a shared server may use only the `allowed` models; the CLI any preset or local folder.
        """
        if self.allowed is not None and name not in self.allowed[kind]:
            what = "language model" if kind == "lm" else "reward model"
            raise ValueError(f"The {what} {name!r} is not offered on this server: choose one of "
                             f"{', '.join(self.allowed[kind])}.")
        return lm_preset(name) if kind == "lm" else rm_preset(name, self.rm_kind if name == self.rm_name else None)

    def lm(self, name: str | None = None) -> LanguageModel:
        # One LM at a time: a 7B LM is most of a small GPU.
        return self._model("lm", name or self.lm_name, load_lm, keep=1)

    def rm(self, name: str | None = None) -> RewardModel:
        return self._model("rm", name or self.rm_name, load_rm, keep=self.max_rms)

    def _model(self, kind: str, name: str, load_here, keep: int):
        """Model `name` of `kind`, connected to its server or loaded here with `load_here` first if needed; then
        the oldest of its kind beyond `keep` go.

        The new model loads before any is evicted, so a load that fails (no Hub, gated, out of memory)
        leaves every loaded model in place; turns that use a loaded model never wait for a load.
        """
        preset, url = self.preset(kind, name), self.url(kind, name)
        name = preset.name
        loaded = self._models.get((kind, name))
        if loaded is not None:
            return loaded
        load = (lambda: backends.connect(self.backend, kind, preset, url)) if url else \
            (lambda: load_here(preset, self.precision, self.device))
        with self._loading:
            if (kind, name) not in self._models:
                try:
                    self._models[(kind, name)] = load()
                except BaseException:
                    release_freed_memory()  # what the failed load had allocated
                    raise
                evict = [key for key in self._models if key[0] == kind][:-keep]
                for key in evict:
                    del self._models[key]
                if evict:
                    release_freed_memory()
            return self._models[(kind, name)]

    def tokenizer(self, kind: str, name: str | None = None):
        """The tokenizer of model `name` of `kind` (default: the launched one): the loaded model's, or for a model
        not loaded (or unloaded since it scored a turn) its tokenizer alone, kept."""
        preset = self.preset(kind, name or (self.lm_name if kind == "lm" else self.rm_name))
        key = (kind, preset.name)
        if key not in self._tokenizers:
            loaded = self._models.get(key)
            load_alone = lm_tokenizer if kind == "lm" else rm_tokenizer
            self._tokenizers[key] = loaded.tokenizer if loaded else load_alone(preset)
        return self._tokenizers[key]

    def context(self, lm: str | None = None) -> int:
        """Positions of the LM's context: from its config once loaded, else from its preset."""
        name = lm or self.lm_name
        loaded = self._models.get(("lm", name))
        return loaded.context if loaded else self.preset("lm", name).context

    def prompt(self, messages: list[dict], settings: Settings, lm: str | None = None) -> tuple[Encoded, str | None]:
        """The exact LM prompt for `messages`, trimmed to leave room for the reply. It takes the LM's tokenizer and
        context only: rendering a prompt loads no weights."""
        context = self.context(lm)
        if settings.max_new_tokens >= context:
            raise ValueError(f"{settings.max_new_tokens:,} new tokens leave no room for a prompt in the model's "
                             f"{context:,} positions: ask for at most {max_new_tokens_for(context):,}.")
        return fit_prompt(self.tokenizer("lm", lm), messages, context - settings.max_new_tokens, settings.mode,
                          settings.system)

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
        steps = loaded.stream(prompt.ids, settings.n, settings.temperature, settings.top_p, settings.max_new_tokens,
                              seed, stop_ids)
        with contextlib.closing(steps):  # closed when this generator is: a server stops decoding too
            for state in steps:
                for i, (stream, ids) in enumerate(zip(streams, state.ids)):
                    if finals[i] is None:
                        for token in ids[len(stream.ids):]:
                            stream.push(token)
                        if state.finished[i]:
                            finals[i] = tokenizer.decode(ids, skip_special_tokens=True)
                texts = [stream.text if final is None else final for stream, final in zip(streams, finals)]
                yield Generation(texts, [len(ids) for ids in state.ids], state.finished, prompt, seed, warning)

    def score(self, messages: list[dict], candidates: list[str], rm: str | None = None,
              readout: str | None = None, rm_format: str = "rlhf", traces: bool = False) -> Scores:
        """Rewards of `candidates` as replies to `messages`, in candidate order, from one batched pass; with `traces`
        the value at every reply token too."""
        return score(self.rm(rm), messages, candidates, readout, rm_format=rm_format, traces=traces)

    def score_stream(self, items: Iterable, rm: str | None = None, readout: str | None = None,
                     rm_format: str = "rlhf", traces: bool = False, budget: int | None = None,
                     lock: Callable = contextlib.nullcontext, conversation: Callable = lambda item: item):
        """Many items' conversations scored in batched passes, read as a stream (`batching.score_stream`), each
        batch inside `with lock():` and run by `values`."""
        return batching.score_stream(self.rm(rm), items, readout, rm_format, traces, budget,
                                     run=lambda *args: self.values(rm, *args), lock=lock, conversation=conversation)

    def values(self, rm: str | None, groups: list[list[list[int]]], pad_id: int, query_position: int | None,
               per_token: bool = False, share_prefix: bool = True, starts: list[list[int]] | None = None) -> list:
        """One batch of `score_stream` on reward model `rm` (`RewardModel.values`): the unit a ZeroGPU call wraps."""
        return self.rm(rm).values(groups, pad_id, query_position, per_token, share_prefix, starts)

    def shared_batch_tokens(self, rm: str | None = None) -> int:
        """Ids in one batch of batch work on reward model `rm` beside visitors' turns: SHARED_BATCH_TOKENS for the
        device it runs on, or a served model's own budget (its server batches and shares the work)."""
        loaded = self.rm(rm)
        if self.url("rm", rm):
            return loaded.batch_tokens()
        return SHARED_BATCH_TOKENS["cuda" if loaded.where.startswith("cuda") else "cpu"]

    def probe(self, messages: list[dict], candidates: list[str], edits: list, rm: str | None = None,
              readout: str | None = None, rm_format: str = "rlhf") -> dict:
        """Each candidate under each of `edits` (`probes.probe`), in batched passes of `shared_batch_tokens`, each
        taking the device as batch work (`lock(batch=True)`): others' turns go between them."""
        return probes.probe(self.rm(rm), messages, candidates, edits, readout, rm_format,
                            lambda: self.lock("rm", rm, batch=True), self.shared_batch_tokens(rm))

    def attribute(self, messages: list[dict], candidate: str, rm: str | None = None, readout: str | None = None,
                  rm_format: str = "rlhf") -> dict:
        """The reward of `candidate` with each of its sentences left out (`probes.attribute`), in batched passes
        taken as batch work, as `probe`'s."""
        return probes.attribute(self.rm(rm), messages, candidate, readout, rm_format,
                                lambda: self.lock("rm", rm, batch=True), self.shared_batch_tokens(rm))


BYTES_PER_PARAMETER = {"4bit": 0.6, "bf16": 2.0, "fp32": 4.0}  # 4-bit: nf4 weights plus the layers kept in bf16
HEADROOM = 2 * 1024**3  # KV cache and activations of a turn


def default_allowed(engine: Engine, memory: int) -> dict[str, tuple[str, ...]]:
    """What visitors of a shared server may choose: the launched LM and RM, and second RMs of the same kind
    (real or tiny) that fit beside them in `memory` bytes.

    >>> default_allowed(Engine("tiny", "tiny", "fp32", "cpu"), memory=8 * 1024**3)
    {'lm': ('tiny',), 'rm': ('tiny', 'tiny-34b')}
    """
    lm, rm = engine.preset("lm", engine.lm_name), engine.preset("rm", engine.rm_name)
    per_billion = BYTES_PER_PARAMETER[engine.precision] * 1e9
    in_process = [p.billions for kind, p in (("lm", lm), ("rm", rm)) if not engine.url(kind)]  # not served
    used = sum(in_process) * per_billion + HEADROOM
    tiny = rm.repo.startswith("tiny:")
    extra = [p.name for p in RM_PRESETS.values() if p.name != rm.name and p.repo.startswith("tiny:") == tiny
             and used + p.billions * per_billion <= memory]
    return {"lm": (engine.lm_name,), "rm": (engine.rm_name, *extra)}
