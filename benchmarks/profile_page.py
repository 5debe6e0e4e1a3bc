"""Where the page's time goes during one turn: a CPU profile of Chromium's main thread, summed by function.

`python -m benchmarks.profile_page --n 8 --tokens 512` runs the app in this process (tiny models, the LM steered
to a Markdown answer), sends one turn in headless Chromium at 1280x720 and prints the page turn's time, its long
tasks, the bytes it received, and the functions that took the most main-thread time (self and inclusive),
named as Gradio's bundled files name them.
"""
from __future__ import annotations

import argparse
import collections
import os
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from starling_demo.engine import Engine  # noqa: E402
from tests.browser import launch  # noqa: E402
from starling_demo.steering import answer, steered  # noqa: E402
from starling_demo.ui import build_demo, launch_kwargs  # noqa: E402


LONG_TASKS = """() => { window.longTasks = [];
  new PerformanceObserver(list => list.getEntries().forEach(e => window.longTasks.push(e.duration)))
    .observe({entryTypes: ['longtask']}); }"""


def totals(profile: dict) -> tuple[collections.Counter, collections.Counter]:
    """Seconds per function in a CDP CPU profile: self time, and inclusive time (each caller counted once)."""
    nodes = {node["id"]: node for node in profile["nodes"]}
    parent = {child: node["id"] for node in profile["nodes"] for child in node.get("children", [])}

    def name(node_id):
        frame = nodes[node_id]["callFrame"]
        return f"{frame['functionName'] or '(anonymous)'} {frame['url'].rsplit('/', 1)[-1]}:{frame['lineNumber']}"

    own, inclusive = collections.Counter(), collections.Counter()
    for sample, delta in zip(profile["samples"], profile["timeDeltas"]):
        own[name(sample)] += delta / 1e6
        seen, node = set(), sample
        while node is not None:
            if name(node) not in seen:
                seen.add(name(node))
                inclusive[name(node)] += delta / 1e6
            node = parent.get(node)
    return own, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    lm = engine.lm()
    demo = build_demo(engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs())
    with steered(lm.model, answer(lm.tokenizer, args.tokens + 50)), sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
        page.goto(url)
        page.get_by_role("button", name="Toggle Sidebar").click()
        for selector, value in (("#max-tokens", args.tokens), ("#n", args.n)):
            box = page.locator(f"{selector} input[type=number]")
            box.fill(str(value))
            box.press("Enter")
        page.get_by_role("button", name="Toggle Sidebar").click()
        cdp = page.context.new_cdp_session(page)
        received = collections.Counter()
        cdp.on("Network.dataReceived", lambda event: received.update({"bytes": event["dataLength"]}))
        for method, params in (("Network.enable", {}), ("Profiler.enable", {}),
                               ("Profiler.setSamplingInterval", {"interval": 500})):
            cdp.send(method, params)
        page.evaluate(LONG_TASKS)
        page.fill("#msg textarea", "Tell me about starlings.")
        cdp.send("Profiler.start")
        started = time.perf_counter()
        page.click("#send")
        expect(page.locator("#status")).to_contain_text("Scored", timeout=600_000)
        elapsed = time.perf_counter() - started
        own, inclusive = totals(cdp.send("Profiler.stop")["profile"])
        tasks = page.evaluate("window.longTasks")
        browser.close()
    demo.close()
    print(f"# N={args.n} x {args.tokens} tokens: page turn {elapsed:.2f} s; {len(tasks)} long tasks, "
          f"{sum(tasks) / 1000:.2f} s in all, the longest {max(tasks, default=0):.0f} ms; "
          f"{received['bytes'] / 2**10:.0f} KiB received")
    for title, counter in (("self", own), ("inclusive", inclusive)):
        print(f"## main-thread seconds, {title}")
        for function, seconds in counter.most_common(args.top):
            print(f"{seconds:7.2f}  {function}")


if __name__ == "__main__":
    main()
