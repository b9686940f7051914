"""The Celery app: JSON only, late acks, one warm pipeline per worker process.

Celery settings are derived from ``config.Settings`` here and nowhere else.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, signals

from config import Settings, get_settings
from contract.amqp import is_amqp
from contract.broker import celery_wire_config
from worker.bootstrap import context, start_heartbeat
from worker.broker import transport_for
from worker.tasks import refused

log = logging.getLogger(__name__)


def celery_config(s: Settings) -> dict[str, Any]:
    wire = celery_wire_config(s, transport_for(s.broker))
    # On RabbitMQ, the broker returns what a worker held the moment its connection drops: no leases;
    # the transport options are the wire's (publisher confirms). On Redis: the leases' options, plus
    # the wire's (the master name, behind Sentinel).
    transport = dict(wire.pop("broker_transport_options", {}))
    if not is_amqp(s.broker):
        transport.update(_redis_transport_options(s))
    return {
        # What producers use too (JSON only, never unpickle); on Redis the transport is the workers'
        # own: kombu's Redis transport with atomic fetch and leases (broker.py).
        **wire,
        "result_backend": None,  # results go to assetq's own store, not Celery's backend
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": s.soft_time_limit_s,
        "task_time_limit": s.time_limit_s,
        "broker_transport_options": transport,
        "broker_connection_max_retries": None,  # keep reconnecting while the broker restarts
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


def _redis_transport_options(s: Settings) -> dict[str, Any]:
    return {
        # Leases, not a visibility timeout, return what a dead worker held (worker/broker.py).
        "worker_dead_after_s": s.worker_dead_after_s,
        # Take from the queues in -Q order (interactive first, worker/launch.py), not round robin:
        # per priority step, an interactive chunk is fetched before any waiting bulk chunk.
        "queue_order_strategy": "priority",
        "socket_connect_timeout": 5,
        "retry_on_timeout": True,
        "health_check_interval": 30,
    }


def create_app(settings: Settings | None = None) -> Celery:
    s = settings or get_settings()
    # The task module is named, not imported here: it imports this module (one way only).
    app = Celery("assetq", set_as_current=True, include=["worker.tasks.process"])
    app.conf.update(celery_config(s))
    refused.install(app)  # keep messages Celery refuses before any task runs as dead letters
    return app


app = create_app()


@signals.worker_init.connect
def _declare_rabbitmq_topology(sender: Any = None, **_: Any) -> None:
    # Every work queue exists before the consumer starts: Celery's delayed-delivery step binds all
    # of them (a CPU worker does not consume ``gpu``), and a retry may be routed to any of them.
    if not is_amqp(get_settings().broker):
        return
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=None)
        channel = conn.default_channel
        for queue in app.conf.task_queues or ():
            queue(channel).declare()


@signals.worker_process_init.connect
def _init_process(**_: Any) -> None:
    # Each pool child loads and warms its own sessions once (sessions do not survive fork).
    ctx = context()
    if get_settings().preload:
        ctx.preload_installed()


@signals.worker_ready.connect
def _ready(sender: Any = None, **_: Any) -> None:
    settings = get_settings()
    pool_module = type(getattr(sender, "pool", None)).__module__
    if settings.preload and not pool_module.endswith("prefork"):
        context().preload_installed()  # solo/threads pools have no child processes to init
    node = getattr(sender, "hostname", None) or os.environ.get("ASSETQ_NODE", "worker")
    start_heartbeat(settings, node, int(getattr(sender, "concurrency", None) or 1))
