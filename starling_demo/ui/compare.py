"""Two candidates side by side, each rendered at full height, the words where they differ marked: the compare view."""
from __future__ import annotations

import difflib
import re

import gradio as gr

from .. import insight
from .analysis import scored_turn, waiting_html
from .cards import candidate_choices
from .render import markdown_html

# Private-use characters around a changed word while its reply is rendered; they become <mark> tags afterwards, so
# the marks never pass through the Markdown renderer as HTML.
OPEN, CLOSE = "\ue000", "\ue001"
WORDS = re.compile(r"\s+|[^\s]+")
# Punctuation and Markdown markers at a word's edges stay outside its mark, so that "**word**" still renders bold.
EDGES = re.compile(r"^([^\w]*)(.*?)([^\w]*)$", re.S)


def changed_words(a: str, b: str) -> tuple[set[int], set[int]]:
    """Indices of the words (and spaces) of `a` and of `b` that the other does not have at the same place.

    >>> changed_words("the quick fox", "the slow fox")
    ({2}, {2})
    """
    left, right = WORDS.findall(a), WORDS.findall(b)
    changed: tuple[set[int], set[int]] = (set(), set())
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, left, right, autojunk=False).get_opcodes():
        if tag != "equal":
            changed[0].update(range(i1, i2))
            changed[1].update(range(j1, j2))
    return changed


def marked(text: str, changed: set[int]) -> str:
    """`text` with OPEN and CLOSE around the core of each changed word (not around spaces or edge punctuation).

    >>> marked("a **big** cat", {2}).replace(OPEN, "[").replace(CLOSE, "]")
    'a **[big]** cat'
    """
    parts = []
    for i, word in enumerate(WORDS.findall(text)):
        lead, core, trail = EDGES.match(word).groups()
        parts.append(f"{lead}{OPEN}{core}{CLOSE}{trail}" if i in changed and core.strip() else word)
    return "".join(parts)


def render(text: str) -> str:
    """A reply as safe HTML: Markdown rendered, any HTML in it escaped, marks turned into <mark>.

    >>> render("<b>x</b> **y**")
    '<p>&lt;b&gt;x&lt;/b&gt; <strong>y</strong></p>\\n'
    """
    return markdown_html(text).replace(OPEN, "<mark>").replace(CLOSE, "</mark>")


def side_html(turn: dict, k: int, changed: set[int]) -> str:
    """One column: which candidate, its rank and reward, and its reply with the changed words marked."""
    rewards = turn["rewards"]
    rank = insight.ranking(rewards).index(k) + 1
    head = (f"<div class='compare-head'><b>#{k + 1}</b> · rank {rank} of {len(rewards)} · reward "
            f"<b>{rewards[k]:.3f}</b> · {int(turn['lengths'][k])} RM tokens</div>")
    reply = render(marked(turn["candidates"][k], changed))
    return f"<div class='compare-side'>{head}<div class='compare-reply'>{reply}</div></div>"


def compare_html(turn: dict, a: int, b: int) -> str:
    """Candidates a and b (0-based) of a scored turn side by side, with their reward gap, the preference it
    implies and how much of their text differs."""
    rewards = turn["rewards"]
    left, right = changed_words(turn["candidates"][a], turn["candidates"][b])
    words = WORDS.findall(turn["candidates"][b])
    counted = sum(1 for w in words if w.strip())
    differ = sum(1 for i in right if words[i].strip())
    gap = rewards[a] - rewards[b]
    margin = turn.get("tie_margin") or 0.0
    verdict = ("a tie (within the noise margin)" if abs(gap) < margin else
               f"#{(a if gap > 0 else b) + 1} is preferred")
    summary = (f"<p class='compare-summary'>Reward #{a + 1} − #{b + 1} = <b>{gap:+.3f}</b> · "
               f"P(#{a + 1} beats #{b + 1}) = <b>{insight.win_probabilities([rewards[a], rewards[b]])[0][1]:.2f}</b>"
               f" · {verdict} · <mark>marked</mark>: words the other does not have there ({differ} of #{b + 1}'s "
               f"{counted} words)</p>")
    return f"{summary}<div class='compare'>{side_html(turn, a, left)}{side_html(turn, b, right)}</div>"


def pair(turn: dict, a: str | None, b: str | None) -> tuple[int, int]:
    """The 0-based pair to compare from the pickers' values (1-based numbers as text): the best and the runner-up
    unless both are picked and differ.

    >>> pair({"rewards": [0.1, 0.9, 0.5]}, None, None), pair({"rewards": [0.1, 0.9, 0.5]}, "1", "3")
    ((1, 2), (0, 2))
    """
    order = insight.ranking(turn["rewards"])
    numbers = [str(i + 1) for i in range(len(order))]
    if a in numbers and b in numbers and a != b:
        return int(a) - 1, int(b) - 1
    return order[0], order[1] if len(order) > 1 else order[0]


def compare_panel(session: dict, a: str | None, b: str | None) -> str:
    """The compare view of the session's latest turn, once it is scored (and judged, if it was scored blind)."""
    turn = scored_turn(session)
    return compare_html(turn, *pair(turn, a, b)) if turn else waiting_html(session)


def compare_panels(session: dict) -> list:
    """The pickers (the best and the runner-up picked) and the view, for a turn that has just changed."""
    shown = scored_turn(session)
    choices = candidate_choices(shown)
    a, b = (str(k + 1) for k in pair(shown, None, None)) if shown else (None, None)
    return [gr.update(choices=choices, value=a), gr.update(choices=choices, value=b), compare_panel(session, a, b)]

