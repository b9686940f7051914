"""assetq over Redis Sentinel: a master, one replica and three sentinels, every one a real process.

The failover test kills the master with SIGKILL in the middle of a batch; the sentinels promote the
replica and the old master comes back as a replica of the new one. The worker and the producer run at
assetq's default settings and find the new master by themselves (the batch is the fault suite's: 52
photos, 4 of them broken, three to a chunk). The sentinels call a master down after 1 s of silence
(``down-after-milliseconds``; production uses 5-30 s): the promotion fits in the test, and it comes
sooner, while chunks are still in flight, so what the old master took and never replicated has to be
ridden out rather than waited past.

The write-loss test shows assetq's answer to what replication cannot promise (docs/brokers-sentinel.md):
a submit returns only once a replica has the batch, and fails loudly when none acknowledges it.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from config import Settings
from contract.broker import celery_wire_config
from contract.broker import transport_for as producer_transport_for
from contract.connection import SentinelURL, broker_sentinel_options
from contract.errors import ReplicationError
from contract.keys import key
from contract.metrics import METRICS_KEY
from contract.store import BatchStore
from tests.faultinject.scenario import (
    TASKS,
    PhotoSet,
    check_promise,
    cli,
    done,
    face_model_dir,
    make_photos,
    producer_for,
    start_worker,
    wait_until,
    while_busy,
    worker_env,
)
from tools.testbed.sentinel import SentinelCluster
from tools.testbed.services import S3Server, WorkerProcess
from worker.app import celery_config
from worker.broker import transport_for

BUCKET = "assetq-sentinel"
PREFIX = "ml/"
BALLAST = "sentinel-test:ballast"
BALLAST_BYTES = 64 * 1024 * 1024
MARKER = "sentinel-test:written-after-the-stall"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return face_model_dir()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> PhotoSet:
    return make_photos(tmp_path_factory.mktemp("sentinel-photos"))


@pytest.fixture(scope="module")
def few_photos(tmp_path_factory: pytest.TempPathFactory) -> PhotoSet:
    return make_photos(tmp_path_factory.mktemp("sentinel-few-photos"), count=20)


@pytest.fixture(scope="module")
def s3(s3_server: S3Server) -> Any:
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    c = SentinelCluster(down_after_ms=1000).start()
    yield c
    c.stop()


def spec(photos: PhotoSet, count: int | None = None) -> dict[str, Any]:
    return {"assets": photos.assets()[:count], "tasks": TASKS, "output": {"s3": {"bucket": BUCKET, "prefix": PREFIX}}}


def env_for(cluster: SentinelCluster, s3_server: S3Server, photos: PhotoSet, model_dir: Path) -> dict[str, str]:
    queue = f"sentinel-{uuid.uuid4().hex[:8]}"
    return worker_env(cluster.url, s3_server.url, photos.root, model_dir, queue, fault_delay_s=0.3)


# --- the URL and the wiring (no servers) ---------------------------------------------------------


def test_sentinel_url_lists_every_sentinel_with_the_masters_password_and_db() -> None:
    url = SentinelURL.parse("sentinel://:s%3Bcret@10.0.0.1:26379/2;sentinel://10.0.0.2;sentinel://10.0.0.3:26380/2")
    assert url.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26380)]
    assert (url.db, url.username, url.password) == (2, None, "s;cret")
    # like kombu, only the first address carries the master's credentials and the database
    other = SentinelURL.parse("sentinel://10.0.0.1;sentinel://app:pw@10.0.0.2/3")
    assert (other.db, other.username, other.password) == (0, None, None)
    assert SentinelURL.parse("sentinel://app:pw@10.0.0.1/3").master_kwargs() == {
        "db": 3,
        "username": "app",
        "password": "pw",
    }
    with pytest.raises(ValueError):
        SentinelURL.parse("redis://10.0.0.1:6379/0")


def test_workers_and_producers_get_the_sentinel_transports_and_the_master_name() -> None:
    s = Settings(_env_file=None, redis_url="sentinel://h1:26379;sentinel://h2:26379", redis_sentinel_master="photos")
    assert transport_for(s.broker) == "worker.broker:SentinelTransport"
    assert producer_transport_for(s.broker) == "contract.broker_transport:SentinelTransport"
    assert celery_wire_config(s, None)["broker_transport_options"]["master_name"] == "photos"
    options = celery_config(s)["broker_transport_options"]
    assert options["master_name"] == "photos" and options["worker_dead_after_s"] == 30.0
    assert broker_sentinel_options(Settings(_env_file=None, redis_url="redis://h:6379/0")) == {}
    assert s.replica_acks == 1 and Settings(_env_file=None, redis_url="redis://h:6379/0").replica_acks == 0


# --- the failover ------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.faults
def test_master_killed_mid_batch_fails_over_and_every_asset_ends_once(
    cluster: SentinelCluster, s3_server: S3Server, photos: PhotoSet, model_dir: Path, s3: Any
) -> None:
    env = env_for(cluster, s3_server, photos, model_dir)
    w: WorkerProcess = start_worker(env)
    try:
        p = producer_for(env)
        batch = p.submit(spec(photos))
        wait_until(lambda: done(p, batch) >= 9, 90, "the first results")
        killed: list[Any] = []
        in_flight = while_busy(p.redis, batch, lambda: killed.append(cluster.kill_master()))
        killed_at = time.monotonic()
        promoted_s = cluster.wait_for_promotion(killed[0])
        # Recovered: a result recorded on the new master (its count may start below the old one's).
        after_promotion = done(p, batch)
        wait_until(lambda: done(p, batch) > max(after_promotion, 0), 90, "a result on the new master")
        recovered_s = time.monotonic() - killed_at
        cluster.rejoin_as_replica(killed[0])
        try:
            p.wait(batch, timeout_s=150, poll_s=0.2)  # the same producer: it finds the new master itself
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{w.tail(80)}\n{cluster.logs()}") from e
        print(f"\nfailover: promoted {promoted_s:.1f}s after the kill, first result recorded {recovered_s:.1f}s after")

        assert in_flight, "the master died while no chunk was running"
        assert w.proc is not None and w.proc.poll() is None, w.tail()  # the worker rode it out, no restart
        out = check_promise(p, batch, photos, s3, BUCKET, PREFIX, max_processed=3)
        assert sum(out.processed.values()) <= len(photos.ids) + 3 * len(in_flight) + 3
        # the same producer and worker go on with a new batch (its submit waits for the rejoined replica)
        second = p.submit(spec(photos, 5))
        assert p.wait(second, timeout_s=60)["ok"] == sum(1 for a in spec(photos, 5)["assets"] if a["id"] in photos.good)
        # the operator's view works over Sentinel too
        metrics = cli(env, "metrics")
        assert metrics.returncode == 0 and 'assetq_assets_total{status="ok"}' in metrics.stdout, metrics
    finally:
        w.kill()


@pytest.mark.integration
@pytest.mark.faults
def test_results_the_replica_never_got_are_lost_at_failover_and_done_again(
    cluster: SentinelCluster, s3_server: S3Server, few_photos: PhotoSet, model_dir: Path, s3: Any
) -> None:
    """Replication is asynchronous: what the master acknowledged but had not sent on is lost with it.

    The replica is stopped, the link's socket buffers filled with a ballast value, and the worker
    records results (and acknowledges their chunks) on the master alone; then the master is killed and
    the stalled replica promoted. Redis replicates in order, so the new master holds an earlier state
    of the whole queue: the lost results' chunks are held there by the live worker, which knows
    nothing of them, and come back after the lease's backstop (30 s); every asset still ends once.
    """
    photos = few_photos
    env = env_for(cluster, s3_server, photos, model_dir)
    w: WorkerProcess = start_worker(env)
    try:
        p = producer_for(env)
        batch = p.submit(spec(photos))
        wait_until(lambda: done(p, batch) >= 3, 90, "the first results")
        replica, master = cluster.replica, redis.Redis(port=cluster.master.port)
        assert replica is not None and replica.proc is not None
        os.kill(replica.proc.pid, signal.SIGSTOP)
        try:
            # Loopback buffers hold a few MB: past them, what the master writes stays in its own memory.
            master.set(BALLAST, b"\0" * BALLAST_BYTES)
            before = done(p, batch)
            wait_until(lambda: done(p, batch) >= before + 3, 90, "results the replica never gets")
            acknowledged = done(p, batch)
            master.set(MARKER, 1)
            old = cluster.kill_master()
            killed_at = time.monotonic()
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
        # What the replica kept, read before it can be promoted (down-after is 1 s) and written to again.
        kept = BatchStore(redis.Redis(port=replica.port)).status(batch)
        assert kept is not None
        lost_to = int(kept["done"])
        assert lost_to < acknowledged  # results the master had recorded and acknowledged are gone
        cluster.wait_for_promotion(old)
        new_master = redis.Redis(port=cluster.master.port)
        assert not new_master.exists(MARKER), "the replica got everything: the stall lost nothing"
        cluster.rejoin_as_replica(old)
        try:
            p.wait(batch, timeout_s=150, poll_s=0.2)
        except TimeoutError as e:
            raise AssertionError(f"{e}\n{w.tail(80)}\n{cluster.logs()}") from e
        out = check_promise(p, batch, photos, s3, BUCKET, PREFIX, max_processed=3, starts_may_be_lost=True)
        assert w.proc is not None and w.proc.poll() is None, w.tail()
        # (The lost results were done again: the batch completed from below ``acknowledged``.)
        recovered = {k.decode(): int(v) for k, v in p.redis.hgetall(METRICS_KEY).items() if k.startswith(b"recovered")}
        print(
            f"\nlost at failover: {acknowledged - lost_to} results; recovered deliveries: {recovered}; "
            f"complete {time.monotonic() - killed_at:.1f}s after the kill"
        )
        assert len(out.statuses) == len(photos.ids)
    finally:
        w.kill()


# --- what replication cannot promise ----------------------------------------------------------------


@pytest.mark.integration
def test_submit_returns_once_a_replica_has_the_batch_and_fails_when_none_acknowledges(
    cluster: SentinelCluster, s3_server: S3Server, photos: PhotoSet, model_dir: Path
) -> None:
    env = env_for(cluster, s3_server, photos, model_dir)
    p = producer_for(env)
    replica = cluster.replica
    assert replica is not None and replica.proc is not None
    on_replica = redis.Redis(port=replica.port)

    first = p.submit(spec(photos, 4))
    # WAIT returned: the replica has the batch record and its published mark already, not eventually.
    assert on_replica.hget(key("batch", first), "published") == b"2"
    queued = sum(on_replica.llen(k) for k in on_replica.scan_iter(match=f"{p.settings.queue}*", _type="list"))
    assert queued == 2  # and both chunk messages, published before the mark

    os.kill(replica.proc.pid, signal.SIGSTOP)  # the replica stops acknowledging (a stall, a partition)
    try:
        started = time.monotonic()
        with pytest.raises(ReplicationError, match="0 of 1 replicas"):
            p.submit(spec(photos, 4))
        assert time.monotonic() - started >= p.settings.redis_replica_ack_timeout_ms / 1000
        # `assetq submit` says so and fails (standard output, the batch id for scripts, stays empty).
        submitted = cli(env, "submit", str(photos.path(photos.good[0])))
        assert submitted.returncode == 1 and "0 of 1 replicas" in submitted.stderr, submitted
        assert submitted.stdout == "", submitted
        # Asking for no acknowledgement is the operator's explicit choice: then submit does not wait.
        unconfirmed = producer_for({**env, "ASSETQ_REDIS_REPLICA_ACKS": "0"})
        started = time.monotonic()
        unconfirmed.submit(spec(photos, 4))
        assert time.monotonic() - started < 1.5
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
