"""Keeps model sessions warm per process and frees the ones left idle."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from worker.models.base import InferenceModel, RuntimeOptions, SessionFactory
from worker.models.registry import model_class

log = logging.getLogger(__name__)

CacheKey = tuple[str, str, str]  # (task, type, modelName)


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

    ``get`` loads on first use; ``evict_idle`` (called between tasks and by a
    timer) drops sessions unused for ``ttl_s`` seconds, so their memory goes
    back to the allocator. ``ttl_s = 0`` keeps everything.
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
        self._lock = threading.RLock()

    def get(self, task: str, type_: str, model_name: str) -> InferenceModel:
        key = (task, type_, model_name)
        with self._lock:
            model = self._models.get(key)
            if model is None:
                cls = model_class(task, type_, model_name, self.model_dir)
                model = cls(model_name, self.model_dir, self.runtime, self._session_factory)
                model.load()
                self._models[key] = model
            self._last_used[key] = self._clock()
            return model

    def loaded(self) -> list[CacheKey]:
        with self._lock:
            return sorted(self._models)

    def evict_idle(self) -> list[CacheKey]:
        if self.ttl_s <= 0:
            return []
        now = self._clock()
        with self._lock:
            stale = [k for k, t in self._last_used.items() if now - t > self.ttl_s]
            for key in stale:
                self._drop(key)
        if stale:
            release_memory()
            log.info("unloaded idle models: %s", ", ".join("/".join(k) for k in stale))
        return stale

    def clear(self) -> None:
        with self._lock:
            for key in list(self._models):
                self._drop(key)
        release_memory()

    def _drop(self, key: CacheKey) -> None:
        model = self._models.pop(key, None)
        self._last_used.pop(key, None)
        if model is not None:
            model.unload()
