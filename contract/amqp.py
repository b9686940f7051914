"""The queue topology on RabbitMQ (an ``amqp://`` broker), declared alike by producers and workers.

* Work queues (``queue``, ``gpu_queue``, ``interactive_queue``) are **quorum
  queues** (replicated, durable), bound to one topic exchange by their own
  name. Topic, not direct: Celery's native delayed delivery (the countdown of
  a retry) only routes through topic exchanges.
* Each has ``x-delivery-limit`` = ``max_deliveries - 1``: RabbitMQ lets a
  message be delivered ``limit + 1`` times, so a chunk whose worker died
  ``max_deliveries`` times is dead-lettered by the broker itself, to the
  ``<queue>.dead`` quorum queue through the ``assetq.dlx`` exchange, with
  ``at-least-once`` dead-lettering (a message is never dropped between the
  two queues; that strategy needs ``x-overflow: reject-publish``).
* Workers consume the dead-letter queue too: a chunk arriving there is split
  into one-asset chunks, or recorded as ``poison`` in assetq's dead letters
  (``worker/tasks/process.py``), never run again by itself.

Queue arguments are fixed when a queue is first declared: changing
``max_deliveries`` later needs the queue deleted (or a RabbitMQ policy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from config import Settings

if TYPE_CHECKING:
    from kombu import Queue

TASK_EXCHANGE = "assetq.tasks"
DEAD_LETTER_EXCHANGE = "assetq.dlx"
DEAD_SUFFIX = ".dead"
# RabbitMQ's header on every delivery from a quorum queue: earlier deliveries that were returned.
DELIVERY_COUNT_HEADER = "x-delivery-count"
# Each time the broker dead-lettered a message: a list of {queue, reason, count, …}, most recent first.
DEATH_HEADER = "x-death"
DELIVERY_LIMIT_REASON = "delivery_limit"


def is_amqp(broker_url: str) -> bool:
    return broker_url.split("://", 1)[0].lower() in ("amqp", "amqps", "pyamqp")


def dead_letter_queue(settings: Settings) -> str:
    return settings.queue + DEAD_SUFFIX


def delivery_limit(settings: Settings) -> int:
    """The broker's ``x-delivery-limit``: ``max_deliveries`` deliveries in all, then the dead-letter queue."""
    return max(settings.max_deliveries - 1, 0)


def work_queue_names(settings: Settings) -> list[str]:
    return list(dict.fromkeys([settings.interactive_queue, settings.queue, settings.gpu_queue]))


def task_queues(settings: Settings) -> list[Queue]:
    """The work queues and the dead-letter queue, as kombu declares them."""
    from kombu import Exchange, Queue  # here: what only reads the wire settings imports no kombu

    tasks = Exchange(TASK_EXCHANGE, type="topic", durable=True)
    dlx = Exchange(DEAD_LETTER_EXCHANGE, type="topic", durable=True)
    dead = dead_letter_queue(settings)
    work_args: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit(settings),
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": dead,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    queues = [
        Queue(name, tasks, routing_key=name, durable=True, queue_arguments=work_args)
        for name in work_queue_names(settings)
    ]
    queues.append(Queue(dead, dlx, routing_key=dead, durable=True, queue_arguments={"x-queue-type": "quorum"}))
    return queues


def amqp_wire_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings producers and workers share on RabbitMQ."""
    return {
        "task_queues": task_queues(settings),
        "task_default_exchange": TASK_EXCHANGE,
        "task_default_exchange_type": "topic",
        "task_default_routing_key": settings.queue,
        # A queue named ad hoc (``assetq worker --queues``) is created as a quorum queue too.
        "task_default_queue_type": "quorum",
        # Countdowns (retries with backoff) through RabbitMQ's own TTL queues, not held by a worker.
        "broker_native_delayed_delivery_queue_type": "quorum",
        # Quorum queues refuse global QoS: prefetch counts per consumer (celery's detection, kept on).
        "worker_detect_quorum_queues": True,
        # Publisher confirms: a publish returns once the broker has the message (a quorum majority).
        "broker_transport_options": {"confirm_publish": True},
    }
