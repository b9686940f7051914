"""The queue protocol both sides speak over Redis: kombu's lists, plus a wake-up token per message.

Workers take a message with one Lua script that moves it from its queue into
the fetching consumer's ``held`` hash (``worker/leases.py``), so a message is
always either queued or held by exactly one consumer. A script cannot block,
so an idle worker blocks (BRPOP) on ``wake:<queue>`` instead, and every
publish here pushes a token there in the same round trip. Tokens are only
hints: a message sent without one (by plain Celery, say) is still found by
the fetch an idle worker runs every ``brpop_timeout`` (1 s), and a fetch that
leaves messages behind pushes a token for the next worker.

Producers and workers both use this transport (``broker_transport``); the
worker's subclass adds the fetch, acks and leases. This module also reads the
lease state for ``assetq status`` (which chunks wait on a dead consumer).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from config import Settings
from contract import amqp
from contract.connection import text
from contract.keys import CONSUMERS, CONSUMERS_META, held_key, wake_key

# Wake tokens kept per queue: enough to wake a fleet at once, bounded when nobody consumes.
WAKE_TOKENS_MAX = 64
# kombu's separator between a queue's name and its priority step in list names.
PRIORITY_SEP = kombu_redis.Channel.sep

# Celery's ``broker_transport`` setting, for producers.
TRANSPORT = f"{__name__}:Transport"


def queue_of(list_key: str) -> str:
    """The queue a kombu list belongs to (``assetq``, ``assetq\\x06\\x163`` -> ``assetq``)."""
    return list_key.split(PRIORITY_SEP, 1)[0]


class Channel(kombu_redis.Channel):
    """kombu's Redis channel, publishing a wake-up token with every message."""

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        pri = self._get_message_priority(message, reverse=False)
        list_key = self._q_for_pri(queue, pri)
        body = dumps(message)
        commands: list[tuple[str, tuple[Any, ...]]] = [
            ("lpush", (list_key, body)),
            ("lpush", (wake_key(queue), 1)),
            ("ltrim", (wake_key(queue), 0, WAKE_TOKENS_MAX - 1)),
        ]
        if self._expires and queue in self._expires:
            commands += [("pexpire", (self._q_for_pri(queue, p), self._expires[queue])) for p in self.priority_steps]
        batch = kwargs.pop("_publish_batch", None)
        if batch is not None:
            for name, args in commands:
                batch.add(name, *args)
            return
        with self.conn_or_acquire() as client, client.pipeline(transaction=True) as pipe:
            for name, args in commands:
                getattr(pipe, name)(*args)
            pipe.execute()


class Transport(kombu_redis.Transport):
    Channel = Channel


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
    }


def transport_for(broker_url: str, transport: str = TRANSPORT) -> str | None:
    """``transport`` for a redis:// or rediss:// broker; None (the URL's own) for any other."""
    scheme = broker_url.split("://", 1)[0].lower()
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
