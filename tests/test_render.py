"""Pure rendering helpers: colour contrast, the win matrix, the ranked reward table and the cards' badges."""
import itertools
import math
import re

import pytest

from starling_demo.ui.colour import contrast_ratio, readable_text, relative_luminance, win_colour
from starling_demo.ui.ranking import axis_step, bar_axis, bar_widths, ranking_html
from starling_demo.ui.render import length_frame, win_matrix_html

CELL = re.compile(r"<td style='background:(#[0-9a-f]{6});color:(#[0-9a-f]{6})'>([0-9.]+)</td>")


def test_relative_luminance_and_contrast_match_wcag():
    assert relative_luminance("#000000") == 0.0 and relative_luminance((255, 255, 255)) == pytest.approx(1.0)
    assert relative_luminance("#ff0000") == pytest.approx(0.2126)
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#ffffff", "#000000") == contrast_ratio("#000000", "#ffffff")
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.478, abs=1e-3)  # the known just-failing grey
    assert contrast_ratio("#1d4ed8", "#1d4ed8") == 1.0


def test_readable_text_picks_the_stronger_contrast_for_every_colour():
    steps = range(0, 256, 17)  # 16 levels per channel, 0 and 255 included
    for bg in itertools.product(steps, repeat=3):
        text = readable_text(bg)
        other = "#ffffff" if text == "#000000" else "#000000"
        assert contrast_ratio(bg, text) >= max(4.5, contrast_ratio(bg, other)), bg
    assert readable_text("#ffffff") == "#000000" and readable_text("#000000") == "#ffffff"


def test_win_matrix_diagonal_numbers_and_caption():
    html = win_matrix_html([1.0, 0.0, 3.0])
    assert html.startswith("<table class='winmatrix'>") and html.count("<td") == 9
    assert html.count("<td class='self'") == 3 and html.count("—") == 3
    assert "blue: the row's reply is more likely preferred; orange: the column's" in html
    cells = CELL.findall(html)
    assert [p for _, _, p in cells] == ["0.73", "0.12", "0.27", "0.05", "0.88", "0.95"]
    rows = html.split("<tr>")[2:]
    assert all(row.count("class='self'") == 1 for row in rows)
    assert rows[1].index("class='self'") > rows[1].index("0.27")  # row #2: the diagonal is its 2nd cell


def test_win_matrix_text_contrast_is_readable_in_every_cell():
    rewards = [-4.0, -1.5, -0.2, 0.0, 0.25, 1.0, 3.0, 8.0]
    cells = CELL.findall(win_matrix_html(rewards))
    assert len(cells) == len(rewards) * (len(rewards) - 1)
    assert all(contrast_ratio(bg, fg) >= 4.5 for bg, fg, _ in cells)


def test_win_colours_diverge_around_even_odds():
    def rgb(colour):
        return [int(colour[k:k + 2], 16) for k in (1, 3, 5)]

    low, even, high = rgb(win_colour(0.44)), rgb(win_colour(0.5)), rgb(win_colour(0.56))
    assert low[0] > low[2] and high[2] > high[0]  # orange-ward (red over blue) against blue-ward
    assert even[0] < even[2] and abs(even[0] - even[2]) < 8  # a neutral grey
    assert sum((a - b) ** 2 for a, b in zip(low, high)) ** 0.5 > 25  # visibly apart
    assert win_colour(0.0) == "#c2410c" and win_colour(1.0) == "#1d4ed8"
    assert len({win_colour(p / 20) for p in range(21)}) == 21  # the scale never flattens


TURN = {"candidates": ["a", "b", "c", "d"], "rewards": [-3.0, -0.5, -2.0, -1.25], "lengths": [12, 40, 7, 21],
        "chosen": 2, "picked_by": "you", "origins": ["lm", "lm", "yours", "edited"]}


def rows_of(html):
    return re.findall(r"<tr class='([^']*)' data-candidate='(\d+)' data-reward='([^']*)'>(.*?)</tr>", html)


def text(cell):
    """A cell's text without its tags."""
    return re.sub(r"<[^>]+>", "", cell)


def cells_of(html):
    return [[text(c) for c in re.findall(r"<td>(.*?)</td>", body)] for *_, body in rows_of(html)]


def caption_of(html):
    """The caption's words, after the cards' toolbar that shares its line."""
    return re.search(r"<caption>.*?</span>(.*?)</caption>", html).group(1)


def widths_of(html):
    return [float(w) for w in re.findall(r"width:([0-9.]+)%", html)]


def test_ranking_html_lists_candidates_best_first():
    html = ranking_html(TURN)
    assert html.startswith("<table class='ranking'><caption>")
    head = [text(name) for name in re.findall(r"<th>(.*?)</th>", html)]
    assert head == ["rank", "candidate", "-3reward bar0", "reward", "gap to best", "RM tokens"]
    rows = rows_of(html)
    assert [k for _, k, _, _ in rows] == ["2", "4", "3", "1"]
    assert [r for _, _, r, _ in rows] == ["-0.5000", "-1.2500", "-2.0000", "-3.0000"]
    cells = cells_of(html)
    assert [c[0] for c in cells] == ["1", "2", "3", "4"]
    assert [c[3] for c in cells] == ["-0.500", "-1.250", "-2.000", "-3.000"]
    assert [c[4].split(" · ")[0] for c in cells] == ["—", "-0.750", "-1.500", "-2.500"]
    assert [c[5] for c in cells] == ["40", "21", "7", "12"]  # the 6th column stays the RM token count


def test_ranking_bars_measure_the_reward_on_a_stated_axis():
    html = ranking_html(TURN)
    # 0 is near these (all negative) rewards, so the axis runs from -3 to 0 and a bar is r + 3 of 3.
    assert "<div class='axis'><span>-3</span><span>reward bar</span><span>0</span></div>" in html
    assert caption_of(html) == "Bars: reward, linear from -3 to 0."
    assert widths_of(html) == [83.3, 58.3, 33.3, 0.0]
    close = ranking_html(TURN | {"rewards": [0.717, 0.653, 0.70, 0.69]})
    assert "linear from 0 to 1." in caption_of(close)
    assert widths_of(close) == [71.7, 70.0, 69.0, 65.3]  # 0.064 apart draws 6.4 points apart, not 100% vs 4%


@pytest.mark.parametrize("rewards", [[0.717, 0.653], [-3.0, -0.5, -2.0, -1.25], [10.2, 10.5, 10.45], [-8.0, 12.0],
                                     [2.5, 3.1], [-0.3, -0.2], [5.0], [0.0], [1.5, 6.0, 2.0], [-41.3, -40.9]])
def test_bars_differ_as_much_as_the_rewards_do(rewards):
    low, high = bar_axis(rewards)
    assert low <= min(rewards) and max(rewards) <= high and high - low >= 1.0
    if min(rewards) <= 0 <= max(rewards):
        assert low <= 0 <= high
    step = axis_step(high - low)
    assert low / step == pytest.approx(round(low / step)) and high / step == pytest.approx(round(high / step))
    widths = bar_widths(rewards, (low, high))
    assert all(0 <= w <= 100 for w in widths)
    for (ra, wa), (rb, wb) in itertools.combinations(zip(rewards, widths), 2):
        assert (wa - wb) / 100 * (high - low) == pytest.approx(ra - rb, abs=1e-3)


TIED = TURN | {"rewards": [0.10, 0.717, 0.70, 0.53], "chosen": 1, "tie_margin": 0.189,
               "tie_note": "0.189: <b>measured</b> in 4-bit & on a GPU (benchmarks/RESULTS.md)."}


def test_ranking_marks_candidates_within_the_tie_margin_of_the_best():
    html = ranking_html(TIED)
    rows = rows_of(html)
    assert [k for _, k, _, _ in rows] == ["2", "3", "4", "1"]
    assert [c for c, *_ in rows] == ["rank-row chosen", "rank-row tie", "rank-row tie", "rank-row"]
    gaps = [c[4] for c in cells_of(html)]
    assert gaps[0] == "—" and "≈ tie" in gaps[1] and "≈ tie" in gaps[2] and "≈ tie" not in gaps[3]
    assert html.count("≈ tie") == 3  # the two rows' marks and the caption
    assert caption_of(html).endswith("<summary>≈ tie: within 0.189 of the best</summary>0.189: "
                                     "&lt;b&gt;measured&lt;/b&gt; in 4-bit &amp; on a GPU (benchmarks/RESULTS.md)."
                                     "</details>")
    assert "<b>" not in html
    # The margin is strict, and without one (the turn stores none) nothing is a tie, equal rewards included.
    assert "tie" not in rows_of(ranking_html(TIED | {"tie_margin": 0.017}))[1][0]
    plain = ranking_html(TIED | {"tie_margin": None, "tie_note": None, "rewards": [1.0, 1.0, 0.9, 0.0]})
    assert "≈ tie" not in plain and "class='rank-row tie'" not in plain and "None" not in plain


def test_ranking_shows_p_best_wins_beside_each_gap():
    html = ranking_html(TIED)
    ps = [re.search(r"P\(best wins\) ([0-9.]+)", c[4]) for c in cells_of(html)]
    assert ps[0] is None  # the best row shows "—"
    expected = [1 / (1 + math.exp(-(0.717 - r))) for r in (0.70, 0.53, 0.10)]
    assert [m.group(1) for m in ps[1:]] == [f"{p:.2f}" for p in expected] == ["0.50", "0.55", "0.65"]
    assert cells_of(html)[1][4].startswith("-0.017 · P(best wins) 0.50")


def test_ranking_marks_the_chosen_own_and_edited_candidates():
    rows = rows_of(ranking_html(TURN))
    classes = {k: c for c, k, _, _ in rows}
    labels = {k: re.findall(r"<td>(.*?)</td>", body)[1] for _, k, _, body in rows}
    assert classes == {"2": "rank-row", "4": "rank-row", "3": "rank-row chosen", "1": "rank-row"}
    assert labels["3"].startswith("#3<span class='origin-mark'> · yours</span>") and "✔" in labels["3"]
    assert labels["4"] == "#4<span class='origin-mark'> · edited</span>" and labels["2"] == "#2" and labels["1"] == "#1"
    assert ranking_html(TURN | {"origins": None}).count("· yours") == 0  # without origins, all are the LM's
    assert ranking_html(TURN).count("✔") == 1


def test_ranking_placeholders_before_scoring():
    assert ranking_html(None) == "<p class='muted rank-empty'>Send a message: its candidates are ranked here.</p>"
    generating = "<p class='muted rank-empty'>Generating {} candidates… they are ranked here once scored.</p>"
    assert ranking_html({"candidates": ["x", "y", "z"], "rewards": None}) == generating.format(3)
    assert ranking_html({"candidates": [], "settings": {"n": 6}}) == generating.format(6)


def test_length_frame_colours_the_best_the_longest_and_the_others():
    rewards = [0.41234, 0.9, 0.1, 0.5, 0.3, 0.6, 0.2, 0.7]
    lengths = [10, 30, 30, 12, 14, 20, 25, 8]  # #2 is the best and ties #3 for the longest
    frame = length_frame(rewards, lengths)
    assert list(frame.columns) == ["tokens", "reward", "candidate", "kind", "role"]
    assert sorted(zip(frame["candidate"], frame["tokens"], frame["reward"])) == sorted(
        (f"#{i + 1}", n, round(r, 3)) for i, (n, r) in enumerate(zip(lengths, rewards)))
    by = dict(zip(frame["candidate"], zip(frame["kind"], frame["role"])))
    assert by["#2"] == ("best & longest", "RM's best & longest: #2") and by["#3"] == ("longest", "longest: #3")
    assert {by[f"#{k}"] for k in (1, 4, 5, 6, 7, 8)} == {("other", "others")}
    assert list(frame["candidate"])[-1] == "#2" and list(frame["candidate"])[-2] == "#3"  # the best drawn on top
    assert frame["role"].nunique() == 3 and frame.loc[frame["candidate"] == "#1", "reward"].item() == 0.412


@pytest.mark.parametrize("rewards, lengths, roles", [
    ([0.5], [7], ["RM's best & longest: #1"]),
    ([0.2, 0.9], [20, 10], ["longest: #1", "RM's best: #2"]),
    ([0.2, 0.9, 0.9], [20, 10, 20], ["longest: #1, #3", "RM's best: #2"]),  # a tie for the best goes to #2
    ([0.9, 0.2, 0.3], [5, 5, 5], ["longest: #2, #3", "RM's best & longest: #1"]),
    ([0.1, 0.2, 0.3, 0.9], [40, 9, 9, 9], ["others", "longest: #1", "RM's best: #4"]),
])
def test_length_frame_legend_has_at_most_three_entries_whatever_the_turn(rewards, lengths, roles):
    assert list(dict.fromkeys(length_frame(rewards, lengths)["role"])) == roles
