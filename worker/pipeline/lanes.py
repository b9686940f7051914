"""Inference lanes: threads of one process that run a chunk's waves at once on shared sessions.

onnxruntime sessions are safe to run from several threads, and a session call releases the GIL.
On the CPU, N calls of one intra-op thread each keep N cores busier than one call spread over N
threads (every operator's fork and join, the pre- and post-processing that runs on one core), at
one copy of the weights: what a process per core gains, in one process's memory.

A lane that finds no wave left does not just wait for the others: until every lane is done it
takes calls that a step still running hands out with ``spread`` (the faces of the chunk's last
image, say), so a chunk's end is not one core working while the rest idle.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")

_local = threading.local()  # .crew: the _Crew of the Lanes.run this thread is a lane of


class _Call:
    """One ``fn(item)`` of a ``spread``, run by whichever lane claims it first."""

    def __init__(self, fn: Callable[[Any], Any], item: Any) -> None:
        self.fn, self.item = fn, item
        self.taken = False  # claimed, under the crew's lock
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(self.item)
        except BaseException as e:  # handed to the lane that spread it
            self.error = e
        finally:
            self.done.set()


class _Crew:
    """The lanes of one ``Lanes.run``: how many still take waves, how many help, the calls handed out."""

    def __init__(self, lanes: int) -> None:
        self.cond = threading.Condition()
        self.working = lanes
        self.helping = 0
        self.calls: deque[_Call] = deque()

    def claim(self) -> _Call | None:
        """The oldest call nobody took yet, now taken (with the lock held)."""
        while self.calls:
            call = self.calls.popleft()
            if not call.taken:
                call.taken = True
                return call
        return None

    def help_until_done(self) -> None:
        """A lane out of waves: run handed-out calls until no lane is working."""
        with self.cond:
            self.working -= 1
            self.helping += 1
            self.cond.notify_all()
            while True:
                call = self.claim()
                if call is not None:
                    self.cond.release()
                    try:
                        call.run()
                    finally:
                        self.cond.acquire()
                elif self.working == 0:
                    break
                else:
                    self.cond.wait()
            self.helping -= 1


def spread(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[fn(x) for x in items]``, in order; lanes of this thread's run that are out of waves take some.

    The calling thread runs every call nobody else took (all of them while the other lanes have
    waves of their own). Outside a ``Lanes.run`` it is that plain loop. The first exception of
    any call is raised here, after every call has ended.
    """
    crew: _Crew | None = getattr(_local, "crew", None)
    if crew is None or len(items) < 2:
        return [fn(x) for x in items]
    calls = [_Call(fn, x) for x in items]
    with crew.cond:
        crew.calls.extend(calls[1:])  # helpers take from the front
        crew.cond.notify_all()
    calls[0].taken = True
    calls[0].run()  # the caller starts at once, then works back from the end
    for call in reversed(calls[1:]):
        with crew.cond:
            if call.taken:
                continue
            call.taken = True
        call.run()
    with crew.cond:  # the queue keeps no call this thread took itself (nor the arrays they hold)
        crew.calls = deque(c for c in crew.calls if not c.taken)
    for call in calls:
        call.done.wait()
    error = next((c.error for c in calls if c.error is not None), None)
    if error is not None:
        raise error
    return [cast(R, c.result) for c in calls]


class Lanes:
    """Runs ``work(stop)`` on ``count`` threads at once: the caller's and ``count - 1`` pool threads.

    ``work`` takes units until there are none or ``stop`` is set; then the lane helps the others
    with what they ``spread`` until all are done. The first exception sets ``stop`` for the others;
    once every lane has ended (each finishes the unit it holds) it is raised. The caller's own
    exception (a Celery soft time limit lands in the main thread) wins.
    """

    def __init__(self, count: int, name: str = "assetq-lane") -> None:
        self.count = max(1, count)
        self._pool = ThreadPoolExecutor(self.count - 1, thread_name_prefix=name) if self.count > 1 else None

    def run(self, work: Callable[[threading.Event], None]) -> None:
        stop = threading.Event()
        if self._pool is None:
            work(stop)
            return
        crew = _Crew(self.count)

        def guarded() -> None:
            _local.crew = crew
            try:
                work(stop)
            except BaseException:
                stop.set()
                raise
            finally:
                _local.crew = None
                crew.help_until_done()

        others: list[Future[None]] = [self._pool.submit(guarded) for _ in range(self.count - 1)]
        try:
            guarded()
        finally:
            stop.set()  # the caller is done or failed: no lane takes another unit
            errors = [e for e in (f.exception() for f in others) if e is not None]
        if errors:
            raise errors[0]

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
