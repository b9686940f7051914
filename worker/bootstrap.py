"""Wiring, in one place: what a worker process builds once and keeps between tasks.

The Celery adapter (``worker/app.py``, ``worker/tasks/``) asks ``context()`` for it; nothing
else in the worker builds a Redis client, a store or sinks.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis

from config import Settings, get_settings
from contract.catalog import default_tasks, scan_model_dir
from contract.connection import redis_client
from contract.fleet import ALLOWED_ROOTS, HEARTBEAT_TTL_S, PROCESSES, WorkerRegistry, root_forms
from contract.store import BatchStore

if TYPE_CHECKING:
    # Imported where a pool process builds its context: a prefork worker's main process, which only
    # consumes and dispatches, then never loads numpy, Pillow or onnxruntime (~20 MiB less resident).
    from worker.models.cache import ModelCache
    from worker.pipeline.run import Pipeline
    from worker.runtime import Engine
    from worker.sinks import Sink

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """A worker process's warm pipeline and model cache, its Redis, batch store and result sinks."""

    settings: Settings
    engine: Engine
    pipeline: Pipeline
    cache: ModelCache
    redis: redis.Redis
    store: BatchStore
    sinks: list[Sink]

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerContext:
        from worker.runtime import build_engine, build_sinks

        client = redis_client(settings)
        store = BatchStore.from_settings(settings, client)
        engine = build_engine(settings)
        sinks = build_sinks(settings, store, settings.result_dir)
        return cls(settings, engine, engine.pipeline, engine.cache, client, store, sinks)

    def preload_installed(self) -> None:
        """Load and warm what ``ASSETQ_PRELOAD`` names, of the installed models (the tasks most likely to come)."""
        installed = default_tasks(self.engine.catalog())
        if not installed:
            log.warning("no models installed in %s", self.settings.model_dir)
            return
        tasks = preload_tasks(installed, self.settings.preload)
        if not tasks:
            return
        try:
            self.engine.preload(tasks)
        except Exception:  # a broken model must not stop the worker; tasks report it
            log.exception("preloading models failed")


def preload_tasks(installed: dict[str, Any], wanted: bool | list[str]) -> dict[str, Any]:
    """The part of the default ``tasks`` block that ``ASSETQ_PRELOAD`` asks for: all of it, none, or the
    tasks named, and the tasks using a model named (with the steps they depend on)."""
    if wanted is True:
        return installed
    names = set(wanted or [])

    def models_of(block: dict[str, Any]) -> set[str]:
        found = {block["modelName"]} if isinstance(block.get("modelName"), str) else set()
        return found | {v["modelName"] for v in block.values() if isinstance(v, dict) and "modelName" in v}

    return {task: block for task, block in installed.items() if task in names or models_of(block) & names}


_lock = threading.Lock()
_context: WorkerContext | None = None


def context() -> WorkerContext:
    """This process's context, built on first use (in each pool child: sessions do not survive fork)."""
    global _context
    with _lock:
        if _context is None:
            _context = WorkerContext.from_settings(get_settings())
        return _context


def start_heartbeat(settings: Settings, node: str, processes: int) -> threading.Thread:
    """Advertise this worker (device, installed models, allowed roots, pool processes) until the process ends.

    The roots let a producer refuse ``file://`` assets no worker may read at submit time,
    instead of each coming back ``outside_roots``; the processes let it cut a batch into
    chunks that keep every process busy to the end (``contract.chunking``).
    """
    registry = WorkerRegistry(redis_client(settings))
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            info: dict[str, Any] = {
                "device": settings.device,
                PROCESSES: processes,
                "catalog": scan_model_dir(settings.model_dir),
                ALLOWED_ROOTS: root_forms(settings.allowed_roots),
            }
            try:
                registry.advertise(node, info, HEARTBEAT_TTL_S)
            except redis.RedisError as e:
                log.debug("heartbeat failed: %s", e)
            stop.wait(HEARTBEAT_TTL_S / 3)

    thread = threading.Thread(target=beat, name="assetq-heartbeat", daemon=True)
    thread.start()
    return thread
