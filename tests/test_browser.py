"""Browser tests: the real page in headless Chromium, waiting on the status lines the app writes."""
import json
import re
from pathlib import Path

import pytest
from browser import launch
from playwright.sync_api import expect, sync_playwright

SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
WAIT = 60_000  # ms; a turn on the tiny models takes a second or two
XSS = ["<img src=x onerror=alert(1)>", "<script>window.__xss=1</script>"]
CODE = "```cpp\n#include <vector>\n```\nand `<script>window.__xss=2</script>` inline"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = launch(playwright, headless=True)
        yield browser
        browser.close()


def open_app(browser, app_url, max_new_tokens=16):
    """A fresh visitor: a new browser context, with N = 4 and `max_new_tokens` per candidate."""
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(app_url)
    open_settings(page)
    tokens = page.locator("#max-tokens input[type=number]")
    tokens.fill(str(max_new_tokens))
    tokens.press("Enter")
    return page


def open_settings(page):
    """Open the settings sidebar (closed when the page loads)."""
    page.get_by_role("button", name="Toggle Sidebar").click()
    expect(page.locator("#max-tokens")).to_be_visible()


@pytest.fixture
def page(browser, app_url):
    page = open_app(browser, app_url)
    yield page
    page.context.close()


def send(page, message, expected="Scored 4 candidates"):
    page.fill("#msg textarea", message)
    page.click("#send")
    expect(page.locator("#status")).to_contain_text(expected, timeout=WAIT)


def ranking_rewards(page):
    return [float(row.get_attribute("data-reward")) for row in page.locator("#ranking tr.rank-row").all()]


def test_turn_streams_ranks_and_continues_with_a_chosen_candidate(page):
    # Record every status line, to see the "Generating…" updates stream past before scoring.
    page.evaluate("""() => { window.statusLog = [];
        new MutationObserver(() => window.statusLog.push(document.querySelector('#status').innerText))
            .observe(document.querySelector('#status'), {subtree: true, childList: true, characterData: true}); }""")
    send(page, "Tell me about starlings.")
    assert any("Generating" in line for line in page.evaluate("window.statusLog"))
    for i in range(1, 5):
        expect(page.locator(f"#card-{i} textarea")).not_to_have_value("")
    expect(page.locator("#card-5")).to_be_hidden()
    expect(page.locator("#ranking tr.rank-row")).to_have_count(4)
    rewards = ranking_rewards(page)
    assert rewards == sorted(rewards, reverse=True)
    best = page.locator(".card", has_text="★ best")
    expect(best).to_have_count(1)
    page.screenshot(path=str(SHOTS / "1-turn-ranked.png"), full_page=True)

    other = next(i for i in range(1, 5) if "best" not in page.locator(f"#badge-{i}").inner_text())
    text = page.locator(f"#card-{other} textarea").input_value()
    page.click(f"#use-{other}")
    expect(page.locator("#status")).to_contain_text(f"Continuing with candidate {other}", timeout=WAIT)
    bot = page.locator('[data-testid="bot"]').last
    expect(bot).to_contain_text(f"candidate {other} of 4")
    expect(bot).to_contain_text(text.strip()[:12])
    send(page, "Go on.")
    expect(page.locator('[data-testid="user"]')).to_have_count(2)
    expect(page.locator('[data-testid="bot"]').first).to_contain_text(f"candidate {other} of 4")


def test_own_candidates_are_ranked_and_markup_stays_text(page):
    send(page, "Say something.")
    for k, text in enumerate(XSS, 5):
        page.fill("#own textarea", text)
        page.click("#add")
        expect(page.locator("#status")).to_contain_text(f"Added candidate {k}", timeout=WAIT)
        expect(page.locator("#ranking")).to_contain_text(f"#{k}")
    expect(page.locator("#ranking tr.rank-row")).to_have_count(6)
    for k, text in enumerate(XSS, 5):
        expect(page.locator(f"#card-{k} textarea")).to_have_value(text)
        page.click(f"#use-{k}")
        expect(page.locator('[data-testid="bot"]').last).to_contain_text(text, timeout=WAIT)
        page.get_by_role("tab", name="Reward trace").click()
        page.locator("#trace-pick").get_by_text(re.compile(rf"^#{k} · rank")).click()
        expect(page.locator("#trace")).to_contain_text(text, timeout=WAIT)
    page.fill("#own textarea", CODE)  # code keeps its characters, and its markup runs no more than text's
    page.click("#add")
    expect(page.locator("#status")).to_contain_text("Added candidate 7", timeout=WAIT)
    page.click("#use-7")
    expect(page.locator("#status")).to_contain_text("Continuing with candidate 7", timeout=WAIT)
    bot = page.locator('[data-testid="bot"]').last
    expect(bot.locator("pre")).to_contain_text("#include <vector>", timeout=WAIT)
    expect(bot.locator("code").last).to_have_text("<script>window.__xss=2</script>")
    page.screenshot(path=str(SHOTS / "2-own-candidates.png"), full_page=True)
    assert page.dialogs == [] and page.evaluate("typeof window.__xss") == "undefined"
    assert page.locator("#chat img, #trace img, #chat script").count() == 0


def test_stop_ends_generation_and_scores_the_partial_candidates(browser, app_url):
    page = open_app(browser, app_url, max_new_tokens=1000)
    try:
        page.fill("#msg textarea", "Write a long story.")
        page.click("#send")
        expect(page.locator("#status")).to_contain_text("Generating", timeout=WAIT)
        page.click("#stop")
        expect(page.locator("#status")).to_contain_text("Stopped early. Scored 4 candidates", timeout=WAIT)
        expect(page.locator("#ranking tr.rank-row")).to_have_count(4)
        lengths = page.locator("#ranking tr.rank-row td:nth-child(6)").all_inner_texts()
        assert max(map(int, lengths)) < 900
        expect(page.locator('[data-testid="bot"]')).to_have_count(1)
    finally:
        page.context.close()


def test_two_visitors_keep_separate_conversations(browser, app_url):
    alice, bob = open_app(browser, app_url), open_app(browser, app_url)
    try:
        for visitor, name in ((alice, "Alice"), (bob, "Bob")):
            visitor.fill("#msg textarea", f"I am {name}.")
            visitor.click("#send")
        for visitor, name, stranger in ((alice, "Alice", "Bob"), (bob, "Bob", "Alice")):
            expect(visitor.locator("#status")).to_contain_text("Scored 4 candidates", timeout=WAIT)
            expect(visitor.locator('[data-testid="user"]')).to_have_text([f"I am {name}."])
            expect(visitor.locator("#chat")).not_to_contain_text(stranger)
    finally:
        alice.context.close()
        bob.context.close()


def test_insight_panels_exports_and_batch_evaluation(page, tmp_path):
    send(page, "Rank these.")
    page.get_by_role("tab", name="Reward trace").click()
    expect(page.locator("#trace .tok").first).to_be_visible(timeout=WAIT)
    expect(page.locator("#trace .tok").first).to_have_attribute("title", re.compile(r"→ -?\d+\.\d{3}$"))
    page.get_by_role("tab", name="Win probabilities").click()
    expect(page.locator("#wins td")).to_have_count(16, timeout=WAIT)
    expect(page.locator("#luce")).to_contain_text("Plackett-Luce")
    page.get_by_role("tab", name="Length bias").click()
    expect(page.locator("#bias")).to_contain_text("Spearman", timeout=WAIT)
    expect(page.locator("#bias")).to_contain_text("r − α·len/100")
    page.screenshot(path=str(SHOTS / "3-length-bias.png"), full_page=True)
    page.get_by_role("tab", name="Model inputs").click()
    expect(page.locator("#lm-input textarea")).to_have_value("<s>GPT4 Correct User: Rank these.<|end_of_turn|>"
                                                           "GPT4 Correct Assistant:", timeout=WAIT)
    page.get_by_role("tab", name="Export").click()
    page.click("#export-pairs")
    link = page.locator('#export-file [data-testid="download-link"]')
    expect(link).to_have_attribute("download", "starling-pairs.jsonl", timeout=WAIT)
    with page.expect_download() as download:
        link.click()
    lines = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["messages"][-1]["content"] == "Rank these."

    rows = [{"messages": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go.", "subset": "a"},
            {"messages": [{"role": "user", "content": "Hi"}], "candidates": ["Hey", "Yo", "?"], "subset": "b"}]
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n", encoding="utf-8")
    page.get_by_role("tab", name="Batch evaluation").click()
    page.locator("#eval-file input[type=file]").set_input_files(str(path))
    page.click("#evaluate")
    expect(page.locator("#eval-status")).to_contain_text("Evaluated 2 rows", timeout=WAIT)
    # all rows and "b" (a ranking of three) each get pairwise and best-of-K accuracy; "a" (a pair), pairwise.
    expect(page.locator("#report .virtual-row")).to_have_count(5)
    expect(page.locator("#eval-accuracy canvas, #eval-accuracy svg.marks").first).to_be_visible()
    expect(page.locator("#eval-errors textarea")).to_have_value("line 3: invalid JSON (Expecting value)")
    page.screenshot(path=str(SHOTS / "4-batch-evaluation.png"), full_page=True)


@pytest.fixture(scope="module", autouse=True)
def screenshot_folder():
    SHOTS.mkdir(parents=True, exist_ok=True)


def test_rewardbench_format_sets_the_last_token_read_out(page):
    page.locator("#rm-format").get_by_label("rewardbench").check()
    expect(page.locator("#readout").get_by_label("last-token")).to_be_checked()
    send(page, "Score this as RewardBench would.")
    expect(page.locator("#status")).to_contain_text("(RewardBench's text, last-token read-out)")
    page.get_by_role("tab", name="Model inputs").click()
    expect(page.locator("#rm-input textarea")).to_have_value(re.compile(r"<s><s>\[INST\] Score this as RewardBench"))


def test_a_system_prompt_over_the_limit_gets_a_sentence_and_keeps_what_was_typed(page):
    send(page, "Hello.")
    page.fill("#system textarea", "b" * 8_001)
    page.fill("#msg textarea", "Keep this message.")
    page.click("#send")
    expect(page.locator('[data-testid="toast-body"]')).to_contain_text(
        "The system prompt has 8,001 characters; shorten it to at most 8,000.", timeout=WAIT)
    expect(page.locator("#msg textarea")).to_have_value("Keep this message.")
    expect(page.locator('[data-testid="user"]')).to_have_text(["Hello."])
    expect(page.locator("#status")).to_contain_text("Scored 4 candidates")
