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

The scene and its fixtures are in ``tests/fault_scene.py``; sections 4 and 6
(a poison task, a stuck task, messages that are not valid tasks) are in
``tests/test_faults_poison.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.fault_scene import (
    BUCKET,
    CHUNK,
    Scene,
    make_scene,
    model_dir,
    photos,
    redis_server_faults,
    s3,
    scene,
)
from tests.faultinject.scenario import (
    PhotoSet,
    chunk_assets,
    chunks_in_flight,
    cli,
    done,
    kill_pool_child,
    producer_for,
    wait_until,
    while_busy,
)
from tests.faultinject.sitecustomize import CRASHES_KEY
from tools.testbed.services import RedisServer, S3Server, TcpProxy
from worker.backoff import retry_budget_s
from worker.tasks.deliveries import asset_counts

__all__ = ["model_dir", "photos", "redis_server_faults", "s3", "scene"]  # fixtures
pytestmark = [pytest.mark.integration, pytest.mark.faults]

S3_OUTAGE_S = 30.0


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
    # A 6 s cap keeps each retry's wait short; 12 of them still outlast the outage (asserted above).
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


# --- 4. a poison task, a stuck task: tests/test_faults_poison.py -----------------------------------------


# --- 5. two workers, one killed again and again: tests/test_worker_death.py ------------------------------


# --- 6. messages that are not valid tasks: tests/test_faults_poison.py -----------------------------------
