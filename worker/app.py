"""The Celery app: JSON only, late acks, one warm pipeline per worker process.

Celery settings are derived from ``config.Settings`` here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery, signals

from config import Settings, get_settings
from worker.broker import transport_for

log = logging.getLogger(__name__)


def celery_config(s: Settings) -> dict[str, Any]:
    transport = {
        # Leases, not a visibility timeout, return what a dead worker held (worker/broker.py).
        "worker_dead_after_s": s.worker_dead_after_s,
        "socket_connect_timeout": 5,
        "retry_on_timeout": True,
        "health_check_interval": 30,
    }
    return {
        "broker_url": s.broker,
        # kombu's Redis transport with atomic fetch and leases (broker.py).
        "broker_transport": transport_for(s.broker),
        "result_backend": None,  # results go to assetq's own store, not Celery's backend
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],  # never unpickle what arrives on the wire
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": s.soft_time_limit_s,
        "task_time_limit": s.time_limit_s,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # keep reconnecting while Redis restarts
        "task_default_queue": s.queue,
        "task_create_missing_queues": True,
        "worker_send_task_events": True,  # Flower sees tasks
        "task_send_sent_event": True,
        "worker_max_tasks_per_child": s.worker_max_tasks_per_child or None,
        "worker_lost_wait": s.worker_lost_wait_s,
        # Loading and warming models can take a while: don't declare the child dead meanwhile.
        "worker_proc_alive_timeout": 120.0,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_track_started": True,
    }


def create_app(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    app = Celery("assetq", set_as_current=True)
    app.conf.update(celery_config(s))
    return app


app = create_app()

# --- per-process runtime ------------------------------------------------------------
_runtime_lock = threading.Lock()
_runtime: Any = None


def get_runtime() -> Any:
    """The process's warm runtime (pipeline, model cache, sinks), built on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            from worker.worker_runtime import WorkerRuntime

            _runtime = WorkerRuntime.from_settings(get_settings())
        return _runtime


@signals.worker_process_init.connect
def _init_process(**_: Any) -> None:
    # Each pool child loads and warms its own sessions once (sessions do not survive fork).
    rt = get_runtime()
    if get_settings().preload:
        rt.preload_installed()


@signals.worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    from worker.worker_runtime import start_heartbeat

    settings = get_settings()
    pool_module = type(getattr(sender, "pool", None)).__module__
    if settings.preload and not pool_module.endswith("prefork"):
        get_runtime().preload_installed()  # solo/threads pools have no child processes to init
    start_heartbeat(settings, getattr(sender, "hostname", None) or os.environ.get("ASSETQ_NODE", "worker"))


import worker.tasks.process  # noqa: E402,F401  -- registers the tasks on ``app``
