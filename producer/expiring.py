"""A value read again only when it is older than a time to live: what the producer keeps of the fleet.

Workers heartbeat every 20 s, so what they advertise (models, allowed roots, pool processes) may be
a few seconds old when a submit reads it, and a server submitting many small jobs should not scan
Redis and the disk for every one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Expiring(Generic[T]):
    """``fetch()``'s value, fetched again when ``ttl_s`` have passed since it was (or when asked)."""

    def __init__(self, fetch: Callable[[], T], ttl_s: float) -> None:
        self._fetch = fetch
        self.ttl_s = ttl_s
        self._value: T | None = None
        self._until = -1.0  # monotonic time it is good until; fetched on the first get

    def get(self, fresh: bool = False) -> T:
        """The value; ``fresh``: fetched now, whatever its age."""
        now = time.monotonic()
        if fresh or now > self._until:
            self._value = self._fetch()
            self._until = now + self.ttl_s
        return self._value  # type: ignore[return-value]  # set above on the first call
