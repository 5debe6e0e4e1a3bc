"""Browser tests of the Batch evaluation tab in headless Chromium: nothing of the previous file on screen while a new
one is scored, Cancel, and what a second Evaluate says while one runs. They wait on what the page shows, never sleep."""
import json
import re

import pytest
from playwright.sync_api import expect
from test_browser import SHOTS, WAIT, browser, open_app, screenshot_folder  # noqa: F401 (fixtures)

from starling_demo.limits import MAX_EVAL_ROWS

ROW = {"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go away."}
# Each time the status line changes: what it says, the malformed-rows box, and whether the report shows a table.
WATCH_JS = """() => {
  window.evalLog = [];
  const status = document.querySelector('#eval-status');
  new MutationObserver(() => window.evalLog.push({
      status: status.innerText,
      errors: document.querySelector('#eval-errors textarea').value,
      report: document.querySelector('#report').innerText}))
    .observe(status, {subtree: true, childList: true, characterData: true});
}"""


def write_rows(path, count, malformed=0):
    """An evaluation file of `count` well-formed chosen/rejected rows, then `malformed` lines that are not JSON."""
    lines = [json.dumps(ROW)] * count + ["{not json"] * malformed
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture
def tab(browser, app_url):
    """A fresh visitor on the Batch evaluation tab, recording the page's errors in `page.errors`."""
    page = open_app(browser, app_url)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    for _ in range(3):  # a click while the page is still setting up its tabs may be undone: click again
        page.get_by_role("tab", name="Batch evaluation").click()
        try:
            expect(page.locator("#evaluate")).to_be_visible()
            break
        except AssertionError:
            pass
    expect(page.locator("#evaluate")).to_be_visible()
    yield page
    page.context.close()


def evaluate(page, path):
    """Upload `path` (in place of the file uploaded before, if any) and press Evaluate."""
    clear = page.locator("#eval-file button[aria-label=Clear]")
    if clear.count():
        clear.click()
    page.locator("#eval-file input[type=file]").set_input_files(path)
    expect(page.locator(f'#eval-file .filename[aria-label="{path.rsplit("/", 1)[-1]}"]')).to_be_visible(timeout=WAIT)
    page.click("#evaluate")


def test_a_new_evaluation_shows_nothing_of_the_previous_file_while_it_runs(tab, tmp_path):
    evaluate(tab, write_rows(tmp_path / "first.jsonl", 2, malformed=1))
    expect(tab.locator("#eval-status")).to_contain_text("Evaluated 2 rows", timeout=WAIT)
    expect(tab.locator("#report")).to_contain_text("all rows")
    expect(tab.locator("#eval-errors textarea")).to_have_value("line 3: invalid JSON (Expecting property name "
                                                              "enclosed in double quotes)")

    tab.evaluate(WATCH_JS)
    evaluate(tab, write_rows(tmp_path / "second.jsonl", 400))
    # At once, and until the new report comes: no report, no malformed rows, and a status that says it scores.
    expect(tab.locator("#eval-status")).to_contain_text("Scoring with", timeout=WAIT)
    expect(tab.locator("#eval-errors textarea")).to_have_value("")
    expect(tab.locator("#report")).not_to_contain_text("all rows")
    expect(tab.locator("#eval-status")).to_contain_text("Evaluated 400 rows", timeout=WAIT)
    expect(tab.locator("#eval-errors textarea")).to_have_value("No malformed rows.")
    expect(tab.locator("#report")).to_contain_text("all rows")
    log = tab.evaluate("window.evalLog")
    running = [entry for entry in log if "Scoring with" in entry["status"]]
    assert any(re.search(r"\d+ of 400 rows", entry["status"]) for entry in running), log
    # (The last report may come a moment before the status line that goes with it: look for the first file's.)
    stale = [entry for entry in running if "invalid JSON" in entry["errors"]
             or re.search(r"all rows\s+2\s", entry["report"])]
    assert stale == [], stale
    tab.screenshot(path=str(SHOTS / "eval-1-second-file.png"), full_page=True)
    assert tab.errors == []


def test_cancel_stops_a_running_evaluation_and_says_how_far_it_got(tab, tmp_path):
    cancel = tab.locator("#cancel-eval")
    expect(cancel).to_be_disabled()  # nothing to cancel yet
    evaluate(tab, write_rows(tmp_path / "big.jsonl", MAX_EVAL_ROWS))
    status = tab.locator("#eval-status")
    expect(status).to_contain_text(re.compile(rf"Scoring with \S+: [\d,]+ of {MAX_EVAL_ROWS:,} rows"), timeout=WAIT)
    seen = int(re.search(r": ([\d,]+) of", status.inner_text()).group(1).replace(",", ""))
    expect(cancel).to_be_enabled()
    cancel.click()
    expect(status).to_contain_text("Cancelled after", timeout=WAIT)
    said = re.fullmatch(rf"Cancelled after ([\d,]+) of {MAX_EVAL_ROWS:,} rows; nothing reported\.",
                        status.inner_text().strip())
    assert said, status.inner_text()
    assert seen <= int(said.group(1).replace(",", "")) < MAX_EVAL_ROWS
    expect(tab.locator("#report")).not_to_contain_text("all rows")
    expect(cancel).to_be_disabled()
    expect(tab.locator("#evaluate")).to_be_enabled()
    tab.screenshot(path=str(SHOTS / "eval-2-cancelled.png"), full_page=True)
    # The next evaluation runs as usual.
    evaluate(tab, write_rows(tmp_path / "small.jsonl", 3))
    expect(status).to_contain_text("Evaluated 3 rows", timeout=WAIT)
    assert tab.errors == []


def test_a_second_evaluate_while_one_runs_says_so(tab, tmp_path):
    evaluate(tab, write_rows(tmp_path / "big.jsonl", MAX_EVAL_ROWS))
    status, button = tab.locator("#eval-status"), tab.locator("#evaluate")
    expect(status).to_contain_text("Scoring with", timeout=WAIT)
    # Evaluate cannot be pressed again while this one runs, and says why where the visitor would press it.
    expect(button).to_be_disabled()
    expect(button).to_have_text("An evaluation is running: wait for it or cancel it")
    button.click(force=True)  # what a visitor's second click does: nothing is sent
    expect(status).to_contain_text(re.compile(rf"[\d,]+ of {MAX_EVAL_ROWS:,} rows"), timeout=WAIT)
    assert tab.locator('[data-testid="toast-body"]').count() == 0
    tab.screenshot(path=str(SHOTS / "eval-3-running.png"), full_page=True)
    expect(status).to_contain_text(f"Evaluated {MAX_EVAL_ROWS} rows", timeout=WAIT)
    expect(button).to_be_enabled()
    expect(button).to_have_text("Evaluate with the chosen reward model")
    assert tab.errors == []


RB2_ROWS = [{"prompt": f"Question {i}: {'why ' * (i % 9)}?", "chosen": [f"A careful answer {'indeed ' * (i % 5)}."],
             "rejected": ["No.", f"Maybe {'so ' * (i % 7)}", "?"], "subset": ["Focus", "Math", "Precise IF"][i % 3],
             "id": str(i)} for i in range(30)]


def painted_near(png: bytes, colour: tuple[int, int, int], within: int = 60) -> int:
    """How many pixels of a screenshot are within `within` (per channel) of `colour`."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(pixels - np.array(colour)).max(axis=-1) <= within).sum())


@pytest.mark.parametrize("size, scheme", [("desktop", "dark"), ("phone", "light")])  # each scheme, each width
def test_the_tabs_pictures_follow_the_theme_and_fit_a_phone(browser, app_url, tmp_path, size, scheme):
    """A RewardBench 2 file gives the accuracy picture and the margin picture: drawn, as wide as the tab (never
    wider), their text in the page's own text colour (so readable in both schemes), with no page error."""
    from test_page import SIZES

    width, height = SIZES[size]
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(app_url + ("?__theme=dark" if scheme == "dark" else ""))
    page.get_by_role("tab", name="Batch evaluation").click()
    expect(page.locator("#evaluate")).to_be_visible(timeout=WAIT)
    path = tmp_path / "rb2.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in RB2_ROWS), encoding="utf-8")
    evaluate(page, str(path))
    expect(page.locator("#eval-status")).to_contain_text("Evaluated 30 rows", timeout=WAIT)
    expect(page.locator("#eval-status")).to_contain_text("Read as RewardBench 2 rows")
    expect(page.locator("#report")).to_contain_text("best-of-K")
    text_colour = page.evaluate("""() => {
        const probe = document.createElement('span');
        probe.style.color = 'var(--body-text-color)';
        document.body.appendChild(probe);
        const colour = getComputedStyle(probe).color;
        probe.remove();
        return colour.match(/\\d+/g).slice(0, 3).map(Number);
    }""")
    behind = page.evaluate("""() => {  // the first background painted behind the chart, going up from its block
        for (let e = document.querySelector('#eval-accuracy'); e; e = e.parentElement) {
            const colour = getComputedStyle(e).backgroundColor.match(/[\\d.]+/g).map(Number);
            if (colour.length < 4 || colour[3] > 0) return colour.slice(0, 3);
        }
        return [255, 255, 255];
    }""")
    for plot in ("#eval-accuracy", "#eval-margins"):
        chart = page.locator(f"{plot} canvas, {plot} svg.marks").first
        expect(chart).to_be_visible(timeout=WAIT)
        box, tab = chart.bounding_box(), page.locator("#tab-eval").bounding_box()
        # As wide as the tab, and never wider than the screen (a phone would scroll sideways).
        assert box["width"] > 0.6 * tab["width"] and box["x"] >= 0 and box["x"] + box["width"] <= width
        png = chart.screenshot()
        pixels = box["width"] * box["height"]
        assert painted_near(png, tuple(behind), within=12) > 0.5 * pixels  # the block's own background shows through
        assert painted_near(png, tuple(text_colour)) > 100  # axis labels in the theme's text colour
    page.locator("#tab-eval").screenshot(path=str(SHOTS / f"eval-{size}-{scheme}.png"))
    assert errors == []
    page.context.close()
