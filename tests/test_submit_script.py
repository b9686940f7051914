"""Producer.submit in one script: the same bytes Celery would store, and all or nothing."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest
import redis

from config.settings import Settings
from contract.broker import WAKE_TOKENS_MAX, list_for, queue_of
from contract.errors import SpecError
from contract.keys import key, wake_key
from contract.store import BatchStore
from contract.submit import Submitter
from producer import Producer
from tools.testbed.services import RedisServer

SPEC = {
    "assets": [{"id": f"a{i}", "uri": f"s3://photos/{i}.jpg"} for i in range(5)],
    "tasks": {"clip": {"visual": {"modelName": "any"}}},
    "priority": 7,
}


@pytest.fixture
def db(redis_server: RedisServer) -> tuple[str, redis.Redis]:
    url = redis_server.url.rsplit("/", 1)[0] + "/13"
    client = redis.Redis.from_url(url)
    client.flushdb()
    return url, client


def _messages(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    lists = [k for k in client.scan_iter(match=f"{queue}*") if queue_of(k.decode()) == queue]
    return [json.loads(m) for k in lists for m in client.lrange(k, 0, -1)]


def test_the_script_stores_what_celery_send_task_stores(db: tuple[str, redis.Redis]) -> None:
    url, client = db
    fast = Producer(settings=Settings(_env_file=None, redis_url=url, queue="q-fast"), check_models=False)
    assert fast._submitter is not None
    # The same Redis under another spelling: the producer cannot know it is one server, so Celery publishes.
    other = url.replace("127.0.0.1", "localhost")
    slow_settings = Settings(_env_file=None, redis_url=url, broker_url=other, queue="q-slow")
    slow = Producer(settings=slow_settings, check_models=False)
    assert slow._submitter is None
    fast.submit({**SPEC, "batch_id": "b-fast"})
    slow.submit({**SPEC, "batch_id": "b-slow"})
    (a,) = _messages(client, "q-fast")
    (b,) = _messages(client, "q-slow")
    assert set(a) == set(b)
    assert a["headers"].keys() == b["headers"].keys()
    # Celery copies argsrepr/kwargsrepr into the properties as well; nothing reads them there.
    assert a["properties"].keys() == b["properties"].keys() - {"argsrepr", "kwargsrepr"}
    for field in ("priority", "delivery_mode", "body_encoding"):
        assert a["properties"][field] == b["properties"][field]
    assert a["properties"]["delivery_info"]["routing_key"] == "q-fast"
    for field in ("lang", "task", "retries", "timelimit", "kwargsrepr", "stamps"):
        assert a["headers"][field] == b["headers"][field]
    body_a, body_b = (json.loads(base64.b64decode(m["body"])) for m in (a, b))
    body_a[1]["payload"]["batch_id"] = body_b[1]["payload"]["batch_id"]
    body_a[1]["payload"]["chunk_id"] = body_b[1]["payload"]["chunk_id"]
    assert body_a == body_b
    status_a, status_b = fast.status("b-fast"), slow.status("b-slow")
    assert status_a is not None and status_b is not None
    assert abs(status_a.pop("created_at") - status_b.pop("created_at")) < 60
    assert status_a == {**status_b, "batch_id": "b-fast"}
    assert client.hgetall("assetq:batch:b-fast:assets") == client.hgetall("assetq:batch:b-slow:assets")
    assert client.llen("assetq:wake:q-fast") == 1


def test_a_taken_batch_id_writes_nothing(db: tuple[str, redis.Redis]) -> None:
    url, client = db
    queue = f"q-{uuid.uuid4().hex[:6]}"
    producer = Producer(settings=Settings(_env_file=None, redis_url=url, queue=queue), check_models=False)
    producer.submit({**SPEC, "batch_id": "b1"})
    before = {k: client.type(k) for k in client.scan_iter()}
    queued = len(_messages(client, queue))
    with pytest.raises(SpecError, match="exists already"):
        producer.submit({**SPEC, "batch_id": "b1", "assets": [{"id": "other", "uri": "s3://photos/x.jpg"}]})
    assert {k: client.type(k) for k in client.scan_iter()} == before
    assert len(_messages(client, queue)) == queued
    status = producer.status("b1")
    assert status is not None and status["total"] == len(SPEC["assets"])


# --- the script alone, on the real Redis (fakeredis's Lua refuses the #!lua line) --------------------

ZERO_SHOT_TASKS = {"zero-shot": {"modelName": "m", "classes": {"cat": {"positive": ['a "cat"\n'], "negative": []}}}}
REDIS_OUTPUT = {"redis": True}


def test_the_script_records_the_batch_like_create_batch_and_pushes_every_message(db: tuple[str, redis.Redis]) -> None:
    _, r = db
    assets = [{"id": f"a{i}", "uri": f"file:///photos/{i}.jpg"} for i in range(2_345)]  # > 2 HSET steps
    messages = [(list_for("q", 0), f"m{n}") for n in range(3)] + [(list_for("q", 9), "urgent")]
    assert Submitter(r, ttl_s=60).submit("b1", assets, ZERO_SHOT_TASKS, REDIS_OUTPUT, "q", messages)
    BatchStore(r, ttl_s=60).create_batch("b2", assets, ZERO_SHOT_TASKS, REDIS_OUTPUT)

    one, two = r.hgetall(key("batch", "b1")), r.hgetall(key("batch", "b2"))
    assert one.pop(b"created_at") and two.pop(b"created_at")
    assert {k: v for k, v in one.items() if k != b"id"} == {k: v for k, v in two.items() if k != b"id"}
    assert json.loads(one[b"tasks"]) == ZERO_SHOT_TASKS  # quotes and newlines in the classes survive as they are
    assert r.hgetall(key("batch", "b1", "assets")) == r.hgetall(key("batch", "b2", "assets"))
    assert r.hlen(key("batch", "b1", "assets")) == len(assets)
    assert 0 < r.ttl(key("batch", "b1")) <= 60 and 0 < r.ttl(key("batch", "b1", "assets")) <= 60
    assert r.zscore(key("batches"), "b1") is not None
    assert r.lrange(list_for("q", 0), 0, -1) == [b"m2", b"m1", b"m0"]  # LPUSH: the consumer pops the right end
    assert r.lrange(list_for("q", 9), 0, -1) == [b"urgent"]
    assert r.llen(wake_key("q")) == len(messages)


def test_the_script_bounds_wake_tokens_and_refuses_a_taken_id(db: tuple[str, redis.Redis]) -> None:
    _, r = db
    s = Submitter(r, ttl_s=0)
    many = [(list_for("q", 0), f"m{n}") for n in range(WAKE_TOKENS_MAX + 10)]
    assert s.submit("b", [{"id": "a"}], ZERO_SHOT_TASKS, REDIS_OUTPUT, "q", many)
    assert r.ttl(key("batch", "b")) == -1  # no TTL asked, none set
    assert r.llen(wake_key("q")) == WAKE_TOKENS_MAX
    before = r.llen(list_for("q", 0))
    assert not s.submit("b", [{"id": "other"}], ZERO_SHOT_TASKS, REDIS_OUTPUT, "q", many)
    assert r.llen(list_for("q", 0)) == before and r.hkeys(key("batch", "b", "assets")) == [b"a"]
