"""The worker's event loop must never wait without end on the pub/sub connection.

kombu reads a channel's pub/sub connection when its event loop saw the socket it registered turn
readable, with redis-py's blocking read (no timeout). After a Redis restart or a Sentinel failover
the connection can have been dropped and reopened behind the loop's back (a health check's PING
reconnects in redis-py), so the readable socket is not the one that is read: the worker's main
thread then waited for good on a quiet socket, fetching nothing while its lease thread kept it
looking alive (seen in the Sentinel failover test under load, a py-spy dump of the hung worker
ending in that read). The channel must raise a connection error instead, which Celery's consumer
recovers from by connecting again.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Queue

from tools.testbed.services import RedisServer
from worker.broker import TRANSPORT

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[RedisServer]:
    s = RedisServer().start()
    yield s
    s.stop()


@contextlib.contextmanager
def listening(server: RedisServer) -> Iterator[tuple[Connection, Any]]:
    """A kombu connection on the workers' transport whose event loop has subscribed a fanout queue."""
    with Connection(server.url, transport=TRANSPORT) as conn:
        channel = conn.default_channel
        fanout = Queue("assetq-test-fanout", Exchange("assetq-test-fanout", type="fanout"), auto_delete=True)
        with Consumer(channel, [fanout], callbacks=[lambda body, message: None], no_ack=True):
            with contextlib.suppress(socket.timeout):
                conn.drain_events(timeout=0.3)  # the event loop registers the socket and subscribes
            assert channel.subclient.connection._sock is not None
            yield conn, channel


def outcome_within(seconds: float, read: Callable[[], Any]) -> Any:
    """What ``read`` returned or raised; fails if it is still waiting after ``seconds``."""
    got: queue.Queue[Any] = queue.Queue()

    def run() -> None:
        try:
            got.put(read())
        except BaseException as e:
            got.put(e)

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    reader.join(seconds)
    assert not reader.is_alive(), "the event loop's read of the pub/sub connection is waiting without end"
    return got.get_nowait()


def test_a_redis_restart_under_the_subscription_is_a_connection_error(server: RedisServer) -> None:
    with listening(server) as (conn, channel):
        server.restart(down_s=0.5)  # the registered socket is at EOF, and Redis is back
        got = outcome_within(15, channel._receive)  # what the loop runs when that socket turns readable
        assert isinstance(got, conn.connection_errors), got


def test_a_connection_reopened_behind_the_event_loop_is_a_connection_error(server: RedisServer) -> None:
    with listening(server) as (conn, channel):
        pubsub = channel.subclient
        pubsub.connection.disconnect()
        pubsub.connection.connect()  # as redis-py does by itself (a health check's PING, a blocking read)
        # The loop woke for the socket it registered, which is not this one any more: nothing to read here.
        got = outcome_within(15, channel._receive)
        assert isinstance(got, conn.connection_errors), got
