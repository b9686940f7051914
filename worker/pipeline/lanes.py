"""Inference lanes: threads of one process that run a chunk's waves at once on shared sessions.

onnxruntime sessions are safe to run from several threads, and a session call releases the GIL.
On the CPU, N calls of one intra-op thread each keep N cores busier than one call spread over N
threads (every operator's fork and join, the pre- and post-processing that runs on one core), at
one copy of the weights: what a process per core gains, in one process's memory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor


class Lanes:
    """Runs ``work(stop)`` on ``count`` threads at once: the caller's and ``count - 1`` pool threads.

    ``work`` takes units until there are none or ``stop`` is set. The first exception sets ``stop``
    for the others; once every lane has ended (each finishes the unit it holds) it is raised. The
    caller's own exception (a Celery soft time limit lands in the main thread) wins.
    """

    def __init__(self, count: int, name: str = "assetq-lane") -> None:
        self.count = max(1, count)
        self._pool = ThreadPoolExecutor(self.count - 1, thread_name_prefix=name) if self.count > 1 else None

    def run(self, work: Callable[[threading.Event], None]) -> None:
        stop = threading.Event()
        if self._pool is None:
            work(stop)
            return

        def guarded() -> None:
            try:
                work(stop)
            except BaseException:
                stop.set()
                raise

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
