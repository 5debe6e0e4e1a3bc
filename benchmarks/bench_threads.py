"""How long a turn on the CPU takes beside the server's other work, with PyTorch on every core or one fewer.

A served app does more than run the models: it answers requests, streams frames, and a probe or evaluation
prepares its texts on the CPU between its passes. This times one tiny turn (the app's engine, N=4 x 32 new tokens,
then its scoring) alone, beside a busy Python thread in the same process (a probe encoding 20,000-character
replies again and again) and beside a busy process, with PyTorch's default threads (one per core) and with one
fewer (`app.py --cpu-threads`' default on the CPU). Medians of --repeats after a warm-up, one condition after
another.

    python -m benchmarks.bench_threads [--repeats 5]
"""
from __future__ import annotations

import multiprocessing
import threading
from contextlib import contextmanager

import torch

from benchmarks.common import clock, cpu_snapshot, machine, medians, parse_args, report_contention, table
from starling_demo.engine import Engine, Settings
from starling_demo.scoring import encode

MESSAGES = [{"role": "user", "content": "Why is the sky blue?"}]
REPLY = ("p" * 2_000 + "a long and careful answer. " * 700)[:20_000]  # the largest reply a probe edit makes


def busy_encoding(ready, stop, engine: Engine | None = None) -> None:
    """Encode the longest probe reply with the tiny RM until `stop` is set (a thread's or a process's work); set
    `ready` once at it."""
    rm = (engine or Engine("tiny", "tiny", "fp32", "cpu")).rm()
    ready.set()
    while not stop.is_set():
        encode(rm, MESSAGES, [REPLY], "rlhf")


@contextmanager
def beside(kind: str, engine: Engine):
    """Nothing else, or a busy thread of this process, or a busy process, while the block runs."""
    if kind == "alone":
        yield
        return
    if kind == "thread":
        ready, stop = threading.Event(), threading.Event()
        worker = threading.Thread(target=busy_encoding, args=(ready, stop, engine))
    else:
        spawn = multiprocessing.get_context("spawn")
        ready, stop = spawn.Event(), spawn.Event()
        worker = spawn.Process(target=busy_encoding, args=(ready, stop))
    worker.start()
    try:
        if not ready.wait(300):
            raise RuntimeError(f"the busy {kind} did not start within 300 s")
        yield
    finally:
        stop.set()
        worker.join()


def main() -> None:
    before = cpu_snapshot()
    args = parse_args(__doc__.split("\n")[0])
    engine = Engine("tiny", "tiny", "fp32", "cpu")
    settings = Settings(n=4, temperature=0.7, top_p=1.0, max_new_tokens=32, seed=1)

    def turn() -> None:
        for _ in engine.generate(MESSAGES, settings):
            pass
        engine.score(MESSAGES, ["A reply of a few words."] * 4)

    default = torch.get_num_threads()
    counts = list(dict.fromkeys((default, max(1, default - 1))))  # one count where there is one core
    rows = []
    for kind in ("alone", "thread", "process"):
        with beside(kind, engine):
            times = []
            for threads in counts:
                torch.set_num_threads(threads)
                times.append(medians({"turn": lambda: clock(turn, "cpu")}, args.repeats)["turn"])
            rows.append([kind, *times])
    torch.set_num_threads(default)
    print(f"# bench_threads on {machine()}; a tiny turn (N=4 x 32 new tokens, then scored), medians of {args.repeats}")
    print(table(["beside the turn", *(f"{n} thread{'s' * (n > 1)} s" for n in counts)], rows))
    alone = rows[0][1:]
    print(table(["beside the turn", *(f"{n} thread{'s' * (n > 1)}: x alone" for n in counts)],
                [[kind, *(t / a for t, a in zip(times, alone))] for kind, *times in rows[1:]]))
    report_contention(before)


if __name__ == "__main__":
    main()
