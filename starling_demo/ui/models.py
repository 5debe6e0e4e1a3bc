"""Handlers of the shared models: load one chosen in the settings, fit the reply-length slider to it, and
say in one sentence what went wrong with a model (not found, gated, out of memory)."""
from __future__ import annotations

import time

import gradio as gr
import torch

from ..engine import Engine
from ..limits import max_new_tokens_for
from ..backends import ServerError
from ..loading import LoadError

# What a visitor can act on: a bad choice, a model that cannot load or a server that fails, settings too big
# for the GPU.
PROBLEMS = (LoadError, ServerError, ValueError, torch.OutOfMemoryError)


def explain(error: Exception) -> str:
    """One sentence on what went wrong and what to do about it."""
    if isinstance(error, torch.OutOfMemoryError):
        torch.cuda.empty_cache()
        return ("The GPU ran out of memory: lower the number of candidates or max new tokens, or choose a "
                "smaller reward model, then try again.")
    return str(error)


MODEL_KINDS = {"lm": "language model", "rm": "reward model"}


def loading_status(kind: str, name: str) -> str:
    return f"Loading {MODEL_KINDS[kind]} **{name}** (first use; it stays loaded)…"


def load_model(engine: Engine, kind: str, name: str):
    """Load a model chosen in the settings now, so the next turn does not wait; yields status lines.

    Models are shared by every visitor, so the line says when loading one unloaded another.
    """
    if not name or name == "none" or engine.is_loaded(kind, name):
        yield f"{MODEL_KINDS[kind].capitalize()} **{name}** is ready."
        return
    try:
        engine.preset(kind, name)  # refused before any "Loading…"
    except ValueError as error:
        gr.Warning(str(error))
        yield str(error)
        return
    yield loading_status(kind, name)
    started = time.perf_counter()
    before = engine.loaded(kind)
    try:
        (engine.lm if kind == "lm" else engine.rm)(name)
    except PROBLEMS as error:
        gr.Warning(explain(error))
        yield f"Could not load {name}, so nothing changed: {explain(error)}"
        return
    unloaded = [other for other in before if not engine.is_loaded(kind, other)]
    yield (f"Loaded {MODEL_KINDS[kind]} **{name}** in {time.perf_counter() - started:.1f} s, for every visitor of "
           f"this server" + (f" ({', '.join(unloaded)} was unloaded)." if unloaded else "."))


def max_tokens_range(engine: Engine, lm: str, value: float):
    """The max-new-tokens slider for language model `lm`: up to half its context, the value kept within."""
    try:
        longest = max_new_tokens_for(engine.context(lm))
    except ValueError:
        return gr.skip()  # an unknown model: its own event says so
    return gr.update(maximum=longest, value=min(value, longest))
