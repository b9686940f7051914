"""A whole worker dying (kill -9, the out-of-memory killer, a lost machine), at defaults, against real processes.

Redis runs with AOF (``appendfsync always``), workers run ``assetq worker`` with the default
``ASSETQ_WORKER_DEAD_AFTER_S`` (30 s). Every test ends with the promise checked asset by
asset (``tests/faultinject/scenario.py``): exactly one final state each, counters exact, one
S3 object per finished asset equal to its Redis result, one stream entry per outcome.
"""

from __future__ import annotations

import base64
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from config.settings import Settings
from contract.keys import CONSUMERS_META, METRICS, held_key
from producer import Producer
from tests.faultinject.scenario import (
    TASKS,
    PhotoSet,
    check_promise,
    chunks_in_flight,
    done,
    face_model_dir,
    make_photos,
    producer_for,
    wait_until,
    worker_env,
)
from tests.faultinject.sitecustomize import CHILD_MOMENTS, KILLS_KEY, MAIN_MOMENTS
from tools.testbed.services import RedisServer, S3Server, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BUCKET = "assetq-death"
PREFIX = "ml/"
DEAD_AFTER_S = Settings.model_fields["worker_dead_after_s"].default  # the default, as users run it
# Each moment reached for the n-th time in a worker's life (a pool child's for the task moments):
# the task moments from the 2nd chunk on, so that no chunk is killed twice in a row by the plan
# (three unfinished deliveries would isolate it as poison, which is right, but not this test's point).
FIRST_NTH = {**dict.fromkeys(MAIN_MOMENTS, 1), **dict.fromkeys(CHILD_MOMENTS, 2)}
KILL_PLAN = [(moment, FIRST_NTH[moment] + k) for k in range(3) for moment in (*MAIN_MOMENTS, *CHILD_MOMENTS)]


@dataclass
class Stage:
    """An AOF Redis, the S3 endpoint, photos, and the workers a test started."""

    redis: RedisServer
    s3_url: str
    s3: Any
    photos: PhotoSet
    workers: list[WorkerProcess] = field(default_factory=list)

    def env(self, chunk_size: int, **settings: Any) -> dict[str, str]:
        env = worker_env(self.redis.url, self.s3_url, self.photos.root, face_model_dir(), f"death-{time.time_ns()}")
        env["ASSETQ_CHUNK_SIZE"] = str(chunk_size)
        env.update({f"ASSETQ_{k.upper()}": str(v) for k, v in settings.items()})
        return env

    def worker(self, env: dict[str, str], wait_ready: bool = True, wrapper: list[str] | None = None) -> WorkerProcess:
        w = WorkerProcess(env=env, wrapper=wrapper or [])
        self.workers.append(w)
        return w.start(wait_ready=wait_ready)

    def submit(self, p: Producer) -> str:
        output = {"s3": {"bucket": BUCKET, "prefix": PREFIX}}
        return p.submit({"assets": self.photos.assets(), "tasks": TASKS, "output": output})

    def wait(self, p: Producer, batch: str, timeout: float) -> dict[str, Any]:
        try:
            return p.wait(batch, timeout_s=timeout, poll_s=0.2)
        except TimeoutError as e:
            logs = "\n".join(f"--- {w.name}\n{w.tail(30)}" for w in self.workers[-3:])
            raise AssertionError(f"{e}\n{logs}") from e

    def check(self, p: Producer, batch: str, max_processed: int) -> Any:
        return check_promise(p, batch, self.photos, self.s3, BUCKET, PREFIX, max_processed)


@contextmanager
def staged(s3_server: S3Server, photos: PhotoSet) -> Iterator[Stage]:
    server = RedisServer(aof=True).start()
    client = s3_server.client()
    if BUCKET not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    stage = Stage(server, s3_server.url, client, photos)
    try:
        yield stage
    finally:
        for w in stage.workers:
            w.kill()
        server.stop()


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory) -> PhotoSet:
    return make_photos(tmp_path_factory.mktemp("death-photos"), count=96)


@pytest.fixture(scope="module")
def few_photos(tmp_path_factory: pytest.TempPathFactory) -> PhotoSet:
    return make_photos(tmp_path_factory.mktemp("death-few"), count=36)


def consumers(r: redis.Redis) -> dict[str, dict[str, Any]]:
    return {k.decode(): json.loads(v) for k, v in r.hgetall(CONSUMERS_META).items()}


def new_consumer(r: redis.Redis, known: set[str], timeout: float = 90) -> str:
    """The consumer id of a worker just started (the one that was not registered before)."""
    found: list[str] = []

    def appeared() -> bool:
        found[:] = sorted(set(consumers(r)) - known)
        return bool(found)

    wait_until(appeared, timeout, "the new worker's consumer to register", interval=0.1)
    return found[0]


def held_by(r: redis.Redis, consumer: str) -> list[str]:
    """Chunk ids (from the Flower arguments of each message) a consumer holds."""
    return sorted(held_assets(r, consumer))


def held_assets(r: redis.Redis, consumer: str) -> dict[str, list[str]]:
    """Chunk id -> its asset ids, read from the messages a consumer holds.

    From the messages themselves, not from arithmetic on chunk numbers: with several worker processes
    live at submit, a batch's last chunks are smaller (contract/chunking.py).
    """
    out: dict[str, list[str]] = {}
    for raw in r.hvals(held_key(consumer)):
        message = json.loads(raw.partition(b"\n")[2])
        chunk = str(message.get("headers", {}).get("argsrepr", "")).rpartition("chunk=")[2]
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        out[chunk] = [str(a["id"]) for a in kwargs["payload"]["assets"]]
    return out


def test_whole_worker_killed_at_24_moments_of_one_batch(s3_server: S3Server, many_photos: PhotoSet) -> None:
    """The whole worker SIGKILLed again and again, each time at another moment, and started again."""
    with staged(s3_server, many_photos) as stage:
        env = stage.env(chunk_size=2)
        p = producer_for(env)
        batch = stage.submit(p)
        kills: list[str] = []
        for moment, nth in KILL_PLAN:
            w = stage.worker({**env, "ASSETQ_FAULT_KILL_AT": moment, "ASSETQ_FAULT_KILL_NTH": str(nth)}, False)
            assert w.proc is not None

            def died_or_done(proc: Any = w.proc) -> bool:
                return proc.poll() is not None or bool(p.status(batch)["complete"])

            wait_until(died_or_done, 120, f"the kill at {moment} #{nth}")
            if w.proc.poll() is None:
                break  # the batch finished before this plan's moment came
            kills.append(moment)
        last_kill = time.monotonic()
        stage.worker(env)
        stage.wait(p, batch, 120)
        finished_s = time.monotonic() - last_kill

        logged = [k.decode().split()[0] for k in p.redis.lrange(KILLS_KEY, 0, -1)]
        assert logged == kills and len(kills) >= 20, (logged, kills)
        assert set(kills) == {*MAIN_MOMENTS, *CHILD_MOMENTS}, kills
        out = stage.check(p, batch, max_processed=4)
        assert sum(out.processed.values()) <= len(many_photos.ids) + 2 * len(kills)
        recovered = {k.decode(): int(v) for k, v in p.redis.hgetall(METRICS).items() if k.startswith(b"recovered|")}
        assert recovered.get("recovered|process_gone", 0) >= len(kills) - kills.count("acked"), recovered
        assert "recovered|lease_expired" not in recovered  # a restart on this machine never waits for the lease
        # after the last kill: the dead worker's chunk back at once, then the rest of the batch
        assert finished_s < DEAD_AFTER_S + 60, finished_s


def test_two_workers_the_survivor_recovers_the_dead_ones_chunks(s3_server: S3Server, few_photos: PhotoSet) -> None:
    """One of two workers killed mid-task, again and again; the survivor puts its chunk back within the bound."""
    with staged(s3_server, few_photos) as stage:
        env = stage.env(chunk_size=2, fault_delay_s=1.5)  # one slow chunk at a time each: the victim is mid-task
        r = redis.Redis.from_url(env["ASSETQ_REDIS_URL"])
        stage.worker(env)
        survivor = new_consumer(r, set())
        p = producer_for(env)
        batch = stage.submit(p)
        recovery_s: list[float] = []
        killed: dict[str, list[str]] = {}  # chunk id -> its assets, as the victim held them
        while len(recovery_s) < 4 and done(p, batch) < len(few_photos.ids) - 6:
            known = set(consumers(r))
            victim = stage.worker(env)
            victim_id = new_consumer(r, known)
            holding: dict[str, list[str]] = {}

            def victim_busy(vid: str = victim_id, into: dict[str, list[str]] = holding) -> bool:
                into.clear()
                into.update(held_assets(r, vid))
                return bool(into) and bool(held_by(r, survivor))

            wait_until(victim_busy, 60, "both workers holding a chunk")
            victim.kill()
            t0 = time.monotonic()
            killed.update(holding)
            # running again: the survivor holds it (or it is already done)
            wait_until(
                lambda h=dict(holding): all(c in held_by(r, survivor) or assets_done(p, batch, h[c]) for c in h),
                DEAD_AFTER_S + 10,
                f"the survivor to take {sorted(holding)}",
                interval=0.05,
            )
            recovery_s.append(time.monotonic() - t0)
        stage.wait(p, batch, 120)

        assert len(recovery_s) >= 3, recovery_s
        assert max(recovery_s) <= DEAD_AFTER_S + 3.0, recovery_s  # the bound: a lease plus one chunk
        out = stage.check(p, batch, max_processed=1 + len(recovery_s))
        # nothing ran twice while both lived: only the killed chunks' assets were worked on again
        again = {a for a, n in out.attempts.items() if n > 1}
        killed_assets = {a for assets in killed.values() for a in assets}
        assert again <= killed_assets, (again - killed_assets, sorted(killed))
        print(f"\nrecovery-s same-machine: {' '.join(f'{x:.2f}' for x in recovery_s)} ({summarise(recovery_s)})")


def test_a_worker_on_another_machine_is_recovered_when_its_lease_lapses(
    s3_server: S3Server, few_photos: PhotoSet
) -> None:
    """The victim runs in a PID namespace of its own, as on another machine: only its lease can tell it died."""
    with staged(s3_server, few_photos) as stage:
        env = stage.env(chunk_size=2, fault_delay_s=1.5)
        r = redis.Redis.from_url(env["ASSETQ_REDIS_URL"])
        stage.worker(env)
        survivor = new_consumer(r, set())
        stage.worker(env, wrapper=["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
        victim_id = new_consumer(r, {survivor})
        assert consumers(r)[victim_id]["node"] != consumers(r)[survivor]["node"]
        p = producer_for(env)
        batch = stage.submit(p)
        # Held and started (its delivery counted): a chunk only fetched is handed back too, but has no
        # first attempt to count.
        wait_until(
            lambda: bool(held_by(r, victim_id)) and set(held_by(r, victim_id)) <= set(chunks_in_flight(r, batch)),
            60,
            "the victim to run a chunk",
        )
        holding = held_assets(r, victim_id)
        stage.workers[-1].kill()
        t0 = time.monotonic()
        wait_until(lambda: not r.exists(held_key(victim_id)), DEAD_AFTER_S + 10, "the lease to lapse", interval=0.05)
        lapsed_s = time.monotonic() - t0
        stage.wait(p, batch, 120)

        # not before the lease could have lapsed (its last beat was at most one heartbeat before the kill)
        assert DEAD_AFTER_S - 6 <= lapsed_s <= DEAD_AFTER_S + 2, lapsed_s
        out = stage.check(p, batch, max_processed=2)
        assert all(out.attempts[a] >= 2 for assets in holding.values() for a in assets)
        assert int(p.redis.hget(METRICS, "recovered|lease_expired") or 0) >= len(holding)
        print(f"\nrecovery-s other-machine: {lapsed_s:.2f}")


def test_a_chunk_running_three_leases_long_on_a_live_worker_is_not_redelivered(
    s3_server: S3Server, few_photos: PhotoSet
) -> None:
    """A long task on a heartbeating worker stays with it, however long it runs (no visibility timeout).

    Here the lease is short (5 s) and the batch is one chunk that runs for 16 s, with a second, idle
    worker ready to take anything handed back: a shorter lease only makes a wrong redelivery more likely.
    The second worker starts after the submit, so that the producer, seeing one worker process, cuts
    the batch into one chunk (with two it would cut smaller chunks towards the end, contract.chunking).
    """
    with staged(s3_server, few_photos) as stage:
        photos = few_photos
        env = stage.env(
            chunk_size=len(photos.ids), fault_delay_s=16, worker_dead_after_s=5, soft_time_limit_s=40, time_limit_s=50
        )
        r = redis.Redis.from_url(env["ASSETQ_REDIS_URL"])
        stage.worker(env)
        first = new_consumer(r, set())
        p = producer_for(env)
        batch = stage.submit(p)
        stage.worker(env)
        new_consumer(r, {first})
        stage.wait(p, batch, 90)
        out = stage.check(p, batch, max_processed=1)
        assert set(out.attempts.values()) == {1}, out.attempts  # delivered once, to one worker
        assert not [k for k in p.redis.hkeys(METRICS) if k.startswith(b"recovered|")]


def assets_done(p: Producer, batch: str, assets: list[str]) -> bool:
    statuses = p.store.statuses(batch)
    return all(a in statuses for a in assets)


def summarise(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.2f} s, max {max(xs):.2f} s over {len(xs)} kills"


def test_an_idle_worker_does_not_busy_poll_redis(s3_server: S3Server, few_photos: PhotoSet) -> None:
    """Idle, a worker blocks on its wake lists: a handful of Redis commands a second, whatever the queue count."""
    with staged(s3_server, few_photos) as stage:
        env = stage.env(chunk_size=4)
        r = redis.Redis.from_url(env["ASSETQ_REDIS_URL"])
        stage.worker(env)
        new_consumer(r, set())
        p = producer_for(env)
        stage.wait(p, stage.submit(p), 60)  # warm and idle now

        # Round trips from clients, as MONITOR shows them (commands a script runs are marked "lua" there).
        window_s = 5.0
        round_trips = 0
        with r.monitor() as m:
            t0 = time.monotonic()
            for event in m.listen():
                if "lua" not in str(event.get("client_type", "")) and "lua" not in str(event.get("client_address")):
                    round_trips += 1
                if time.monotonic() - t0 > window_s:  # measuring a rate over a window, not waiting for a condition
                    break
        rate = round_trips / (time.monotonic() - t0)
        assert rate < 10, f"{rate:.1f} Redis round trips/s while idle"
        # and a new message is still taken at once, not after a poll interval
        t0 = time.monotonic()
        batch = p.submit({"assets": few_photos.assets()[:1], "tasks": TASKS})
        stage.wait(p, batch, 30)
        assert time.monotonic() - t0 < 5


def test_an_idle_worker_rides_out_a_redis_turned_read_only(s3_server: S3Server, few_photos: PhotoSet) -> None:
    """An idle worker blocks in BRPOP, which a read-only replica refuses (and unblocks when a master turns
    replica): the worker waits it out instead of stopping with "Unrecoverable error"."""
    with staged(s3_server, few_photos) as stage:
        env = stage.env(chunk_size=4)
        r = redis.Redis.from_url(env["ASSETQ_REDIS_URL"])
        w = stage.worker(env)
        new_consumer(r, set())
        r.execute_command("REPLICAOF", "127.0.0.1", "1")  # a master that never answers: stays read-only
        try:
            wait_until(lambda: "Redis refuses the fetch" in w.log.read_text(), 30, "the worker to meet the refusal")
        finally:
            r.execute_command("REPLICAOF", "NO", "ONE")
        p = producer_for(env)
        stage.wait(p, stage.submit(p), 90)
        assert w.proc is not None and w.proc.poll() is None, w.tail()
        assert "Unrecoverable error" not in w.log.read_text()
        stage.check(p, p.store.recent_batches(1)[0], max_processed=1)
