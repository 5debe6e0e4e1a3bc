"""The device lock: visitors' turns go first, batch work takes its bounded share."""
import threading

import pytest

from starling_demo.device_lock import DeviceLock


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_batch_chunk_lets_turns_have_their_share_before_the_next():
    clock, order = Clock(), []
    lock = DeviceLock(share=0.5, idle=60, clock=clock)

    def turn():
        with lock:
            clock.now += 1.0  # as long as the chunk took: with share 0.5 the turns' due is paid
            order.append("turn")

    def next_chunk():
        with lock.batch():
            order.append("batch 2")

    with lock.batch():
        clock.now += 1.0
        waiting_turn = threading.Thread(target=turn)
        waiting_turn.start()  # blocks: the chunk holds the device
    second = threading.Thread(target=next_chunk)
    second.start()  # waits, however soon it asks: the turns are owed 1 s of device time
    waiting_turn.join()
    second.join()
    assert order == ["turn", "batch 2"]


def test_batch_work_takes_one_clients_share_when_many_clients_take_turns():
    """With 9 clients' turns about, a chunk of 1 s lets the turns have 9 s (a share of 1/10), not 4 s (BATCH_SHARE)."""
    clock, clients = Clock(), 9
    lock = DeviceLock(share=0.2, idle=60, clock=clock)
    lock.add_queue(lambda: clients, lambda since: False)
    with lock.batch():
        clock.now += 1.0
    assert lock._owed == pytest.approx(9.0)
    clients = 1  # one visitor: the batch work's share is BATCH_SHARE, not a half
    with lock.batch():
        clock.now += 1.0
    assert lock._owed == pytest.approx(4.0)


def test_batch_work_alone_runs_its_chunks_back_to_back():
    """With no turn about, a chunk does not wait for turns that are not coming (it waited IDLE seconds before each
    chunk: a 2,000-row evaluation alone on a GPU waited a minute in all)."""
    clock = Clock()
    lock = DeviceLock(share=0.2, idle=60, clock=clock)

    def chunks():
        for _ in range(3):
            with lock.batch():
                clock.now += 1.0

    job = threading.Thread(target=chunks)
    job.start()
    job.join(timeout=10)
    assert not job.is_alive()


def test_a_chunk_waits_while_turns_keep_coming():
    """Right after a turn, turns are owed their share: the next chunk waits (here for the turn's IDLE to pass)."""
    clock = Clock()
    lock = DeviceLock(share=0.5, idle=0.05, clock=clock)
    with lock.batch():
        clock.now += 1.0
    with lock:
        clock.now += 0.25  # the turns are still owed 0.75 s
    chunk = threading.Thread(target=lambda: lock.batch().__enter__())
    chunk.start()
    chunk.join(timeout=0.5)
    assert chunk.is_alive()  # the fake clock stands still: another turn could come at any moment
    clock.now += 0.1  # no turn for IDLE seconds: the chunk goes
    chunk.join(timeout=10)
    assert not chunk.is_alive()


def test_a_due_chunk_waits_for_a_queued_client_that_has_not_had_a_turn_since_the_last_chunk():
    """A visitor's turn queued behind another client's waits for that one job, not also for a chunk that is due."""
    clock, last_turn = Clock(), {"visitor": -1.0}  # the visitor's last turn began before the chunk below
    lock = DeviceLock(share=0.5, idle=0.05, clock=clock)
    lock.add_queue(lambda: 1, lambda since: last_turn["visitor"] < since)
    with lock.batch():
        clock.now += 1.0
    with lock:  # another client's turn, as long as the chunk: the chunk after it is due
        clock.now += 1.0
    chunk = threading.Thread(target=lambda: lock.batch().__enter__())
    chunk.start()
    chunk.join(timeout=0.5)
    assert chunk.is_alive()  # the visitor's turn, queued, goes first
    last_turn["visitor"] = clock.now
    with lock:
        clock.now += 0.1
    chunk.join(timeout=10)
    assert not chunk.is_alive()


def test_a_chunk_waits_its_round_for_a_limited_time():
    """A queued turn that does not start once the device is free (its server has no free slot) holds no chunk back
    for more than ROUND_WAIT."""
    clock = Clock()
    lock = DeviceLock(share=0.5, idle=0.05, round_wait=1.0, clock=clock)
    lock.add_queue(lambda: 1, lambda since: True)  # a client's turn queued, never started
    chunk = threading.Thread(target=lambda: lock.batch().__enter__())
    chunk.start()
    chunk.join(timeout=0.3)
    assert chunk.is_alive()
    clock.now += 1.0
    chunk.join(timeout=10)
    assert not chunk.is_alive()
