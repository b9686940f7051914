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

    def map(self, fn: Callable[[T], R], items: Sequence[T], limit_s: float) -> Iterator[R | BaseException]:
        """Results (or the exception each job raised, or ``TimeoutError``) in the order of ``items``."""
        started: dict[int, float] = {}
        lock = threading.Lock()

        def job(i: int) -> R:
            with lock:
                started[i] = time.monotonic()
            return fn(items[i])

        futures: list[Future[R]] = [self._pool.submit(job, i) for i in range(len(items))]
        for i in range(len(items)):
            while True:
                with lock:
                    t0 = started.get(i)
                wait = _POLL_S if t0 is None else max(0.0, t0 + limit_s - time.monotonic())
                try:
                    yield futures[i].result(timeout=wait)
                    break
                except FutureTimeout:
                    if t0 is None:
                        continue  # still queued behind running jobs
                    futures[i].cancel()
                    self._abandon(futures, i + 1, job)
                    yield TimeoutError(f"took longer than {limit_s}s")
                    break
                except Exception as e:  # the job's own error, handed to the caller in order
                    yield e
                    break

    def _abandon(self, futures: list[Future[R]], start: int, job: Callable[[int], R]) -> None:
        """Leave the stuck thread behind: queued jobs move to a fresh pool."""
        old, self._pool = self._pool, self._new_pool()
        for j in range(start, len(futures)):
            if futures[j].cancel():  # only succeeds for jobs that never started
                futures[j] = self._pool.submit(job, j)
        old.shutdown(wait=False, cancel_futures=True)
