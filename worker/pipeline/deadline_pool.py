"""A thread pool whose jobs each get their own time limit, measured from when they start.

Python cannot kill a thread, so a job past its limit is abandoned: its caller
gets a ``TimeoutError`` and the pool is replaced by a fresh one, so that the
jobs queued behind a stuck one still run (and are timed from their own start).
Abandoned threads are bounded by the number of timeouts; Celery's hard time
limit is the backstop for a process full of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_POLL_S = 0.05  # how often to look again at a job that has not started yet


class DeadlinePool(Generic[T, R]):
    def __init__(self, threads: int, name: str = "assetq-pool") -> None:
        self._threads = max(1, threads)
        self._name = name
        self._pool = self._new_pool()

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix=self._name)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def map(
        self, fn: Callable[[T], R], items: Sequence[T], limit_s: float, ahead: int | None = None
    ) -> Iterator[R | BaseException]:
        """Results (or the exception each job raised, or ``TimeoutError``) in the order of ``items``.

        ``ahead``: when set, at most that many jobs are submitted past the last result handed out,
        so a slow consumer holds a bounded number of results (decoded images) at a time; None
        submits every job at once.
        """
        started: dict[int, float] = {}
        lock = threading.Lock()
        n = len(items)
        window = n if ahead is None else max(1, ahead)

        def job(i: int) -> R:
            with lock:
                started[i] = time.monotonic()
            return fn(items[i])

        # A handed-out result is dropped from here (None): the consumer alone decides how long it lives.
        futures: list[Future[R] | None] = []
        for i in range(n):
            while len(futures) < min(n, i + window):  # top up the window, then wait for item i
                futures.append(self._pool.submit(job, len(futures)))
            outcome = self._outcome(futures, i, started, lock, limit_s, job)
            futures[i] = None
            yield outcome

    def _outcome(
        self,
        futures: list[Future[R] | None],
        i: int,
        started: dict[int, float],
        lock: threading.Lock,
        limit_s: float,
        job: Callable[[int], R],
    ) -> R | BaseException:
        future = futures[i]
        assert future is not None
        while True:
            with lock:
                t0 = started.get(i)
            wait = _POLL_S if t0 is None else max(0.0, t0 + limit_s - time.monotonic())
            try:
                return future.result(timeout=wait)
            except FutureTimeout:
                if t0 is None:
                    future = futures[i] or future  # still queued behind running jobs (maybe moved to a fresh pool)
                    continue
                future.cancel()
                self._abandon(futures, i + 1, job)
                return TimeoutError(f"took longer than {limit_s}s")
            except Exception as e:  # the job's own error, handed to the caller in order
                return e

    def _abandon(self, futures: list[Future[R] | None], start: int, job: Callable[[int], R]) -> None:
        """Leave the stuck thread behind: queued jobs move to a fresh pool."""
        old, self._pool = self._pool, self._new_pool()
        for j in range(start, len(futures)):
            queued = futures[j]
            if queued is not None and queued.cancel():  # only succeeds for jobs that never started
                futures[j] = self._pool.submit(job, j)
        old.shutdown(wait=False, cancel_futures=True)
