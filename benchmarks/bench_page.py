"""The page vs the API: one N=4 turn of 400 tokens in Chromium and through gradio_client, and how soon Stop shows.

Runs the app in this process on the tiny CPU models, with the page's server-side frames (changed outputs only,
at most one per `turns.FRAME_SECONDS`) and, as the baseline, every output at every token step (how the page
streamed before). Chromium and the server share this machine's cores, as a visitor's laptop would not.
"""
from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from starling_demo.engine import Engine  # noqa: E402
from starling_demo.ui import build_demo, launch_kwargs  # noqa: E402
from starling_demo.ui import turns  # noqa: E402

from .common import cpu_snapshot, machine, parse_args, report_contention, table, verdict  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
TURN = dict(lm="tiny", rm="tiny", n=4, temperature=0.7, top_p=1.0, max_new_tokens=400, seed="11",
            mode="GPT4 Correct", system="", readout="card", rm2="none", rm_format="rlhf")
MESSAGE = "Write a long story about a starling."
WAIT_MS = 300_000


def set_page_settings(page, max_new_tokens: int) -> None:
    """The page's settings as in TURN: seed and max new tokens (the others are its defaults)."""
    page.get_by_role("button", name="Toggle Sidebar").click()
    page.fill("#seed textarea", TURN["seed"])
    tokens = page.locator("#max-tokens input[type=number]")
    tokens.fill(str(max_new_tokens))
    tokens.press("Enter")
    page.get_by_role("button", name="Toggle Sidebar").click()


def api_turn(url: str) -> float:
    client = Client(url, verbose=False)
    started = time.perf_counter()
    client.predict(MESSAGE, **TURN, api_name="/chat")
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def page_turn(browser, url: str) -> float:
    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    page.goto(url)
    set_page_settings(page, TURN["max_new_tokens"])
    page.fill("#msg textarea", MESSAGE)
    started = time.perf_counter()
    page.click("#send")
    expect(page.locator("#status")).to_contain_text("Scored 4 candidates", timeout=WAIT_MS)
    elapsed = time.perf_counter() - started
    page.context.close()
    return elapsed


def stop_turn(browser, url: str, engine: Engine) -> tuple[float, int]:
    """Seconds from the Stop click to "Stopped early" on the page, and tokens per reply generated after the click."""
    steps: list[tuple[float, int]] = []
    generate = engine.generate

    def recorded(*args, **kwargs):
        for step in generate(*args, **kwargs):
            steps.append((time.perf_counter(), max(step.token_counts)))
            yield step

    engine.generate = recorded
    page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    page.goto(url)
    set_page_settings(page, 512)
    page.fill("#msg textarea", MESSAGE)
    page.click("#send")
    expect(page.locator("#badge-1")).to_contain_text("LM tokens", timeout=WAIT_MS)
    page.wait_for_function("() => parseInt(document.querySelector('#badge-1').innerText.split('#1 · ')[1]) >= 60",
                           timeout=WAIT_MS)
    clicked = time.perf_counter()
    page.click("#stop")
    expect(page.locator("#status")).to_contain_text("Stopped early", timeout=WAIT_MS)
    shown = time.perf_counter() - clicked
    engine.generate = generate
    page.context.close()
    at_click = max((count for t, count in steps if t <= clicked), default=0)
    return shown, steps[-1][1] - at_click


def unfiltered(self, outputs):
    """The baseline: every output of every token step goes to the page."""
    return outputs


def main() -> None:
    before = cpu_snapshot()
    args = parse_args(__doc__)
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    demo = build_demo(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    print(f"# bench_page on {machine()}; one turn: N={TURN['n']}, {TURN['max_new_tokens']} new tokens, seed "
          f"{TURN['seed']}; medians of {args.repeats}; app and Chromium on the same cores")
    rows, results = [], {}
    frames = (turns.FRAME_SECONDS, turns.Frames.__call__)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        api_turn(url), page_turn(browser, url)  # warm-up: models loaded, page assets cached
        for name, frame_seconds, call in (("every token step (before)", 0.0, unfiltered),
                                          (f"frames of {frames[0]:g} s, changed outputs only", *frames)):
            turns.FRAME_SECONDS, turns.Frames.__call__ = frame_seconds, call
            api = statistics.median(api_turn(url) for _ in range(args.repeats))
            page = statistics.median(page_turn(browser, url) for _ in range(args.repeats))
            stops = [stop_turn(browser, url, engine) for _ in range(args.repeats)]
            shown = statistics.median(s for s, _ in stops)
            after = statistics.median(a for _, a in stops)
            rows.append([name, api, page, page / api, shown, after])
            results[name] = (page / api, shown)
        turns.FRAME_SECONDS, turns.Frames.__call__ = frames
        browser.close()
    demo.close()
    print(table(["server sends", "API turn s", "page turn s", "page/API", "Stop → shown s",
                 "tokens after Stop"], rows))
    ratio, shown = results[rows[-1][0]]
    met = [verdict("page turn within 1.3x of the API's", ratio, "<=", 1.3),
           verdict("Stop shown within a second", shown, "<=", 1.0, " s")]
    print(f"all page targets met: {all(met)}")
    report_contention(before)


if __name__ == "__main__":
    main()
