"""Fault injection against real processes: redis-server, moto's S3 server, ``assetq worker`` (Celery prefork).

Each test submits a batch of 52 real photos (4 of them broken) for SCRFD face
detection, injects a fault mid-batch, then checks assetq's promise asset by
asset (see ``tests/faultinject/scenario.py``): every asset ends as exactly one
of a result, a ``skipped`` record with its reason, or a replayable dead letter;
batch counters, S3 objects and the results stream count each outcome once;
and each asset was processed a bounded number of times.

Crashes that need to happen inside a task (a poison image, a kill right after
the results were written, a slow step to kill a worker in the middle of) come
from ``tests/faultinject/sitecustomize.py``, loaded into the worker processes
through PYTHONPATH; assetq's own code has no fault hooks.
"""

from __future__ import annotations

import json
import pickle
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Exchange, Queue

from contract.payload import PROCESS_CHUNK
from producer import Producer
from tests.faultinject.scenario import (
    TASKS,
    Outcome,
    PhotoSet,
    check_promise,
    chunk_assets,
    chunks_in_flight,
    cli,
    done,
    face_model_dir,
    kill_pool_child,
    make_photos,
    producer_for,
    start_worker,
    wait_until,
    while_busy,
    worker_env,
)
from tests.faultinject.sitecustomize import CRASHES_KEY
from tools.testbed.services import RedisServer, S3Server, TcpProxy, WorkerProcess
from worker.backoff import retry_budget_s
from worker.tasks.deadletter import INVALID_BATCH
from worker.tasks.deliveries import asset_counts

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BUCKET = "assetq-faults"
PHOTOS_BUCKET = "assetq-photos"
PREFIX = "ml/"
CHUNK = 3
S3_OUTAGE_S = 30.0


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return face_model_dir()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> PhotoSet:
    return make_photos(tmp_path_factory.mktemp("fault-photos"))


@pytest.fixture(scope="module")
def s3(s3_server: S3Server, photos: PhotoSet) -> Any:
    client = s3_server.client()
    for b in (BUCKET, PHOTOS_BUCKET):
        client.create_bucket(Bucket=b)
    for aid in photos.ids:
        client.upload_file(str(photos.path(aid)), PHOTOS_BUCKET, photos.path(aid).name)
    return client


@dataclass
class Scene:
    """One test's services: a Redis, the S3 endpoint workers use, and the workers it started."""

    redis: RedisServer
    s3_url: str
    photos: PhotoSet
    model_dir: Path
    s3: Any
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self, **settings: Any) -> dict[str, str]:
        queue = f"faults-{uuid.uuid4().hex[:8]}"
        return worker_env(self.redis.url, self.s3_url, self.photos.root, self.model_dir, queue, **settings)

    def worker(self, env: dict[str, str]) -> WorkerProcess:
        w = start_worker(env)
        self.workers.append(w)
        return w

    def spec(self, s3_inputs: bool = False) -> dict[str, Any]:
        def s3_uri(_: str, path: Path) -> str:
            return f"s3://{PHOTOS_BUCKET}/{path.name}"

        return {
            "assets": self.photos.assets(s3_uri if s3_inputs else None),
            "tasks": TASKS,
            "output": {"s3": {"bucket": BUCKET, "prefix": PREFIX}},
        }

    def logs(self, lines: int = 40) -> str:
        return "\n\n".join(f"--- worker {w.name} ---\n{w.tail(lines)}" for w in self.workers)

    def wait(self, p: Producer, batch: str, timeout: float) -> dict[str, Any]:
        try:
            return p.wait(batch, timeout_s=timeout, poll_s=0.2)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{self.logs(60)}") from e

    def check(self, p: Producer, batch: str, max_processed: int, may_fail: bool = False) -> Outcome:
        try:
            return check_promise(p, batch, self.photos, self.s3, BUCKET, PREFIX, max_processed, may_fail)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.logs()}") from e


@contextmanager
def make_scene(server: RedisServer, s3_url: str, photos: PhotoSet, model_dir: Path, s3: Any) -> Iterator[Scene]:
    redis.Redis.from_url(server.url).flushdb()
    scene = Scene(server, s3_url, photos, model_dir, s3)
    try:
        yield scene
    finally:
        for w in scene.workers:
            w.kill()


@pytest.fixture(scope="module")
def redis_server_faults() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def scene(
    redis_server_faults: RedisServer, s3_server: S3Server, photos: PhotoSet, model_dir: Path, s3: Any
) -> Iterator[Scene]:
    with make_scene(redis_server_faults, s3_server.url, photos, model_dir, s3) as sc:
        yield sc


# --- 1. a pool child, then a whole worker, killed mid-task ------------------------------------


def test_pool_child_then_whole_worker_killed_mid_batch(scene: Scene) -> None:
    photos = scene.photos
    crash_after_write = photos.good[20]
    env = scene.env(fault_delay_s=0.3, fault_crash_after_write=crash_after_write)
    w1 = scene.worker(env)
    p = producer_for(env)
    r = p.redis
    batch = p.submit(scene.spec())

    wait_until(lambda: done(p, batch) >= 6, 60, "the first results")
    # a chunk still in flight after its process died was killed mid-task
    killed_in_child = set(while_busy(r, batch, lambda: kill_pool_child(w1))) & set(chunks_in_flight(r, batch))
    wait_until(lambda: done(p, batch) >= 27, 60, "progress after the pool process was killed")
    killed_with_worker = set(while_busy(r, batch, w1.kill)) & set(chunks_in_flight(r, batch))
    scene.worker(env)  # a new worker takes over: it sees the dead one's process gone and puts its chunk back
    scene.wait(p, batch, 90)
    # The chunk whose child died right after its results were written is requeued (at the back):
    # the batch can be complete before that delivery ran. Wait for it to have run too.
    wait_until(lambda: asset_counts(r, batch, "processed").get(crash_after_write, 0) >= 2, 60, "the redelivery")

    out = scene.check(p, batch, max_processed=3)
    assert killed_in_child and killed_with_worker, (killed_in_child, killed_with_worker)
    for chunk in killed_in_child | killed_with_worker:
        for aid in chunk_assets(batch, chunk, photos.ids, CHUNK):
            assert out.attempts[aid] >= 2, (chunk, aid, out.attempts[aid])  # redelivered, then finished
    # killed right after its results were written: processed again, counted once
    assert int(r.hget(CRASHES_KEY, crash_after_write) or 0) == 1
    assert out.processed[crash_after_write] >= 2 and out.statuses[crash_after_write] == "ok"
    kills = 3
    assert sum(out.processed.values()) <= len(photos.ids) + kills * CHUNK


# --- 2. Redis restarted mid-batch (AOF persistence) ---------------------------------------------


@pytest.fixture
def aof_scene(s3_server: S3Server, photos: PhotoSet, model_dir: Path, s3: Any) -> Iterator[Scene]:
    server = RedisServer(aof=True).start()
    try:
        with make_scene(server, s3_server.url, photos, model_dir, s3) as sc:
            yield sc
    finally:
        server.stop()


def test_redis_restart_mid_batch(aof_scene: Scene) -> None:
    scene = aof_scene
    env = scene.env(fault_delay_s=0.3)
    w = scene.worker(env)
    p = producer_for(env)
    batch = p.submit(scene.spec())
    wait_until(lambda: done(p, batch) >= 9, 60, "the first results")
    in_flight = while_busy(p.redis, batch, lambda: scene.redis.restart(down_s=2.0))
    scene.wait(p, batch, 90)  # the same producer: it reconnects by itself

    assert in_flight, "Redis went away while no task was running"
    assert w.proc is not None and w.proc.poll() is None, w.tail()  # the worker rode it out, no restart
    out = scene.check(p, batch, max_processed=2)
    assert sum(out.processed.values()) <= len(scene.photos.ids) + CHUNK
    # the same producer and worker go on with a new batch
    small = {**scene.spec(), "assets": scene.spec()["assets"][:5]}
    second = p.submit(small)
    assert scene.wait(p, second, 60)["ok"] == sum(1 for a in small["assets"] if a["id"] in scene.photos.good)


@pytest.mark.parametrize("refusal", ["out-of-memory", "read-only"])
def test_redis_refusing_writes_mid_batch(scene: Scene, refusal: str) -> None:
    """Redis answers reads but refuses writes: maxmemory under noeviction, or a replica left read-only.

    kombu takes a message off the queue before recording it as unacknowledged; without
    worker/broker.py that record failed, the worker stopped and the message was lost.
    """
    env = scene.env(fault_delay_s=0.3)
    w = scene.worker(env)
    p = producer_for(env)
    batch = p.submit(scene.spec())
    wait_until(lambda: done(p, batch) >= 9, 60, "the first results")
    admin = redis.Redis.from_url(scene.redis.url)
    if refusal == "out-of-memory":
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", str(used // 2))
    else:
        admin.execute_command("REPLICAOF", "127.0.0.1", "1")  # a master that never answers: stays read-only
    try:
        before = done(p, batch)
        time.sleep(8)  # deliveries, result writes, acks and hand-backs all meet the refusal
        frozen = done(p, batch)
    finally:
        admin.config_set("maxmemory", "0")
        admin.execute_command("REPLICAOF", "NO", "ONE")
    scene.wait(p, batch, 120)

    assert w.proc is not None and w.proc.poll() is None, w.tail()  # the worker rode it out
    assert frozen <= before + CHUNK  # nothing could be recorded meanwhile (but the chunk already written)
    log = w.log.read_text()
    # Met at a write (a result, an ack, a hand-back) or, between two chunks, at the fetch: waited out either way.
    assert ("Redis refuses writes" in log or "Redis refuses the fetch" in log) and "Unrecoverable error" not in log
    scene.check(p, batch, max_processed=3)


# --- 3. S3 unavailable mid-batch: ridden out by retries, or dead-lettered and replayed ----------


@pytest.fixture
def proxied_scene(
    redis_server_faults: RedisServer, s3_server: S3Server, photos: PhotoSet, model_dir: Path, s3: Any
) -> Iterator[tuple[Scene, TcpProxy]]:
    proxy = TcpProxy(s3_server.port).start()
    try:
        with make_scene(redis_server_faults, proxy.url, photos, model_dir, s3) as sc:
            yield sc, proxy
    finally:
        proxy.stop()


def test_s3_outage_ridden_out_then_one_longer_than_the_retry_budget(proxied_scene: tuple[Scene, TcpProxy]) -> None:
    scene, proxy = proxied_scene
    # Outage shorter than the retry budget: inputs and results both go through the cut S3.
    retries = {"max_retries": 12, "retry_backoff_s": 2.0, "retry_backoff_max_s": 6.0}
    shortest, _ = retry_budget_s(12, 2.0, 6.0)
    assert shortest > S3_OUTAGE_S
    # Retried chunks wait in the worker until due: keep that well inside the visibility timeout.
    env = scene.env(fault_delay_s=0.2, soft_time_limit_s=8, time_limit_s=10, **retries)
    w = scene.worker(env)
    p = producer_for(env)
    batch = p.submit(scene.spec(s3_inputs=True))
    wait_until(lambda: done(p, batch) >= 9, 60, "the first results")
    proxy.pause()
    down_at = done(p, batch)
    time.sleep(S3_OUTAGE_S)
    during = p.status(batch)
    proxy.resume()
    scene.wait(p, batch, 120)
    assert during["done"] <= down_at + CHUNK and not during["complete"], (down_at, during)
    out = scene.check(p, batch, max_processed=13)
    assert max(out.attempts.values()) >= 3  # it was retries that carried it through
    w.stop()

    # Outage longer than a short retry budget: the whole batch is dead-lettered, then replayed.
    env = scene.env(max_retries=2, retry_backoff_s=0.2, retry_backoff_max_s=0.4)
    scene.worker(env)
    p = producer_for(env)
    proxy.pause()
    batch = p.submit(scene.spec(s3_inputs=True))
    st = scene.wait(p, batch, 90)
    assert st["failed"] == len(scene.photos.ids) and st["ok"] == st["skipped"] == 0, st
    listed = cli(env, "failures", batch, "--json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    assert sorted(a for e in entries for a in e["asset_ids"]) == scene.photos.ids
    assert {e["error"]["kind"] for e in entries} == {"transient"} and {e["attempts"] for e in entries} == {3}
    assert all("S3" in e["error"]["message"] for e in entries), entries[0]
    for entry in p.store.dead_letters(batch).values():
        assert entry["first_failed_at"] <= entry["dead_lettered_at"]
        assert (
            entry["payload"]["tasks"] == p.store.batch_meta(batch)["tasks"]
            and entry["payload"]["output"]["s3"]["bucket"] == BUCKET
        )
    proxy.resume()
    dry = cli(env, "replay", batch, "--dry-run")
    assert dry.returncode == 0 and f"would re-enqueue {len(scene.photos.ids)} assets" in dry.stdout, dry
    time.sleep(1.0)
    assert p.status(batch)["failed"] == len(scene.photos.ids)  # a dry run enqueues nothing
    replayed = cli(env, "replay", batch)
    assert replayed.returncode == 0, replayed.stderr
    # replay moves the assets back to pending: the batch is incomplete until their new results land
    st = p.status(batch)
    assert st["failed"] == 0 and not st["complete"], st
    st = scene.wait(p, batch, 90)
    assert (st["failed"], st["done"]) == (0, len(scene.photos.ids)), st
    out = scene.check(p, batch, max_processed=1)
    assert not p.store.dead_letters(batch) and p.failures(batch) == []


# --- 4. a poison task that kills its worker every time, and one that raises --------------------------


def test_poison_task_is_isolated_and_dead_lettered_as_is_an_unexpected_error(scene: Scene) -> None:
    photos = scene.photos
    poison, broken = photos.good[10], photos.good[30]
    max_deliveries = 2
    env = scene.env(fault_poison=poison, fault_raise=broken, max_deliveries=max_deliveries)
    w = scene.worker(env)
    p = producer_for(env)
    batch = p.submit(scene.spec())
    scene.wait(p, batch, 120)

    out = scene.check(p, batch, max_processed=1, may_fail=True)
    letters = p.store.dead_letters(batch)
    # the poison: crashed max_deliveries times in its chunk, then max_deliveries times alone; never again
    entry = letters[out.dead_lettered[poison]]
    assert [a["id"] for a in entry["payload"]["assets"]] == [poison]  # isolated from its chunk-mates
    assert entry["error"]["kind"] == "poison" and entry["attempts"] == max_deliveries, entry
    assert int(p.redis.hget(CRASHES_KEY, poison) or 0) == 2 * max_deliveries
    mates = [a for a in chunk_assets(batch, out.dead_lettered[poison].split(".")[0], photos.ids, CHUNK) if a != poison]
    assert mates and all(out.statuses[a] in ("ok", "skipped") for a in mates)
    # an unexpected error (a broken model, say) is not retried blindly: its chunk is dead-lettered at once
    crashed = letters[out.dead_lettered[broken]]
    assert crashed["error"]["kind"] == "error" and "injected failure" in crashed["error"]["message"]
    assert crashed["attempts"] == 1
    in_error_chunk = {a["id"] for a in crashed["payload"]["assets"]}
    assert broken in in_error_chunk and len(in_error_chunk) == CHUNK
    assert {a for a, s in out.statuses.items() if s == "failed"} == {poison} | in_error_chunk
    listed = cli(env, "failures", batch)
    assert listed.returncode == 0 and "poison" in listed.stdout and poison in listed.stdout, listed
    assert w.proc is not None and w.proc.poll() is None, w.tail()


def test_a_chunk_stuck_past_the_hard_time_limit_is_requeued_then_isolated(scene: Scene) -> None:
    """Code that ignores the soft time limit (stuck in C) is killed at the hard limit; the message
    comes back (acks_on_timeout=False), and the delivery count isolates and dead-letters the asset."""
    photos = scene.photos
    stuck = photos.good[10]
    max_deliveries = 2
    env = scene.env(fault_hang=stuck, soft_time_limit_s=2, time_limit_s=3, max_deliveries=max_deliveries)
    w = scene.worker(env)
    p = producer_for(env)
    batch = p.submit(scene.spec())
    scene.wait(p, batch, 150)

    out = scene.check(p, batch, max_processed=1, may_fail=True)
    entry = p.store.dead_letters(batch)[out.dead_lettered[stuck]]
    assert [a["id"] for a in entry["payload"]["assets"]] == [stuck] and entry["error"]["kind"] == "poison", entry
    # hung (and killed at the hard limit) max_deliveries times in its chunk, then as often alone
    assert int(p.redis.hget(CRASHES_KEY, stuck) or 0) == 2 * max_deliveries
    assert {a for a, s in out.statuses.items() if s == "failed"} == {stuck}
    assert "Hard time limit (3" in w.log.read_text()
    assert w.proc is not None and w.proc.poll() is None, w.tail()


# --- 5. two workers, one killed again and again: tests/test_worker_death.py ------------------------------


# --- 6. messages that are not valid tasks ------------------------------------------------------------


class Trap:
    """Unpickling this creates a file: proof that a worker deserialized a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (open, (str(self.marker), "w"))


def test_invalid_and_pickled_messages_are_dead_lettered_not_run(scene: Scene, tmp_path: Path) -> None:
    env = scene.env()
    w = scene.worker(env)
    p = producer_for(env)
    queue = env["ASSETQ_QUEUE"]
    marker = tmp_path / "unpickled"
    chunk = {"batch_id": "pickled", "chunk_id": "pickled-0", "assets": scene.photos.assets()[:2], "tasks": TASKS}

    sender = Celery("hostile", broker=env["ASSETQ_REDIS_URL"], set_as_current=False)
    sender.conf.update(accept_content=["json", "pickle"])
    sender.send_task(PROCESS_CHUNK, kwargs={"payload": chunk, "trap": Trap(marker)}, queue=queue, serializer="pickle")
    sender.send_task(PROCESS_CHUNK, kwargs={"payload": "not a chunk"}, queue=queue)
    sender.send_task(PROCESS_CHUNK, args=[1, 2, 3], queue=queue)
    sender.send_task("assetq.no_such_task", kwargs={"payload": chunk}, queue=queue)
    with Connection(env["ASSETQ_REDIS_URL"]) as conn:
        publish = conn.Producer().publish
        target = {"exchange": Exchange(queue), "routing_key": queue, "declare": [Queue(queue, Exchange(queue), queue)]}
        publish(Trap(marker), serializer="pickle", **target)  # no task headers at all
        publish(
            b"{not json",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": PROCESS_CHUNK, "id": "bad-json"},
            **target,
        )
    wait_until(lambda: len(p.store.dead_letters(INVALID_BATCH)) >= 6, 30, "six dead letters")

    entries = sorted(p.store.dead_letters(INVALID_BATCH).values(), key=lambda e: e["error"]["kind"])
    kinds = sorted(e["error"]["kind"] for e in entries)
    assert kinds == [
        "invalid_message",
        "invalid_payload",
        "invalid_payload",
        "undecodable",
        "undecodable",
        "unknown_task",
    ], entries
    by_kind = {e["error"]["kind"]: e for e in entries}
    assert "ContentDisallowed" in by_kind["invalid_message"]["error"]["message"]
    assert by_kind["invalid_message"]["payload"]["content_type"] == "application/x-python-serialize"
    assert "assetq.no_such_task" in by_kind["unknown_task"]["error"]["message"]
    assert not marker.exists()  # nothing was unpickled
    assert not p.store.exists("pickled") and not p.store.statuses("pickled")  # nothing was run
    # the worker kept consuming: a real batch after the garbage completes in full
    batch = p.submit(scene.spec())
    scene.wait(p, batch, 90)
    scene.check(p, batch, max_processed=1)
    assert w.proc is not None and w.proc.poll() is None
    # the trap works: unpickling it here does create its file
    guard = tmp_path / "guard"
    pickle.loads(pickle.dumps(Trap(guard))).close()
    assert guard.exists()
