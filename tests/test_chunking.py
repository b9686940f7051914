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
from contract.chunking import chunk_size_for
from contract.fleet import PROCESSES, WorkerRegistry
from producer import Producer
from tools.testbed.services import RedisServer


@pytest.mark.parametrize(
    ("count", "chunk_size", "processes", "expected"),
    [
        (24, 16, 2, 12),  # the case: 12 + 12, not 16 + 8
        (120, 16, 2, 15),  # 8 chunks, 4 per process
        (1000, 16, 2, 16),  # a large batch keeps the full chunk size
        (3, 16, 2, 2),
        (10, 16, 1, 10),
        (17, 16, 1, 9),  # two chunks either way: equal halves
        (0, 16, 4, 16),
        (5, 0, 0, 1),  # nonsense settings are read as 1
    ],
)
def test_chunk_sizes(count: int, chunk_size: int, processes: int, expected: int) -> None:
    assert chunk_size_for(count, chunk_size, processes) == expected


def test_never_larger_than_asked_and_never_an_extra_round() -> None:
    for count in range(1, 200):
        for chunk_size in (1, 4, 16, 64):
            for processes in (1, 2, 3, 8):
                size = chunk_size_for(count, chunk_size, processes)
                chunks = math.ceil(count / size)
                assert 1 <= size <= chunk_size
                # Rounds of chunks across the processes: as few as chunk_size allows.
                fewest_chunks = math.ceil(count / chunk_size)
                assert math.ceil(chunks / processes) == math.ceil(fewest_chunks / processes)


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
    assert _queued_chunk_sizes(client, queue) == [8, 8, 8]  # three processes: one chunk each
    client.flushdb()
