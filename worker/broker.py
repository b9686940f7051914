"""The workers' Redis transport: kombu's, fetching atomically under a lease (``worker/leases.py``).

What changes against kombu's Redis transport, and why:

* **Fetch.** kombu BRPOPs a message and records it as unacknowledged in a
  second round trip; a consumer killed in between (the reply already in its
  socket while the main process is busy) loses it (kombu #305, celery #4354,
  #7950). Here an idle consumer blocks on the queues' wake lists
  (``contract/broker.py``), and a Lua script takes the message and records it
  as held by this consumer in one step.
* **Acks, rejects, hand-backs** act on that record, and wait out a Redis that
  refuses writes instead of losing the message (``worker/backoff.py``).
* **No visibility timeout.** What a dead consumer held comes back when its
  lease lapses (``worker_dead_after_s``, 30 s; at once for a process known to
  be gone on the same machine), and a task running long on a live worker is
  never handed to another one. kombu's periodic ``restore_visible`` has
  nothing to do.

Producers publish with ``contract.broker_transport.Transport``; this subclass only adds
the consuming side.
"""

from __future__ import annotations

import logging
import time
from functools import cached_property
from time import monotonic
from typing import Any, cast

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.transport.redis import Empty
from kombu.utils.json import loads

from contract import broker as shared
from contract import broker_transport as channels
from contract.amqp import is_amqp
from contract.keys import wake_key
from worker.backoff import FIRST_PAUSE_S, MAX_PAUSE_S, WRITE_REFUSED, backoff_s
from worker.leases import Lease
from worker.rabbit import TRANSPORT as RABBIT_TRANSPORT

log = logging.getLogger(__name__)

# The transport path for Celery's ``broker_transport`` setting, in workers.
TRANSPORT = f"{__name__}:Transport"
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"
DEFAULT_DEAD_AFTER_S = 30.0
# Socket timeout of the lease's own connections: a heartbeat must never hang on a dead socket.
LEASE_SOCKET_TIMEOUT_S = 10.0


class QoS(kombu_redis.QoS):
    """Delivery bookkeeping on the lease's record instead of kombu's ``unacked`` hash."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        # The fetch recorded it already, in the same step that took it.
        virtual.QoS.append(self, message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        self.channel.lease.ack(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if requeue:
            self.channel.lease.requeue(delivery_tag, back=True)
        else:
            self.channel.lease.ack(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        self.channel.lease.requeue(tag, back=leftmost)

    def restore_unacked(self, client: Any = None) -> None:
        # Channel closing (shutdown, lost connection): what this consumer holds goes back to the front.
        for tag in list(self._delivered):
            self.channel.lease.requeue(tag, back=False)
        self._delivered.clear()

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: leases, not a visibility timeout, return what dead consumers held."""


class LeasedFetch:
    """The consuming side of a kombu Redis channel, on a lease. Mixed into the plain and Sentinel channels."""

    QoS = QoS
    worker_dead_after_s = DEFAULT_DEAD_AFTER_S
    from_transport_options: Any = (*channels.Channel.from_transport_options, "worker_dead_after_s")

    _fetch_order: list[str]

    @cached_property
    def lease(self) -> Lease:
        return Lease.for_process(self._new_lease)

    def _new_lease(self) -> Lease:
        chan: Any = self
        # Over Sentinel, making a pool replaces the channel's Sentinel manager, which kombu closes with
        # the channel: keep the channel's own (the lease, and its manager, last as long as the process).
        manager = getattr(chan, "_sentinel_manager", None)
        pool = chan._get_pool()  # a pool of its own: the heartbeat thread must not share the event loop's sockets
        if manager is not None:
            chan._sentinel_manager = manager
        pool.connection_kwargs["socket_timeout"] = LEASE_SOCKET_TIMEOUT_S
        return Lease(chan.Client(connection_pool=pool), float(self.worker_dead_after_s), lambda: chan.active_queues)

    @cached_property
    def _no_ack_queues(self) -> set[str]:
        return set()

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        # Consumers without acks (Celery's control replies) take messages at most once: never held.
        (self._no_ack_queues.add if no_ack else self._no_ack_queues.discard)(queue)
        ret = super().basic_consume(queue, no_ack, *args, **kwargs)  # type: ignore[misc]
        if queue not in cast(Any, self)._fanout_queues:  # fanout (events, control) is pub/sub: nothing to hold
            self.lease.start()
        return ret

    def _lists(self, queues: list[str]) -> list[str]:
        chan: Any = self
        return [chan._q_for_pri(q, pri) for pri in chan.priority_steps for q in queues]

    def _brpop_start(self, timeout: float | None = None) -> None:
        chan: Any = self
        if timeout is None:
            timeout = chan.brpop_timeout
        queues = chan._queue_cycle.consume(len(chan.active_queues))
        if not queues:
            return
        # Idle, this blocks on the wake lists; the fetch that follows takes the message.
        self._fetch_order = self._lists(queues)
        chan._in_poll = chan.client.connection
        chan._brpop_sent_at = monotonic()
        chan.client.connection.send_command("BRPOP", *[wake_key(q) for q in queues], timeout or 0)

    def _brpop_read(self, **options: Any) -> bool:
        chan: Any = self
        try:
            try:
                # A token or the timeout: either way, look (a message sent without a token is found too).
                chan.client.parse_response(chan.client.connection, "BRPOP", **options)
                if getattr(chan, "_closing", False):
                    raise Empty()
                delivered = self._deliver_next(self._fetch_order)
            except chan.connection_errors:
                chan.client.connection.disconnect()
                raise
            except redis.ResponseError as e:
                if not refused(e):
                    raise
                # A read-only replica refuses even BRPOP, and a full or read-only Redis the fetch
                # script (whole, before it takes anything): nothing was taken; wait and look again.
                self._wait_out(e)
                raise Empty() from None
            self._refusals = 0
            if not delivered:
                raise Empty()
            return True
        finally:
            chan._in_poll = None
            chan._flush_brpop_reauth()

    _refusals = 0

    def _wait_out(self, e: Exception) -> None:
        # In the event loop, but nothing can be taken or acknowledged meanwhile anyway; the lease
        # thread keeps beating. Doubling pauses keep a refusing Redis from being hammered.
        if self._refusals % 10 == 0:
            log.warning("Redis refuses the fetch (%s); waiting", e)
        time.sleep(backoff_s(self._refusals, FIRST_PAUSE_S, MAX_PAUSE_S))
        self._refusals += 1

    def _deliver_next(self, lists: list[str]) -> bool:
        chan: Any = self
        got = self.lease.fetch(lists)
        if got is None:
            return False
        source, raw, fid = got
        message = _readable(raw)
        if message is None:
            log.error("a message on %s is not a kombu message; kept raw under assetq:unreadable", source)
            self.lease.set_aside(fid, raw)
            return False
        queue = shared.queue_of(source)
        if queue in self._no_ack_queues:
            self.lease.forget(fid)
        else:
            self.lease.hold(message["properties"]["delivery_tag"], fid)
        chan._queue_cycle.rotate(queue)
        chan.connection._deliver(message, queue)
        return True

    def _receive_one(self, c: Any) -> Any:
        """Read the pub/sub connection (Celery's broadcasts) only when it has something to read.

        The event loop calls this when the socket it registered turned readable, and kombu then
        reads with redis-py's blocking read, which has no timeout. After a restart or a failover
        redis-py may have reopened the connection by itself (a health check's PING reconnects):
        nothing arrives on the new socket, and that read waited for good, with the worker's main
        thread, while its lease thread kept it looking alive. A dropped or reopened connection is
        a lost connection: raised, so Celery's consumer connects again.
        """
        chan: Any = self
        conn = c.connection
        try:
            if conn is None or conn._sock is None or not conn.can_read(timeout=0):
                raise redis.ConnectionError("the pub/sub connection was dropped or reopened under the event loop")
        except chan.connection_errors:
            chan._in_listen = None
            raise
        return super()._receive_one(c)  # type: ignore[misc]

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        got = self.lease.fetch(self._lists([queue]))
        if got is None:
            raise Empty()
        _source, raw, fid = got
        message = _readable(raw)
        if message is None:
            self.lease.set_aside(fid, raw)
            raise Empty()
        self.lease.hold(message["properties"]["delivery_tag"], fid)
        return message

    def _restore(self, message: Any, leftmost: bool = False) -> None:
        self.lease.requeue(message.delivery_tag, back=leftmost)


def refused(e: Exception) -> bool:
    """Redis refusing a write for now (full, read-only), or unblocking BRPOP as it turns into a replica."""
    return isinstance(e, WRITE_REFUSED) or str(e).startswith("UNBLOCKED")


def _readable(raw: bytes) -> dict[str, Any] | None:
    try:
        message = loads(raw)
        has_tag = isinstance(message, dict) and "delivery_tag" in message["properties"]  # what acks need
    except (ValueError, KeyError, TypeError):
        return None
    return message if has_tag else None


class Channel(LeasedFetch, channels.Channel):
    pass


class SentinelChannel(LeasedFetch, channels.SentinelChannel):
    """The same fetch and leases over Sentinel: every pool (the lease's too) asks the sentinels for the master."""

    from_transport_options: Any = (*channels.SentinelChannel.from_transport_options, "worker_dead_after_s")


class Transport(channels.Transport):
    Channel = Channel


class SentinelTransport(channels.SentinelTransport):
    Channel = SentinelChannel


def transport_for(broker_url: str) -> str | None:
    """This transport for a redis:// or rediss:// broker, its Sentinel twin for a sentinel:// one,
    ``worker/rabbit.py``'s for amqp://; else None (the URL's own)."""
    if is_amqp(broker_url):
        return RABBIT_TRANSPORT
    return shared.transport_for(broker_url, TRANSPORT, SENTINEL_TRANSPORT)
