"""Pure rendering helpers for the UI: a session's turns into chat messages, Markdown, traces, the insight panels' tables
and frames, as escaped HTML."""
from __future__ import annotations

import html
import re

import pandas as pd
from markdown_it import MarkdownIt

from .. import insight
from .colour import readable_text, value_colour, win_colour

WIN_CAPTION = "blue: the row's reply is more likely preferred; orange: the column's"
SELF_CELL = "<td class='self' title='a reply against itself'>—</td>"
# CommonMark with tables and strikethrough; raw HTML shows as text, links to javascript: are refused by the
# renderer, and images are not fetched (a reply could point the page at any address).
MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"]).disable("image")
CODE = re.compile(r"(```.*?(?:```|\Z)|`[^`\n]+`)", re.S)  # fenced blocks (closed or running to the end), spans
# Gradio 6.31's chatbot loads Prism's C++ grammar before the C one it extends, throws, and stops updating the
# conversation; C highlighting reads C++ well enough.
CPP_FENCE = re.compile(r"\A```c(?:pp|\+\+)(?=\s)", re.I)


def conversation(turns: list[dict]) -> list[dict]:
    """The conversation so far without any system message: each turn's user message and chosen reply."""
    messages: list[dict] = []
    for turn in turns:
        messages.append(turn["messages"][-1])
        if turn.get("chosen") is not None:
            messages.append({"role": "assistant", "content": turn["candidates"][turn["chosen"]]})
    return messages


def choice_note(turn: dict) -> str:
    """Which candidate a turn continues with, e.g. "candidate 3 of 4, reward 1.23 (best of 4)"."""
    k, n = turn["chosen"], len(turn["candidates"])
    rewards = turn.get("rewards")
    note = f"candidate {k + 1} of {n}"
    if rewards:
        note += f", reward {rewards[k]:.2f}"
        note += f" (best of {n})" if turn.get("picked_by") == "best" else " (picked by you)"
    return note


def markdown_safe(text: str) -> str:
    r"""Text for the Markdown chat and cards in which HTML shows as written and runs nothing, code included.

    Outside code `<` and `&` are escaped (no tag, comment or entity can start), and `>` is left for Markdown's
    quotes; inside code spans and fences Markdown already shows them as written (escaped there,
    `#include <vector>` would show as `#include &lt;vector&gt;`).

    >>> markdown_safe("<img src=x> `a<b` & ```cpp\n#include <vector>\n```\n> quoted")
    '&lt;img src=x> `a<b` &amp; ```c\n#include <vector>\n```\n> quoted'
    """
    return "".join(CPP_FENCE.sub("```c", part) if i % 2 else part.replace("&", "&amp;").replace("<", "&lt;")
                   for i, part in enumerate(CODE.split(text)))


def markdown_html(text: str) -> str:
    """A reply as safe HTML: Markdown rendered (MARKDOWN), any HTML in it escaped, an image only linked to.

    >>> markdown_html("<b>x</b> **y** ![i](http://x/i.png)")
    '<p>&lt;b&gt;x&lt;/b&gt; <strong>y</strong> !<a href="http://x/i.png">i</a></p>\\n'
    """
    return MARKDOWN.render(text)


def chat_messages(turns: list[dict]) -> list[dict]:
    """Chatbot messages; model and user text always shows as text (`markdown_safe`)."""
    messages = []
    for turn in turns:
        messages.append({"role": "user", "content": markdown_safe(turn["messages"][-1]["content"])})
        if turn.get("chosen") is not None:
            reply = markdown_safe(turn["candidates"][turn["chosen"]])
            messages.append({"role": "assistant", "content": f"{reply}\n\n*— {choice_note(turn)}*"})
    return messages


def trace_html(tokens: list[str], values: list[float]) -> str:
    """The reply with each token on a background coloured by its value; hovering shows the value."""
    if not tokens:
        return "<p class='muted'>This reply has no tokens.</p>"
    scale = max(abs(v) for v in values) or 1.0
    spans = "".join(f"<span class='tok' style='background:{value_colour(v, scale)}' "
                    f"title='{html.escape(t, quote=True)} → {v:.3f}'>{html.escape(t)}</span>"
                    for t, v in zip(tokens, values))
    return f"<div class='trace'>{spans}</div>"


def reward_read_note(reward: float, readout: str, note: str | None = None) -> str:
    """Where the reward beside a trace was read, since it is not the last traced value, and `note`, why it was
    read there if that is not where it was asked for.

    >>> reward_read_note(1.5, "last-token")
    "<p class='muted'>Reward <b>1.500</b>, read at the last real token (the end marker after the reply).</p>"
    """
    where = ("at index 2047 of the 2048-padded input, a pad token that attends to the whole conversation "
             "(the model card's read-out)" if readout == "card" else
             "at the last real token (the end marker after the reply)")
    why = f" {html.escape(note)}" if note else ""
    return f"<p class='muted'>Reward <b>{reward:.3f}</b>, read {where}.{why}</p>"


def trace_frame(tokens: list[str], values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"token": list(range(1, len(values) + 1)), "value": values})


def win_cell(p: float) -> str:
    """One opaque cell of the win matrix: p with 2 decimals, text in whichever of black or white reads best."""
    bg = win_colour(p)
    return f"<td style='background:{bg};color:{readable_text(bg)}'>{p:.2f}</td>"


def win_matrix_html(rewards: list[float]) -> str:
    """Heat map of P(row beats column) = sigmoid(r_row - r_col), as an HTML table on a diverging colour scale.

    The diagonal compares a reply with itself, so it shows "—" in an uncoloured cell of class 'self'.

    >>> html_ = win_matrix_html([0.0, 0.0])
    >>> html_.count("<td"), html_.count("class='self'"), html_.count(">0.50<")
    (4, 2, 2)
    """
    matrix = insight.win_probabilities(rewards)
    labels = [f"#{i + 1}" for i in range(len(rewards))]
    head = "".join(f"<th>{label}</th>" for label in labels)
    body = "".join(f"<tr><th>{label}</th>" + "".join(SELF_CELL if i == j else win_cell(p) for j, p in enumerate(row))
                   + "</tr>" for i, (label, row) in enumerate(zip(labels, matrix)))
    return (f"<table class='winmatrix'><caption>{WIN_CAPTION}</caption>"
            f"<tr><th>P(row beats column)</th>{head}</tr>{body}</table>")


def plackett_luce_text(rewards: list[float]) -> str:
    order = " > ".join(f"#{i + 1}" for i in insight.ranking(rewards))
    p = insight.plackett_luce_probability(rewards)
    return f"Plackett-Luce probability of the shown ranking {order}: **{p:.4f}**"


def length_bias_text(rewards: list[float], lengths: list[int], alpha: float) -> str:
    bias = insight.length_bias(rewards, lengths)
    rho = "undefined (constant input)" if bias["spearman"] is None else f"{bias['spearman']:.3f}"
    lines = [f"Spearman correlation of reward and length: **{rho}**"]
    if bias["longest_wins"]:
        lines.append("⚠ **The longest reply wins** this turn: Starling RMs are known to favour long answers.")
    else:
        lines.append(f"The best reply (#{bias['best'] + 1}) is not the longest (#{bias['longest'] + 1}).")
    pick = insight.best_of_n(rewards, lengths, alpha)
    lines.append(f"Length-penalised best-of-N with r − α·len/100, α = {alpha:g}: picks **#{pick + 1}** "
                 f"(plain best-of-N picks #{bias['best'] + 1}).")
    return "\n\n".join(lines)


def length_frame(rewards: list[float], lengths: list[int]) -> pd.DataFrame:
    """The length-bias scatter's points: reply length, reward (3 decimals, as the page shows it), candidate ("#3"),
    `kind` ("best": the RM's top reward; "longest": the longest reply or one tied with it; "best & longest": both;
    "other") and `role`, the legend's entry for the kind: it names the best and the longest (short enough for a
    phone's width: the others are named in each point's tooltip). Rows go others first, the best last, which is
    drawn on top.

    >>> length_frame([0.2, 0.9, 0.1, 0.5], [30, 12, 30, 8]).to_dict("list")["role"]
    ['others', 'longest: #1, #3', 'longest: #1, #3', "RM's best: #2"]
    >>> length_frame([0.9, 0.1], [20, 10])[["candidate", "kind", "role"]].values.tolist()
    [['#2', 'other', 'others'], ['#1', 'best & longest', "RM's best & longest: #1"]]
    """
    best, most = insight.ranking(rewards)[0], max(lengths)
    kinds = ["best & longest" if i == best and n == most else "best" if i == best else "longest" if n == most
             else "other" for i, n in enumerate(lengths)]
    names = {"best": "RM's best", "best & longest": "RM's best & longest", "longest": "longest"}
    roles = {kind: f"{names[kind]}: " + ", ".join(f"#{i + 1}" for i, k in enumerate(kinds) if k == kind)
             for kind in names} | {"other": "others"}
    order = {"other": 0, "longest": 1, "best": 2, "best & longest": 2}
    rows = sorted(range(len(rewards)), key=lambda i: (order[kinds[i]], i))
    return pd.DataFrame({"tokens": [lengths[i] for i in rows], "reward": [round(rewards[i], 3) for i in rows],
                         "candidate": [f"#{i + 1}" for i in rows], "kind": [kinds[i] for i in rows],
                         "role": [roles[kinds[i]] for i in rows]})


def comparison_text(turn: dict) -> str:
    a, b = turn["rewards"], turn["rewards2"]
    tau = insight.kendall_tau(a, b)
    agree = "yes" if insight.top1_agreement(a, b) else "no"
    tau_text = "undefined" if tau is None else f"{tau:.3f}"
    return (f"**{turn['rm']}** vs **{turn['rm2']}**: Kendall τ = **{tau_text}** · "
            f"same best candidate: **{agree}**")


def comparison_rows(turn: dict) -> list[list]:
    """Side-by-side ranks of both reward models: candidate, reward and rank under each."""
    a, b = turn["rewards"], turn["rewards2"]
    rank_a = {i: k for k, i in enumerate(insight.ranking(a), 1)}
    rank_b = {i: k for k, i in enumerate(insight.ranking(b), 1)}
    return [[f"#{i + 1}", round(a[i], 4), rank_a[i], round(b[i], 4), rank_b[i]]
            for i in insight.ranking(a)]


def model_inputs_text(turn: dict) -> tuple[str, str]:
    """The exact LM prompt and each candidate's exact RM input, as plain text."""
    rm_texts = turn.get("rm_texts") or []
    rm_text = "\n\n".join(f"── candidate {i + 1} ──\n{text}" for i, text in enumerate(rm_texts))
    return turn.get("prompt", ""), rm_text or "(not scored yet)"


def turn_summary(turn: dict | None) -> dict:
    """The current turn as plain JSON for API users (pass it through `blind.shown`: a hidden turn has no rewards).

    `human` is the person's ranking of a blind turn (0-based, best first, like `ranking`), `judgement` its
    agreement with the RM (`judging.agreement`)."""
    if not turn:
        return {}
    keys = ["candidates", "rewards", "lengths", "chosen", "picked_by", "seed", "lm", "rm", "readout",
            "rm_format", "rm2", "rewards2", "warning", "readout_note", "blind", "hidden", "human", "judgement"]
    summary = {k: turn.get(k) for k in keys}
    summary["ranking"] = insight.ranking(turn["rewards"]) if turn.get("rewards") else None
    return summary
