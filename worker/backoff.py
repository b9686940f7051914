"""Backoff, in one place: the delay between retries of a chunk, and the wait for a Redis that refuses writes."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import redis

log = logging.getLogger(__name__)

# Redis answering but refusing writes (maxmemory under noeviction, a read-only replica after a failover).
WRITE_REFUSED = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError)
# Waiting out refused writes: first pause and cap (doubling, with jitter), and how often it is logged.
FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 5.0
LOG_EVERY_S = 30.0


def backoff_s(retries: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff with "equal jitter": uniform in [d/2, d] where d = min(cap, base * 2**retries).

    Half of each delay is guaranteed, so the whole retry budget has a known
    floor (sum of the halves) while retries of many chunks still spread out.
    """
    d = min(cap_s, base_s * (2**retries))
    return d / 2 + random.uniform(0, d / 2)


def retry_budget_s(max_retries: int, base_s: float, cap_s: float) -> tuple[float, float]:
    """(shortest, longest) total wait over all retries: how long an outage the retries ride out."""
    delays = [min(cap_s, base_s * (2**r)) for r in range(max_retries)]
    return sum(delays) / 2, float(sum(delays))


def until_accepted(write: Callable[[], Any], what: str, sleep: Callable[[float], None] = time.sleep) -> Any:
    """Run ``write`` until Redis stops refusing it; any other error passes through at once.

    Only for writes that are safe to repeat: transactions and scripts that Redis refuses
    whole (``#!lua`` scripts are refused up front when Redis is out of memory or read-only).
    """
    waited = 0.0
    next_log = 0.0
    tries = 0
    while True:
        try:
            return write()
        except WRITE_REFUSED as e:
            if waited >= next_log:
                log.warning("Redis refuses writes (%s) while %s; waited %.0fs, still waiting", e, what, waited)
                next_log = waited + LOG_EVERY_S
            delay = backoff_s(tries, FIRST_PAUSE_S, MAX_PAUSE_S)
            sleep(delay)
            waited += delay
            tries += 1
