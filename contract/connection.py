"""The one way assetq connects to Redis, and reads what it answers."""

from __future__ import annotations

from typing import Any

import redis

from config import Settings

# Connect fast, fail a dead socket within seconds, and check idle connections before use:
# producers, workers and the server all ride out a Redis restart the same way.
CONNECT_TIMEOUT_S = 5
SOCKET_TIMEOUT_S = 30
HEALTH_CHECK_INTERVAL_S = 30


def redis_client(settings: Settings, **overrides: Any) -> redis.Redis:
    """A client for ``settings.redis_url`` (results, batch state, leases), with assetq's timeouts."""
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "retry_on_timeout": True,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
        **overrides,
    }
    return redis.Redis.from_url(settings.redis_url, **options)


def text(value: object) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
