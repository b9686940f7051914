"""Leases against a real redis-server: atomic fetch, hand-backs, recovery of what dead consumers held.

The end-to-end proof, with real workers killed at many moments, is tests/test_worker_death.py.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from contract.broker import PRIORITY_SEP, held_chunks
from contract.keys import CONSUMERS, CONSUMERS_META, METRICS, held_key, wake_key
from worker.leases import CUT_OFF_AFTER_S, Lease

DEAD_AFTER_S = 30.0


def message(chunk: str) -> str:
    """A kombu message as the Redis transport stores it (only what the fetch and status read)."""
    return json.dumps({"body": "", "headers": {"argsrepr": f"batch=b chunk={chunk}"}, "properties": {"x": chunk}})


@pytest.fixture
def queue() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def leases(redis_client: redis.Redis) -> Iterator[list[Lease]]:
    made: list[Lease] = []
    yield made
    for lease in made:
        lease._stop.set()


def new_lease(r: redis.Redis, made: list[Lease], queues: list[str] | None = None) -> Lease:
    lease = Lease(r, DEAD_AFTER_S, lambda: queues or [])
    made.append(lease)
    lease._beat()
    return lease


def held(r: redis.Redis, lease: Lease) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in r.hgetall(held_key(lease.id)).items()}


def test_fetch_takes_in_priority_then_queue_order_and_records_in_the_same_step(
    redis_client: redis.Redis, leases: list[Lease], queue: str
) -> None:
    r = redis_client
    other = queue + "-gpu"
    lists = [queue, other, f"{queue}{PRIORITY_SEP}3", f"{other}{PRIORITY_SEP}3"]
    r.lpush(f"{other}{PRIORITY_SEP}3", message("low-other"))
    r.lpush(f"{queue}{PRIORITY_SEP}3", message("low"))
    r.lpush(other, message("high-other"))
    a = new_lease(r, leases)
    order = []
    while (got := a.fetch(lists)) is not None:
        source, raw, fid = got
        order.append(json.loads(raw)["properties"]["x"])
        # taken and recorded together: it is in the held hash, under its list
        assert held(r, a)[fid] == f"{source}\n{raw.decode()}"
    assert order == ["high-other", "low", "low-other"]
    r.lpush(wake_key(queue), 1, 1)  # stale tokens: nothing is queued any more
    assert a.fetch(lists) is None and r.llen(wake_key(queue)) == 0  # cleared, so idle workers stay asleep
    assert all(r.llen(k) == 0 for k in lists) and len(held(r, a)) == 3
    # a fetch that leaves messages behind leaves a wake token for the next worker
    r.delete(wake_key(queue))
    r.lpush(queue, message("m1"), message("m2"))
    a.fetch(lists)
    assert r.llen(wake_key(queue)) == 1


def test_hand_backs_go_to_the_front_or_the_back_and_acks_forget(
    redis_client: redis.Redis, leases: list[Lease], queue: str
) -> None:
    r = redis_client
    a = new_lease(r, leases)
    r.lpush(queue, message("first"), message("second"), message("third"))
    for tag in ("t1", "t2", "t3"):
        got = a.fetch([queue])
        assert got is not None
        a.hold(tag, got[2])
    a.requeue("t1", back=False)  # a restore: next to be taken
    a.requeue("t2", back=True)  # a rejected task: behind the rest
    a.ack("t3")
    assert [json.loads(m)["properties"]["x"] for m in r.lrange(queue, 0, -1)] == ["second", "first"]
    assert held(r, a) == {}
    a.ack("t3")  # twice, or unknown: nothing happens
    a.requeue("unknown", back=False)


def test_a_consumer_past_its_lease_has_everything_put_back_exactly_once(
    redis_client: redis.Redis, leases: list[Lease], queue: str
) -> None:
    r = redis_client
    dead, live, other = new_lease(r, leases, [queue]), new_lease(r, leases), new_lease(r, leases)
    r.lpush(queue, message("c0"), message("c1"), message("c2"))
    for _ in range(2):
        dead.fetch([queue])
    assert [h.chunk_id for h in held_chunks(r, DEAD_AFTER_S)] == [None, None]  # not chunk messages
    r.zadd(CONSUMERS, {dead.id: time.time() - DEAD_AFTER_S - 1})  # its heartbeat stopped a lease ago
    assert all(h.dead for h in held_chunks(r, DEAD_AFTER_S))

    found = live.sweep() + other.sweep()  # two sweepers: one of them takes it, once
    assert sorted(f.chunk for f in found) == ["batch=b chunk=c0", "batch=b chunk=c1"]
    assert {f.consumer for f in found} == {dead.id} and {f.reason for f in found} == {"lease_expired"}
    # back at the front, in front of what was still queued
    assert [json.loads(m)["properties"]["x"] for m in r.lrange(queue, 0, -1)][-1] in ("c0", "c1")
    assert r.llen(queue) == 3 and not r.exists(held_key(dead.id))
    assert r.zscore(CONSUMERS, dead.id) is None and not r.hexists(CONSUMERS_META, dead.id)
    assert int(r.hget(METRICS, "recovered|lease_expired") or 0) == 2
    assert r.zscore(CONSUMERS, live.id) is not None  # the living keep their lease


def test_a_sweeper_cut_off_from_redis_renews_leases_instead_of_judging(
    redis_client: redis.Redis, leases: list[Lease], queue: str
) -> None:
    r = redis_client
    quiet, sweeper = new_lease(r, leases), new_lease(r, leases)
    r.lpush(queue, message("c0"))
    quiet.fetch([queue])
    r.zadd(CONSUMERS, {quiet.id: time.time() - DEAD_AFTER_S - 5})  # nobody could beat during an outage
    sweeper._last_ok = time.monotonic() - CUT_OFF_AFTER_S - 1  # and this sweeper could not reach Redis either
    assert sweeper.sweep() == []
    assert len(held(r, quiet)) == 1 and float(r.zscore(CONSUMERS, quiet.id) or 0) > time.time() - 5
    r.zadd(CONSUMERS, {quiet.id: time.time() - DEAD_AFTER_S - 1})
    assert [f.reason for f in sweeper.sweep()] == ["lease_expired"]  # judged again once back in touch


def test_a_consumer_whose_process_is_gone_on_this_machine_is_recovered_at_once(
    redis_client: redis.Redis, leases: list[Lease], queue: str
) -> None:
    r = redis_client
    gone = new_lease(r, leases)
    ended = subprocess.Popen(["true"])
    ended.wait()
    meta: dict[str, Any] = json.loads(r.hget(CONSUMERS_META, gone.id) or "{}")
    r.hset(CONSUMERS_META, gone.id, json.dumps({**meta, "pid": ended.pid}))  # as if that process had been it
    r.lpush(queue, message("c0"))
    gone.fetch([queue])
    sweeper = new_lease(r, leases)
    [found] = sweeper.sweep()  # its heartbeat is fresh: only the PID check can tell
    assert (found.consumer, found.reason) == (gone.id, "process_gone") and r.llen(queue) == 1
    assert sweeper.sweep() == []  # and only once


def test_a_held_message_this_consumer_does_not_know_of_is_put_back_after_a_lease(
    redis_client: redis.Redis, leases: list[Lease], queue: str
) -> None:
    """The backstop: a fetch whose reply was lost with its connection leaves a message held by a live consumer."""
    r = redis_client
    a = new_lease(r, leases)
    r.lpush(queue, message("lost"), message("known"))
    lost = a.fetch([queue])
    known = a.fetch([queue])
    assert lost and known
    a.hold("known-tag", known[2])
    assert a.reclaim_unclaimed() == []  # too recent to judge
    old = f"{time.time() - DEAD_AFTER_S - 1:.3f}-{uuid.uuid4().hex[:12]}"
    r.hset(held_key(a.id), old, r.hget(held_key(a.id), lost[2]) or b"")
    r.hdel(held_key(a.id), lost[2])
    [found] = a.reclaim_unclaimed()
    assert found.reason == "unclaimed_fetch" and r.llen(queue) == 1 and list(held(r, a)) == [known[2]]


def test_a_redis_out_of_memory_refuses_the_whole_fetch_and_loses_nothing(
    redis_client: redis.Redis, leases: list[Lease], queue: str
) -> None:
    r = redis_client
    a = new_lease(r, leases)
    r.lpush(queue, message("kept"))
    r.config_set("maxmemory", "1")
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            a.fetch([queue])
    finally:
        r.config_set("maxmemory", "0")
    assert r.llen(queue) == 1 and held(r, a) == {}  # refused up front (#!lua), not after the pop
    assert a.fetch([queue]) is not None


def test_leaving_cleanly_unregisters_only_when_nothing_is_held(
    redis_client: redis.Redis, leases: list[Lease], queue: str
) -> None:
    r = redis_client
    busy, idle = new_lease(r, leases), new_lease(r, leases)
    r.lpush(queue, message("c0"))
    busy.fetch([queue])
    busy.close()
    idle.close()
    assert r.zscore(CONSUMERS, busy.id) is not None and r.zscore(CONSUMERS, idle.id) is None
