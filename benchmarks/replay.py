"""The side-by-side session estimate: a job's own session calls replayed on every core at once, nothing else.

The uncontended ceiling (each call timed alone, the sum spread over the cores) assumes
the cores run calls side by side at one call's lone speed. They do not quite: two calls
at once share the memory bus and the last-level cache. This module measures what they
do then. ``CallRecorder`` keeps the calls a pipeline makes over a few images (the very
input tensors, copied); ``replay`` then runs those calls again from ``threads`` threads
pulling from one queue, as the inference threads do, with no decoding, pre- or
post-processing beside them.

It is an estimate, not a bound. Replayed alone on one thread the calls take what they took
in the pipeline, but with model arithmetic on every core at once they run slower than where a
pipeline's decode, pre- and post-processing sit between them: on the full job, the pool's calls
replayed two at once took 8-12% longer than the pool's own steps, those calls
with their pre- and post-processing (README, "The full job"), and assetq has come out over
100% of this estimate on the faces job too."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worker.models.base import RuntimeOptions, Session, SessionFactory, onnxruntime_session


@dataclass
class Call:
    session: Session
    output_names: Sequence[str] | None
    feed: dict[str, np.ndarray]


class _KeepingSession:
    """Passes every call through and keeps a copy of it (while ``recorder.keeping``)."""

    def __init__(self, inner: Session, recorder: CallRecorder) -> None:
        self._inner = inner
        self._recorder = recorder

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, np.ndarray]) -> list[Any]:
        if self._recorder.keeping:
            feed = {k: np.array(v, copy=True) for k, v in input_feed.items()}
            with self._recorder.lock:
                self._recorder.calls.append(Call(self._inner, output_names, feed))
        return self._inner.run(output_names, input_feed)

    def __getattr__(self, name: str) -> Any:  # get_inputs, get_outputs, get_providers, get_modelmeta ...
        return getattr(self._inner, name)


@dataclass
class CallRecorder:
    """A session factory whose sessions keep their calls while ``keeping`` is set."""

    inner: SessionFactory = onnxruntime_session
    keeping: bool = False
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def factory(self, path: Path, opts: RuntimeOptions, flush_denormals: bool) -> Session:
        return _KeepingSession(self.inner(path, opts, flush_denormals), self)


def replay(calls: Sequence[Call], threads: int, repeats: int) -> float:
    """Seconds to run ``calls`` ``repeats`` times over from ``threads`` threads sharing one queue of them."""
    queue = [c for _ in range(repeats) for c in calls]
    nxt = iter(queue)
    take = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while True:
            with take:
                call = next(nxt, None)
            if call is None:
                return
            try:
                call.session.run(call.output_names, call.feed)
            except BaseException as e:  # raised below, after every thread ended
                errors.append(e)
                return

    for call in calls:  # warm: the first call of a session pays its allocations
        call.session.run(call.output_names, call.feed)
    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return seconds
