"""The page at real reply lengths in every size and scheme (screenshots in artifacts/screenshots), and a walk
through every feature that fails on any error the page logs."""
import json

import pytest
from playwright.sync_api import expect
from test_browser import SHOTS, WAIT, browser, screenshot_folder  # noqa: F401 (fixtures)
from test_page import SIZES

from starling_demo.steering import answer, steered

LONG = 340  # new tokens: the whole Markdown answer (starling_demo/steering.py)


@pytest.fixture(scope="module")
def markdown_replies(engine):
    lm = engine.lm()
    with steered(lm.model, answer(lm.tokenizer, 2_000)):  # a token astray now and then, as sampling would
        yield


def visitor(browser, app_url, size, scheme="light"):
    """A fresh visitor at one of SIZES, recording every page error and console error."""
    width, height = SIZES[size]
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.goto(app_url + ("?__theme=dark" if scheme == "dark" else ""))
    return page


def set_turn(page, n, tokens):
    """N and max new tokens, in the settings (closed again after)."""
    toggle = page.get_by_role("button", name="Toggle Sidebar")
    toggle.click()
    for selector, value in (("#n", n), ("#max-tokens", tokens)):
        box = page.locator(f"{selector} input[type=number]")
        box.fill(str(value))
        box.press("Enter")
    toggle.click()


def ask(page, message, expected="Scored"):
    page.fill("#msg textarea", message)
    page.click("#send")
    expect(page.locator("#status")).to_contain_text(expected, timeout=WAIT)
    expect(page.locator("#send")).to_have_text("Send", timeout=WAIT)


@pytest.mark.parametrize("n", [4, 8])
@pytest.mark.parametrize("size, scheme", [(size, scheme) for size in SIZES for scheme in ("light", "dark")])
def test_long_replies_in_every_size_and_scheme(browser, app_url, markdown_replies, size, scheme, n):
    page = visitor(browser, app_url, size, scheme)
    set_turn(page, n, LONG)
    ask(page, "Tell me about starlings.")
    expect(page.locator("#ranking tr.rank-row")).to_have_count(n)
    # Rendered Markdown in the cards (any card: a stray token can break one card's code fence, as sampling can).
    expect(page.locator("[id^=view-] pre code").first).to_be_attached()
    height = SIZES[size][1]
    if size != "phone":  # the whole ranking and the best candidates' cards above the fold
        assert page.locator("#ranking table").bounding_box()["y"] + page.locator("#ranking table").bounding_box()[
            "height"] <= height
        best = page.locator("#ranking tr.rank-row").first.get_attribute("data-candidate")
        card = page.locator(f"#candidate-{best}").bounding_box()
        assert card["y"] + card["height"] <= height
    if size == "laptop" and n == 4:  # one decision on one screen: every card and the box for your own reply
        for k in range(1, 5):
            card = page.locator(f"#candidate-{k}").bounding_box()
            assert card["y"] + card["height"] <= height, f"card {k} is below the screen"
        assert page.locator("#own").bounding_box()["y"] + 40 <= height
    page.screenshot(path=str(SHOTS / f"long-{size}-{scheme}-n{n}.png"), full_page=size == "phone")
    assert page.errors == []
    page.context.close()


def test_every_feature_in_turn_logs_no_error(browser, app_url, markdown_replies, tmp_path):
    page = visitor(browser, app_url, "desktop")
    set_turn(page, 4, 120)
    ask(page, "Tell me about starlings.")
    page.locator("#candidate-1 [data-action=expand]").click()
    page.locator("#ranking [data-action=expand-all]").click()
    page.locator("#ranking [data-action=by-number]").click()
    page.locator("#ranking tr.rank-row").last.click()
    page.locator("#candidate-2 [data-action=edit]").click()
    page.fill("#card-2 textarea", "A shorter reply.")
    page.click("#score")
    expect(page.locator("#badge-2")).to_contain_text("edited by you", timeout=WAIT)
    page.fill("#own textarea", "My own **reply**.")
    page.click("#add")
    expect(page.locator("#status")).to_contain_text("Added candidate 5", timeout=WAIT)
    page.locator("button[id^=use-]:not([disabled])").first.click()
    expect(page.locator("#status")).to_contain_text("Continuing with candidate", timeout=WAIT)
    for name in ["Compare two", "Reward trace", "Win probabilities", "Length bias", "Compare RMs", "Model inputs"]:
        page.get_by_role("tab", name=name).click()
    page.get_by_role("tab", name="Reward trace").click()
    page.click("#attribute")
    expect(page.locator("#attribution")).to_contain_text("the unit that earns the most", timeout=WAIT)
    page.get_by_role("tab", name="Probes").click()
    page.click("#run-probes")
    expect(page.locator("#probe-view table")).to_be_visible(timeout=WAIT)
    page.get_by_role("tab", name="Export").click()
    page.click("#export-pairs")
    expect(page.locator('#export-file [data-testid="download-link"]')).to_be_visible(timeout=WAIT)
    page.click("#regenerate")
    expect(page.locator("#status")).to_contain_text("Scored 4", timeout=WAIT)
    expect(page.locator("#send")).to_have_text("Send", timeout=WAIT)

    page.locator("#blind input[type=checkbox]").check()
    ask(page, "And their song?", expected="rewards hidden until you judge")
    for k in (3, 1):
        page.locator(f"#candidate-{k} [data-action=rank]").click()
    page.click("#reveal")
    expect(page.locator("#status")).to_contain_text("Revealed", timeout=WAIT)
    page.get_by_role("tab", name="Blind judging").click()
    page.click("#export-judged")
    expect(page.locator('[data-testid="download-link"]').first).to_be_visible(timeout=WAIT)

    rows = [{"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go."}] * 3
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    page.get_by_role("tab", name="Batch evaluation").click()
    page.locator("#eval-file input[type=file]").set_input_files(str(path))
    page.click("#evaluate")
    expect(page.locator("#eval-status")).to_contain_text("Evaluated 3 rows", timeout=WAIT)
    page.click("#undo")
    expect(page.locator("#status")).to_contain_text("Removed the last turn", timeout=WAIT)
    page.click("#clear")
    expect(page.locator("#status")).to_contain_text("Cleared the conversation", timeout=WAIT)
    assert page.errors == []
    page.context.close()
