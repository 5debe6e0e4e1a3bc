"""A visitor's raw inputs, checked before any model work: each problem raises ValueError with one sentence.

Values may come from the page or from any API caller as raw JSON (NaN, infinity, lone surrogates,
huge strings, names of models this server does not offer), so nothing here trusts the widgets' ranges.
"""
from __future__ import annotations

import functools
import inspect

from ..engine import Engine, Settings
from ..generation import MAX_CANDIDATES
from ..limits import (MAX_MESSAGE_CHARS, MAX_SYSTEM_CHARS, TEMPERATURE_RANGE, TOP_P_RANGE, check_number, check_text,
                      max_new_tokens_for)
from .cards import MAX_CARDS

MAX_SEED = 2**63 - 1


def message_text(message, what: str = "The message") -> str:
    """The message stripped of surrounding whitespace; refused when empty, too long or not valid Unicode."""
    text = check_text(what, (message or "").strip(), MAX_MESSAGE_CHARS)
    if not text:
        raise ValueError(f"{what} is empty: write it first.")
    return text


def card_texts(cards) -> list[str]:
    """The candidate cards' texts, checked (an empty one stands for its candidate as it is: `turns.rescored`)."""
    return [check_text(f"Candidate {i}", card or "", MAX_MESSAGE_CHARS) for i, card in enumerate(cards, 1)]


def models(engine: Engine, lm: str | None = None, rm: str | None = None, rm2: str | None = None) -> None:
    """Refuse unknown models, and models this server does not offer to visitors (`engine.allowed`)."""
    for kind, name in (("lm", lm), ("rm", rm), ("rm", None if rm2 == "none" else rm2)):
        if name is not None:
            engine.preset(kind, name)


def candidate_index(number, count: int) -> int:
    """0-based index of candidate `number` (1-based, as on the cards, a number or its text) of `count`.

    >>> candidate_index("2", 4)
    1
    """
    try:
        return check_number("The candidate number", number, 1, count, whole=True) - 1
    except ValueError:
        raise ValueError(f"There is no candidate {number}: pick one of 1 to {count}.") from None


def seed_number(seed) -> int | None:
    """The seed as an int, or None (blank: a fresh random seed)."""
    text = str(seed if seed is not None else "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and int(text) <= MAX_SEED):
        raise ValueError(f"The seed must be a whole number from 0 to {MAX_SEED}, or blank (random), not {text!r}.")
    return int(text)


def turn_settings(engine: Engine, lm: str, n, temperature, top_p, max_new_tokens, seed, mode, system) -> Settings:
    """Sampling settings of a turn, each number finite and in range, max new tokens within the LM's context."""
    longest = max_new_tokens_for(engine.context(lm))
    return Settings(n=check_number("The number of candidates (N)", n, 1, MAX_CANDIDATES, whole=True),
                    temperature=check_number("Temperature", temperature, *TEMPERATURE_RANGE),
                    top_p=check_number("top_p", top_p, *TOP_P_RANGE),
                    max_new_tokens=check_number(f"Max new tokens (for {lm})", max_new_tokens, 1, longest, whole=True),
                    seed=seed_number(seed),
                    mode="code" if str(mode or "").lower().startswith("code") else "gpt4",
                    system=check_text("The system prompt", (system or "").strip(), MAX_SYSTEM_CHARS))


def named_cards(fn):
    """Expose `fn(..., *cards, rm_format=...)` as inputs candidate_1..candidate_8 then rm_format, by name.

    Gradio passes every input in order, so what follows the eighth card goes to the keyword-only
    parameters; the format came after the cards so that older API calls by position still work. A
    generator stays a generator, so that Gradio streams it.
    """
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    fixed = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    trailing = [p.replace(kind=p.POSITIONAL_OR_KEYWORD) for p in params if p.kind is p.KEYWORD_ONLY]
    cards = [inspect.Parameter(f"candidate_{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="")
             for i in range(1, MAX_CARDS + 1)]

    def call(args, kwargs):
        head = len(fixed) + MAX_CARDS
        return fn(*args[:head], **kwargs | dict(zip([p.name for p in trailing], args[head:])))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            yield from call(args, kwargs)
    else:
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            return call(args, kwargs)

    handler.__signature__ = signature.replace(parameters=fixed + cards + trailing)
    return handler
