"""Browser tests of the page's design: one decision on one screen, a phone's order, contrast in both colour
schemes, and nothing typed or edited dropped without a word. Screenshots go to artifacts/screenshots."""
import pytest
from playwright.sync_api import expect
from test_browser import SHOTS, WAIT, browser, open_settings, screenshot_folder, send  # noqa: F401 (fixtures)

SIZES = {"desktop": (1440, 900), "laptop": (1280, 720), "phone": (390, 844)}
# The WCAG contrast of an element's text against what is painted behind it (its own and its ancestors'
# backgrounds, blended), for every element matching a selector that has text of its own.
CONTRAST_JS = """selector => {
  const parse = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => { const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                               return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const behind = el => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const [r, g, b, a = 1] = parse(getComputedStyle(e).backgroundColor);
      if (a > 0) layers.push([r, g, b, a]); if (a >= 1) break; }
    let colour = [255, 255, 255];  // the canvas
    for (const [r, g, b, a] of layers.reverse()) colour = [r, g, b].map((v, i) => a * v + (1 - a) * colour[i]);
    return colour; };
  return [...document.querySelectorAll(selector)]
    .filter(el => [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim()) && el.offsetParent !== null)
    .map(el => { const [r, g, b, a = 1] = parse(getComputedStyle(el).color); const bg = behind(el);
      const fg = [r, g, b].map((v, i) => a * v + (1 - a) * bg[i]);
      const [hi, lo] = [lum(fg), lum(bg)].sort((x, y) => y - x);
      return {text: el.textContent.trim().slice(0, 30), ratio: (hi + 0.05) / (lo + 0.05)}; });
}"""
CHECKED = ["#banner p", "#banner strong", "#status p", "#status strong", ".badge-line", ".badge-line b",
           ".badge-line span", "table.ranking td", "table.ranking th", ".winmatrix td", ".winmatrix th",
           ".winmatrix caption"]


def visitor(browser, app_url, size="laptop", scheme="light"):
    """A fresh visitor at one of SIZES in one colour scheme, recording page errors; the settings stay closed."""
    width, height = SIZES[size]
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.goto(app_url + ("?__theme=dark" if scheme == "dark" else ""))
    return page


def box(page, selector):
    return page.locator(selector).bounding_box()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_decision_fits_one_screen_and_text_is_readable(browser, app_url, scheme):
    page = visitor(browser, app_url, "laptop", scheme)
    send(page, "Which bird sings best?")
    height = SIZES["laptop"][1]
    for selector in ["#ranking table", "#msg", "#send", "#own", "#score", *[f"#candidate-{i}" for i in range(1, 5)],
                     *[f"#use-{i}" for i in range(1, 5)]]:
        assert box(page, selector)["y"] + box(page, selector)["height"] <= height, f"{selector} is below the screen"
    expect(page.locator("#ranking tr.rank-row")).to_have_count(4)
    bot = box(page, '[data-testid="bot"]')
    assert bot["y"] >= 0 and bot["height"] > 80  # the last reply can be read where it is
    # The chosen card stands out, and its button cannot be pressed again.
    chosen = page.locator(".card", has=page.locator(".chosen-mark"))
    expect(chosen).to_have_count(1)
    assert chosen.evaluate("e => getComputedStyle(e).borderTopWidth") == "2px"
    use = chosen.locator("button[id^=use-]")
    expect(use).to_be_disabled()
    expect(use).to_have_text("✔ Continuing")
    expect(page.locator(".card button:visible:not([disabled])", has_text="Use this reply")).to_have_count(3)
    page.get_by_role("tab", name="Win probabilities").click()
    expect(page.locator("#wins td.self")).to_have_count(4)
    page.screenshot(path=str(SHOTS / f"page-laptop-{scheme}.png"))
    low = [(selector, r) for selector in CHECKED for r in page.evaluate(CONTRAST_JS, selector) if r["ratio"] < 4.5]
    assert low == [], f"text under 4.5:1 in the {scheme} scheme: {low}"
    assert page.locator("#banner p").count() and page.locator(".winmatrix td").count() > 4  # the checks saw them
    assert page.errors == []
    page.context.close()


@pytest.mark.parametrize("size, scheme", [(s, c) for s in ("desktop", "phone") for c in ("light", "dark")])
def test_every_size_and_scheme_in_screenshots(browser, app_url, size, scheme):
    page = visitor(browser, app_url, size, scheme)
    send(page, "Tell me about starlings.")
    if size == "phone":  # the message box, then the ranked candidates; every analysis tab in sight
        assert box(page, "#msg")["y"] < box(page, "#ranking")["y"] < box(page, "#candidate-1")["y"]
        tabs = page.locator("#analysis [role=tab]")
        expect(tabs).to_have_count(10)
        for tab in tabs.all():
            expect(tab).to_be_visible()
    page.screenshot(path=str(SHOTS / f"page-{size}-{scheme}.png"), full_page=size == "phone")
    low = [(selector, r) for selector in CHECKED for r in page.evaluate(CONTRAST_JS, selector) if r["ratio"] < 4.5]
    assert low == [] and page.errors == []
    page.context.close()


def test_the_ranking_belongs_to_the_turn_on_screen(browser, app_url):
    page = visitor(browser, app_url)
    open_settings(page)  # a long second turn, so that the page shows it running, however busy the machine
    tokens = page.locator("#max-tokens input[type=number]")
    tokens.fill("300")
    tokens.press("Enter")
    send(page, "First.")
    expect(page.locator("button", has_text="✔ Continuing")).to_have_count(1)  # the turn has settled
    first = page.locator("#ranking table").inner_text()
    page.fill("#msg textarea", "Second.")
    # From the click on, log what the status, the ranking and Send show at every change of the page.
    page.evaluate("""() => { window.seen = [];
        new MutationObserver(() => window.seen.push({status: document.querySelector('#status').innerText,
            ranking: document.querySelector('#ranking').innerText, send: document.querySelector('#send').innerText,
            off: document.querySelector('#send').disabled})).observe(document.body,
                {subtree: true, childList: true, characterData: true, attributes: true}); }""")
    page.click("#send")
    page.fill("#msg textarea", "Typed while it runs.")  # kept: the box is emptied once, when the turn starts
    # The status still says the first turn's "Scored 4 candidates" until the second's first frame arrives.
    page.wait_for_function("window.seen.some(entry => entry.status.includes('Generating'))", timeout=WAIT)
    expect(page.locator("#status")).to_contain_text("Scored 4 candidates", timeout=WAIT)
    seen = page.evaluate("window.seen")
    running = [entry for entry in seen if "Generating" in entry["status"]]
    assert running and all("Generating 4 candidates" in entry["ranking"] for entry in running)
    # Once the page has taken the click (a round trip), never the previous turn's numbers.
    taken = next(i for i, entry in enumerate(seen) if "Generating" in entry["ranking"])
    assert all(first not in entry["ranking"] for entry in seen[taken:])
    assert any(entry["off"] and entry["send"] == "Generating…" for entry in running)
    expect(page.locator("#ranking tr.rank-row")).to_have_count(4)
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#send")).to_have_text("Send")
    assert page.errors == []
    page.context.close()


def test_edits_are_never_dropped_silently_and_badges_say_who_wrote_what(browser, app_url):
    page = visitor(browser, app_url)
    send(page, "Say something.")
    page.locator("#candidate-2 [data-action=edit]").click()
    page.fill("#card-2 textarea", "An edit I have not scored.")
    page.fill("#msg textarea", "Next message.")
    page.click("#send")
    expect(page.locator('[data-testid="toast-body"]')).to_contain_text(
        "Candidate 2 was edited but not scored", timeout=WAIT)
    expect(page.locator("#card-2 textarea")).to_have_value("An edit I have not scored.")
    expect(page.locator("#msg textarea")).to_have_value("Next message.")
    page.click("#score")
    expect(page.locator("#badge-2")).to_contain_text("edited by you", timeout=WAIT)
    expect(page.locator("#badge-2")).not_to_contain_text("cut at max new tokens")
    page.fill("#own textarea", "My own reply.")
    page.click("#add")
    expect(page.locator("#badge-5")).to_contain_text("your candidate", timeout=WAIT)
    expect(page.locator("#ranking")).to_contain_text("#5 · yours")
    page.click("#send")  # the edit was scored: now the message goes
    expect(page.locator('[data-testid="user"]')).to_have_count(2, timeout=WAIT)
    expect(page.locator("#status")).to_contain_text("Scored 4 candidates", timeout=WAIT)
    assert page.errors == []
    page.context.close()


def test_actions_with_nothing_to_act_on_warn_without_page_errors(browser, app_url):
    page = visitor(browser, app_url)
    for button in ["#regenerate", "#undo", "#score", "#add"]:
        page.click(button)
        expect(page.locator('[data-testid="toast-body"]').last).to_be_visible(timeout=WAIT)
    for tab, button in [("Export", "#export-pairs"), ("Export", "#export-nectar"),
                        ("Batch evaluation", "#evaluate")]:
        page.get_by_role("tab", name=tab).click()
        page.click(button)
    expect(page.locator('[data-testid="toast-body"]', has_text="Upload a JSONL, JSON or Parquet file first")).to_be_visible(
        timeout=WAIT)
    for tab in ["Reward trace", "Win probabilities", "Length bias", "Compare RMs", "Model inputs"]:
        page.get_by_role("tab", name=tab).click()
    expect(page.locator("#ranking")).to_contain_text("Send a message")
    assert page.errors == []
    page.context.close()
