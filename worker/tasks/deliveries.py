"""Per-chunk delivery state and per-asset processing counts, in Redis.

* ``chunk:<chunk id>`` hash: ``deliveries`` (deliveries that started and have
  not finished: a worker killed mid-task leaves its count behind, so the next
  delivery sees it) and ``first_failed_at`` (first transient failure, kept
  across Celery retries for the dead-letter entry). Deleted when the chunk
  ends in results or a dead letter.
* ``batch:<id>:attempts`` hash: asset id -> times a delivery started on it.
* ``batch:<id>:processed`` hash: asset id -> times the pipeline finished it.

On RabbitMQ the broker counts deliveries itself (``x-delivery-count`` on every
delivery from a quorum queue) and dead-letters a chunk at its delivery limit;
``deliveries`` then holds the broker's count (``delivery_seen``), so the two
never disagree.

The two counters let operators (and the fault tests) see how often each asset
was worked on: after a worker is killed they may exceed 1, while the result
itself is written idempotently and counted once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from contract.amqp import DEATH_HEADER, DELIVERY_COUNT_HEADER, DELIVERY_LIMIT_REASON
from contract.connection import text
from contract.keys import key

DELIVERIES = "deliveries"
FIRST_FAILED_AT = "first_failed_at"


def chunk_key(chunk_id: str) -> str:
    return key("chunk", chunk_id)


def delivery_started(r: redis.Redis, chunk_id: str, ttl_s: int) -> int:
    """Count a delivery of ``chunk_id``; returns how many deliveries have not finished, this one included."""
    pipe = r.pipeline(transaction=True)
    pipe.hincrby(chunk_key(chunk_id), DELIVERIES, 1)
    if ttl_s > 0:
        pipe.expire(chunk_key(chunk_id), ttl_s)
    return int(pipe.execute()[0])


def delivery_retrying(r: redis.Redis, chunk_id: str, ttl_s: int) -> float:
    """The delivery ended in a retry (not a crash): clear its count; returns the first failure time."""
    now = time.time()
    pipe = r.pipeline(transaction=True)
    pipe.hdel(chunk_key(chunk_id), DELIVERIES)
    pipe.hsetnx(chunk_key(chunk_id), FIRST_FAILED_AT, now)
    pipe.hget(chunk_key(chunk_id), FIRST_FAILED_AT)
    if ttl_s > 0:
        pipe.expire(chunk_key(chunk_id), ttl_s)
    first = pipe.execute()[2]
    return float(first) if first is not None else now


def first_failed_at(r: redis.Redis, chunk_id: str) -> float | None:
    raw = r.hget(chunk_key(chunk_id), FIRST_FAILED_AT)
    return float(raw) if raw is not None else None


def chunk_finished(r: redis.Redis, chunk_id: str) -> None:
    """The chunk ended (results written or dead-lettered): forget its delivery state."""
    r.delete(chunk_key(chunk_id))


def count_assets(r: redis.Redis, batch_id: str, counter: str, asset_ids: Iterable[str], ttl_s: int) -> None:
    """Add one to ``batch:<id>:<counter>`` for each asset (``attempts`` or ``processed``)."""
    k = key("batch", batch_id, counter)
    pipe = r.pipeline(transaction=False)
    for aid in asset_ids:
        pipe.hincrby(k, aid, 1)
    if ttl_s > 0:
        pipe.expire(k, ttl_s)
    pipe.execute()


def asset_counts(r: redis.Redis, batch_id: str, counter: str) -> dict[str, int]:
    """``batch:<id>:<counter>`` as a dict (for operators and tests)."""
    raw = r.hgetall(key("batch", batch_id, counter))
    return {text(k): int(v) for k, v in raw.items()}


def delivery_seen(r: redis.Redis, chunk_id: str, deliveries: int, ttl_s: int) -> int:
    """Record the broker's own count of this chunk's deliveries (RabbitMQ's, this one included)."""
    pipe = r.pipeline(transaction=True)
    pipe.hset(chunk_key(chunk_id), DELIVERIES, deliveries)
    if ttl_s > 0:
        pipe.expire(chunk_key(chunk_id), ttl_s)
    pipe.execute()
    return deliveries


@dataclass(frozen=True)
class BrokerDelivery:
    """What RabbitMQ says about a delivery (from its headers); all None on Redis."""

    count: int | None  # deliveries before this one that were returned (x-delivery-count)
    dead_lettered_from: str | None  # the work queue it was dead-lettered from, when it came from the DLQ
    death_reason: str | None  # "delivery_limit" when RabbitMQ dead-lettered it there


def broker_delivery(request: Any) -> BrokerDelivery:
    """Read a Celery request's RabbitMQ headers (Celery keeps a message's headers on its request).

    A message can carry ``x-death`` entries for other reasons than the delivery limit: a retry's
    countdown passes through Celery's delayed-delivery queues, which expire it into the work queue
    (reason ``expired``). Only a ``delivery_limit`` entry means RabbitMQ gave up on it.
    """
    get = request.get if hasattr(request, "get") else (lambda _k, _d=None: None)
    raw = get(DELIVERY_COUNT_HEADER)
    count = int(raw) if isinstance(raw, int | str) and str(raw).isdigit() else None
    for death in get(DEATH_HEADER) or []:
        if isinstance(death, dict) and death.get("reason") == DELIVERY_LIMIT_REASON:
            return BrokerDelivery(count, str(death.get("queue") or "") or None, DELIVERY_LIMIT_REASON)
    return BrokerDelivery(count, None, None)
