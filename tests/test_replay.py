"""Dead letters, replay and the task's failure policy, against a real redis-server (no worker needed).

What a replay enqueues is read back from the broker queue itself, decoded the
way a worker would; the end-to-end replay after a real S3 outage is in
``test_faults.py``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from config.settings import Settings
from contract.errors import PayloadError
from contract.payload import PROCESS_CHUNK, ChunkPayload
from producer import Producer
from tools.testbed.services import RedisServer
from worker.backoff import backoff_s, retry_budget_s
from worker.pipeline.errors import TransientError
from worker.tasks.deadletter import INVALID_BATCH, dead_letter_chunk, dead_letter_invalid
from worker.tasks.process import redis_down, when_redis_answers

TASKS = {"facial-recognition": {"detection": {"modelName": "buffalo_s"}}}
OUTPUT = {"s3": {"bucket": "results", "prefix": "ml/"}}


@pytest.fixture
def producer(redis_client: redis.Redis, redis_server: RedisServer) -> Producer:
    settings = Settings(
        _env_file=None, redis_url=redis_server.url, queue=f"replay-{uuid.uuid4().hex[:8]}", chunk_size=2
    )
    return Producer(settings=settings, check_models=False)


def queued(p: Producer) -> list[dict[str, Any]]:
    """Take every message off the producer's queue (all priority levels); returns the chunk payloads."""
    out = []
    for k in sorted(p.redis.scan_iter(match=f"{p.settings.queue}*")):
        if p.redis.type(k) != b"list":
            continue
        while (raw := p.redis.rpop(k)) is not None:
            msg = json.loads(raw)  # type: ignore[arg-type]
            assert msg["content-type"] == "application/json" and msg["headers"]["task"] == PROCESS_CHUNK
            args, kwargs, _ = json.loads(base64.b64decode(msg["body"]))
            assert args == [] and len(msg["headers"]["argsrepr"]) < 120  # short arguments for Flower
            out.append(kwargs["payload"])
    return sorted(out, key=lambda pl: pl["chunk_id"])


def submit(p: Producer, n: int) -> tuple[str, list[dict[str, Any]]]:
    assets = [{"id": f"a{i}", "uri": f"s3://photos/a{i}.jpg"} for i in range(n)]
    batch = p.submit({"assets": assets, "tasks": TASKS, "output": OUTPUT})
    return batch, queued(p)


def ok(batch: str, aid: str) -> dict[str, Any]:
    return {"batch_id": batch, "asset_id": aid, "status": "ok", "error": None, "faces": []}


def test_replay_reenqueues_dead_letters_with_their_spec_and_counts_once(producer: Producer) -> None:
    p = producer
    batch, chunks = submit(p, 5)  # chunks of 2: a0 a1 | a2 a3 | a4
    assert [len(c["assets"]) for c in chunks] == [2, 2, 1]
    for aid in ("a0", "a1", "a4"):
        p.store.record(ok(batch, aid))
    assert dead_letter_chunk(p.store, ChunkPayload.decode(chunks[1]), "transient", "S3 unreachable", attempts=4) == [
        "a2",
        "a3",
    ]
    st = p.status(batch)
    assert (st["ok"], st["failed"], st["complete"], st["dead_letters"]) == (3, 2, True, 1)
    [failure] = p.failures(batch)
    assert failure["asset_ids"] == ["a2", "a3"] and failure["attempts"] == 4
    assert failure["error"] == {"kind": "transient", "message": "S3 unreachable"}

    dry = p.replay(batch, dry_run=True)
    assert dry["asset_ids"] == ["a2", "a3"] and dry["dry_run"]
    assert queued(p) == [] and len(p.failures(batch)) == 1  # a dry run changes nothing

    assert p.replay(batch)["asset_ids"] == ["a2", "a3"]
    [again] = queued(p)
    assert again["assets"] == chunks[1]["assets"] and again["output"] == chunks[1]["output"]
    assert again["tasks"] == chunks[1]["tasks"] == p.store.batch_meta(batch)["tasks"]
    assert again["output"]["s3"] == OUTPUT["s3"]
    assert again["chunk_id"] != chunks[1]["chunk_id"]  # a fresh delivery count
    assert p.failures(batch) == []
    # the worker's writes move the assets from failed to ok: never counted twice
    for aid in ("a2", "a3"):
        p.store.record(ok(batch, aid))
        p.store.record(ok(batch, aid))
    st = p.status(batch)
    assert (st["total"], st["ok"], st["failed"], st["done"]) == (5, 5, 0, 5)


def test_replay_selected_assets_and_skipped_ones(producer: Producer) -> None:
    p = producer
    batch, chunks = submit(p, 4)
    dead_letter_chunk(p.store, ChunkPayload.decode(chunks[0]), "poison", "worker died 3 times", attempts=3)
    p.store.record(ok(batch, "a2"))
    p.store.record({"batch_id": batch, "asset_id": "a3", "status": "skipped", "error": {"kind": "not_found"}})

    assert p.replay(batch, asset_ids=["a1"])["asset_ids"] == ["a1"]
    [only] = queued(p)
    assert [a["id"] for a in only["assets"]] == ["a1"]
    assert len(p.failures(batch)) == 1  # a0 is still dead-lettered, so the entry stays

    out = p.replay(batch, include_skipped=True)
    assert out["asset_ids"] == ["a0", "a1", "a3"]
    sent = {a["id"]: a for c in queued(p) for a in c["assets"]}
    assert sent["a3"] == {"id": "a3", "uri": "s3://photos/a3.jpg"}  # the original asset ref
    assert p.failures(batch) == []


def test_dead_lettering_keeps_results_already_written(producer: Producer) -> None:
    p = producer
    batch, chunks = submit(p, 2)
    p.store.record(ok(batch, "a0"))  # a duplicate delivery finished a0 meanwhile
    assert dead_letter_chunk(p.store, ChunkPayload.decode(chunks[0]), "transient", "timeout", attempts=6) == ["a1"]
    assert p.store.statuses(batch) == {"a0": "ok", "a1": "failed"}
    st = p.status(batch)
    assert (st["ok"], st["failed"]) == (1, 1)


def test_invalid_messages_are_listed_with_their_reason_and_not_replayable(producer: Producer) -> None:
    p = producer
    reason = invalid_payload({"batch_id": "b", "chunk_id": "c", "assets": [{"uri": "x"}], "tasks": {}})
    assert reason == "every asset needs a string 'id'"
    dead_letter_invalid(p.store, "task-1", "invalid_payload", reason, {"payload": "junk"})
    [entry] = p.failures(INVALID_BATCH)
    assert entry["error"] == {"kind": "invalid_payload", "message": reason} and entry["asset_ids"] == []
    assert INVALID_BATCH in {f["batch_id"] for f in p.failures()}
    with pytest.raises(KeyError):
        p.replay(INVALID_BATCH)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("text", "payload is a str, not an object"),
        ({"chunk_id": "c", "assets": [], "tasks": {}}, "payload field 'batch_id' is missing or not a str"),
        ({"batch_id": "b", "chunk_id": "c", "assets": [], "tasks": {}}, "payload has no assets"),
        ({"batch_id": "b", "chunk_id": "c", "assets": [{"id": "a"}], "tasks": {}}, None),
    ],
)
def test_invalid_payload_reasons(payload: Any, reason: str | None) -> None:
    assert invalid_payload(payload) == reason


def invalid_payload(payload: Any) -> str | None:
    try:
        ChunkPayload.decode(payload)
    except PayloadError as e:
        return str(e)
    return None


def test_backoff_has_a_floor_and_a_cap() -> None:
    for retries in range(10):
        d = min(30.0, 2.0 * 2**retries)
        delays = [backoff_s(retries, 2.0, 30.0) for _ in range(200)]
        assert all(d / 2 <= x <= d for x in delays)
        assert max(delays) - min(delays) > d / 4  # jittered, not fixed
    assert retry_budget_s(4, 1.0, 4.0) == ((1 + 2 + 4 + 4) / 2, 11.0)


def test_redis_outages_are_told_apart_from_other_errors() -> None:
    assert redis_down(redis.ConnectionError("refused"))
    try:
        raise TransientError("Redis unreachable writing results") from redis.TimeoutError()
    except TransientError as e:
        assert redis_down(e)
    assert not redis_down(TransientError("S3 write failed"))
    assert not redis_down(ValueError("bug"))


def test_a_task_waits_for_redis_to_come_back() -> None:
    server = RedisServer().start()
    # no retries inside redis-py: the waiting under test is assetq's own
    client = redis.Redis(port=server.port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        server.stop()
        threading.Timer(1.5, server.start).start()
        t0 = time.monotonic()
        assert when_redis_answers(client.ping, deadline=time.monotonic() + 30)
        assert time.monotonic() - t0 >= 1.0
        server.stop()
        with pytest.raises(redis.ConnectionError):  # bounded: gives up at the deadline
            when_redis_answers(client.ping, deadline=time.monotonic() + 1)
    finally:
        server.stop()
