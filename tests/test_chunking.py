"""How batches are cut into chunks: at most chunk_size, and no process idle at the end of a batch."""

from __future__ import annotations

import base64
import json
import math
import uuid

import pytest
import redis

from config.settings import Settings
from contract.broker import queue_of
from contract.chunking import chunk_sizes, cut
from contract.fleet import PROCESSES, WorkerRegistry
from producer import Producer
from tools.testbed.services import RedisServer


@pytest.mark.parametrize(
    ("count", "chunk_size", "processes", "expected"),
    [
        (24, 16, 2, [6, 6, 3, 3, 2, 2, 1, 1]),  # the case: not 16 + 8, and small chunks last
        (120, 16, 2, [16, 16, 16, 16, 14, 14, 7, 7, 4, 4, 2, 2, 1, 1]),
        (3, 16, 2, [1, 1, 1]),
        (10, 16, 1, [10]),
        (17, 16, 1, [9, 8]),  # one process: as few chunks as chunk_size allows, one size but the last
        (10, 4, 1, [4, 4, 2]),
        (48, 16, 1, [16, 16, 16]),
        (0, 16, 4, []),
        (5, 0, 0, [1, 1, 1, 1, 1]),  # nonsense settings are read as 1
    ],
)
def test_chunk_sizes(count: int, chunk_size: int, processes: int, expected: list[int]) -> None:
    assert chunk_sizes(count, chunk_size, processes) == expected


def test_every_asset_once_never_larger_than_asked_and_smaller_towards_the_end() -> None:
    for count in range(0, 300):
        for chunk_size in (1, 4, 16, 64):
            for processes in (1, 2, 3, 8):
                sizes = chunk_sizes(count, chunk_size, processes)
                assert sum(sizes) == count
                assert all(1 <= s <= chunk_size for s in sizes)
                if processes == 1:
                    assert len(sizes) == math.ceil(count / chunk_size)
                    assert len(set(sizes[:-1])) <= 1 and sizes[-1:] <= sizes[:1]  # one size but the last
                    continue
                assert sizes == sorted(sizes, reverse=True)
                # A large batch keeps full chunks until its last rounds.
                full = sum(1 for s in sizes if s == chunk_size)
                assert full >= (count - 2 * processes * chunk_size) // chunk_size
                # Every chunk is at most half of what is left at its round's start, shared out: the
                # batch ends on a single asset.
                if count:
                    assert sizes[-1] == 1
                left = count
                for first in range(0, len(sizes), processes):
                    assert sizes[first] <= max(1, math.ceil(left / (2 * processes)))
                    left -= sum(sizes[first : first + processes])


def test_cut_keeps_order() -> None:
    items = list(range(24))
    chunks = cut(items, chunk_sizes(24, 16, 2))
    assert [len(c) for c in chunks] == [6, 6, 3, 3, 2, 2, 1, 1]
    assert [x for c in chunks for x in c] == items


def _queued_chunk_sizes(client: redis.Redis, queue: str) -> list[int]:
    """Assets per chunk message in ``queue``'s lists (one per priority step, ``contract.broker``)."""
    sizes = []
    lists = [k for k in client.scan_iter(match=f"{queue}*") if queue_of(k.decode()) == queue]
    for raw in (m for k in lists for m in client.lrange(k, 0, -1)):
        message = json.loads(raw)
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        sizes.append(len(kwargs["payload"]["assets"]))
    return sorted(sizes)


def test_the_producer_cuts_by_the_processes_live_workers_advertise(redis_server: RedisServer) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/14"
    client = redis.Redis.from_url(url)
    client.flushdb()
    queue = f"chunking-{uuid.uuid4().hex[:6]}"
    producer = Producer(
        settings=Settings(_env_file=None, redis_url=url, queue=queue, chunk_size=16), check_models=False
    )
    spec = {
        "assets": [{"id": f"a{i}", "uri": f"s3://photos/{i}.jpg"} for i in range(24)],
        "tasks": {"clip": {"visual": {"modelName": "any"}}},
    }
    producer.submit(spec)
    assert _queued_chunk_sizes(client, queue) == [12, 12]  # no worker advertises: one process, equal halves
    for k in client.scan_iter(match=f"{queue}*"):
        client.delete(k)
    registry = WorkerRegistry(client)
    registry.advertise("a@host", {PROCESSES: 2})
    registry.advertise("b@host", {PROCESSES: 1})
    fresh = Producer(settings=producer.settings, check_models=False)
    fresh.submit(spec)
    # three processes: rounds of three chunks, halving
    assert _queued_chunk_sizes(client, queue) == sorted([4, 4, 4, 2, 2, 2, 1, 1, 1, 1, 1, 1])
    client.flushdb()
