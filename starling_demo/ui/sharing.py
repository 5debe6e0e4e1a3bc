"""One client's jobs, however many sessions it opens, never filling the queue for everyone nor going ahead of
others' turns: per-session and per-client job limits, pacing, round-robin order and the sessions each client keeps."""
from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable

import gradio as gr

from ..limits import (JOB_REQUEST_BURST, JOB_REQUESTS_PER_SECOND, MAX_JOBS_PER_CLIENT, MAX_JOBS_PER_VISITOR,
                      MAX_SESSIONS_PER_CLIENT, PACE_SECONDS)
from .server import client_of, relayed

BUSY = {"gpu": "You already have a turn running and a request waiting behind it: wait for them (or press Stop).",
        "probe": "Your probe is still running: wait for it to finish first.",
        "eval": "Your evaluation is still running: wait for it to finish, or cancel it, first."}
CLIENT_BUSY = {"gpu": f"Your address already has {MAX_JOBS_PER_CLIENT['gpu']} turns running or waiting (other tabs, "
                      "people or scripts behind it): wait for one of them to end.",
               "probe": f"Your address already has {MAX_JOBS_PER_CLIENT['probe']} probes running or waiting: wait for "
                        "one of them to end.",
               "eval": f"Your address already has {MAX_JOBS_PER_CLIENT['eval']} evaluations running or waiting: wait "
                       "for one of them to end."}
TOO_MANY = ("Your address sends requests for turns, probes or evaluations faster than {rate:g} a second: wait for "
            "your jobs to end before you send more.")


def jobs_of(queue, visitor: str, group: str) -> int:
    """How many of `visitor`'s jobs in concurrency group `group` are queued or running in Gradio's `queue`."""
    pending = list(queue.pending_event_ids_session.get(visitor, ()))
    events = [queue.event_ids_to_events.get(event_id) for event_id in pending]
    return sum(1 for event in events if event is not None and event.fn.concurrency_id == group)


class Pace:
    """Each client's requests paced to `rate` a second after a burst of `burst` (a token bucket): `wait(client)` is
    how long its next one waits for its turn, or None where that would be over `longest` seconds (it is not
    counted: make it wait `longest`, then refuse it).

    >>> pace = Pace(rate=2, burst=2, longest=1, clock=lambda: 0.0)
    >>> [pace.wait("a") for _ in range(5)], pace.wait("b")
    ([0.0, 0.0, 0.5, 1.0, None], 0.0)
    """

    def __init__(self, rate: float, burst: int, longest: float, clock=time.monotonic):
        self.rate, self.burst, self.longest, self.clock = rate, burst, longest, clock
        self.levels: dict[str, tuple[float, float]] = {}  # per client: tokens left (below 0: reserved) and when

    def wait(self, client: str) -> float | None:
        now = self.clock()
        level, at = self.levels.get(client, (self.burst, now))
        level = min(self.burst, level + (now - at) * self.rate) - 1
        if -level / self.rate > self.longest:
            return None
        self.levels[client] = (level, now)
        if len(self.levels) > 10_000:  # forget the clients whose bucket has filled again: they are as new
            self.levels = {who: (tokens, when) for who, (tokens, when) in self.levels.items()
                           if tokens + (now - when) * self.rate < self.burst}
        return max(0.0, -level / self.rate)


class SessionsPerClient:
    """The sessions each client has sent events from, least recently used first: `seen(client, session)` notes one
    and returns those of that client to forget beyond `most`, oldest first, never the one seen nor one that is
    `busy` (a job queued or running).

    >>> sessions = SessionsPerClient(most=2)
    >>> [sessions.seen("a", s) for s in ("s1", "s2", "s1", "s3")], sessions.seen("b", "s4")
    ([[], [], [], ['s2']], [])
    """

    def __init__(self, most: int):
        self.most, self.of = most, OrderedDict()  # per client, seen longest ago first: its sessions, likewise

    def seen(self, client: str, session: str, busy: Callable[[str], bool] = lambda session: False) -> list[str]:
        mine = self.of.setdefault(client, OrderedDict())
        self.of.move_to_end(client)
        mine[session] = None
        mine.move_to_end(session)
        extra = len(mine) - self.most
        forget = [old for old in mine if old != session and not busy(old)][:max(extra, 0)]
        for old in forget:
            del mine[old]
        if len(self.of) > 10_000:  # the client seen longest ago: its sessions have likely expired by now
            self.of.popitem(last=False)
        return forget


def forget_session(demo: gr.Blocks, session: str) -> None:
    """Drop `session`'s state from `demo`'s sessions (its next event, if any, starts a new one)."""
    holder = demo.state_holder
    with holder.lock:
        holder.session_data.pop(session, None)
        holder.time_last_used.pop(session, None)


def round_robin(events: list, client: Callable, running: Counter, served: dict | None = None) -> list:
    """A group's queued `events` (first come first) in the order that lets clients take turns: a client's k-th
    event, counting its `running` ones, after every client's (k-1)-th; within a round, the client served longest ago
    first (`served`: a number per client that grows with each job started; never served: first), then first come.

    >>> round_robin(["a1", "a2", "b1", "a3", "c1"], lambda event: event[0], Counter({"c": 1}))
    ['a1', 'b1', 'a2', 'c1', 'a3']
    >>> round_robin(["a1", "a2", "b1"], lambda event: event[0], Counter(), served={"a": 7, "b": 3})
    ['b1', 'a1', 'a2']
    """
    rounds, served = running.copy(), served or {}
    ranked = []
    for arrival, event in enumerate(events):
        who = client(event)
        ranked.append((rounds[who], served.get(who, -1), arrival, event))
        rounds[who] += 1
    return [event for *_, event in sorted(ranked, key=lambda item: item[:3])]


def limit_jobs_per_client(demo: gr.Blocks, header: str | None = None, device_lock=None) -> None:
    """Refuse a new turn, probe or evaluation job, before it is queued, while its session has as many of that kind
    queued or running as MAX_JOBS_PER_VISITOR allows, or its client as many as MAX_JOBS_PER_CLIENT allows, whatever
    session ids the client sends (or none); pace each client's requests for them (`Pace`: JOB_REQUEST_BURST, then
    JOB_REQUESTS_PER_SECOND); and serve each group's queue round-robin across clients
    (`round_robin`), so that a turn waits for at most one job of each other client, not for a client's queue; and
    tell `device_lock` (the engine's `DeviceLock`) how many clients' turns are queued or running, so that batch work
    takes one client's share of the device, and when each client's last turn began, so that it waits its round. Of
    each client's sessions, keep the MAX_SESSIONS_PER_CLIENT it used last (`SessionsPerClient`; one with a job
    queued or running stays). A client is an address (`client_of`, `header` a trusted proxy's).

    Gradio has no public hook that runs before queueing without first preprocessing the inputs (a
    validator does, and an input it cannot preprocess then fails with no message), nor one that orders a queue, so
    this wraps the queue's `push`, answering as a validator would, and its `get_events`, which takes each group's
    next event; tests/test_sharing.py checks both against the real queue.
    """
    queue = demo._queue
    push, pace = queue.push, Pace(JOB_REQUESTS_PER_SECOND, JOB_REQUEST_BURST, PACE_SECONDS)
    client = lambda event: client_of(event.request, header)  # noqa: E731
    sessions = SessionsPerClient(MAX_SESSIONS_PER_CLIENT)

    async def push_unless_busy(body, request, username):
        fn = demo.fns.get(body.fn_index)
        group = getattr(fn, "concurrency_id", None)
        who, visitor = client_of(request, header), None if relayed(request) else body.session_hash
        if visitor:
            for old in sessions.seen(who, visitor, lambda old: bool(queue.pending_event_ids_session.get(old))):
                forget_session(demo, old)
        if group not in BUSY:
            return await push(body, request, username)
        wait = pace.wait(who)
        await asyncio.sleep(pace.longest if wait is None else wait)  # a flood is answered at the pace, not at once
        jobs = [event for event in queue.event_ids_to_events.values() if event.concurrency_id == group]
        busy = TOO_MANY.format(rate=pace.rate) if wait is None else \
            BUSY[group] if visitor and jobs_of(queue, visitor, group) >= MAX_JOBS_PER_VISITOR[group] else \
            CLIENT_BUSY[group] if sum(client(event) == who for event in jobs) >= MAX_JOBS_PER_CLIENT[group] else None
        if busy:
            # The page shows it under an input: the first text box (the message box, for a turn), else the first.
            answer = [gr.validate(True, "") for _ in fn.inputs]
            shown = next((i for i, block in enumerate(fn.inputs) if isinstance(block, gr.Textbox)), 0)
            answer[shown] = gr.validate(False, busy) | {"parameter_name": "queue"}
            return False, answer, "validator_error"
        return await push(body, request, username)

    get_events, served = queue.get_events, defaultdict(dict)  # per group: per client, when its last job started

    def next_in_turn():
        """The queue's next events, each group's queue put in `round_robin` order first where it can start one."""
        for group, waiting in queue.event_queue_per_concurrency_id.items():
            if group in BUSY and len(waiting.queue) > 1 and (
                    waiting.concurrency_limit is None or waiting.current_concurrency < waiting.concurrency_limit):
                queued = set(map(id, waiting.queue))
                running = Counter(client(event) for event in queue.event_ids_to_events.values()
                                  if event.concurrency_id == group and id(event) not in queued)
                waiting.queue[:] = round_robin(waiting.queue, client, running, served[group])
        picked = get_events()
        for event in picked[0] if picked else ():
            if event.concurrency_id in BUSY:
                last = served[event.concurrency_id]
                last[client(event)] = time.monotonic()
                if len(last) > 10_000:  # the clients served longest ago are as if never served
                    served[event.concurrency_id] = dict(sorted(last.items(), key=lambda item: item[1])[-5_000:])
        return picked

    queue.push, queue.get_events = push_unless_busy, next_in_turn

    def clients() -> int:  # a closed server's events stay in its lists, never to run
        return 0 if queue.stopped else len({client(event) for event in list(queue.event_ids_to_events.values())
                                            if event.concurrency_id == "gpu"})

    def unserved(since: float) -> bool:
        waiting = [] if queue.stopped else list(getattr(queue.event_queue_per_concurrency_id.get("gpu"), "queue", ()))
        return any(served["gpu"].get(client(event), -math.inf) < since for event in waiting)

    if device_lock is not None:  # asked from a worker thread: the events are copied in one step, not iterated
        device_lock.add_queue(clients, unserved)
