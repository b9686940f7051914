"""The queue protocol both sides speak over Redis: kombu's lists, plus a wake-up token per message.

Workers take a message with one Lua script that moves it from its queue into
the fetching consumer's ``held`` hash (``worker/leases.py``), so a message is
always either queued or held by exactly one consumer. A script cannot block,
so an idle worker blocks (BRPOP) on ``wake:<queue>`` instead, and every
publish here pushes a token there in the same round trip. Tokens are only
hints: a message sent without one (by plain Celery, say) is still found by
the fetch an idle worker runs every ``brpop_timeout`` (1 s), and a fetch that
leaves messages behind pushes a token for the next worker.

Producers and workers both use this transport (``broker_transport``, whose kombu
channels are in ``contract.broker_transport``); the worker's subclass adds the
fetch, acks and leases. This module also reads the
lease state for ``assetq status`` (which chunks wait on a dead consumer).
"""

from __future__ import annotations

import base64
import bisect
import json
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from config import Settings
from contract import amqp
from contract.connection import broker_sentinel_options, text
from contract.keys import CONSUMERS, CONSUMERS_META, held_key

# Wake tokens kept per queue: enough to wake a fleet at once, bounded when nobody consumes.
WAKE_TOKENS_MAX = 64
# kombu's Redis transport's separator between a queue's name and its priority step in list names, and
# its priority steps: stated here, not read from kombu, so that a producer submitting to Redis imports
# no kombu (``tests/test_broker.py`` checks they are kombu's).
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)

# Celery's ``broker_transport`` setting, for producers (a redis:// broker, and a sentinel:// one): kombu's
# channels with a wake-up token published beside every message (``contract.broker_transport``).
TRANSPORT = "contract.broker_transport:Transport"
SENTINEL_TRANSPORT = "contract.broker_transport:SentinelTransport"


def queue_of(list_key: str) -> str:
    """The queue a kombu list belongs to (``assetq``, ``assetq\\x06\\x163`` -> ``assetq``)."""
    return list_key.split(PRIORITY_SEP, 1)[0]


def list_for(queue: str, priority: int) -> str:
    """The kombu list a message of ``priority`` goes to (kombu's steps: 0, 3, 6, 9; the queue's own list for 0)."""
    steps = PRIORITY_STEPS
    step = steps[bisect.bisect(steps, max(0, min(int(priority), 9))) - 1]
    return f"{queue}{PRIORITY_SEP}{step}" if step else queue


def task_message(
    task: str, kwargs: dict[str, Any], queue: str, priority: int, argsrepr: str, kwargsrepr: str
) -> tuple[str, str]:
    """(list key, stored JSON) of a Celery task message, exactly as Celery's ``send_task`` and kombu's Redis
    transport would store it: protocol 2 headers, a base64 JSON body ``[args, kwargs, embed]``, kombu's
    properties. The producer pushes it in the same script that records the batch (``contract.submit``), one
    round trip instead of a transport round trip per chunk.
    """
    task_id = str(uuid.uuid4())
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr,
        "origin": f"gen{os.getpid()}@{socket.gethostname()}",  # who sent it, as Celery writes it
        "ignore_result": None,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    body = [[], kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    message = {
        "body": base64.b64encode(json.dumps(body).encode()).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return list_for(queue, priority), json.dumps(message)


def celery_wire_config(settings: Settings, transport: str | None) -> dict[str, Any]:
    """The Celery settings producers and workers must share to talk over the broker (Redis or RabbitMQ)."""
    on_rabbitmq = amqp.amqp_wire_config(settings) if amqp.is_amqp(settings.broker) else {}
    return {
        "broker_url": settings.broker,
        "broker_transport": transport,
        "task_serializer": "json",
        "accept_content": ["json"],  # never unpickle what arrives on the wire
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_default_queue": settings.queue,
        "task_create_missing_queues": True,
        "broker_connection_retry_on_startup": True,
        **on_rabbitmq,
        # The master name and the sentinels' password for a sentinel:// broker; publisher confirms on RabbitMQ.
        "broker_transport_options": {
            **broker_sentinel_options(settings),
            **on_rabbitmq.get("broker_transport_options", {}),
        },
    }


def transport_for(
    broker_url: str, transport: str = TRANSPORT, sentinel_transport: str = SENTINEL_TRANSPORT
) -> str | None:
    """``transport`` for a redis:// or rediss:// broker, ``sentinel_transport`` for a sentinel:// one;
    None (the URL's own) for any other."""
    scheme = broker_url.split("://", 1)[0].lower()
    if scheme == "sentinel":
        return sentinel_transport
    return transport if scheme in ("redis", "rediss") else None


# --- reading the lease state (assetq status, tests) ------------------------------------------------


@dataclass(frozen=True)
class HeldChunk:
    """A chunk message held by a consumer (fetched, not yet acknowledged)."""

    consumer: str
    fetch_id: str
    queue: str
    batch_id: str | None
    chunk_id: str | None
    heartbeat_age_s: float | None  # None: the consumer has no heartbeat record at all
    dead: bool  # no heartbeat for longer than worker_dead_after_s: waiting to be recovered


def chunk_of(message: str | bytes) -> tuple[str | None, str | None]:
    """(batch id, chunk id) of a Celery chunk message as kombu stores it; (None, None) if it is not one."""
    try:
        raw = json.loads(message)
        body = raw["body"]
        if raw.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        _args, kwargs, _embed = json.loads(body)
        payload = kwargs["payload"]
        return str(payload["batch_id"]), str(payload["chunk_id"])
    except Exception:
        return None, None


def held_chunks(client: redis.Redis, dead_after_s: float) -> list[HeldChunk]:
    """Every message a consumer holds, with whether its consumer is past its lease."""
    clock: Any = client.time()
    now = float(clock[0]) + float(clock[1]) / 1e6
    ranked: Any = client.zrange(CONSUMERS, 0, -1, withscores=True)
    beats = {text(c): float(score) for c, score in ranked}
    consumers = set(beats) | {text(c) for c in client.hkeys(CONSUMERS_META)}
    out: list[HeldChunk] = []
    for consumer in sorted(consumers):
        age = now - beats[consumer] if consumer in beats else None
        entries: Any = client.hgetall(held_key(consumer))
        for fid, value in entries.items():
            source, _, message = value.partition(b"\n")
            batch, chunk = chunk_of(message)
            dead = age is None or age > dead_after_s
            out.append(HeldChunk(consumer, text(fid), queue_of(text(source)), batch, chunk, age, dead))
    return out
