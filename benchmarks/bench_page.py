"""The page vs the API at real reply lengths (N=8 x 512, N=4 x 400): turn time, long tasks, bytes, errors, Stop.

Runs the app in this process on the tiny CPU models, the LM steered (`starling_demo.steering`) so it streams a
markdown answer through the real generation path (`--noise`: its own random tokens). Per shape, pairs of a turn
through gradio_client `/chat` (the baseline) and one in headless Chromium (page/API is the median of the pairs'),
from the click on Send until the status says "Scored" (both read by the page's own clock), with the page's long
tasks (PerformanceObserver; when the longest began), bytes received (CDP: the turn's frames and the live cards'
answers, and the rest), the frames the server built (`turns.view` calls) and console and page errors. Then Stop,
clicked once the first live card shows 60 tokens, and right after Send. The server builds at most a frame per
`turns.FRAME_SECONDS` (`--frames` tries others; 0: one every token step); the page gets those that change the status.
Chromium and the server share this machine's cores, as a visitor's laptop would not (`--pin 1` separates them).
"""
from __future__ import annotations

import contextlib
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
from tests.browser import launch  # noqa: E402
from starling_demo.steering import answer, steered  # noqa: E402
from starling_demo.ui import build_demo, launch_kwargs  # noqa: E402
from starling_demo.ui import turns  # noqa: E402

from .common import cpu_snapshot, machine, parse_args, report_contention, table, verdict  # noqa: E402

TURN = dict(lm="tiny", rm="tiny", temperature=0.7, top_p=1.0, seed="11", mode="GPT4 Correct", system="",
            readout="card", rm2="none", rm_format="rlhf")
MESSAGE = "Write a long story about a starling."
WAIT_MS = 300_000
STOP_AT = 60  # tokens on the first card when Stop is clicked
# The first number before " LM tokens" in the first live card's badge ("#1 · 60 LM tokens · generating…"); or the
# turn already scored, when the page is so far behind that it never showed 60.
FIRST_CARD_AT = ("n => { const m = /(\\d[\\d,]*)\\s*LM tokens/.exec(document.querySelector('#live [data-k=\"1\"]')"
                 "?.innerText ?? ''); return (m && +m[1].replace(/,/g, '') >= n) "
                 "|| document.querySelector('#status').innerText.includes('Scored'); }")
ENDED = "() => /Stopped early|Scored/.test(document.querySelector('#status').innerText)"
LONG_TASKS = ("() => { window.__longTasks = []; new PerformanceObserver(list => window.__longTasks.push("
              "...list.getEntries().map(e => e.duration))).observe({type: 'longtask'}); window.__longStarts = [];"
              "new PerformanceObserver(list => window.__longStarts.push(...list.getEntries().map(e => e.startTime)))"
              ".observe({type: 'longtask'}); }")
# The page's own clock: when Send was clicked and when the status line first said "Scored" (a poll from here would
# see it late: Playwright's `expect` polls at 100, 250, 500 then 1,000 ms).
TURN_CLOCK = """() => { const turn = window.__turn = {};
  document.querySelector('#send').addEventListener('click', () => { turn.sent ??= performance.now(); },
                                                   {capture: true});
  const status = document.querySelector('#status');
  new MutationObserver(() => { if (turn.sent && !turn.scored && status.textContent.includes('Scored'))
    turn.scored = performance.now(); }).observe(status, {subtree: true, childList: true, characterData: true}); }"""
FRAMES = [0]  # frames (`turns.view` calls) the server has built


def count_frames() -> None:
    """Count every frame a turn event builds: `turns.chat` calls `turns.view` once per frame it yields."""
    view = turns.view

    def counted(*args, **kwargs):
        FRAMES[0] += 1
        return view(*args, **kwargs)

    turns.view = counted


class Watch:
    """A page with what it got from the last `start` on: bytes over the network, long tasks, console and page errors."""

    def __init__(self, browser, url: str, n: int, tokens: int):
        self.page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
        self.bytes, self.streams, self.errors, self.frames = {}, set(), [], 0
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        cdp = self.page.context.new_cdp_session(self.page)
        cdp.send("Network.enable")
        # The turn's frames come as server-sent events, the live cards' replies as answers to `live.live_cards`.
        cdp.on("Network.responseReceived", lambda event: (event["response"].get("mimeType") == "text/event-stream"
                                                          or "component_server" in event["response"]["url"])
               and self.streams.add(event["requestId"]))
        cdp.on("Network.dataReceived", self.received)
        self.page.goto(url)
        set_page_settings(self.page, n, tokens)
        self.page.fill("#msg textarea", MESSAGE)

    def received(self, event: dict) -> None:
        """Bytes of the turn's frames and live cards, and of everything else (assets, API calls)."""
        kind = "stream" if event["requestId"] in self.streams else "other"
        self.bytes[kind] = self.bytes.get(kind, 0) + event["dataLength"]

    def start(self) -> None:
        """Just before Send: count from here."""
        self.page.evaluate(LONG_TASKS)
        self.bytes, self.errors[:], self.frames = {}, [], FRAMES[0]

    def report(self) -> dict:
        return dict(long=self.page.evaluate("() => window.__longTasks"), streamed=self.bytes.get("stream", 0),
                    other=self.bytes.get("other", 0), frames=FRAMES[0] - self.frames, errors=list(self.errors))

    def close(self) -> None:
        self.page.context.close()


def set_page_settings(page, n: int, tokens: int) -> None:
    """The page's settings as in TURN: N, seed and max new tokens (the others are its defaults)."""
    page.get_by_role("button", name="Toggle Sidebar").click()
    page.fill("#seed textarea", TURN["seed"])
    for slider, value in (("#n", n), ("#max-tokens", tokens)):
        number = page.locator(f"{slider} input[type=number]")
        number.fill(str(value))
        number.press("Enter")
    page.get_by_role("button", name="Toggle Sidebar").click()


def pin_browser(cpus: str) -> None:
    """Move every process this one started (Playwright's driver, Chromium), all their threads, onto `cpus`."""
    for child in psutil.Process().children(recursive=True):
        subprocess.run(["taskset", "-a", "-cp", cpus, str(child.pid)], check=False, capture_output=True)


def api_turn(url: str, n: int, tokens: int) -> float:
    client = Client(url, verbose=False)
    started = time.perf_counter()
    client.predict(MESSAGE, n=n, max_new_tokens=tokens, **TURN, api_name="/chat")
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def page_turn(browser, url: str, n: int, tokens: int) -> dict:
    watch = Watch(browser, url, n, tokens)
    watch.start()
    watch.page.evaluate(TURN_CLOCK)
    watch.page.click("#send")
    expect(watch.page.locator("#status")).to_contain_text(f"Scored {n} candidates", timeout=WAIT_MS)
    clock = watch.page.evaluate("window.__turn")
    result = dict(watch.report(), seconds=(clock["scored"] - clock["sent"]) / 1000)
    # When the longest task began, from the click on Send: after the turn was scored, it drew the panels.
    starts = watch.page.evaluate("window.__longStarts")
    result["longest_at"] = ((starts[result["long"].index(max(result["long"]))] - clock["sent"]) / 1000
                            if result["long"] else float("nan"))
    watch.close()
    return result


@contextlib.contextmanager
def recording(engine: Engine):
    """While open, (time, most tokens of a reply so far) after each step the engine generates."""
    steps: list[tuple[float, int]] = []
    generate = engine.generate

    def recorded(*args, **kwargs):
        for step in generate(*args, **kwargs):
            steps.append((time.perf_counter(), max(step.token_counts)))
            yield step

    engine.generate = recorded
    try:
        yield steps
    finally:
        engine.generate = generate


def stop_turn(browser, url: str, engine: Engine, n: int, tokens: int, at: int = STOP_AT) -> dict:
    """Stop clicked once the first card shows `at` tokens (0: right after Send): seconds until the page says
    "Stopped early" (or "Scored", if Stop came too late) and until it shows the scored turn, tokens per reply
    generated after the click, and whether the turn stopped early."""
    watch = Watch(browser, url, n, tokens)
    page = watch.page
    watch.start()
    with recording(engine) as steps:
        page.click("#send")
        if at:
            page.wait_for_function(FIRST_CARD_AT, arg=at, timeout=WAIT_MS)
        clicked = time.perf_counter()
        page.click("#stop")
        page.wait_for_function(ENDED, timeout=WAIT_MS, polling=10)
        seen = time.perf_counter() - clicked
        expect(page.locator("#status")).to_contain_text("Scored", timeout=WAIT_MS)
        scored = time.perf_counter() - clicked
    stopped = "Stopped early" in page.locator("#status").inner_text()
    errors = watch.report()["errors"]
    watch.close()
    at_click = max((count for t, count in steps if t <= clicked), default=0)
    return dict(seen=seen, scored=scored, at_click=at_click, after=steps[-1][1] - at_click if steps else 0,
                stopped=stopped, errors=errors)


def measure(browser, url: str, engine: Engine, n: int, tokens: int, repeats: int, noise: bool) -> dict:
    """API, page, Stop and Stop-at-Send runs of one shape, `repeats` of each; the LM steered unless `noise`."""
    lm = engine.lm()
    text = contextlib.nullcontext() if noise else steered(lm.model, answer(lm.tokenizer, tokens + 50))
    with text:
        # In pairs, an API turn then a page turn, so that a change in the machine's load falls on both alike.
        apis, pages = [], []
        for _ in range(repeats):
            apis.append(api_turn(url, n, tokens))
            pages.append(page_turn(browser, url, n, tokens))
        stops = [stop_turn(browser, url, engine, n, tokens) for _ in range(repeats)]
        early = [stop_turn(browser, url, engine, n, tokens, at=0) for _ in range(repeats)]
    for run, api in zip(pages, apis):
        run.update(count=len(run["long"]), longest=max(run["long"], default=0.0), total=sum(run["long"]) / 1000,
                   ratio=run["seconds"] / api)
    errors = [e for run in pages + stops + early for e in run["errors"]]
    median = lambda runs, key: statistics.median(run[key] for run in runs)  # noqa: E731
    page = {key: median(pages, key) for key in ("seconds", "ratio", "count", "total", "streamed", "other", "frames")}
    worst = max(pages, key=lambda run: run["longest"])
    return dict(api=statistics.median(apis), **page, longest=worst["longest"], errors=errors,
                longest_at=f"{worst['longest_at']:.2f} of {worst['seconds']:.2f}",
                seen=median(stops, "seen"), scored=median(stops, "scored"), after=median(stops, "after"),
                stopped=sum(s["stopped"] for s in stops), runs=len(stops), early_seen=median(early, "seen"),
                early_at=median(early, "at_click"), early_stopped=sum(s["stopped"] for s in early))


def shapes_of(text: str) -> list[tuple[int, int]]:
    """"8x512,4x400" -> [(8, 512), (4, 400)]."""
    return [tuple(int(v) for v in shape.lower().split("x")) for shape in text.split(",")]


def print_tables(results: dict) -> None:
    rows = [[sends, f"{n}x{tokens}", r["api"], r["seconds"], r["ratio"], r["count"], r["longest"], r["longest_at"],
             r["total"], r["streamed"] / 1024, r["other"] / 1024, r["frames"], len(r["errors"])]
            for (sends, n, tokens), r in results.items()]
    print(table(["server sends", "N x tokens", "API turn s", "page turn s", "page/API (of each pair)", "long tasks",
                 "longest ms", "longest at s of turn s", "long tasks total s", "KiB streamed", "KiB other", "frames",
                 "errors"], rows))
    rows = [[sends, f"{n}x{tokens}", r["seen"], r["scored"], r["after"], f"{r['stopped']} of {r['runs']}",
             r["early_at"], r["early_seen"], f"{r['early_stopped']} of {r['runs']}"]
            for (sends, n, tokens), r in results.items()]
    print(table(["server sends", "N x tokens", f"Stop at {STOP_AT} → \"Stopped early\" s", "Stop → scored s",
                 "tokens after Stop", "stopped early", "Stop at Send: tokens by then", "Stop at Send → ended s",
                 "Stop at Send stopped early"], rows))
    for (sends, n, tokens), r in results.items():
        if r["errors"]:
            print(f"{sends}, {n}x{tokens}: {len(r['errors'])} console/page errors; the first: {r['errors'][0]!r}")


def check(results: dict, sends: str) -> bool:
    met = []
    for (name, n, tokens), r in results.items():
        if name == sends:
            met += [verdict(f"{n}x{tokens} page turn within 1.3x of the API's", r["ratio"], "<=", 1.3),
                    verdict(f"{n}x{tokens} no long task over 200 ms", r["longest"], "<=", 200, " ms"),
                    verdict(f"{n}x{tokens} Stop shown within a second",
                            r["seen"] if r["stopped"] == r["runs"] else float("inf"), "<=", 1.0, " s")]
    return all(met)


def main() -> None:
    before = cpu_snapshot()
    args = parse_args(__doc__, shapes=(str, "8x512,4x400", "comma-separated N x new tokens to run"),
                      frames=(str, f"{turns.FRAME_SECONDS:g}", "comma-separated frame intervals (s) to try, 0: a "
                              "frame at every token step; the first is checked against the targets"),
                      noise=(bool, False, "the tiny LM's own random tokens, not steered towards a markdown answer"),
                      pin=(int, 0, "1: the app on CPU 0 (one torch thread), Chromium on the others, as when the page "
                                   "runs on the visitor's machine"))
    shapes = shapes_of(args.shapes)
    cores = sorted(os.sched_getaffinity(0))
    if args.pin:  # before any thread starts: threads inherit the CPUs of the thread that starts them
        os.sched_setaffinity(0, {cores[0]})
        torch.set_num_threads(1)
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    count_frames()
    demo = build_demo(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    print(f"# bench_page on {machine()}; turns {args.shapes} (N x new tokens), seed {TURN['seed']}, "
          f"{'random tokens' if args.noise else 'steered markdown'}; medians of {args.repeats} (longest long task: "
          "the longest of all); " + ("the app on CPU 0 with one thread, Chromium on the others" if args.pin else
                                     "the app and Chromium share every core"))
    results, frame_seconds = {}, turns.FRAME_SECONDS
    runs = [(f"a frame at most every {float(f):g} s" if float(f) else "a frame every token step", float(f))
            for f in args.frames.split(",")]
    with sync_playwright() as playwright:
        browser = launch(playwright)
        if args.pin:
            pin_browser(",".join(map(str, cores[1:])))
        # Warm-up: models loaded. Each page has a fresh context, so its assets load anew ("KiB other").
        api_turn(url, 8, 64), page_turn(browser, url, 8, 64)
        for name, seconds in runs:
            turns.FRAME_SECONDS = seconds
            for n, tokens in shapes:
                results[name, n, tokens] = measure(browser, url, engine, n, tokens, args.repeats, args.noise)
        turns.FRAME_SECONDS = frame_seconds
        browser.close()
    demo.close()
    print_tables(results)
    print(f"all page targets met: {check(results, runs[0][0])}")
    report_contention(before)


if __name__ == "__main__":
    main()
