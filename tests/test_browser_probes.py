"""Browser tests of blind judging (no reward reaches the page before the verdict), probes and sentence attribution."""
import re

from playwright.sync_api import expect
from test_browser import SHOTS, WAIT, browser, page, screenshot_folder, send  # noqa: F401 (fixtures)

# The page streams every queued event's messages over fetch() of /gradio_api/queue/data (Server-Sent Events, one
# stream for all of a visitor's pending events, aborted by the page when the server says close_stream), so
# Playwright's requestfinished never sees a finished body and route() would buffer the stream. Instead this wraps
# window.fetch (which the page's client looks up at each call) and tees the body of every /gradio_api/ response
# into window.__net, one {url, text} per response, chunk by chunk as it arrives: the bytes the page gets.
TEE_FETCH = """(() => {
  window.__net = [];
  const fetch = window.fetch;
  window.fetch = async (...args) => {
    const response = await fetch(...args);
    if (response.url.includes('/gradio_api/') && response.body) {
      const entry = {url: response.url, text: ''}, reader = response.clone().body.getReader();
      const decoder = new TextDecoder();
      window.__net.push(entry);
      (async () => { try { for (;;) { const {done, value} = await reader.read(); if (done) break;
        entry.text += decoder.decode(value, {stream: true}); } } catch (e) {} })();
    }
    return response;
  };
})()"""
REWARDS_JSON = re.compile(r'\\?"rewards\\?":\s*\[\s*(-?\d[^\]]*)\]')  # the turn summary's list of rewards
TOAST = '[data-testid="toast-text"]'  # one per message: Gradio 6 stacks a kind's messages in one toast-body


def received(page, since=None):
    """All the text the page got from the server, or only what came after the `since` snapshot."""
    texts = page.evaluate("window.__net.map(entry => entry.text)")
    return texts if since is None else [text[len(since[i]):] if i < len(since) else text
                                        for i, text in enumerate(texts)]


def leaks(rewards, text):
    """Each of `rewards` that `text` holds as the page shows it (3 or 4 decimals) or as JSON sends it (full float).
    Bounded by non-digits: Gradio's own timings (e.g. "average_duration":0.2163453) hold such digits by chance."""
    shown = [re.escape(f"{r:.{d}f}") + r"(?!\d)" for r in rewards for d in (3, 4)]
    sent = [re.escape(repr(r)[:10]) for r in rewards]
    return [m.group(0) for form in shown + sent for m in re.finditer(r"(?<![\d.])" + form, text)]


def warned(page, pattern):
    expect(page.locator(TOAST, has_text=re.compile(pattern)).last).to_be_visible(timeout=WAIT)


def tab(page, name):
    page.get_by_role("tab", name=name).click()


def rank_blind(page, order):
    """Press the cards' "Rank next" in `order` (best first), with a wrong click undone on the way; check the
    "Your ranking" box and the cards' chips keep that order."""
    wrong = next(str(k) for k in range(1, 5) if str(k) != order[0])
    page.locator(f"#candidate-{wrong} [data-action=rank]").click()
    page.locator("#judge-row [data-action=unrank-last]").click()
    for number in order:
        page.locator(f"#candidate-{number} [data-action=rank]").click()
    expect(page.locator("#judge-order input")).to_have_value(" ".join(order))
    for place, number in enumerate(order, 1):
        expect(page.locator(f"#badge-{number} .judge-chip")).to_have_text(f"your #{place}")


def test_blind_turn_hides_every_reward_until_judged_then_tallies(page):
    page.evaluate(TEE_FETCH)
    page.locator("#blind input[type=checkbox]").check()
    expect(page.locator("#judge-row")).to_be_hidden()  # until a turn waits to be judged
    send(page, "Which bird sings best?", expected="rewards hidden until you judge")
    expect(page.locator("#judge-row")).to_be_visible()
    expect(page.locator("#ranking")).to_contain_text("rewards stay hidden")
    expect(page.locator("#ranking tr.rank-row")).to_have_count(0)
    for i in range(1, 5):
        expect(page.locator(f"#badge-{i}")).to_contain_text("reward hidden until you judge")
        assert not re.search(r"reward -?\d|\d\.\d{3}", page.locator(f"#badge-{i}").inner_text())
    tab(page, "Compare two")
    expect(page.locator("#compare-view")).to_contain_text("Judge first")
    tab(page, "Reward trace")
    expect(page.locator("#trace")).to_contain_text("Judge first")
    page.screenshot(path=str(SHOTS / "blind-1-hidden.png"), full_page=True)
    tab(page, "Win probabilities")
    expect(page.locator("#wins")).to_contain_text("Judge first")

    page.fill("#msg textarea", "And the next one?")  # refused: this turn is not judged yet
    page.click("#send")
    warned(page, r"^The last turn is not judged yet")
    expect(page.locator('[data-testid="user"]')).to_have_count(1)
    tab(page, "Probes")  # so are probes of it, and they leave the view as it was
    view = page.locator("#probe-view .prose").inner_html()
    page.click("#run-probes")
    warned(page, r"^Judge first")  # its own message, not the refused Send's
    expect(page.locator('#probe-view [data-testid="status-tracker"]')).to_have_class(re.compile(r"\bhide\b"))
    assert page.locator("#probe-view .prose").inner_html() == view

    before = received(page)  # everything the server sent while the rewards were hidden
    rank_blind(page, ["3", "1", "4", "2"])
    page.click("#reveal")
    expect(page.locator("#status")).to_have_text(re.compile(r"^\s*Revealed:"), timeout=WAIT)
    rows = page.locator("#ranking tr.rank-row")
    expect(rows).to_have_count(4)
    expect(page.locator("#ranking th").last).to_have_text("your rank")
    yours = {row.get_attribute("data-candidate"): row.locator("td").last.inner_text() for row in rows.all()}
    assert yours == {"3": "1", "1": "2", "4": "3", "2": "4"}
    expect(page.locator("#badge-3")).to_contain_text("✔ chosen")
    expect(page.locator(".card", has=page.locator(".chosen-mark"))).to_have_attribute("id", "candidate-3")
    expect(page.locator("#judge-row")).to_be_hidden()
    page.screenshot(path=str(SHOTS / "blind-2-revealed.png"), full_page=True)

    # The rewards the server now sends (the turn summary's full floats) appeared nowhere while they were hidden.
    after = "".join(received(page, since=before))
    rewards = [float(r) for r in REWARDS_JSON.search(after).group(1).split(",")]
    shown = sorted(float(row.get_attribute("data-reward")) for row in rows.all())
    assert sorted(round(r, 4) for r in rewards) == shown
    for r in rewards:
        assert f"reward <b>{r:.3f}</b>" in after  # the capture does see rewards once they are sent
    hidden = "".join(before)
    assert "rewards hidden" in hidden and "reward hidden until you judge" in hidden  # ... and saw the hidden turn
    assert not REWARDS_JSON.search(hidden) and "reward <b>" not in hidden
    assert len(leaks(rewards, after)) >= 8  # each reward's badge and table cell, at least
    leaked = leaks(rewards, hidden)
    assert leaked == [], f"hidden rewards reached the page: {leaked}"

    tab(page, "Blind judging")
    expect(page.locator("#tally")).to_contain_text("Over 1 judged turn:", timeout=WAIT)
    expect(page.locator("#tally-table .virtual-row")).to_have_count(1)
    page.screenshot(path=str(SHOTS / "blind-3-tally.png"), full_page=True)

    send(page, "Another one.", expected="rewards hidden")  # picking the best is judging too
    page.click("#use-2")
    expect(page.locator("#status")).to_have_text(re.compile(r"^\s*Revealed:.*you ranked candidate 2 best"),
                                                 timeout=WAIT)
    expect(page.locator("#badge-2")).to_contain_text("✔ chosen")
    expect(page.locator("#tally")).to_contain_text("Over 2 judged turns:", timeout=WAIT)
    expect(page.locator("#tally-table .virtual-row")).to_have_count(2)


def test_probes_of_one_candidate_then_all_with_an_own_edit(page):
    send(page, "Tell me about starlings.")
    tab(page, "Probes")
    page.locator("#probe-pick").get_by_text(re.compile(r"^#2 · rank")).click()
    expect(page.locator("#probe-edits input[type=checkbox]:checked")).to_have_count(10)
    page.get_by_text("Your own edit").click()
    page.fill("#edit-prefix textarea", "Sure! ")
    page.click("#run-probes")
    table = page.locator("#probe-view table.probes")
    expect(table.locator("tr")).to_have_count(12, timeout=WAIT)  # a header and 10 edits + "custom"
    expect(table.locator("tr > th:first-child", has_text="custom")).to_have_text("custom")
    expect(table.locator("tr").first.locator("th", has_text="Δ #")).to_have_text([re.compile(r"Δ #2 \(-?\d")])
    expect(page.locator("#probe-aggregate table")).to_contain_text("mean Δ")
    expect(page.locator("#probe-aggregate caption")).to_contain_text("Over 1 probed candidate of")
    page.screenshot(path=str(SHOTS / "probes-1-candidate.png"), full_page=True)

    page.locator("#probe-pick").get_by_text("all", exact=True).click()
    page.click("#run-probes")
    expect(table.locator("tr").first.locator("th", has_text="Δ #")).to_have_count(4, timeout=WAIT)
    expect(table.locator("tr")).to_have_count(12)
    expect(page.locator("#probe-aggregate caption")).to_contain_text("Over 4 probed candidates")
    page.screenshot(path=str(SHOTS / "probes-2-all.png"), full_page=True)


REPLY = "Starlings flock at dusk. Each one follows seven neighbours.\n\n- They turn together.\n- They dodge falcons."


def test_leaving_each_sentence_out_colours_each_unit(page):
    send(page, "Explain the murmuration.")
    page.locator("#candidate-1 [data-action=edit]").click()
    page.fill("#card-1 textarea", REPLY)  # an edited card, scored: two sentences and two list items
    page.click("#score")
    expect(page.locator("#badge-1")).to_contain_text("edited by you", timeout=WAIT)
    tab(page, "Reward trace")
    # The picker's labels carry rank and reward: wait for those of this scoring (the panels come after the cards).
    reward = re.search(r"reward (-?\d+\.\d+)", page.locator("#badge-1").inner_text()).group(1)
    option = page.locator("#trace-pick").get_by_text(re.compile(rf"^#1 · rank .*{re.escape(reward)}"))
    expect(option).to_be_visible(timeout=WAIT)
    option.click()
    page.click("#attribute")
    units = page.locator("#attribution .attribution span.unit")
    expect(units).to_have_count(4, timeout=WAIT)
    expect(units.nth(2)).to_have_text("- They turn together.\n")
    expect(units.nth(2)).to_have_class(re.compile(r"\bitem\b"))
    for unit in units.all():
        expect(unit).to_have_attribute("title", re.compile(r"^without it: reward -?\d+\.\d{3} \(drop [+-]\d"))
    page.locator("#attribution").screenshot(path=str(SHOTS / "attribution.png"))
