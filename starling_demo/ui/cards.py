"""The candidate cards of the latest turn: their badges (rank, reward, origin), rendered replies, choice buttons,
and edits not yet scored."""
from __future__ import annotations

import gradio as gr

from .. import insight
from .render import markdown_safe

MAX_CARDS = 8
USE = "Use this reply"
ORIGINS = {"edited": "✎ edited by you", "yours": "✍ your candidate"}
CUT = {"length": "cut at max new tokens", None: "cut short by Stop"}  # why an LM reply ended early
# Buttons that change only how the page shows a card (assets/page.js): full height or a few lines, text or editor;
# and while a blind turn waits, the person's ranking, one click per card.
EXPAND = ("<button type='button' class='card-tool' data-action='expand' title='The whole reply, or a few lines of it'>"
          "<span class='when-collapsed'>Expand</span><span class='when-expanded'>Collapse</span></button>")
EDIT = ("<button type='button' class='card-tool' data-action='edit' title='Edit the reply, then press “Score all "
        "cards”'><span class='when-viewing'>✎ Edit</span><span class='when-editing'>✓ Done</span></button>")
RANK = ("<button type='button' class='card-tool rank-next' data-action='rank' title='This one is next best in your "
        "ranking'>Rank next</button>")


def origin(turn: dict, i: int) -> str:
    """Who wrote candidate i: "lm", "edited" (an LM reply the user changed) or "yours" (added by hand)."""
    origins = turn.get("origins") or []
    return origins[i] if i < len(origins) else "lm" if i < len(turn.get("finished") or []) else "yours"


def origins_after_edit(turn: dict, texts: list[str]) -> list[str]:
    """Each candidate's origin once the cards hold `texts`: a changed LM reply becomes "edited".

    >>> origins_after_edit({"candidates": ["a", "b"], "finished": ["stop", "stop"]}, ["a", "B", "c"])
    ['lm', 'edited', 'yours']
    """
    old = turn["candidates"]
    return [("edited" if origin(turn, i) == "lm" and text != old[i] else origin(turn, i)) if i < len(old)
            else "yours" for i, text in enumerate(texts)]


def card_badge(turn: dict, i: int) -> str:
    """The line above card i, as HTML: rank and reward, or how far generation got; who wrote it; chosen."""
    rewards = turn.get("rewards")
    finished = turn.get("finished") or []
    state = finished[i] if i < len(finished) else "stop"
    wrote = origin(turn, i)
    head, marks, rank = [f"<b>#{i + 1}</b>"], [], 0
    if rewards:
        rank = insight.ranking(rewards).index(i) + 1
        head.append(f"rank {rank} of {len(rewards)} · reward <b>{rewards[i]:.3f}</b>")
        marks += ["<span class='best-mark'>★ best</span>"] if rank == 1 else []
    elif turn.get("hidden"):
        head.append(f"{turn['lengths'][i]} RM tokens · scored")
    else:
        done = {"stop": "done", "length": "done (token limit)"}.get(state, "generating…")
        head.append(f"{turn.get('token_counts', [0] * MAX_CARDS)[i]} LM tokens · {done}")
    if rewards and turn.get("chosen") == i:
        marks.append("<span class='chosen-mark' title='the conversation continues with this reply'>✔ chosen</span>")
    if turn.get("hidden"):
        marks.append("<span class='hidden-mark'>reward hidden until you judge</span>")
    elif insight.human_rank(turn.get("human"), i):
        marks.append(f"your rank {insight.human_rank(turn['human'], i)}")
    if wrote in ORIGINS:
        marks.append(f"<span class='origin-mark'>{ORIGINS[wrote]}</span>")
    elif rewards and state in CUT:  # only the LM's own, unedited reply was cut
        marks.append(CUT[state])
    lines = [" · ".join(head)] + ([" · ".join(marks)] if marks else [])
    # `data-rank` orders the cards by rank (the stylesheet); the tools act on the card in the page alone.
    # No editing while the reply is still being written: the card's text follows it once it is scored.
    tools = (RANK if turn.get("hidden") else "") + EXPAND + (EDIT if rewards or turn.get("hidden") else "")
    return (f"<div class='badge-line' data-rank='{rank}'>{'<br>'.join(lines)} <span class='card-tools'>{tools}</span>"
            "</div>")


def candidate_choices(turn: dict | None) -> list[tuple[str, str]]:
    """A candidate picker's choices, (label, 1-based number): best first with rank and reward once scored.

    >>> candidate_choices({"candidates": ["a", "b"], "rewards": [0.2, 0.7]})
    [('#2 · rank 1 · 0.700', '2'), ('#1 · rank 2 · 0.200', '1')]
    """
    if not turn:
        return []
    rewards = turn.get("rewards")
    if not rewards or turn.get("hidden"):
        return [(f"#{i + 1}", str(i + 1)) for i in range(len(turn["candidates"]))]
    return [(f"#{i + 1} · rank {rank} · {rewards[i]:.3f}", str(i + 1))
            for rank, i in enumerate(insight.ranking(rewards), 1)]


def card_views(turn: dict | None) -> list[str]:
    """Each card's reply as Markdown the page renders (HTML and scripts in it show as text); "" for an unused card.

    >>> card_views({"candidates": ["**a** <b>"]})[:2]
    ['**a** &lt;b>', '']
    """
    candidates = turn["candidates"] if turn else []
    return [markdown_safe(candidates[i]) if i < len(candidates) else "" for i in range(MAX_CARDS)]


def card_updates(turn: dict | None) -> list:
    """Text and badge of each of the 8 cards. A card with no badge is hidden (by the stylesheet: a visibility
    update per card and frame would cost Gradio a component rebuild each)."""
    candidates = turn["candidates"] if turn else []
    return [value for i in range(MAX_CARDS)
            for value in ((candidates[i], card_badge(turn, i)) if i < len(candidates) else ("", ""))]


def use_buttons(turn: dict | None, busy: bool = False) -> list:
    """The 8 "Use this reply" buttons: the chosen card's says so and is off; all are off while a turn runs."""
    chosen = turn.get("chosen") if turn else None
    return [gr.update(value="✔ Continuing", interactive=False, variant="primary") if i == chosen
            else gr.update(value=USE, interactive=not busy, variant="secondary") for i in range(MAX_CARDS)]


def same_text(a: str, b: str) -> bool:
    """Equal up to line endings, which a browser's text box turns into "\\n"."""
    return a.replace("\r\n", "\n").replace("\r", "\n") == b.replace("\r\n", "\n").replace("\r", "\n")


def unscored_edit(turn: dict | None, cards, then: str) -> str | None:
    """The sentence to show when a card was edited but not scored and `then` would drop the edit, else None.

    An empty card counts as not sent (API callers that leave the cards out are not checked).

    >>> unscored_edit({"candidates": ["a", "b"]}, ["a", "b!"], "send")
    'Candidate 2 was edited but not scored: press “Score all cards” to keep the edit (or undo it), then send again.'
    """
    for i, (card, candidate) in enumerate(zip(cards or [], turn["candidates"] if turn else [])):
        if card and not same_text(card, candidate):
            return (f"Candidate {i + 1} was edited but not scored: press “Score all cards” to keep the edit "
                    f"(or undo it), then {then} again.")
    return None

