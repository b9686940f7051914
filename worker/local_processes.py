"""``assetq run`` over several processes: each keeps its own warm models, chunks go to whichever is free.

On a CPU host, N processes with one onnxruntime thread each do more than one
process with N threads: the small face and OCR models scale poorly across
threads, and one process's decode, pre- and post-processing overlap the other's
inference (the benchmark's CPU-settings table: 1.18-1.21x on 2 cores). The
price is memory, one copy of the models per process. ``ASSETQ_CONCURRENCY``
sets the number, as it sets a worker's pool.

The processes are started with ``spawn`` (never ``fork``: onnxruntime's thread
pools do not survive a fork) and load and warm the job's models before they
report ready, so a run's clock starts on warm sessions.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from config import Settings

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

    from worker.runtime import Engine

# How long starting the processes (imports, model loads, warm-up) may take.
READY_TIMEOUT_S = 600.0

# The engine of this process, when it is one of the pool's, and the pool's start barrier (set by _start).
_engine: Engine | None = None
_ready: Barrier | None = None


class ProcessPool:
    """``processes`` spawned processes, each with an engine built from ``settings`` and ``tasks``'s models warm."""

    def __init__(self, settings: Settings, tasks: dict[str, Any], processes: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.processes = processes
        barrier = context.Barrier(processes)
        self._executor = ProcessPoolExecutor(
            processes, mp_context=context, initializer=_start, initargs=(settings, tasks, barrier)
        )
        try:
            # One _wait_ready per process: each blocks until all are running, so no process can take
            # two and every process has loaded its models before the pool is ready.
            ready = [self._executor.submit(_wait_ready) for _ in range(processes)]
            self.pids = sorted(f.result(timeout=READY_TIMEOUT_S) for f in ready)
        except BaseException:
            self.close()
            raise

    def run(
        self, batch_id: str, chunks: list[list[dict[str, Any]]], tasks: dict[str, Any]
    ) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        """(chunk index, results) for every chunk, in the order they finish."""
        futures: dict[Future[list[dict[str, Any]]], int] = {
            self._executor.submit(_process_chunk, batch_id, chunk, tasks): i for i, chunk in enumerate(chunks)
        }
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()  # a failed chunk stops the run; chunks not started are dropped

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start(settings: Settings, tasks: dict[str, Any], barrier: Barrier) -> None:
    """Pool process initializer: build the engine and warm the job's models."""
    global _engine, _ready
    from contract.spec import SpecError
    from worker.pipeline.graph import GraphError
    from worker.runtime import build_engine

    _engine = build_engine(settings, local_paths_ok=True)
    # An invalid tasks block loads nothing here; process() turns it into per-asset invalid_spec records.
    with contextlib.suppress(SpecError, GraphError, LookupError):
        _engine.preload(tasks)
    _ready = barrier


def _wait_ready() -> int:
    assert _ready is not None, "not a pool process"
    _ready.wait(timeout=READY_TIMEOUT_S)
    return os.getpid()


def _process_chunk(batch_id: str, chunk: list[dict[str, Any]], tasks: dict[str, Any]) -> list[dict[str, Any]]:
    assert _engine is not None, "not a pool process"
    return _engine.pipeline.process(batch_id, chunk, tasks)
