"""PendingWrite: a batch committed in parts, each batch with a lock of its own."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from metrics_lab.pending_write import PendingWrite
from metrics_lab.storage import PointBatch, StoreFailure

WAIT = 30.0  # seconds a thread may take before the test fails (never reached when it works)


def test_the_future_is_done_when_the_last_part_is_committed() -> None:
    pending = PendingWrite(PointBatch.of([("cpu", 0.5, 1)]), parts=3)
    pending.part_done(None)
    pending.part_done(None)
    assert not pending.future.done()
    pending.part_done(None)
    assert pending.future.result(timeout=0) is None


def test_a_failed_part_fails_the_batch_with_the_first_failure_once_all_are_through() -> None:
    pending = PendingWrite(PointBatch.of([("cpu", 0.5, 1)]), parts=3)
    first, second = StoreFailure("the first"), StoreFailure("the second")
    pending.part_done(first)
    assert not pending.future.done()  # the other parts may still be on their way
    pending.part_done(second)
    pending.part_done(None)
    assert pending.future.exception(timeout=0) is first


def test_the_shares_hold_every_point_once_and_each_key_in_one_share_in_order() -> None:
    points = [(f"k{i % 7}", float(i), i) for i in range(100)]
    pending = PendingWrite(PointBatch.of(points), parts=4)
    shares = [pending.share(part) for part in range(4)]
    seen = [
        (key, value, timestamp)
        for keys, timestamps, values in shares
        for key, value, timestamp in zip(keys, values, timestamps, strict=True)
    ]
    assert sorted(seen) == sorted(points)
    for key in {key for key, _, _ in points}:
        holders = [part for part, (keys, _, _) in enumerate(shares) if key in keys]
        assert len(holders) == 1
        keys, timestamps, _ = shares[holders[0]]
        mine = [t for k, t in zip(keys, timestamps, strict=True) if k == key]
        assert mine == [t for k, _, t in points if k == key]


def test_one_part_is_the_whole_batch_uncut() -> None:
    batch = PointBatch.of([("cpu", 0.5, 1), ("mem", 0.7, 2)])
    assert PendingWrite(batch).share(0) == (batch.keys, batch.timestamps, batch.values)


def test_cutting_one_batch_does_not_hold_up_another() -> None:
    """Each batch has its own lock: with one lock shared by every batch (of every store), a
    writer cutting a batch made every other writer of every store wait for it."""
    entered, release = threading.Event(), threading.Event()

    class SlowKey(str):
        """A key whose hash waits for ``release``: cutting its batch takes that long."""

        __slots__ = ()

        def __hash__(self) -> int:
            entered.set()
            release.wait(WAIT)
            return str.__hash__(self)

    slow = PendingWrite(PointBatch([SlowKey("cpu")], [1], [0.5]), parts=2)
    other = PendingWrite(PointBatch(["mem"], [1], [0.7]), parts=2)
    with ThreadPoolExecutor(2) as pool:
        try:
            cutting = pool.submit(slow.share, 0)
            assert entered.wait(WAIT)  # the slow batch is being cut, under its lock
            keys, _, _ = pool.submit(other.share, hash("mem") % 2).result(timeout=WAIT)
            assert list(keys) == ["mem"]
            assert not cutting.done()
        finally:
            release.set()
        cutting.result(timeout=WAIT)
    assert [key for part in (0, 1) for key in slow.share(part)[0]] == ["cpu"]
