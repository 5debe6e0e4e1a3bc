"""Browser tests of the analysis panels' own controls: the blind-judging export's download in its own tab, the probe
picker's labels, the length-bias plot's legend; none of them logs a console or page error."""
import re

import pytest
from playwright.sync_api import expect
from test_browser import SHOTS, WAIT, browser, open_app, screenshot_folder, send  # noqa: F401 (fixtures)
from test_browser_probes import rank_blind, tab

LABEL = re.compile(r"^#(\d) · rank (\d) · -?\d+\.\d{3}$")  # a picker's label once the turn is scored


@pytest.fixture
def page(browser, app_url):
    """A fresh visitor whose console errors and page errors are recorded in `page.errors`."""
    page = open_app(browser, app_url)
    page.errors = []
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.on("pageerror", lambda error: page.errors.append(f"{error}\n{error.stack}"))
    yield page
    page.context.close()


def test_judgements_download_in_the_blind_judging_tab(page):
    page.locator("#blind input[type=checkbox]").check()
    send(page, "Which bird sings best?", expected="rewards hidden until you judge")
    # The cards' "Rank next" show before the ranking box they fill in: a click before it is there fails (a page error).
    expect(page.locator("#judge-order input")).to_be_visible(timeout=WAIT)
    rank_blind(page, ["2", "4", "1", "3"])
    page.click("#reveal")
    expect(page.locator("#status")).to_have_text(re.compile(r"^\s*Revealed:"), timeout=WAIT)
    tab(page, "Blind judging")
    expect(page.locator("#tally")).to_contain_text("Over 1 judged turn:", timeout=WAIT)
    page.click("#export-judged")
    link = page.locator("#export-judged-file a[download]")
    expect(link).to_have_attribute("download", "starling-judged.jsonl", timeout=WAIT)
    expect(link).to_be_visible()
    expect(page.locator("#export-judged-file").get_by_role("cell", name="starling-judged.jsonl")).to_be_visible()
    with page.expect_download() as download:
        link.click()
    assert download.value.suggested_filename == "starling-judged.jsonl"
    assert '"chosen"' in open(download.value.path(), encoding="utf-8").readline()
    page.locator("#tab-judging").screenshot(path=str(SHOTS / "judged-export.png"))
    tab(page, "Export")  # the Export tab's own download is left alone
    expect(page.locator("#export-file a[download]")).to_have_count(0)
    assert page.errors == [], "\n".join(page.errors)


def test_the_probe_picker_says_rank_and_reward_and_probes_the_candidate_picked(page):
    send(page, "Tell me about starlings.")
    tab(page, "Probes")
    # The tab's picker is drawn once the tab shows, its labels with the turn's ranks: wait for them, then read them.
    expect(page.locator("#probe-pick label").last).to_have_text(re.compile(r"#\d · rank 4 · "), timeout=WAIT)
    labels = page.locator("#probe-pick label").all_inner_texts()
    assert labels[0].strip() == "all" and len(labels) == 5
    ranks = [LABEL.match(label.strip()).groups() for label in labels[1:]]
    assert [rank for _, rank in ranks] == ["1", "2", "3", "4"]  # best first, as the other pickers
    expect(page.locator("#probe-pick input[value=all]")).to_be_checked()
    page.locator("#probe-pick").get_by_text(re.compile(r"^#3 · rank")).click()
    page.locator("#probe-edits").get_by_text(re.compile(r"^refusal:")).click()  # fewer edits, a shorter run
    page.click("#run-probes")
    head = page.locator("#probe-view table.probes tr").first.locator("th", has_text="Δ #")
    expect(head).to_have_text([re.compile(r"Δ #3 \(-?\d")], timeout=WAIT)
    expect(page.locator("#probe-pick input[value='3']")).to_be_checked()
    assert page.errors == [], "\n".join(page.errors)


def test_the_length_bias_legend_names_the_best_the_longest_and_the_others(page):
    send(page, "Tell me about starlings.")
    rows = page.locator("#ranking tr.rank-row")
    best = rows.first.get_attribute("data-candidate")
    lengths = {row.get_attribute("data-candidate"): int(row.locator("td:nth-child(6)").inner_text())
               for row in rows.all()}
    longest = sorted((k for k, n in lengths.items() if n == max(lengths.values())), key=int)
    rivals = ", ".join(f"#{k}" for k in longest if k != best)
    expected = ([f"RM's best & longest: #{best}"] if best in longest else [f"RM's best: #{best}"]) + \
        ([f"longest: {rivals}"] if rivals else []) + (["others"] if len(longest) + (best not in longest) < 4 else [])
    tab(page, "Length bias")
    plot = page.locator("#bias-plot")
    labels = plot.locator("svg .role-legend-label text")
    expect(labels).to_have_text(expected, timeout=WAIT)  # 2 or 3 entries, the best first
    for label in labels.all():  # none cut off by the plot's frame
        box, frame = label.bounding_box(), plot.bounding_box()
        assert frame["y"] <= box["y"] and box["y"] + box["height"] <= frame["y"] + frame["height"]
        assert frame["x"] <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"]
    expect(plot.locator("svg .role-axis-title text")).to_have_text(["reply length (RM tokens)", "reward"])
    strokes = plot.locator("svg .role-mark path").evaluate_all("paths => paths.map(p => p.getAttribute('stroke'))")
    symbols = plot.locator("svg .role-legend-symbol path").evaluate_all(
        "paths => paths.map(p => p.getAttribute('stroke'))")
    assert len(strokes) == 4 and strokes.count(symbols[0]) == 1  # one point in the best's colour
    assert len(set(symbols)) == len(symbols)
    top = plot.locator("svg .role-mark path").last  # drawn last, on top: the best; its tooltip names it
    top.hover(force=True)
    expect(page.locator("#vg-tooltip-element")).to_contain_text(f"#{best}", timeout=WAIT)
    plot.screenshot(path=str(SHOTS / "length-bias.png"))
    assert page.errors == [], "\n".join(page.errors)
