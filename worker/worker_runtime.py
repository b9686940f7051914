"""What a worker process keeps between tasks: the engine (warm pipeline and models), Redis, the sinks."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import redis

from config import Settings
from contract.catalog import default_tasks
from contract.fleet import ALLOWED_ROOTS, HEARTBEAT_TTL_S, WorkerRegistry, root_forms
from contract.store import BatchStore
from worker.runtime import Engine, build_engine, build_sinks
from worker.sinks import Sink

log = logging.getLogger(__name__)


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=5, socket_timeout=30, retry_on_timeout=True, health_check_interval=30
    )


@dataclass
class WorkerRuntime:
    settings: Settings
    engine: Engine
    redis: redis.Redis
    store: BatchStore
    sinks: list[Sink]

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerRuntime:
        client = redis_client(settings)
        store = BatchStore(client, settings.result_ttl_s, settings.results_stream, settings.results_stream_maxlen)
        return cls(settings, build_engine(settings), client, store, build_sinks(settings, client, settings.result_dir))

    def preload_installed(self) -> None:
        """Load and warm every installed model (the tasks this worker will most likely get)."""
        tasks = default_tasks(self.engine.catalog())
        if not tasks:
            log.warning("no models installed in %s", self.settings.model_dir)
            return
        try:
            self.engine.preload(tasks)
        except Exception:  # a broken model must not stop the worker; tasks report it
            log.exception("preloading models failed")


def start_heartbeat(settings: Settings, node: str) -> threading.Thread:
    """Advertise this worker (device, installed models, allowed roots) until the process ends.

    The roots let a producer refuse ``file://`` assets no worker may read at submit time,
    instead of each coming back ``outside_roots``.
    """
    from contract.catalog import scan_model_dir

    registry = WorkerRegistry(redis_client(settings))
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            info: dict[str, Any] = {
                "device": settings.device,
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
