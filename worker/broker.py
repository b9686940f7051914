"""kombu's Redis transport, made to wait out a Redis that refuses writes instead of losing a message.

kombu takes a message off the queue (BRPOP) and only then records it as
unacknowledged (ZADD + HSET in one transaction). When Redis refuses writes --
``maxmemory`` reached under ``noeviction`` (what docker-compose.yml configures,
so that nothing is evicted silently), or a replica left read-only by a
failover -- that second step fails, the consumer stops with "Unrecoverable
error", and the message, already off the queue, is gone
(``tests/test_faults.py::test_redis_refusing_writes_mid_batch`` reproduced it).

Here the two writes a consumer cannot do without -- recording a delivery and
handing a message back -- are retried with backoff until Redis takes them. The
message stays in this process meanwhile; both are MULTI/EXEC transactions, so
a refused attempt wrote nothing and retrying cannot duplicate anything.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import redis
from kombu.transport import redis as kombu_redis

log = logging.getLogger(__name__)

# Redis answering but refusing writes; the transport waits these out.
WRITE_REFUSED = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)
# Pause between attempts (doubling, with jitter), in seconds, and how often a refusal is logged.
FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 5.0
LOG_EVERY_S = 30.0

# The transport path for Celery's ``broker_transport`` setting.
TRANSPORT = f"{__name__}:Transport"


def until_accepted(write: Callable[[], Any], what: str, sleep: Callable[[float], None] = time.sleep) -> Any:
    """Run ``write`` until Redis stops refusing it; any other error passes through at once."""
    pause = FIRST_PAUSE_S
    waited = 0.0
    next_log = 0.0
    while True:
        try:
            return write()
        except WRITE_REFUSED as e:
            if waited >= next_log:
                log.warning("Redis refuses writes (%s) while %s; waited %.0fs, still waiting", e, what, waited)
                next_log = waited + LOG_EVERY_S
            delay = pause / 2 + random.uniform(0, pause / 2)
            sleep(delay)
            waited += delay
            pause = min(MAX_PAUSE_S, pause * 2)


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS with its writes waiting out refusals; ``ack`` and ``reject`` mirror kombu 5.7's."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        until_accepted(lambda: super(QoS, self).append(message, delivery_tag), "recording a delivery")

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        until_accepted(lambda: super(QoS, self).restore_by_tag(tag, client, leftmost), "handing a message back")

    def ack(self, delivery_tag: Any) -> None:
        # Under maxmemory Redis refuses even deletions queued inside MULTI, so an ack waits too.
        until_accepted(lambda: self._remove_from_indices(delivery_tag).execute(), "acknowledging a message")
        virtual_qos_ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if requeue:
            self.restore_by_tag(delivery_tag, leftmost=True)
        else:
            until_accepted(lambda: self._remove_from_indices(delivery_tag).execute(), "rejecting a message")
        virtual_qos_ack(self, delivery_tag)


def virtual_qos_ack(qos: QoS, delivery_tag: Any) -> None:
    """The in-process bookkeeping of an ack (kombu's virtual QoS), after Redis has been updated."""
    super(kombu_redis.QoS, qos).ack(delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


def transport_for(broker_url: str) -> str | None:
    """This transport for a redis:// or rediss:// broker; None (the URL's own) for any other."""
    scheme = broker_url.split("://", 1)[0].lower()
    return TRANSPORT if scheme in ("redis", "rediss") else None
