"""The one way assetq connects to Redis (standalone or behind Sentinel), and reads what it answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from config import Settings

# Connect fast, fail a dead socket within seconds, and check idle connections before use:
# producers, workers and the server all ride out a Redis restart (or a failover) the same way.
CONNECT_TIMEOUT_S = 5
SOCKET_TIMEOUT_S = 30
HEALTH_CHECK_INTERVAL_S = 30
# Asking a sentinel where the master is must not hang on a dead sentinel: the next one is asked.
SENTINEL_TIMEOUT_S = 2
SENTINEL_DEFAULT_PORT = 26379

CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": CONNECT_TIMEOUT_S,
    "socket_timeout": SOCKET_TIMEOUT_S,
    "retry_on_timeout": True,
    "health_check_interval": HEALTH_CHECK_INTERVAL_S,
}


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() == "sentinel"


@dataclass(frozen=True)
class SentinelURL:
    """``sentinel://[user:password@]host:port[/db];sentinel://host2:port;...`` (kombu's form, also Celery's)."""

    sentinels: list[tuple[str, int]]
    db: int
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Every address is a sentinel; the master's credentials and the database come from the first
        address, as kombu reads them (so workers and assetq's own clients agree)."""
        parts = [urlsplit(p.strip()) for p in url.split(";") if p.strip()]
        for u in parts:
            if u.scheme.lower() != "sentinel" or not u.hostname:
                raise ValueError(f"not a sentinel:// address: {u.geturl()!r}")
        if not parts:
            raise ValueError(f"no sentinel in {url!r}")
        first = parts[0]
        return cls(
            [(str(u.hostname), u.port or SENTINEL_DEFAULT_PORT) for u in parts],
            int(first.path.strip("/") or 0),
            unquote(first.username) if first.username else None,
            unquote(first.password) if first.password is not None else None,
        )

    def master_kwargs(self) -> dict[str, Any]:
        return {"db": self.db, "username": self.username, "password": self.password}


def sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How to talk to the sentinels themselves (their own password, short timeouts)."""
    out: dict[str, Any] = {"socket_connect_timeout": SENTINEL_TIMEOUT_S, "socket_timeout": SENTINEL_TIMEOUT_S}
    if settings.redis_sentinel_password:
        out["password"] = settings.redis_sentinel_password.get_secret_value()
    return out


def redis_client(settings: Settings, **overrides: Any) -> redis.Redis:
    """A client for ``settings.redis_url`` (results, batch state, leases), with assetq's timeouts.

    Behind Sentinel the client asks the sentinels for the master on every new connection, and a
    connection that finds its server turned replica (READONLY) drops with a ConnectionError: after a
    failover the same client reaches the new master, exactly as it reconnects after a restart.
    """
    options = {**CLIENT_OPTIONS, **overrides}
    if not is_sentinel(settings.redis_url):
        return redis.Redis.from_url(settings.redis_url, **options)
    url = SentinelURL.parse(settings.redis_url)
    sentinel = Sentinel(url.sentinels, sentinel_kwargs=sentinel_kwargs(settings), **options)
    return sentinel.master_for(settings.redis_sentinel_master, **url.master_kwargs())


def async_redis_client(settings: Settings) -> aioredis.Redis:
    """The asyncio twin of ``redis_client`` (``assetq serve``'s event loop), Sentinel included."""
    if not is_sentinel(settings.redis_url):
        return aioredis.Redis.from_url(settings.redis_url, **CLIENT_OPTIONS)
    url = SentinelURL.parse(settings.redis_url)
    sentinel = AsyncSentinel(url.sentinels, sentinel_kwargs=sentinel_kwargs(settings), **CLIENT_OPTIONS)
    return sentinel.master_for(settings.redis_sentinel_master, **url.master_kwargs())


def broker_sentinel_options(settings: Settings) -> dict[str, Any]:
    """kombu's transport options for a sentinel:// broker (empty for any other broker)."""
    if not is_sentinel(settings.broker):
        return {}
    return {"master_name": settings.redis_sentinel_master, "sentinel_kwargs": sentinel_kwargs(settings)}


def text(value: object) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
