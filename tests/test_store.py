"""Batch store and sinks: idempotent writes, exact counters (fakeredis for speed)."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest

from contract.store import BatchStore
from worker.sinks import LocalDirSink, RedisSink, S3Sink, write_all


@pytest.fixture
def store() -> BatchStore:
    return BatchStore(fakeredis.FakeRedis(), ttl_s=60, stream="assetq:results")


def result(aid: str, status: str = "ok", **extra: object) -> dict:
    return {"batch_id": "b1", "asset_id": aid, "status": status, **extra}


def test_rewriting_an_asset_never_double_counts(store: BatchStore) -> None:
    store.create_batch("b1", [{"id": "a"}, {"id": "b"}], {}, {})
    assert store.record(result("a"))
    assert not store.record(result("a", faces=[]))  # same status again: overwritten, not counted
    assert store.record(result("b", "skipped"))
    st = store.status("b1")
    assert st is not None
    assert (st["ok"], st["skipped"], st["failed"], st["done"], st["complete"]) == (1, 1, 0, 2, True)
    assert store.result("b1", "a") == result("a", faces=[])
    assert store.r.xlen("assetq:results") == 2  # one stream event per status change


def test_replayed_asset_moves_from_failed_to_ok(store: BatchStore) -> None:
    store.create_batch("b1", [{"id": "a"}], {}, {})
    store.record(result("a", "failed"))
    assert store.status("b1")["failed"] == 1  # type: ignore[index]
    store.record(result("a", "ok"))
    st = store.status("b1")
    assert st is not None and (st["ok"], st["failed"], st["done"]) == (1, 0, 1)


def test_results_expire(store: BatchStore) -> None:
    store.create_batch("b1", [{"id": "a"}], {}, {})
    store.record(result("a"))
    for k in ("assetq:batch:b1", "assetq:batch:b1:results", "assetq:batch:b1:status"):
        assert 0 < store.r.ttl(k) <= 60


def test_redis_sink_without_results_keeps_status_only(store: BatchStore) -> None:
    store.create_batch("b1", [{"id": "a"}], {}, {})
    RedisSink(store).write([result("a", faces=[{"box": [1, 2, 3, 4]}])], {"redis": False})
    stored = store.result("b1", "a")
    assert stored is not None and "faces" not in stored and stored["status"] == "ok"


def test_local_dir_sink_overwrites(tmp_path: Path) -> None:
    sink = LocalDirSink(tmp_path)
    sink.write([result("a", n=1)], {})
    sink.write([result("a", n=2)], {})
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["n"] == 2


class RecordingS3:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> None:
        self.objects[(Bucket, Key)] = Body


def test_s3_sink_keys_and_write_order(store: BatchStore) -> None:
    s3 = RecordingS3()
    store.create_batch("b1", [{"id": "a"}], {}, {})
    order: list[str] = []

    class Spy(RedisSink):
        def write(self, results: list[dict], output: dict) -> None:
            order.append("redis")
            super().write(results, output)

    class SpyS3(S3Sink):
        def write(self, results: list[dict], output: dict) -> None:
            order.append("s3")
            super().write(results, output)

    sinks = [Spy(store), SpyS3(lambda: s3, None, "assetq/")]
    write_all(sinks, [result("a")], {"s3": {"bucket": "res", "prefix": "p/"}})
    assert order == ["s3", "redis"]  # Redis marks done only after the external write succeeded
    assert list(s3.objects) == [("res", "p/b1/a.json")]


def test_metrics_render_prometheus_text() -> None:
    from contract.metrics import record_chunk, render

    r = fakeredis.FakeRedis()
    record_chunk(
        r,
        [
            result("a", timings_ms={"decode": 10.0, "ocr.detection": 30.0}),
            result("b", "skipped", error={"kind": "truncated", "message": "x"}, timings_ms={}),
        ],
    )
    text = render(r)
    assert 'assetq_assets_total{status="ok"} 1' in text
    assert 'assetq_skipped_total{kind="truncated"} 1' in text
    assert 'assetq_step_seconds_sum{step="ocr.detection"} 0.030000' in text
    assert 'assetq_step_seconds_count{step="decode"} 1' in text


def test_reopen_moves_failed_back_to_pending(store: BatchStore) -> None:
    store.create_batch("b1", [{"id": "a"}, {"id": "b"}], {}, {})
    store.record(result("a", "failed"))
    store.record(result("b", "ok"))
    assert store.reopen("b1", ["a", "b"]) == 1  # ok results are never reopened
    st = store.status("b1")
    assert st is not None and (st["failed"], st["ok"], st["pending"], st["complete"]) == (0, 1, 1, False)
    store.record(result("a", "ok"))
    st = store.status("b1")
    assert st is not None and (st["ok"], st["failed"], st["complete"]) == (2, 0, True)
