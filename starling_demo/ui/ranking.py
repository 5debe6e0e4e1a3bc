"""The turn's candidates ranked by reward: bars on a stated, round axis, gaps to the best with P(best wins), ties
within the turn's margin marked, the chosen reply and each candidate's origin."""
from __future__ import annotations

import html
import math

from .. import insight
from .blind import hidden_ranking_html

RANK_COLUMNS = ["rank", "candidate", "reward bar", "reward", "gap to best", "RM tokens"]
MIN_AXIS = 1.0  # the shortest bar axis, in reward: a gap of 1 is already P(win) 0.73
P_TITLE = "P(best beats this) = sigmoid(r_best − r)"
TIE_MARK = "<span class='tie-mark' title='closer to the best than the tie margin below'>≈ tie</span>"
ORIGIN_MARKS = {"edited": " · edited", "yours": " · yours"}  # LM candidates ("lm") need no mark
# How the page orders and opens the cards, handled in the page alone (assets/page.js); beside the ranking's caption,
# one click from the rows it follows.
CARDS_TOOLBAR = ("<span class='cards-toolbar'>Cards: <button type='button' data-action='by-rank'>by rank</button>"
                 "<button type='button' data-action='by-number'>by number</button>"
                 "<button type='button' data-action='expand-all'>expand all</button></span>")


def axis_step(span: float) -> float:
    """A round tick step for an axis `span` long: 1, 2 or 5 times a power of 10, the largest giving 3 steps or more.

    >>> axis_step(1.0), axis_step(3.0), axis_step(20.0)
    (0.2, 1.0, 5.0)
    """
    unit = 10.0 ** math.floor(math.log10(span / 3))
    return next(m * unit for m in (5, 2, 1) if span / (m * unit) >= 3 - 1e-9)


def bar_axis(rewards: list[float]) -> tuple[float, float]:
    """The ends of the reward axis the bars are drawn on: round numbers around the rewards, with 0 when it is near.

    The axis spans at least MIN_AXIS, so that gaps the size of batch noise draw as short as they are.

    >>> bar_axis([0.717, 0.653]), bar_axis([-3.0, -0.5, -2.0]), bar_axis([10.2, 10.5]), bar_axis([-8.0, 12.0])
    ((0.0, 1.0), (-3.0, 0.0), (9.4, 10.6), (-10.0, 15.0))
    """
    low, high = min(rewards), max(rewards)
    near = max(high - low, MIN_AXIS)
    if low <= near and high >= -near:
        low, high = min(low, 0.0), max(high, 0.0)
    if high - low < MIN_AXIS:  # widen away from 0 when 0 is the low end, else downwards: the best stays right
        low, high = (low, low + MIN_AXIS) if low == 0 else (high - MIN_AXIS, high)
    step = axis_step(high - low)
    # The tolerances and rounding keep float error (9.5 / 0.2 = 47.49...) off the round ends.
    return (round(math.floor(low / step + 1e-9) * step, 9) + 0.0,  # + 0.0 turns -0.0 into 0.0
            round(math.ceil(high / step - 1e-9) * step, 9) + 0.0)


def bar_widths(rewards: list[float], axis: tuple[float, float]) -> list[float]:
    """Reward bar lengths in % of the `axis` (its low and high end), so that bars differ as much as rewards do.

    >>> bar_widths([0.717, 0.653], (0.0, 1.0)), bar_widths([-3.0, -0.5], (-3.0, 0.0))
    ([71.7, 65.3], [0.0, 83.33])
    """
    low, high = axis
    return [round(100 * (r - low) / (high - low), 2) for r in rewards]


def gap_cell(gap: float, margin: float) -> str:
    """The gap cell of a row below the best: its `gap` (<= 0), P(best wins) and a tie mark when within `margin`.

    >>> cell = gap_cell(-0.064, 0.189)
    >>> cell.startswith("-0.064 · "), ">P(best wins) 0.52<" in cell, "≈ tie" in cell, "tie" in gap_cell(-0.2, 0.19)
    (True, True, True, False)
    """
    p = insight.win_probabilities([0.0, gap])[0][1]  # sigmoid(r_best - r)
    cell = f"{gap:.3f} · <span class='p-win' title='{P_TITLE}'>P(best wins) {p:.2f}</span>"
    return cell + (f" {TIE_MARK}" if -gap < margin else "")


def rank_row(turn: dict, rank: int, i: int, width: float, margin: float = 0.0) -> str:
    """Row of `ranking_html` for candidate i at `rank`, its bar `width` % long, a tie within `margin` of the best."""
    rewards, origins = turn["rewards"], turn.get("origins") or []
    chosen = turn.get("chosen") == i
    gap = rewards[i] - max(rewards)
    tie = rank > 1 and -gap < margin
    mark = ORIGIN_MARKS.get(origins[i] if i < len(origins) else "lm")
    label = f"#{i + 1}" + (f"<span class='origin-mark'>{html.escape(mark)}</span>" if mark else "")
    if chosen:
        label += " <span class='chosen-mark' title='the conversation continues with this reply'>✔</span>"
    cells = [str(rank), label, f"<div class='bar'><span style='width:{width:.1f}%'></span></div>",
             f"{rewards[i]:.3f}", "—" if rank == 1 else gap_cell(gap, margin), str(int(turn["lengths"][i]))]
    if turn.get("human"):
        cells.append(str(insight.human_rank(turn["human"], i) or "—"))
    return (f"<tr class='rank-row{' chosen' * chosen}{' tie' * tie}' data-candidate='{i + 1}' "
            f"data-reward='{rewards[i]:.4f}'>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")


def ranking_caption(axis: tuple[float, float], margin: float, note: str) -> str:
    """What the bars measure, on which scale, and what a tie is, on one line; why that margin opens beside it
    (`note`, escaped)."""
    text = f"Bars: reward, linear from {axis[0]:g} to {axis[1]:g}."
    if margin > 0:
        text += (f" <details class='tie-why'><summary>≈ tie: within {margin:g} of the best</summary>"
                 f"{html.escape(note)}</details>")
    return f"<caption>{CARDS_TOOLBAR}{text}</caption>"


def ranking_html(turn: dict | None) -> str:
    """The turn's candidates ranked by reward, best first, with bars on a stated axis and ties marked; or a line
    saying what is still to come.

    `data-candidate` on each row is the candidate's 1-based number, as on its card. A tie is a reward within the
    turn's "tie_margin" of the best ("tie_note" says where the margin comes from); without one nothing is a tie.

    >>> ranking_html(None)
    "<p class='muted rank-empty'>Send a message: its candidates are ranked here.</p>"
    >>> ranking_html({"candidates": [], "settings": {"n": 2}})
    "<p class='muted rank-empty'>Generating 2 candidates… they are ranked here once scored.</p>"
    >>> ranking_html({"candidates": ["a", "b"], "rewards": [-2.0, -1.0], "lengths": [3, 5], "chosen": 1}).count("<tr")
    3
    """
    if not turn:
        return "<p class='muted rank-empty'>Send a message: its candidates are ranked here.</p>"
    if turn.get("hidden"):
        return hidden_ranking_html(turn)
    rewards = turn.get("rewards")
    if not rewards:
        n = len(turn.get("candidates") or []) or (turn.get("settings") or {}).get("n", 0)
        noun = "candidate" if n == 1 else "candidates"
        return f"<p class='muted rank-empty'>Generating {n} {noun}… they are ranked here once scored.</p>"
    axis, margin = bar_axis(rewards), float(turn.get("tie_margin") or 0.0)
    widths = bar_widths(rewards, axis)
    names = RANK_COLUMNS + ["your rank"] * bool(turn.get("human"))
    # The axis's ends head the bar column, right above the bars they measure.
    names[2] = f"<div class='axis'><span>{axis[0]:g}</span><span>{names[2]}</span><span>{axis[1]:g}</span></div>"
    head = "".join(f"<th>{name}</th>" for name in names)
    rows = "".join(rank_row(turn, rank, i, widths[i], margin) for rank, i in enumerate(insight.ranking(rewards), 1))
    return (f"<table class='ranking'>{ranking_caption(axis, margin, turn.get('tie_note') or '')}"
            f"<tr>{head}</tr>{rows}</table>")
