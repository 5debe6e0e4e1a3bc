"""Does one hostile visitor degrade the app for the others? The real app, driven through its Gradio API.

Starts `app.py` as a subprocess (no GPU: the tiny presets on CPU) and drives it with `gradio_client`, one
Client per visitor (one Client = one conversation). The app trusts X-Forwarded-For (`--client-header`), as behind
a Space's proxy, so that each visitor is a client of its own address, as on the internet. Phase A: V visitors in
parallel, T `/chat` turns each (n=4, T=0.7). Phase B: the same while one hostile client, from one address, sends
40 quick jobs at once, then keeps the largest evaluation the app takes running, sends a `/chat` with a 10 MB
system prompt every second, and from 30 more sessions (and REST calls with no session id) keeps sending turns.
Reports the visitors' p50/p95 turn latency in each phase and B/A (target: at most 1.5x, and no visitor's turn
refused), then keeps driving normal turns until --total-turns have completed and reports the server's RSS after
the first turn and at the end.

    python -m benchmarks.bench_load [--visitors 8] [--turns 4] [--max-new-tokens 32] [--total-turns 200]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import multiprocessing
import threading
import time
from pathlib import Path

import httpx
from gradio_client import Client, handle_file

from starling_demo.limits import MAX_EVAL_ROWS

from .common import cpu_snapshot, machine, report_contention, table, verdict

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = ["Name three birds that mimic sounds.", "Why is the sky blue?", "Write a haiku about rain.",
            "What is 17 times 23?", "Give me a tip for learning Python.", "Summarise the plot of Hamlet.",
            "How do starlings flock?", "Suggest a name for a cat."]


# /call/chat's inputs: the message; lm, rm, n, temperature, top_p, max_new_tokens, seed, mode, system, readout, rm2,
# rm_format; the 8 cards (REST callers send every input).
REST_TURN = ["hi", "tiny", "tiny", 4, 0.7, 1.0, 64, "", "GPT4 Correct", "", "card", "none", "rlhf", *[""] * 8]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(log) -> str:
    log.flush()
    log.seek(0)
    return "app.py output (tail):\n" + log.read()[-3000:]


def start_app(port: int, log, deadline_s: float) -> subprocess.Popen:
    """`app.py` on `port`, returned once it answers HTTP; its output goes to `log`."""
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--client-header", "X-Forwarded-For"],
                            cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with status {proc.returncode} before answering\n{tail(log)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.5)
    stop_app(proc)
    raise RuntimeError(f"app.py did not answer within {deadline_s:.0f} s\n{tail(log)}")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def rss_mib(pid: int) -> float:
    """Resident memory of process `pid` in MiB (psutil if installed, else /proc)."""
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def visitor(url: str, number: int, turns: int | None, max_new_tokens: int, tickets=None) -> tuple[list[float], int]:
    """Visitor `number`'s chat: `turns` turns, or (turns=None) as long as the shared `tickets` iterator lasts.

    Returns the latency in seconds of every turn that succeeded and the number that failed.
    """
    client = Client(url, verbose=False, analytics_enabled=False, headers=address(number))
    latencies, failures = [], 0
    for turn, _ in enumerate(range(turns) if turns is not None else tickets):
        start = time.perf_counter()
        try:
            client.predict(MESSAGES[(number + turn) % len(MESSAGES)], n=4,
                           temperature=0.7, max_new_tokens=max_new_tokens, api_name="/chat")
            latencies.append(time.perf_counter() - start)
        except Exception:  # noqa: BLE001 - a refused or failed turn is a figure here, not a crash
            failures += 1
    return latencies, failures


def address(number: int) -> dict:
    """The X-Forwarded-For header of visitor `number` (-1: the hostile client): documentation addresses."""
    return {"X-Forwarded-For": "203.0.113.66" if number < 0 else f"198.51.100.{number + 1}"}


def crowd(url: str, visitors: int, max_new_tokens: int, turns: int | None = None, tickets=None):
    """`visitors` visitors in parallel threads, each its own Client; all latencies and the failure count."""
    with cf.ThreadPoolExecutor(visitors) as pool:
        results = list(pool.map(lambda i: visitor(url, i, turns, max_new_tokens, tickets), range(visitors)))
    return [t for lat, _ in results for t in lat], sum(f for _, f in results)


def write_eval_file(rows: int, folder: str) -> str:
    """A ranked-candidates JSONL of `rows` lines, the kind `/evaluate` takes."""
    path = os.path.join(folder, "hostile.jsonl")
    with open(path, "w", encoding="utf-8") as out:
        for i in range(rows):
            row = {"messages": [{"role": "user", "content": f"Question {i}: {MESSAGES[i % len(MESSAGES)]}"}],
                   "candidates": [f"A long careful answer number {i}. " * 8, f"Short answer {i}."]}
            out.write(json.dumps(row) + "\n")
    return path


def count(counts: dict, kind: str, job) -> None:
    try:
        job.result()
        outcome = "done"
    except Exception as error:  # noqa: BLE001 - a refusal is what the hostile visitor gets, and a figure here
        outcome = type(error).__name__
    counts[f"{kind}: {outcome}"] = counts.get(f"{kind}: {outcome}", 0) + 1


def hostile(url: str, eval_path: str, stop: threading.Event, counts: dict) -> None:
    """One visitor (one session) until `stop`: 40 quick jobs at once, then the largest evaluation the app
    takes, again and again, and a /chat with a 10 MB system prompt every second; the running job is
    cancelled at the end. Outcomes are counted in `counts`."""
    client = Client(url, verbose=False, analytics_enabled=False, headers=address(-1))
    sessions = threading.Thread(target=many_sessions, args=(url, stop, counts))
    sessions.start()
    burst = [client.submit("hi", api_name="/chat") for _ in range(40)]
    for job in burst:
        count(counts, "burst of 40 /chat", job)
    evaluation = None
    while not stop.wait(timeout=1.0):  # the pace of a script that polls once a second
        if evaluation is None or evaluation.done():
            if evaluation is not None:
                count(counts, "/evaluate", evaluation)
            evaluation = client.submit(handle_file(eval_path), "tiny", "card", api_name="/evaluate")
        count(counts, "/chat with a 10 MB system prompt",
              client.submit("hi", system="b " * 5_000_000, api_name="/chat"))
    if evaluation is not None:
        progress = evaluation.outputs()  # the status line is the last output of each update
        counts["/evaluate when cancelled at the end"] = progress[-1][-1] if progress else "not started"
        evaluation.cancel()
    sessions.join()


def many_sessions(url: str, stop: threading.Event, counts: dict, sessions: int = 30) -> None:
    """The hostile client's other face until `stop`: 30 sessions (Clients) from its one address, each sending a
    turn as soon as its last one ends or is refused, and REST `/call/chat` requests with no session id."""
    lock = threading.Lock()

    def session(number: int) -> None:
        client = Client(url, verbose=False, analytics_enabled=False, headers=address(-1))
        while not stop.is_set():
            job = client.submit("hi", max_new_tokens=64, api_name="/chat")
            with lock:
                count(counts, "30 sessions' /chat", job)

    def no_session() -> None:
        with httpx.Client(headers=address(-1), timeout=30) as client:
            while not stop.wait(timeout=0.5):
                answer = client.post(f"{url}gradio_api/call/chat", json={"data": REST_TURN})
                with lock:
                    key = f"/call/chat with no session: HTTP {answer.status_code}"
                    counts[key] = counts.get(key, 0) + 1

    with cf.ThreadPoolExecutor(sessions + 1) as pool:
        list(pool.map(lambda i: session(i) if i < sessions else no_session(), range(sessions + 1)))


def p50_p95(latencies: list[float]) -> tuple[float, float]:
    if len(latencies) < 2:
        return (latencies[0],) * 2 if latencies else (float("nan"),) * 2
    return statistics.median(latencies), statistics.quantiles(latencies, n=20, method="inclusive")[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=8, help="normal visitors in parallel, one Client each")
    parser.add_argument("--turns", type=int, default=4, help="/chat turns per visitor in phases A and B")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="max_new_tokens of every normal turn")
    parser.add_argument("--total-turns", type=int, default=200, help="normal turns in all before RSS is read")
    parser.add_argument("--eval-rows", type=int, default=MAX_EVAL_ROWS,
                        help="rows of the hostile /evaluate upload (default: the most the app takes)")
    parser.add_argument("--port", type=int, default=0, help="port for the app; 0 picks a free one")
    parser.add_argument("--startup-timeout", type=float, default=300, help="seconds to wait for the app to answer")
    args = parser.parse_args()
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    before = cpu_snapshot()
    # The log is opened to append: the app shares its file offset, so reading it back must not move its writes.
    with tempfile.TemporaryDirectory() as scratch, open(os.path.join(scratch, "app.log"), "a+") as log:
        proc = start_app(port, log, args.startup_timeout)
        try:
            # One turn first: it loads the models, which no phase should pay for, and sets the RSS baseline.
            crowd(url, 1, args.max_new_tokens, turns=1)
            rss_start = rss_mib(proc.pid)
            a, a_failed = crowd(url, args.visitors, args.max_new_tokens, turns=args.turns)
            rss_before_b = rss_mib(proc.pid)
            # The hostile client runs in a process of its own, as on its own machine: its 30 sessions' threads
            # would otherwise slow the visitors' own clients through this interpreter's lock.
            spawn = multiprocessing.get_context("spawn")
            manager = spawn.Manager()
            stop, counts = manager.Event(), manager.dict()
            attacker = spawn.Process(target=hostile, args=(url, write_eval_file(args.eval_rows, scratch), stop,
                                                           counts))
            attacker.start()
            try:
                b, b_failed = crowd(url, args.visitors, args.max_new_tokens, turns=args.turns)
            finally:
                stop.set()
                attacker.join()
            counts = dict(counts)
            manager.shutdown()
            rss_after_b = rss_mib(proc.pid)
            done = 1 + len(a) + a_failed + len(b) + b_failed
            tickets = iter(range(max(args.total_turns - done, 0)))  # shared: next() on a range iterator is atomic
            rest, rest_failed = crowd(url, args.visitors, args.max_new_tokens, tickets=tickets)
            rss_end, total = rss_mib(proc.pid), done + len(rest) + rest_failed
        except BaseException:
            print(tail(log), file=sys.stderr)
            raise
        finally:
            stop_app(proc)

    print(f"# bench_load on {machine()}; {args.visitors} visitors x {args.turns} turns, n=4, "
          f"max_new_tokens={args.max_new_tokens}, hostile upload {args.eval_rows} rows")
    (a50, a95), (b50, b95) = p50_p95(a), p50_p95(b)
    print(table(["phase", "turns ok", "turns failed", "p50 s", "p95 s"],
                [["A: visitors only", len(a), a_failed, a50, a95],
                 ["B: with a hostile visitor", len(b), b_failed, b50, b95],
                 ["B/A", "", "", b50 / a50, b95 / a95]]))
    print("hostile visitor's jobs: " + (", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"))
    met = [verdict("p50 latency B/A", b50 / a50, "<=", 1.5), verdict("p95 latency B/A", b95 / a95, "<=", 1.5)]
    print(f"all load targets met (and no visitor turn failed in B): {all(met) and not b_failed}")
    print(table(["server RSS", "MiB"], [["after the first turn", round(rss_start)],
                                         ["after phase A (before the attack)", round(rss_before_b)],
                                         ["after phase B", round(rss_after_b)],
                                         [f"after {total} turns", round(rss_end)],
                                         ["growth", round(rss_end - rss_start)]]))
    report_contention(before)  # the app is a waited-for child by now, so its CPU time counts as this run's


if __name__ == "__main__":
    main()
