"""The page vs the API: one N=4 turn of 400 tokens in Chromium and through gradio_client, and how soon Stop shows.

Runs the app in this process on the tiny CPU models, with the page's server-side frames (at most one per
`turns.FRAME_SECONDS`; Gradio sends each output as a diff against the previous frame) and, as the baseline, a
frame at every token step, as the page streamed before. Chromium and the server share this machine's cores, as a
visitor's laptop would not.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import psutil  # noqa: E402
import torch  # noqa: E402
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


def pin_browser(cpus: str) -> None:
    """Move every process this one started (Playwright's driver, Chromium), all their threads, onto `cpus`."""
    for child in psutil.Process().children(recursive=True):
        subprocess.run(["taskset", "-a", "-cp", cpus, str(child.pid)], check=False, capture_output=True)


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


def stop_turn(browser, url: str, engine: Engine) -> tuple[float, float, int, bool]:
    """Seconds from the Stop click until the page says "Stopped early" and until it shows the scored turn, tokens
    per reply generated after the click, and whether Stop was in time (a page that lags shows the turn when the
    server may be past it)."""
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
    # 60 tokens on the first card, or a page so far behind that it shows the turn already scored.
    page.wait_for_function("() => parseInt(document.querySelector('#badge-1').innerText.split('#1 · ')[1]) >= 60 "
                           "|| document.querySelector('#status').innerText.includes('Scored')", timeout=WAIT_MS)
    clicked = time.perf_counter()
    page.click("#stop")
    page.wait_for_function("() => /Stopped early|Scored/.test(document.querySelector('#status').innerText)",
                           timeout=WAIT_MS, polling=10)
    seen = time.perf_counter() - clicked
    expect(page.locator("#status")).to_contain_text("Scored", timeout=WAIT_MS)
    scored = time.perf_counter() - clicked
    stopped = "Stopped early" in page.locator("#status").inner_text()
    engine.generate = generate
    page.context.close()
    at_click = max((count for t, count in steps if t <= clicked), default=0)
    return seen, scored, steps[-1][1] - at_click, stopped


def main() -> None:
    before = cpu_snapshot()
    args = parse_args(__doc__, frames=(str, f"{turns.FRAME_SECONDS:g}", "comma-separated frame intervals (s) to try; "
                                                                        "the first is checked against the targets"),
                      pin=(int, 0, "1: the app on CPU 0 (one torch thread), Chromium on the others, as when the page "
                                   "runs on the visitor's machine"))
    cores = sorted(os.sched_getaffinity(0))
    if args.pin:  # before any thread starts: threads inherit the CPUs of the thread that starts them
        os.sched_setaffinity(0, {cores[0]})
        torch.set_num_threads(1)
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    demo = build_demo(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    print(f"# bench_page on {machine()}; one turn: N={TURN['n']}, {TURN['max_new_tokens']} new tokens, seed "
          f"{TURN['seed']}; medians of {args.repeats}; "
          + ("the app on CPU 0 with one thread, Chromium on the others" if args.pin else
             "the app and Chromium share every core"))
    rows, results = [], {}
    frame_seconds = turns.FRAME_SECONDS
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        if args.pin:
            pin_browser(",".join(map(str, cores[1:])))
        api_turn(url), page_turn(browser, url)  # warm-up: models loaded, page assets cached
        runs = [("a frame every token step", 0.0)] + [(f"a frame at most every {float(f):g} s", float(f))
                                                      for f in args.frames.split(",")]
        for name, seconds in runs:
            turns.FRAME_SECONDS = seconds
            api = statistics.median(api_turn(url) for _ in range(args.repeats))
            page = statistics.median(page_turn(browser, url) for _ in range(args.repeats))
            stops = [stop_turn(browser, url, engine) for _ in range(args.repeats)]
            shown = statistics.median(s[0] for s in stops)
            scored = statistics.median(s[1] for s in stops)
            after = statistics.median(s[2] for s in stops)
            stopped = sum(s[3] for s in stops)
            rows.append([name, api, page, page / api, shown, scored, after, f"{stopped} of {len(stops)}"])
            results[name] = (page / api, shown if stopped == len(stops) else float("inf"))
        turns.FRAME_SECONDS = frame_seconds
        browser.close()
    demo.close()
    print(table(["server sends", "API turn s", "page turn s", "page/API", "Stop → \"Stopped early\" s",
                 "Stop → scored s", "tokens after Stop", "stopped early"], rows))
    ratio, shown = results[runs[1][0]]  # the first interval given: the app's own unless --frames says otherwise
    met = [verdict("page turn within 1.3x of the API's", ratio, "<=", 1.3),
           verdict("Stop shown within a second", shown, "<=", 1.0, " s")]
    print(f"all page targets met: {all(met)}")
    report_contention(before)


if __name__ == "__main__":
    main()
