"""Solutions to the exercises of notebook 08, inside the session.

Run it on its own (``python notebooks/solutions/08_inside_the_session.py``). It repeats the
notebook's three helpers (``drain``, ``CommitWhenTold``, ``count_lines``) so that it stands
alone, and checks each answer with an ``assert``.
"""

import logging
import sys
from collections.abc import Callable
from concurrent.futures import Future

from metrics_lab import MemoryStore
from metrics_lab.fastpath import FastParser
from metrics_lab.protocol import PutRequest
from metrics_lab.session import (
    MAX_UNSTORED_POINTS,
    STORE_ERROR_ANSWER,
    ServerSession,
    SimpleParser,
)
from metrics_lab.storage import PointBatch, Snapshot, Storage, StoreFailure


def drain(session: ServerSession) -> bytes:
    """Everything the session can say now, running what it held back as soon as it may run."""
    out = []
    while (data := session.data_to_send()) or session.run_held_requests():
        out.append(data)
    return b"".join(out)


class CommitWhenTold(Storage):
    """A store whose writes are stored only when :meth:`commit` is called (or refused by
    :meth:`fail`), as a durable store's thread would do it later."""

    def __init__(self) -> None:
        self.points = MemoryStore()
        self.waiting: list[tuple[PointBatch, Future[None]]] = []

    def write(self, batch: PointBatch) -> Future[None]:
        written: Future[None] = Future()
        self.waiting.append((batch, written))
        return written

    def snapshot(self, key: str | None = None) -> Snapshot:
        return self.points.snapshot(key)

    def commit(self) -> int:
        waiting, self.waiting = self.waiting, []
        for batch, written in waiting:
            self.points.write(batch).result()
            written.set_result(None)
        return len(waiting)

    # 1. The failing commit: every waiting write fails, and nothing is stored.
    def fail(self) -> int:
        waiting, self.waiting = self.waiting, []
        for _, written in waiting:
            written.set_exception(StoreFailure("disk full"))
        return len(waiting)


def count_lines(call: Callable[[], object]) -> int:
    """How many lines of Python run during ``call()``."""
    count = 0

    def tracer(frame: object, event: str, arg: object) -> object:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        call()
    finally:
        sys.settrace(None)
    return count


# 1. A store that fails.
# The session logs each refused write as a warning, for whoever runs a server; here the
# refusal is the point of the exercise, so only errors are shown.
logging.getLogger("metrics_lab.session").setLevel(logging.ERROR)
store = CommitWhenTold()
session = ServerSession(store)
session.receive_data(b"put k 1 1\nget k\n")
assert drain(session) == b""  # the put waits for the store, the get waits for the put
store.fail()
answers = drain(session)
print("1. after a failed commit:", answers)
# The put is answered with the store's error; the get then runs, because its rule is "the
# earlier puts are no longer waiting" (stored or refused), and it finds no point for k.
assert answers == STORE_ERROR_ANSWER + b"ok\n\n"


# 2. The other bound: too many points wait for the store. The fast parser makes one write of
# each block of puts, so a few large blocks reach MAX_UNSTORED_POINTS with few answers queued.
store = CommitWhenTold()
session = ServerSession(store, parser=FastParser())
block = b"".join(b"put k%d 1 %d\n" % (i % 10, i) for i in range(1000))
blocks = 0
while session.wants_data and blocks < 1000:  # the rule must stop it long before the bound
    session.receive_data(block)
    blocks += 1
waiting_points = sum(len(batch) for batch, _ in store.waiting)
reason = session.why_wait(PutRequest("k", 1.0, 1))
print(f"2. {waiting_points} points in {len(store.waiting)} writes wait; the next put: {reason}")
assert reason == "too many points wait for the store"
assert MAX_UNSTORED_POINTS <= waiting_points < MAX_UNSTORED_POINTS + len(block.splitlines())
answered = b""
while store.waiting:
    store.commit()
    answered += drain(session)
assert answered == b"ok\n\n" * 1000 * blocks  # every put answered once the store caught up


# 3. Where the fast path gives up: one get in the middle of the block.
puts = [b"put web%d.cpu %d.5 %d\n" % (i % 4, i % 10, 1_700_000_000 + i) for i in range(1000)]
mixed = b"".join([*puts[:500], b"get cpu\n", *puts[500:]])
simple, fast = SimpleParser(), FastParser()
assert simple.parse(mixed) == fast.parse(mixed)  # the same requests, one per line
simple_lines = count_lines(lambda: simple.parse(mixed))
fast_lines = count_lines(lambda: fast.parse(mixed))
print(f"3. lines run with a get in the block: simple {simple_lines}, fast {fast_lines}")
# The fast parser checks the whole block, finds a line that is not a put, and hands the whole
# block to the simple parser: the simple parser's work plus its own checks.
assert fast_lines > simple_lines
