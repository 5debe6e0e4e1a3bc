"""Browser tests of the cards at real reply lengths: Starling-like Markdown answers (the tiny LM steered towards one)
render safely, expand, follow the ranking, compare side by side; and every state on screen is current."""
import contextlib
import re
import threading

import pytest
from playwright.sync_api import expect
from test_browser import SHOTS, WAIT, browser, open_app, open_settings, screenshot_folder, send  # noqa: F401

from starling_demo.steering import answer, steered

LONG = 340  # new tokens: the whole answer, heading, prose, lists, code block and table


@pytest.fixture(scope="module")
def markdown_replies(engine):
    """While a test runs, the app's LM writes Starling-like Markdown (through the real generation path)."""
    lm = engine.lm()
    with steered(lm.model, answer(lm.tokenizer, 2_000), bias=14.0):  # hardly a token astray: whole tables
        yield


@contextlib.contextmanager
def held(model, at: int):
    """While open, the LM's decoding waits before step `at` until the yielded event is set (then runs on), so a
    test can look at a turn mid-way however fast the machine generates."""
    step, go = 0, threading.Event()

    def wait(module, args, kwargs):
        nonlocal step
        ids = kwargs.get("input_ids", args[0] if args else None)
        step = 0 if ids.shape[-1] > 1 else step + 1
        if step == at:
            assert go.wait(WAIT / 1000), "the test never let the turn go on"

    handle = model.register_forward_pre_hook(wait, with_kwargs=True)
    try:
        yield go
    finally:
        go.set()
        handle.remove()


def visitor(browser, app_url, tokens=LONG):
    page = open_app(browser, app_url, max_new_tokens=tokens)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
    page.get_by_role("button", name="Toggle Sidebar").click()  # closed again
    return page


def settled(page):
    """Wait until the turn has settled: scored, and the chosen card's button says so."""
    expect(page.locator("#status")).to_contain_text("Scored", timeout=WAIT)
    expect(page.locator("button", has_text="✔ Continuing")).to_have_count(1, timeout=WAIT)


def test_cards_render_markdown_safely_expand_and_follow_the_ranking(browser, app_url, markdown_replies):
    page = visitor(browser, app_url)
    send(page, "Tell me about starlings.")
    settled(page)
    view = page.locator("#view-1")
    expect(view.locator("h2").first).to_have_text("Starlings in brief")
    expect(view.locator("li").first).to_be_attached()
    expect(view.locator("pre code")).to_contain_text("def neighbours")
    expect(view.locator("table th").first).to_have_text("Feature")
    # Collapsed, a card shows a few lines; expanded, the whole reply.
    collapsed = page.locator("#candidate-1").bounding_box()["height"]
    page.locator("#candidate-1 [data-action=expand]").click()
    expanded = page.locator("#candidate-1").bounding_box()["height"]
    assert expanded > 2 * collapsed
    page.locator("#candidate-1 [data-action=expand]").click()
    expect(page.locator("#candidate-1")).not_to_have_class(re.compile(r"\bexpanded\b"))

    # Once scored, the cards stand in reward order; "by number" puts them back.
    ranked = [int(row.get_attribute("data-candidate")) for row in page.locator("#ranking tr.rank-row").all()]

    def on_screen():
        boxes = {k: page.locator(f"#candidate-{k}").bounding_box() for k in range(1, 5)}
        return sorted(boxes, key=lambda k: (round(boxes[k]["y"]), boxes[k]["x"]))

    assert on_screen() == ranked
    page.locator("#ranking [data-action=by-number]").click()
    assert on_screen() == [1, 2, 3, 4]
    page.locator("#ranking [data-action=by-rank]").click()
    assert on_screen() == ranked
    # A ranking row is one click from its card.
    last = ranked[-1]
    page.locator(f"#ranking tr[data-candidate='{last}']").click()
    expect(page.locator(f"#candidate-{last}")).to_have_class(re.compile(r"\bflash\b"))
    expect(page.locator(f"#candidate-{last}")).to_be_in_viewport()

    # Markup in a reply shows as text in its card and runs nothing.
    page.fill("#own textarea", "<img src=x onerror=alert(1)> <script>window.__xss=1</script> **bold**")
    page.click("#add")
    expect(page.locator("#status")).to_contain_text("Added candidate 5", timeout=WAIT)
    expect(page.locator("#view-5")).to_contain_text("<img src=x onerror=alert(1)>")
    expect(page.locator("#view-5 strong")).to_have_text("bold")
    assert page.locator("#view-5 img, #view-5 script").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined" and page.dialogs == []
    page.screenshot(path=str(SHOTS / "cards-markdown.png"))
    assert page.errors == []
    page.context.close()


def test_cards_stream_rendered_then_give_way_to_the_scored_ones(browser, app_url, engine, markdown_replies):
    """While a turn is generated its cards are drawn from what the page pulls (ui/live.py): rendered, moving on,
    expandable; once it is scored the turn's own cards take their place, expanded where a live one was."""
    page = visitor(browser, app_url, tokens=512)
    with held(engine.lm().model, at=400) as go:  # past the whole answer (336 tokens), not yet at the end
        page.fill("#msg textarea", "Tell me about starlings.")
        page.click("#send")
        live = page.locator("#live .live-card")
        expect(live).to_have_count(4)
        expect(page.locator("#candidate-1")).to_be_hidden()
        panel = page.locator("#tab-compare-two > *").first  # the last turn's panels wait, covered
        expect(panel).to_have_css("visibility", "hidden")
        expect(live.first.locator("h2")).to_have_text("Starlings in brief", timeout=WAIT)
        expect(live.first.locator(".badge-line")).to_contain_text("#1 · 400 LM tokens", timeout=WAIT)  # moved on
        live.nth(1).locator("[data-action=expand]").click()
        expect(live.nth(1).locator("table th").first).to_have_text("Feature", timeout=WAIT)  # all of it
        with page.expect_response(lambda response: "/run/" in response.url):  # Stop is not queued
            page.click("#stop")
        go.set()
    expect(page.locator("#status")).to_contain_text("Stopped early. Scored 4 candidates", timeout=WAIT)
    expect(live).to_have_count(0)
    expect(page.locator("#view-1 h2").first).to_have_text("Starlings in brief")
    expect(page.locator("#candidate-2")).to_have_class(re.compile(r"\bexpanded\b"))
    expect(page.locator("#candidate-1")).not_to_have_class(re.compile(r"\bexpanded\b"))
    expect(panel).to_have_css("visibility", "visible", timeout=WAIT)  # showing the new turn
    expect(page.locator("#compare-view .compare-side")).to_have_count(2)
    assert page.errors == []
    page.context.close()


def test_a_card_is_edited_in_place_and_two_are_compared_side_by_side(browser, app_url, markdown_replies):
    page = visitor(browser, app_url, tokens=60)
    send(page, "Tell me about starlings.")
    settled(page)
    page.locator("#candidate-2 [data-action=edit]").click()
    expect(page.locator("#card-2 textarea")).to_be_visible()
    expect(page.locator("#view-2")).to_be_hidden()
    page.fill("#card-2 textarea", "## Edited\n\nA **short** answer.")
    page.locator("#candidate-2 [data-action=edit]").click()  # ✓ Done
    page.click("#score")
    expect(page.locator("#badge-2")).to_contain_text("edited by you", timeout=WAIT)
    expect(page.locator("#view-2 h2")).to_have_text("Edited")

    page.get_by_role("tab", name="Compare two").click()
    sides = page.locator("#compare-view .compare-side")
    expect(sides).to_have_count(2, timeout=WAIT)
    ranked = [row.get_attribute("data-candidate") for row in page.locator("#ranking tr.rank-row").all()]
    expect(sides.first.locator(".compare-head")).to_contain_text(f"#{ranked[0]} · rank 1 of 4")
    expect(sides.last.locator(".compare-head")).to_contain_text(f"#{ranked[1]} · rank 2 of 4")
    # The right-hand side: the edited card, whatever its rank (the left keeps the best unless that is it).
    left = ranked[0] if ranked[0] != "2" else ranked[1]
    page.locator("#compare-a").get_by_text(re.compile(rf"^#{left} · rank")).click()
    page.locator("#compare-b").get_by_text(re.compile(r"^#2 · rank")).click()
    expect(sides.last.locator(".compare-head")).to_contain_text("#2 · rank", timeout=WAIT)
    expect(sides.first.locator(".compare-head")).to_contain_text(f"#{left} · rank")
    expect(sides.last.locator("h2")).to_have_text("Edited")
    assert sides.last.locator("mark").count() > 0  # the edit differs from the LM's reply
    expect(page.locator("#compare-view .compare-summary")).to_contain_text(f"P(#{left} beats #2)")
    page.screenshot(path=str(SHOTS / "compare-two.png"), full_page=True)
    assert page.errors == []
    page.context.close()


def test_what_is_typed_after_send_stays_and_scored_never_shows_beside_a_busy_send(browser, app_url,
                                                                                    markdown_replies):
    page = visitor(browser, app_url)
    page.evaluate("""() => { window.seen = [];
        new MutationObserver(() => window.seen.push({status: document.querySelector('#status').innerText,
            send: document.querySelector('#send').innerText, off: document.querySelector('#send').disabled,
            regenerate: document.querySelector('#regenerate').disabled})).observe(document.body,
                {subtree: true, childList: true, characterData: true, attributes: true}); }""")
    page.fill("#msg textarea", "Tell me about starlings.")
    page.click("#send")
    page.fill("#msg textarea", "Typed while it runs.")  # before the first frame arrives
    expect(page.locator("#status")).to_contain_text("Generating", timeout=WAIT)
    page.locator("#msg textarea").press("Enter")  # Send is off: Enter does not send behind its back either
    settled(page)
    expect(page.locator("#msg textarea")).to_have_value("Typed while it runs.")
    expect(page.locator('[data-testid="user"]')).to_have_text(["Tell me about starlings."])
    seen = page.evaluate("window.seen")
    scored = [entry for entry in seen if "Scored" in entry["status"]]
    assert scored and all(entry["send"] == "Send" and not entry["off"] and not entry["regenerate"]
                          for entry in scored), [entry for entry in scored if entry["off"]][:2]
    assert page.errors == []
    page.context.close()


def test_stop_and_clear_pressed_while_the_turn_waits_in_the_queue(browser, app_url, markdown_replies):
    """Another visitor's long turn holds the models, so this visitor's turn waits in the queue: Clear is refused
    with a sentence, and Stop is kept for the turn, which then stops at its first token."""
    other, page = visitor(browser, app_url, tokens=400), visitor(browser, app_url, tokens=400)
    try:
        send(page, "First turn.")
        settled(page)
        open_settings(other)
        n = other.locator("#n input[type=number]")
        n.fill("8")
        n.press("Enter")
        other.fill("#msg textarea", "A long answer, please.")
        other.click("#send")
        expect(other.locator("#status")).to_contain_text("Generating", timeout=WAIT)
        page.fill("#msg textarea", "Second turn.")
        page.click("#send")
        expect(page.locator("#status")).to_contain_text("queue", timeout=WAIT)  # waiting behind the other turn
        page.click("#stop")
        page.click("#clear")
        expect(page.locator('[data-testid="toast-body"]', has_text="still being generated")).to_be_visible(
            timeout=WAIT)
        expect(page.locator("#status")).to_contain_text("Stopped early. Scored 4 candidates", timeout=WAIT)
        replies = [page.locator(f"#card-{k} textarea").input_value() for k in range(1, 5)]
        assert max(len(reply) for reply in replies) < 30, replies  # a token or two of the answer
        expect(page.locator('[data-testid="user"]')).to_have_text(["First turn.", "Second turn."])
        assert page.errors == [] and other.errors == []
    finally:
        other.context.close()
        page.context.close()
