"""Who uses the device next: visitors' turns one at a time, and batch work in chunks, in a bounded share."""
from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable

BATCH_SHARE = 0.2  # of the device's time, at most, while turns keep coming
IDLE = 0.25  # seconds without a turn after which batch work may run freely


class DeviceLock:
    """A lock for the device. A turn takes it with `with lock:`; batch work with `with lock.batch():`.

    Turns are served one after another, so between two of them the device is briefly free: a plain lock
    would hand it to the batch job every time, and each turn would wait for a whole chunk. Here a batch
    chunk never goes before a waiting turn, and while turns keep coming (one ended less than IDLE seconds ago), a
    chunk that took d seconds lets turns have d / s - d seconds of the device before the next chunk, where the
    batch work's share s is BATCH_SHARE or, with k clients' turns about (`clients()`: the sum of the counts the
    servers on this device report, `count_clients`), 1 / (k + 1) if less: batch work is one more client, not a
    fifth of the device that eight visitors share; a turn never waits for more than one chunk. With no turn
    about, chunks run back to back.

    >>> lock = DeviceLock()
    >>> with lock.batch():
    ...     pass
    >>> with lock:
    ...     pass
    """

    def __init__(self, share: float = BATCH_SHARE, idle: float = IDLE, clock=time.monotonic):
        self.share, self.idle, self.clock = share, idle, clock
        self._client_counts: list[Callable[[], int]] = []
        self._changed = threading.Condition()
        self._busy = False
        self._waiting_turns = 0
        self._turn_ended = -math.inf  # when a turn last gave the device back
        self._owed = 0.0  # seconds of device time turns may still take before the next batch chunk

    def count_clients(self, count: Callable[[], int]) -> None:
        """Add `count` (how many clients have turns queued or running in a server on this device) to `clients()`."""
        self._client_counts.append(count)

    def clients(self) -> int:
        return sum(count() for count in self._client_counts)

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
            while self._busy or self._waiting_turns or (
                    self._owed > 0 and self.clock() - self._turn_ended < self.idle):
                # Timed: that no turn came for IDLE seconds is noticed by no one else.
                self._changed.wait(timeout=self.idle)
            self._busy, started = True, self.clock()
        try:
            yield
        finally:
            self._give_back(started, batch=True)
