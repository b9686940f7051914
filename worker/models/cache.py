"""Keeps model sessions warm per process and frees the ones left idle, by a timer of its own."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from worker.models.base import InferenceModel, RuntimeOptions, SessionFactory
from worker.models.registry import model_class

log = logging.getLogger(__name__)

CacheKey = tuple[str, str, str]  # (task, type, modelName)

# The idle timer wakes this many times per TTL: a model left idle is unloaded between
# 1 and 1 + 1/SWEEPS_PER_TTL TTLs after its last use, at the cost of a few wake-ups per TTL.
SWEEPS_PER_TTL = 4
MIN_SWEEP_S = 0.1  # however short the TTL, the timer never spins


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None on other C libraries (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_memory() -> None:
    """Give the memory of dropped sessions back to the operating system.

    A session's weights and onnxruntime's CPU arena are freed into glibc's heap
    when the session is collected, but glibc keeps most freed pages mapped
    (measured: 1.46 GB resident after a run of the full job, 634 MB after
    unloading every model, 183 MB after ``malloc_trim``). ``malloc_trim(0)``
    returns the free pages of every arena to the kernel.
    """
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class ModelCache:
    """One instance of each ``(task, type, modelName)`` per process.

    ``get`` loads on first use; ``evict_idle`` drops sessions unused for
    ``ttl_s`` seconds, so their memory goes back to the operating system.
    ``ttl_s = 0`` keeps everything. With a TTL, loading the first model starts
    a daemon thread that calls ``evict_idle`` every ``ttl_s / SWEEPS_PER_TTL``
    seconds, so an idle worker unloads with no task to trigger it. A model
    taken with ``lease`` is in use until the lease ends: it is never unloaded
    under the step running it, and its idle time starts when the lease ends.
    """

    def __init__(
        self,
        model_dir: Path,
        runtime: RuntimeOptions,
        ttl_s: float = 0,
        session_factory: SessionFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.runtime = runtime
        self.ttl_s = ttl_s
        self._session_factory = session_factory
        self._clock = clock
        self._models: dict[CacheKey, InferenceModel] = {}
        self._last_used: dict[CacheKey, float] = {}
        self._leases: dict[CacheKey, int] = {}  # open leases per model: in use, never evicted
        # One lock for all of it: the timer thread and the task's threads take it in turn.
        self._lock = threading.RLock()
        self._timer: threading.Thread | None = None
        self._stop_timer = threading.Event()

    def get(self, task: str, type_: str, model_name: str) -> InferenceModel:
        key = (task, type_, model_name)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                cls = model_class(task, type_, model_name, self.model_dir)
                model = cls(model_name, self.model_dir, self.runtime, self._session_factory)
                model.load()
                self._models[key] = model
                self._start_timer()
            self._last_used[key] = self._clock()
            return model

    @contextmanager
    def lease(self, task: str, type_: str, model_name: str) -> Iterator[InferenceModel]:
        """``get``, with the model kept loaded until the block ends (the idle clock restarts then)."""
        key = (task, type_, model_name)
        with self._lock:
            model = self.get(task, type_, model_name)
            self._leases[key] = self._leases.get(key, 0) + 1
        try:
            yield model
        finally:
            with self._lock:
                self._leases[key] -= 1
                if not self._leases[key]:
                    del self._leases[key]
                self._last_used[key] = self._clock()

    def loaded(self) -> list[CacheKey]:
        with self._lock:
            return sorted(self._models)

    def evict_idle(self) -> list[CacheKey]:
        """Unload every model unused for longer than ``ttl_s`` and not leased; the keys unloaded."""
        if self.ttl_s <= 0:
            return []
        with self._lock:
            now = self._clock()
            stale = [k for k, t in self._last_used.items() if now - t > self.ttl_s and k not in self._leases]
            for key in stale:
                self._drop(key)
            if stale:
                # Under the lock, so that a model no longer ``loaded()`` has its memory back too.
                release_memory()
        if stale:
            log.info("unloaded idle models: %s", ", ".join("/".join(k) for k in stale))
        return stale

    def clear(self) -> None:
        with self._lock:
            for key in list(self._models):
                self._drop(key)
        release_memory()

    def close(self) -> None:
        """Stop the idle timer and unload everything."""
        self._stop_timer.set()
        timer = self._timer
        if timer is not None and timer is not threading.current_thread():
            timer.join()
        self.clear()

    # -- the idle timer ---------------------------------------------------------------------
    def _start_timer(self) -> None:
        """Start the timer thread unless it runs (called under the lock, when a model is loaded)."""
        # A forked child inherits the Thread object but not the thread: is_alive() is False there.
        if self.ttl_s <= 0 or (self._timer is not None and self._timer.is_alive()):
            return
        self._stop_timer.clear()
        self._timer = threading.Thread(
            target=_sweep_until_stopped,
            args=(weakref.ref(self), self._stop_timer),
            name="assetq-model-ttl",
            daemon=True,
        )
        self._timer.start()

    def sweep_interval_s(self) -> float:
        return max(MIN_SWEEP_S, self.ttl_s / SWEEPS_PER_TTL)

    def _drop(self, key: CacheKey) -> None:
        model = self._models.pop(key, None)
        self._last_used.pop(key, None)
        if model is not None:
            model.unload()


def _sweep_until_stopped(cache_ref: weakref.ref[ModelCache], stop: threading.Event) -> None:
    """The timer thread: ``evict_idle`` every sweep interval until stopped, or the TTL is switched off.

    It holds the cache only by a weak reference while it sleeps, so a cache nobody uses any
    more is collected (its sessions with it) and the thread ends.
    """
    while True:
        cache = cache_ref()
        if cache is None or cache.ttl_s <= 0:
            return  # loading a model under a TTL starts a new timer
        interval = cache.sweep_interval_s()
        del cache
        if stop.wait(interval):
            return
        cache = cache_ref()
        if cache is None:
            return
        try:
            cache.evict_idle()
        except Exception:  # a failed unload must not end the timer: the next sweep tries again
            log.exception("unloading idle models failed")
        del cache
