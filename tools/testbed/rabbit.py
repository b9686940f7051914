"""The local RabbitMQ for tests and benchmarks: a fresh vhost per run, and the broker-wide knobs a fault test turns.

``RabbitVhost`` creates a vhost of its own on the local broker (``rabbitmqctl``,
which needs root, as CI runs), grants ``guest`` on it and deletes it after, so
runs never see each other's queues and leave nothing behind::

    with RabbitVhost() as vhost:
        env["ASSETQ_BROKER_URL"] = vhost.url

``stop_app`` / ``start_app`` and ``consumer_timeout`` act on the whole local
broker: use them as context managers so the broker is always put back.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

HOST = "127.0.0.1"
PORT = 5672
USER = "guest"
PASSWORD = "guest"
CTL_TIMEOUT_S = 60.0


def rabbitmqctl(*args: str, timeout: float = CTL_TIMEOUT_S) -> str:
    """Run ``rabbitmqctl ARGS`` quietly; returns its output, raises on failure."""
    exe = shutil.which("rabbitmqctl")
    if exe is None:
        raise RuntimeError("rabbitmqctl not found: install Debian's rabbitmq-server (`make services` does)")
    done = subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def listening(host: str = HOST, port: int = PORT) -> bool:
    try:
        with socket.create_connection((host, port), 0.5):
            return True
    except OSError:
        return False


def wait_listening(timeout: float = 60.0, port: int = PORT) -> None:
    deadline = time.monotonic() + timeout
    while not listening(port=port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"RabbitMQ not listening on {HOST}:{port} after {timeout}s")
        time.sleep(0.2)


@dataclass
class RabbitVhost:
    """A vhost of its own on the local RabbitMQ, ``guest`` granted on it; ``url`` is an amqp:// broker URL."""

    name: str = field(default_factory=lambda: f"assetq-test-{uuid.uuid4().hex[:10]}")
    port: int = PORT

    @property
    def url(self) -> str:
        return f"amqp://{USER}:{PASSWORD}@{HOST}:{self.port}/{quote(self.name, safe='')}"

    def url_via(self, port: int) -> str:
        """The same vhost reached through another local port (a ``TcpProxy`` in front of the broker)."""
        return f"amqp://{USER}:{PASSWORD}@{HOST}:{port}/{quote(self.name, safe='')}"

    def create(self) -> RabbitVhost:
        wait_listening(port=self.port)
        rabbitmqctl("add_vhost", self.name)
        rabbitmqctl("set_permissions", "-p", self.name, USER, ".*", ".*", ".*")
        return self

    def delete(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            rabbitmqctl("delete_vhost", self.name)

    def __enter__(self) -> RabbitVhost:
        return self.create()

    def __exit__(self, *_: Any) -> None:
        self.delete()

    def queues(self, *columns: str) -> dict[str, list[str]]:
        """``rabbitmqctl list_queues`` for this vhost: queue name -> the columns asked for (as text)."""
        cols = columns or ("messages_ready", "messages_unacknowledged")
        out = rabbitmqctl("list_queues", "-p", self.name, "--no-table-headers", "name", *cols)
        rows = (line.split("\t") for line in out.splitlines() if line.strip())
        return {row[0]: row[1:] for row in rows}

    def live(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of ``queue`` now, from the queue itself (a passive declare).

        ``rabbitmqctl list_queues`` reads statistics that are refreshed only every
        ``collect_statistics_interval`` (5 s): too coarse to time a redelivery.
        """
        from kombu import Connection

        with Connection(self.url, connect_timeout=5) as conn:
            _, ready, consumers = conn.default_channel.queue_declare(queue, passive=True)
        return int(ready), int(consumers)


@contextlib.contextmanager
def app_stopped(down_s: float) -> Iterator[None]:
    """``rabbitmqctl stop_app``, ``down_s`` seconds, then ``start_app`` (always), as an operator restarts it."""
    rabbitmqctl("stop_app")
    try:
        time.sleep(down_s)
        yield
    finally:
        rabbitmqctl("start_app")
        wait_listening()


def consumer_timeout_ms() -> int:
    out = rabbitmqctl("eval", "application:get_env(rabbit, consumer_timeout).")
    return int(out.strip().strip("{}").split(",")[1])


@contextlib.contextmanager
def consumer_timeout(ms: int, tick_ms: int | None = None) -> Iterator[None]:
    """Set the broker's ``consumer_timeout`` (and the channel tick that checks it) for a while, then restore both.

    RabbitMQ checks the timeout on each channel's tick (every minute by default), so a
    short timeout alone would only fire up to a minute late.
    """
    before_timeout = consumer_timeout_ms()
    before_tick = rabbitmqctl("eval", "application:get_env(rabbit, channel_tick_interval).").strip()
    rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {int(ms)}).")
    if tick_ms is not None:
        rabbitmqctl("eval", f"application:set_env(rabbit, channel_tick_interval, {int(tick_ms)}).")
    try:
        yield
    finally:
        rabbitmqctl("eval", f"application:set_env(rabbit, consumer_timeout, {before_timeout}).")
        if tick_ms is not None and before_tick.startswith("{ok,"):
            tick = before_tick.strip("{}").split(",")[1]
            rabbitmqctl("eval", f"application:set_env(rabbit, channel_tick_interval, {tick}).")
