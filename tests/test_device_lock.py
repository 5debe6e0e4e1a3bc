"""The device lock: visitors' turns go first, batch work takes its bounded share."""
import threading

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

