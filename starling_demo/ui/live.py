"""The cards of a turn that is being generated, as the page draws them: it pulls each reply so far, rendered, at the
pace it can draw them, instead of taking them in Gradio frames.

Why: each frame of a Gradio event costs the page work for every component that any event has touched (its loading
status is set again on each, and each one's value copied), about 0.1 s a frame at N=8 on a 2-core laptop whatever
the frame carries (benchmarks/RESULTS.md, "The page at real lengths"). So the page's own turn events send a frame
only when the status line changes; meanwhile the live cards (`#live`, drawn by assets/live.js) ask `live_cards` for
the replies that changed since they last drew, once they have drawn, at most every 0.1 s.

A turn is pulled by a random key that only the page which asked for it receives (in the first frame); the reply,
its token count and whether it is done are all that leaves (a blind turn's rewards never do).
"""
from __future__ import annotations

import secrets
from pathlib import Path

from .cards import MAX_CARDS, card_badge
from .render import markdown_html

LIVE_JS = (Path(__file__).resolve().parents[2] / "assets" / "live.js").read_text(encoding="utf-8")
TURNS: dict[str, dict] = {}  # key -> the turn being generated (the dict `turns.chat` updates in place)
DONE = {"cards": [], "done": True}
STREAMED = ("candidates", "token_counts", "finished")  # all of a turn that a live card shows


def watch(turn: dict) -> str:
    """Make `turn` pullable while it is generated; the key to pull it by."""
    key = secrets.token_urlsafe(16)
    TURNS[key] = turn
    return key


def unwatch(key: str | None) -> None:
    TURNS.pop(key, None)


def placeholder(n: int, key: str | None = None) -> str:
    """The live cards' value: `n` cards, pulled by `key` (none yet: waiting for the turn to start); "" hides them and
    shows the turn's own cards.

    >>> placeholder(2, "k3y")
    "<div class='live-cards' data-n='2' data-live='k3y'></div>"
    """
    return f"<div class='live-cards' data-n='{int(n)}'{'' if key is None else f' data-live={key!r}'}></div>"


def progress(turn: dict, i: int) -> str:
    """What a live card has drawn of candidate i: its token count and whether it is done.

    >>> progress({"candidates": ["a"], "token_counts": [3], "finished": [None]}, 0)
    '3 None'
    """
    return f"{(turn.get('token_counts') or [0] * MAX_CARDS)[i]} {(turn.get('finished') or [None] * MAX_CARDS)[i]}"


def live_cards(asked: list) -> dict:
    """The live cards a page asks for, `[key, drawn, wanted]`: `drawn` is each card's `progress` as the page drew it,
    `wanted` the numbers of the cards whose reply it shows in full (a collapsed card whose first lines are filled
    takes only its badge). The cards that changed, as [number, badge HTML, reply HTML or None, progress]; `done`
    once the turn is no longer generated (or the key is not one). A server function of the `#live` component
    (assets/live.js calls it).

    >>> live_cards(["no such key", [], []])
    {'cards': [], 'done': True}
    """
    key, drawn, wanted = (asked + [None] * 3)[:3] if isinstance(asked, list) else (None, None, None)
    turn = TURNS.get(key) if isinstance(key, str) else None
    if turn is None:
        return DONE
    # Only what a streaming card shows: once scoring starts the same dict holds rewards, which a blind turn hides.
    shown = {name: turn.get(name) for name in STREAMED}
    drawn = drawn[:MAX_CARDS] if isinstance(drawn, list) else []
    wanted = ({k for k in wanted[:MAX_CARDS] if isinstance(k, int)} if isinstance(wanted, list)
              else range(1, MAX_CARDS + 1))
    cards = []
    for i, text in enumerate((shown["candidates"] or [])[:MAX_CARDS]):
        now = progress(shown, i)
        if i >= len(drawn) or drawn[i] != now:
            cards.append([i + 1, card_badge(shown, i), markdown_html(text) if i + 1 in wanted else None, now])
    return {"cards": cards, "done": False}
