"""Does one hostile client degrade the app for the others? The real app, driven through its Gradio API.

Starts `app.py` as a subprocess (no GPU: the tiny presets on CPU) and drives it with `gradio_client`, one
Client per visitor (one Client = one conversation). The app trusts X-Forwarded-For (`--client-header`), as behind
a Space's proxy, so that each visitor is a client of its own address, as on the internet.

- First, one turn (the models load) and a visitor's evaluation of the hostile file and largest probe, not timed:
  the first of each leaves memory in the server for good, attack or not, which the attack should not be charged.
- Phase A: V visitors in parallel, each C conversations of T `/chat` turns (n=4, T=0.7, --max-new-tokens).
- Phase C0: one visitor alone, K turns.
- The attack, in a process of its own (as on its own machine), for --attack-seconds. From one address: 40 quick
  turns at once, then a `/chat` with a 10 MB system prompt every second; 30 more sessions that each send a turn (a
  visitor's settings) as soon as their last one ends or is refused, and REST `/call/chat` requests with no session
  id. From a second address (the first one's requests are paced, so that its batch jobs would hardly start): the
  largest evaluation the app takes, again and again, and a session that probes 8 cards of 18,000 characters with
  every edit and a 2,000-character prefix (the largest probe edit the limits allow), again and again. Timing
  starts once the attacker's sessions are open and its first jobs sent.
- Phase B: the V visitors' turns while the attack runs, in conversations of T turns as in phase A; phase C1: the
  one visitor's K turns facing the attack alone.

Reports p50/p95 turn latency per phase with B/A (target: p95 at most 1.5x, no visitor's turn refused) and C1/C0
(target: at most 2x), then the server's RSS before the attack and after it (target: back within 50 MiB), and
after --total-turns normal turns in all.

    python -m benchmarks.bench_load [--visitors 8] [--turns 4] [--conversations 3] [--single-turns 16]
                                    [--max-new-tokens 32] [--attack-seconds 60] [--faces burst,huge,...|none]
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures as cf
import functools
import itertools
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
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from gradio_client import Client, handle_file

from starling_demo.limits import MAX_EVAL_ROWS

from .common import cpu_snapshot, machine, report_contention, table, verdict

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = ["Name three birds that mimic sounds.", "Why is the sky blue?", "Write a haiku about rain.",
            "What is 17 times 23?", "Give me a tip for learning Python.", "Summarise the plot of Hamlet.",
            "How do starlings flock?", "Suggest a name for a cat."]
SESSIONS = 30  # the hostile client's sessions that each keep a turn coming
FACES = ("burst", "huge", "sessions", "rest", "eval", "probe")  # the hostile client's faces, as --faces names them


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


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) process `pid` has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def visitor(url: str, number: int, turns: int | None, max_new_tokens: int, tickets=None,
            until: float | None = None, conversation: int | None = None) -> tuple[list[float], int]:
    """Visitor `number`'s chat: `turns` turns, or as long as the shared `tickets` iterator lasts, or until the clock
    (`time.monotonic`) reaches `until`; with `conversation`, a new conversation (`/clear_all`, not timed) after every
    that many turns, so that a longer phase is made of turns like a shorter one's (a longer conversation's turns are
    slower, and its larger passes raise the server's memory).

    Returns the latency in seconds of every turn that succeeded and the number that failed.
    """
    client = Client(url, verbose=False, analytics_enabled=False, headers=address(number))
    latencies, failures = [], 0
    plan = range(turns) if turns is not None else tickets if tickets is not None else itertools.count()
    for turn, _ in enumerate(plan):
        if until is not None and time.monotonic() >= until:
            break
        if conversation and turn and turn % conversation == 0:
            client.predict(api_name="/clear_all")
        start = time.perf_counter()
        try:
            client.predict(MESSAGES[(number + turn) % len(MESSAGES)], n=4,
                           temperature=0.7, max_new_tokens=max_new_tokens, api_name="/chat")
            latencies.append(time.perf_counter() - start)
        except Exception:  # noqa: BLE001 - a refused or failed turn is a figure here, not a crash
            failures += 1
    return latencies, failures


def address(number: int) -> dict:
    """The X-Forwarded-For header of visitor `number` (-1: the hostile client's flooding address, -2: its batch
    address): documentation addresses."""
    return {"X-Forwarded-For": {-1: "203.0.113.66", -2: "203.0.113.67"}.get(number, f"198.51.100.{number + 1}")}


def crowd(url: str, visitors: int, max_new_tokens: int, turns: int | None = None, tickets=None,
          until: float | None = None, conversation: int | None = None):
    """`visitors` visitors in parallel threads, each its own Client; all latencies and the failure count."""
    with cf.ThreadPoolExecutor(visitors) as pool:
        results = list(pool.map(lambda i: visitor(url, i, turns, max_new_tokens, tickets, until, conversation),
                                range(visitors)))
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


LARGEST_PROBE = {"number": "all", "prefix": "p" * 2_000}  # /probe's every edit and a prefix: see `prober_client`


def prober_client(url: str, number: int) -> Client:
    """A Client from address(`number`) whose turn has 8 cards of 18,000 characters, so that with LARGEST_PROBE's
    2,000-character prefix every edited reply is at the 20,000-character limit."""
    client = Client(url, verbose=False, analytics_enabled=False, headers=address(number))
    client.predict("hi", n=8, max_new_tokens=1, api_name="/chat")
    cards = [(f"Card {k}: " + "a long and careful answer. " * 700)[:18_000] for k in range(8)]
    client.predict("tiny", "card", "none", *cards, "rlhf", api_name="/score")
    return client


def warm_up(url: str, eval_path: str) -> None:
    """What an honest visitor's first evaluation and first largest probe leave in the server for good (the first
    use of their code paths and shapes), done before the attack so that the attack's memory is its own."""
    client = prober_client(url, 100)
    client.predict(**LARGEST_PROBE, api_name="/probe")
    client.predict(handle_file(eval_path), "tiny", "card", api_name="/evaluate")


def outcome(job) -> str:
    """How a job ended: "done", or the name of the exception it raised."""
    try:
        job.result()
        return "done"
    except Exception as error:  # noqa: BLE001 - a refusal is what the hostile client gets, and a figure here
        return type(error).__name__


def hostile(url: str, eval_path: str, max_new_tokens: int, ready, stop, counts, faces=FACES) -> None:
    """The hostile client, from its two addresses (see the module's docstring), until `stop`; sets `ready` once all
    its `faces` (FACES: all) are at work (its sessions open, its first jobs sent). Outcomes are counted in `counts`.

    Its sessions send raw requests from one event loop, and it runs at the lowest CPU priority: on the internet it
    has a machine of its own, and here 30 gradio_client sessions' threads took most of the 2 cores the server needs
    (125 of 150 CPU seconds in one run).
    """
    os.nice(19)
    lock = threading.Lock()
    opened = threading.Barrier(3, action=ready.set)  # the sessions and REST, the prober, and the main face

    def tally_key(key: str) -> None:
        with lock:
            counts[key] = counts.get(key, 0) + 1

    def tally(kind: str, job) -> None:
        tally_key(f"{kind}: {outcome(job)}")  # waited for outside the lock: the other faces go on meanwhile

    def raw_faces() -> None:
        """The sessions and the REST calls, as a script would send them: raw requests from one event loop (cheap
        for the attacker, so that what it costs is the server's)."""
        asyncio.run(sessions_and_rest(url, max_new_tokens, stop, opened, tally_key, faces))

    probing = prober_client(url, -2) if "probe" in faces else None

    def prober() -> None:
        """The largest probe the limits allow, again and again: every edit of every card, and the prefix."""
        opened.wait()
        while probing and not stop.is_set():
            tally("largest /probe", probing.submit(**LARGEST_PROBE, api_name="/probe"))

    def face(work) -> Callable:
        def run() -> None:
            try:
                work()
            except BaseException:
                opened.abort()  # the others stop waiting for it; the benchmark then stops the attack
                raise
        return run

    client = Client(url, verbose=False, analytics_enabled=False, headers=address(-1))
    threads = [threading.Thread(target=face(raw_faces)), threading.Thread(target=face(prober))]
    for thread in threads:
        thread.start()
    burst = [client.submit("hi", n=4, max_new_tokens=max_new_tokens, api_name="/chat")
             for _ in range(40 if "burst" in faces else 0)]
    batch = Client(url, verbose=False, analytics_enabled=False, headers=address(-2))
    evaluate = lambda: batch.submit(handle_file(eval_path), "tiny", "card", api_name="/evaluate")  # noqa: E731
    evaluation = evaluate() if "eval" in faces else None
    opened.wait()
    for job in burst:
        tally("burst of 40 /chat", job)
    while not stop.wait(timeout=1.0):  # the pace of a script that polls once a second
        if evaluation and evaluation.done():
            tally("/evaluate", evaluation)
            evaluation = evaluate()
        if "huge" in faces:
            tally("/chat with a 10 MB system prompt", client.submit("hi", system="b " * 5_000_000, api_name="/chat"))
    if evaluation:
        progress = evaluation.outputs()  # /evaluate's outputs: report, errors, status, ...
        counts["/evaluate when cancelled at the end"] = progress[-1][2] if progress else "not started"
        try:
            evaluation.cancel()
        except httpx.HTTPError as error:  # the server answers a cancel once the job's current batch has run
            counts["/evaluate's cancel"] = type(error).__name__
    for thread in threads:
        thread.join()


async def sessions_and_rest(url: str, max_new_tokens: int, stop, opened: threading.Barrier, tally,
                            faces=FACES) -> None:
    """Until `stop`: SESSIONS sessions that each join a turn (a visitor's settings) as soon as their last one ends
    or is refused, reading its events as the page does; and a REST `/call/chat` (no session id) every 0.5 s.
    Each outcome is passed to `tally`."""
    turn = [None, "hi", "tiny", "tiny", 4, 0.7, 1.0, max_new_tokens, "", "GPT4 Correct", "", "card", "none", "rlhf",
            *[""] * 8, False]  # /chat's inputs as the queue takes them: the session state first
    async with httpx.AsyncClient(base_url=url, headers=address(-1), timeout=60,
                                 limits=httpx.Limits(max_connections=2 * SESSIONS + 2)) as http:
        fn_index = next(d["id"] for d in (await http.get("config")).json()["dependencies"]
                        if d.get("api_name") == "chat")
        await asyncio.to_thread(opened.wait)

        async def session() -> None:
            session_hash = uuid.uuid4().hex
            while not stop.is_set():
                try:
                    joined = await http.post("gradio_api/queue/join", json={
                        "data": turn, "fn_index": fn_index, "session_hash": session_hash, "event_data": None,
                        "trigger_id": None})
                    if joined.status_code != 200:
                        tally(f"{SESSIONS} sessions' /chat: HTTP {joined.status_code}")
                        continue
                    async with http.stream("GET", "gradio_api/queue/data",
                                           params={"session_hash": session_hash}) as events:
                        async for line in events.aiter_lines():
                            if line.startswith("data:") and '"process_completed"' in line:
                                break
                    tally(f"{SESSIONS} sessions' /chat: done")
                except httpx.HTTPError as error:  # a timeout or a cut stream: the attacker just goes on
                    tally(f"{SESSIONS} sessions' /chat: {type(error).__name__}")

        async def no_session() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.5)
                try:
                    answer = await http.post("gradio_api/call/chat", json={"data": REST_TURN})
                    tally(f"/call/chat with no session: HTTP {answer.status_code}")
                except httpx.HTTPError as error:
                    tally(f"/call/chat with no session: {type(error).__name__}")

        await asyncio.gather(*([no_session()] if "rest" in faces else []),
                             *(session() for _ in range(SESSIONS if "sessions" in faces else 0)))


def p50_p95(latencies: list[float]) -> tuple[float, float]:
    if len(latencies) < 2:
        return (latencies[0],) * 2 if latencies else (float("nan"),) * 2
    return statistics.median(latencies), statistics.quantiles(latencies, n=20, method="inclusive")[18]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visitors", type=int, default=8, help="normal visitors in parallel, one Client each")
    parser.add_argument("--turns", type=int, default=4, help="/chat turns in each of a visitor's conversations")
    parser.add_argument("--conversations", type=int, default=3,
                        help="conversations per visitor in phase A (its p95 is the baseline: more turns steady it)")
    parser.add_argument("--single-turns", type=int, default=16, help="the single visitor's turns in C0 and C1")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="max_new_tokens of every normal turn")
    parser.add_argument("--attack-seconds", type=float, default=60, help="how long phase B runs, at least")
    parser.add_argument("--total-turns", type=int, default=200, help="normal turns in all before RSS is read")
    parser.add_argument("--eval-rows", type=int, default=MAX_EVAL_ROWS,
                        help="rows of the hostile /evaluate upload (default: the most the app takes)")
    parser.add_argument("--faces", default=",".join(FACES),
                        help=f"the hostile client's faces, comma-separated (default: all of {', '.join(FACES)}), or "
                             "none: phase B's visitors alone, the baseline of the attack's own memory and latency")
    parser.add_argument("--port", type=int, default=0, help="port for the app; 0 picks a free one")
    parser.add_argument("--startup-timeout", type=float, default=300, help="seconds to wait for the app to answer")
    args = parser.parse_args()
    faces = () if args.faces == "none" else tuple(args.faces.split(","))
    unknown = set(faces) - set(FACES)
    if unknown:
        parser.error(f"unknown --faces {', '.join(sorted(unknown))}: choose among {', '.join(FACES)}")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    before = cpu_snapshot()
    run = functools.partial(crowd, url, max_new_tokens=args.max_new_tokens)
    # The log is opened to append: the app shares its file offset, so reading it back must not move its writes.
    with tempfile.TemporaryDirectory() as scratch, open(os.path.join(scratch, "app.log"), "a+") as log:
        proc = start_app(port, log, args.startup_timeout)
        try:
            # One turn first: it loads the models, which no phase should pay for, and sets the RSS baseline.
            run(1, turns=1)
            rss_start, eval_path = rss_mib(proc.pid), write_eval_file(args.eval_rows, scratch)
            warm_up(url, eval_path)
            rss_warm = rss_mib(proc.pid)
            a, a_failed = run(args.visitors, turns=args.turns * args.conversations, conversation=args.turns)
            c0, c0_failed = run(1, turns=args.single_turns)
            rss_before = rss_mib(proc.pid)
            spawn = multiprocessing.get_context("spawn")
            manager = spawn.Manager()
            ready, stop, counts = manager.Event(), manager.Event(), manager.dict()
            attacker = spawn.Process(target=hostile, args=(url, eval_path, args.max_new_tokens, ready, stop, counts,
                                                           faces))
            attacker.start()
            try:
                deadline = time.monotonic() + 300
                while not ready.wait(timeout=1):
                    if not attacker.is_alive() or time.monotonic() > deadline:
                        raise RuntimeError("the hostile client stopped or did not get going within 300 s")
                attack_start, cpu = time.monotonic(), (cpu_seconds(proc.pid), cpu_seconds(attacker.pid))
                b, b_failed = run(args.visitors, until=attack_start + args.attack_seconds, conversation=args.turns)
                c1, c1_failed = run(1, turns=args.single_turns)
                attack_s = time.monotonic() - attack_start
                cpu = [cpu_seconds(pid) - used for pid, used in zip((proc.pid, attacker.pid), cpu)]
            finally:
                stop.set()
                attacker.join(timeout=60)
                if attacker.is_alive():
                    attacker.terminate()
            counts = dict(counts)
            manager.shutdown()
            run(1, turns=1)  # the attack's jobs have ended (cancelled, refused or done)
            rss_after = rss_mib(proc.pid)
            done = 2 + len(a) + a_failed + len(c0) + c0_failed + len(b) + b_failed + len(c1) + c1_failed
            tickets = iter(range(max(args.total_turns - done, 0)))  # shared: next() on a range iterator is atomic
            rest, rest_failed = run(args.visitors, tickets=tickets, conversation=args.turns)
            rss_end, total = rss_mib(proc.pid), done + len(rest) + rest_failed
        except BaseException:
            print(tail(log), file=sys.stderr)
            raise
        finally:
            stop_app(proc)

    print(f"# bench_load on {machine()}; {args.visitors} visitors x {args.conversations} conversations x "
          f"{args.turns} turns in A, {args.single_turns} single turns in C, n=4, "
          f"max_new_tokens={args.max_new_tokens}, attack {attack_s:.0f} s, hostile upload {args.eval_rows} rows")
    (a50, a95), (b50, b95), (c050, c095), (c150, c195) = map(p50_p95, (a, b, c0, c1))
    print(table(["phase", "turns ok", "turns failed", "p50 s", "p95 s"],
                [["A: visitors only", len(a), a_failed, a50, a95],
                 ["B: visitors with the hostile client", len(b), b_failed, b50, b95],
                 ["B/A", "", "", b50 / a50, b95 / a95],
                 ["C0: one visitor alone", len(c0), c0_failed, c050, c095],
                 ["C1: one visitor with the hostile client", len(c1), c1_failed, c150, c195],
                 ["C1/C0", "", "", c150 / c050, c195 / c095]]))
    sent = sum(number for key, number in counts.items() if isinstance(number, int))
    print(f"CPU during the attack ({attack_s:.0f} s, {os.cpu_count()} cores): server {cpu[0]:.0f} s, the hostile "
          f"client's process (nice 19) {cpu[1]:.0f} s; it sent {sent} jobs ({sent / attack_s:.1f} a second)")
    print("hostile client's jobs: " + (", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"))
    met = [verdict("p95 latency B/A", b95 / a95, "<=", 1.5), verdict("p95 latency C1/C0", c195 / c095, "<=", 2),
           verdict("RSS after the attack - before it", rss_after - rss_before, "<=", 50, " MiB")]
    print(f"all load targets met (and no visitor turn failed in B or C1): {all(met) and not b_failed + c1_failed}")
    print(table(["server RSS", "MiB"], [["after the first turn", round(rss_start)],
                                         ["after an honest evaluation and largest probe", round(rss_warm)],
                                         ["before the attack (after A and C0)", round(rss_before)],
                                         ["after the attack", round(rss_after)],
                                         [f"after {total} turns", round(rss_end)],
                                         ["growth", round(rss_end - rss_start)]]))
    report_contention(before)  # the app is a waited-for child by now, so its CPU time counts as this run's


if __name__ == "__main__":
    main()
