"""The batch evaluation's pictures: accuracy per subset with its interval beside the chance and length-only levels,
and each row's reward margin against its length difference. Altair charts handed to gr.Plot as the kind of chart
Gradio styles itself, so axes and colours follow the page's light or dark theme and the width its container."""
from __future__ import annotations

import altair as alt
import pandas as pd
from gradio.components.plot import AltairPlotData

from ..evaluation import NO_SUBSET_LABEL, measures_of, report_groups
from ..eval_layouts import NO_SUBSET

RM, CHANCE, LONGER, SHORTER = "RM accuracy", "chance", "longer wins", "shorter wins"
LEVELS = [RM, CHANCE, LONGER, SHORTER]
SHAPES = ["circle", "diamond", "triangle-right", "triangle-left"]  # told apart without colour too
ROW_HEIGHT, MIN_HEIGHT = 26, 160  # pixels a subset takes, and the least a chart takes: readable on a phone
TABLEAU = ["#4e79a7", "#bab0ac", "#f28e2b", "#b07aa1", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#ff9da7",
           "#9c755f"]
MAX_LABEL = 140  # pixels of a subset's name before it is cut with an ellipsis (the tooltip has it whole)


def _styled(chart: alt.TopLevelMixin) -> AltairPlotData:
    """The chart as Gradio's line-chart payload: Gradio then sets its fonts, text and grid colours from the page's
    theme (light or dark), replaces each layer's colour range with the theme's palette, and fits the chart to its
    container's width. A plain Altair chart keeps Vega's light-theme colours on a dark page, and its own width."""
    # Vega paints a white background unless told otherwise: the page's own shows through instead.
    return AltairPlotData(plot=chart.properties(background="transparent").to_json(), chart="line")


def _palette(domain: list[str]) -> alt.Scale:
    """A colour scale over `domain` with a range of its length, which Gradio replaces colour by colour (and which
    shows as Tableau's colours where it does not)."""
    return alt.Scale(domain=domain, range=[TABLEAU[i % len(TABLEAU)] for i in range(len(domain))])


def _group_name(name: str) -> str:
    return NO_SUBSET_LABEL if name == NO_SUBSET else name


def accuracy_levels(report: dict) -> pd.DataFrame:
    """One row per (group, level): the RM's headline accuracy with its interval, chance, and the two length-only
    judges, group by group as the report shows them (`report_groups`).

    >>> from starling_demo.evaluation import evaluation_report
    >>> rows = [{"subset": "chat", "tiers": [0, 1], "rewards": [2.0, 1.0], "lengths": [3, 5]}] * 2
    >>> accuracy_levels(evaluation_report(rows))[["group", "level", "value"]].values.tolist()[:4]
    [['all rows', 'RM accuracy', 1.0], ['all rows', 'chance', 0.5], ['all rows', 'longer wins', 0.0], \
['all rows', 'shorter wins', 1.0]]
    """
    records = []
    for name, summary in report_groups(report):
        if not summary.get("n"):
            continue
        m = measures_of(summary, summary["headline"])
        metric = f"{summary['headline']}, {summary['n']:,} rows"
        for level, value in ((RM, m["accuracy"]), (CHANCE, m["chance"]), (LONGER, m["longer_wins"]),
                             (SHORTER, m["shorter_wins"])):
            if value is not None:
                records.append({"group": name, "level": level, "value": value, "metric": metric,
                                "low": m["low"] if level == RM else None, "high": m["high"] if level == RM else None})
    return pd.DataFrame(records, columns=["group", "level", "value", "metric", "low", "high"])


def accuracy_plot(report: dict) -> AltairPlotData:
    """Accuracy per subset (the layout's own: best-of-K or pairwise) as a point on its 95% interval, with chance and
    the longer-wins and shorter-wins judges marked on the same line."""
    data = accuracy_levels(report)
    order = list(dict.fromkeys(data["group"]))
    y = alt.Y("group:N", sort=order, title=None, axis=alt.Axis(labelLimit=MAX_LABEL))
    color = alt.Color("level:N", scale=_palette(LEVELS), title=None, legend=alt.Legend(orient="bottom", columns=2,
                                                                                 symbolStrokeWidth=0))
    shape = alt.Shape("level:N", scale=alt.Scale(domain=LEVELS, range=SHAPES), title=None)
    x = alt.X("value:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy")
    tooltip = [alt.Tooltip("group:N", title="rows"), alt.Tooltip("metric:N", title="accuracy of"),
               alt.Tooltip("level:N"), alt.Tooltip("value:Q", format=".3f"),
               alt.Tooltip("low:Q", format=".3f", title="95% low"), alt.Tooltip("high:Q", format=".3f", title="95% high")]
    base = alt.Chart(data)
    interval = base.transform_filter(alt.datum.level == RM).mark_rule(strokeWidth=3).encode(
        x="low:Q", x2="high:Q", y=y, color=color)
    points = base.mark_point(filled=True, size=110, strokeWidth=0, opacity=0.95).encode(
        x=x, y=y, color=color, shape=shape, tooltip=tooltip)
    chart = alt.layer(interval, points).properties(height=max(MIN_HEIGHT, ROW_HEIGHT * len(order) + 60),
                                                   title=alt.Title(["Accuracy with its 95% interval",
                                                                    "beside judging by length alone"]))
    return _styled(chart)


def margin_points(rows: list[dict]) -> pd.DataFrame:
    """One row per scored row: its reward margin (chosen minus best rejected) and the same two answers' length
    difference in RM tokens, its subset and id."""
    return pd.DataFrame([{"margin": r["margin"], "length difference": r["length_difference"],
                          "subset": _group_name(r["subset"]), "id": r["id"] or f"line {r['line']}",
                          "correct": "yes" if r["correct"] else "no"} for r in rows],
                        columns=["margin", "length difference", "subset", "id", "correct"])


def margin_plot(rows: list[dict]) -> AltairPlotData:
    """Each row's reward margin against its length difference, coloured by subset: points right of 0 have the
    chosen answer longer, above 0 the RM right; a cloud that tilts up to the right is a reward that follows length."""
    data = margin_points(rows)
    zero = pd.DataFrame({"zero": [0]})
    subsets = list(dict.fromkeys(data["subset"]))
    color = alt.Color("subset:N", scale=_palette(subsets), title=None, legend=alt.Legend(orient="bottom", columns=3, labelLimit=MAX_LABEL,
                                                                   symbolStrokeWidth=0))
    points = alt.Chart(data).mark_circle(size=36, opacity=0.75, strokeWidth=0).encode(
        x=alt.X("length difference:Q", title="length difference (RM tokens)",
                axis=alt.Axis(tickMinStep=1, labelOverlap="greedy", format="d")),  # whole tokens
        y=alt.Y("margin:Q", title="reward margin"), color=color,
        tooltip=["id:N", "subset:N", alt.Tooltip("margin:Q", format=".3f"), "length difference:Q", "correct:N"])
    across = alt.Chart(zero).mark_rule(strokeDash=[4, 4], stroke="#9ca3af").encode(y="zero:Q")
    down = alt.Chart(zero).mark_rule(strokeDash=[4, 4], stroke="#9ca3af").encode(x="zero:Q")
    chart = alt.layer(across, down, points).properties(
        height=320, title=alt.Title(["Reward margin vs length difference", "chosen minus best rejected"]))
    return _styled(chart)
