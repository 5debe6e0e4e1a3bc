"""Who uses the device next: visitors' turns one at a time, and batch work in chunks, in a bounded share."""
from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable

BATCH_SHARE = 0.2  # of the device's time, at most, while turns keep coming
IDLE = 0.25  # seconds without a turn after which batch work may run freely
# Seconds a chunk waits, at most, for queued turns to start once the device is free for them: a server starts its
# next turn within a fraction of a second; one that does not is waiting for something else (a free slot).
ROUND_WAIT = 1.0


class DeviceLock:
    """A lock for the device. A turn takes it with `with lock:`; batch work with `with lock.batch():`.

    Turns are served one after another, so between two of them the device is briefly free: a plain lock
    would hand it to the batch job every time, and each turn would wait for a whole chunk. Here a batch
    chunk never goes before a waiting turn, and while turns keep coming (one ended less than IDLE seconds ago), a
    chunk that took d seconds lets turns have d / s - d seconds of the device before the next chunk, where the
    batch work's share s is BATCH_SHARE or, with k clients' turns about (`clients()`: the sum of the counts the
    queues on this device report, `add_queue`), 1 / (k + 1) if less: batch work is one more client, not a
    fifth of the device that eight visitors share. Nor does a chunk go while a client whose turn is queued has
    started none since the last chunk began (`unserved()`), for up to ROUND_WAIT seconds: batch work waits its
    round, so a visitor's turn waits for the one job then running, not also for a chunk due when it came. With no
    turn about, chunks run back to back.

    >>> lock = DeviceLock()
    >>> with lock.batch():
    ...     pass
    >>> with lock:
    ...     pass
    """

    def __init__(self, share: float = BATCH_SHARE, idle: float = IDLE, round_wait: float = ROUND_WAIT,
                 clock=time.monotonic):
        self.share, self.idle, self.round_wait, self.clock = share, idle, round_wait, clock
        self._queues: list[tuple[Callable[[], int], Callable[[float], bool]]] = []
        self._chunk_started = -math.inf
        self._changed = threading.Condition()
        self._busy = False
        self._waiting_turns = 0
        self._turn_ended = -math.inf  # when a turn last gave the device back
        self._owed = 0.0  # seconds of device time turns may still take before the next batch chunk

    def add_queue(self, clients: Callable[[], int], unserved: Callable[[float], bool]) -> None:
        """Take a queue of turns on this device into account (a server's): `clients()`, how many clients have
        turns queued or running in it, and `unserved(since)`, whether a client has a turn queued but has started
        none since `since` (a time of `clock`)."""
        self._queues.append((clients, unserved))

    def clients(self) -> int:
        return sum(clients() for clients, _ in self._queues)

    def unserved(self, since: float | None = None) -> bool:
        """Whether a client with a turn queued has started none since `since` (default: when the last chunk began)."""
        since = self._chunk_started if since is None else since
        return any(unserved(since) for _, unserved in self._queues)

    def _give_back(self, started: float, batch: bool) -> None:
        with self._changed:
            now = self.clock()
            held = now - started
            if batch:
                share = min(self.share, 1 / (max(1, self.clients()) + 1))
                self._owed = held * (1 - share) / share
            else:
                self._owed = max(0.0, self._owed - held)
                self._turn_ended = now
            self._busy = False
            self._changed.notify_all()

    def __enter__(self):
        with self._changed:
            self._waiting_turns += 1
            try:
                self._changed.wait_for(lambda: not self._busy)
            finally:
                self._waiting_turns -= 1
            self._busy, self._turn_started = True, self.clock()

    def __exit__(self, *exc):
        self._give_back(self._turn_started, batch=False)

    @contextlib.contextmanager
    def batch(self):
        with self._changed:
            free_since = None  # when the device became free for this chunk but for queued turns yet to start
            while True:
                now = self.clock()
                if self._busy or self._waiting_turns or (self._owed > 0 and now - self._turn_ended < self.idle):
                    free_since = None
                elif not self.unserved():
                    break
                elif free_since is None:
                    free_since = now
                elif now - free_since >= self.round_wait:
                    break
                # Timed: that no turn came for IDLE seconds, or that a queued turn began, is noticed by no one else.
                self._changed.wait(timeout=self.idle)
            self._busy, started = True, self.clock()
            self._chunk_started = started
        try:
            yield
        finally:
            self._give_back(started, batch=True)
