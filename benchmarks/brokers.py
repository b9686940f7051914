"""Section "brokers": the faces job over Redis, Redis with Sentinel and RabbitMQ, side by side in one run.

For each broker, with batch state and results in Redis as always:

* enqueue rate: ``Producer.submit`` of one-asset jobs to a queue no worker consumes;
* end to end: the faces job on the small photos, submit -> every result, through two
  workers of one process each (warm);
* a worker's death to redelivery: one chunk runs on one of the two workers; that whole
  worker is SIGKILLed, and the clock runs until the survivor starts the chunk again (the
  chunk's delivery count in the store goes up), then until the batch is complete.

Every service is a real process on loopback: a private redis-server, a master + replica +
3 sentinels (``tools/testbed/sentinel.py``), a fresh vhost on the local RabbitMQ
(``tools/testbed/rabbit.py``, skipped with a note when RabbitMQ is not running).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Run, State, cpu_seconds, progress, table
from benchmarks.face_sets import FACE_SETS, cycled, distinct_photos
from benchmarks.faces import faces_tasks
from config.settings import Settings
from contract.keys import key
from producer import Producer
from tools.testbed.services import RedisServer, WorkerProcess, wait_for

ENQUEUE_JOBS = (2000, 200)  # full, --quick
E2E_IMAGES = (120, 24)
KILL_IMAGES = 8  # one chunk of 12 MP photos: a few seconds of work for one process


@dataclass
class BrokerFigures:
    name: str
    enqueue_per_s: float
    images_per_s: float
    redelivery_s: float
    complete_after_kill_s: float


@contextmanager
def _redis() -> Iterator[tuple[str, str]]:
    server = RedisServer().start()
    try:
        yield server.url, server.url
    finally:
        server.stop()


@contextmanager
def _sentinel() -> Iterator[tuple[str, str]]:
    from tools.testbed.sentinel import SentinelCluster

    cluster = SentinelCluster().start()
    try:
        yield cluster.url, cluster.url
    finally:
        cluster.stop()


@contextmanager
def _rabbitmq() -> Iterator[tuple[str, str]]:
    from tools.testbed.rabbit import RabbitVhost

    store = RedisServer().start()
    try:
        with RabbitVhost() as vhost:
            yield store.url, vhost.url
    finally:
        store.stop()


BROKERS: dict[str, Callable[[], AbstractContextManager[tuple[str, str]]]] = {
    "Redis": _redis,
    "Redis + Sentinel (1 replica, 3 sentinels)": _sentinel,
    "RabbitMQ (quorum queues)": _rabbitmq,
}


def _rabbitmq_up() -> bool:
    try:
        from tools.testbed.rabbit import listening
    except ImportError:
        return False
    return listening()


def _env(run: Run, redis_url: str, broker_url: str, roots: list[Path], node: str) -> dict[str, str]:
    return {
        "ASSETQ_REDIS_URL": redis_url,
        "ASSETQ_BROKER_URL": broker_url,
        "ASSETQ_MODEL_DIR": str(run.env.source_model_dir),
        "ASSETQ_ALLOWED_ROOTS": json.dumps([str(r.resolve()) for r in roots]),
        "ASSETQ_INTRA_OP_THREADS": str(run.intra_op_threads),
        "ASSETQ_NODE": node,
    }


def _assets(paths: list[Path], tag: str) -> list[dict[str, Any]]:
    return [{"id": f"{tag}-{i}", "uri": p.resolve().as_uri()} for i, p in enumerate(paths)]


def _busiest(workers: list[WorkerProcess]) -> WorkerProcess:
    """The worker whose pool process is using the CPU now (the one running the chunk)."""

    def cpu(w: WorkerProcess) -> float:
        return sum(cpu_seconds(pid) for pid in w.children())

    before = [cpu(w) for w in workers]
    time.sleep(0.3)  # a sampling window, not a wait for a condition
    deltas = [cpu(w) - b for w, b in zip(workers, before, strict=True)]
    return workers[deltas.index(max(deltas))]


def _measure(run: Run, name: str, redis_url: str, broker_url: str, work: Path) -> BrokerFigures:
    quick = run.sizes.photos_quick
    small = distinct_photos(run.env.work, run.env.wheel_cache, FACE_SETS[1])
    big = distinct_photos(run.env.work, run.env.wheel_cache, FACE_SETS[2])
    roots = [small[0].parent, big[0].parent]
    tasks = faces_tasks()
    base = Settings(
        _env_file=None,
        redis_url=redis_url,
        broker_url=broker_url,
        model_dir=run.env.source_model_dir,
        allowed_roots=[str(r) for r in roots],
    )
    idle = Producer(settings=base.model_copy(update={"queue": f"bench-idle-{uuid.uuid4().hex[:6]}"}))
    spec = {"assets": _assets(small[:1], "e"), "tasks": tasks}
    jobs = ENQUEUE_JOBS[quick]
    progress(f"brokers, {name}: enqueue rate ({jobs} jobs)")
    idle.submit({**spec, "assets": _assets(small[:1], "warm")})
    t0 = time.perf_counter()
    for _ in range(jobs):
        idle.submit(spec)
    enqueue_per_s = jobs / (time.perf_counter() - t0)
    with ExitStack() as stack:
        workers = []
        for n in range(2):
            env = _env(run, redis_url, broker_url, roots, f"bench-{n}-{uuid.uuid4().hex[:4]}@host")
            w = WorkerProcess(env=env, concurrency=1, log=work / f"{name.split()[0]}-{n}.log").start()
            stack.callback(w.stop)
            workers.append(w)
        producer = Producer(settings=base)
        progress(f"brokers, {name}: warming two workers, then the faces job end to end")
        _run_batch(producer, _assets(small, "warm"), tasks)
        _run_batch(producer, _assets(big[:2], "warm-big"), tasks)
        images = cycled(small, E2E_IMAGES[quick])
        images_per_s = len(images) / _run_batch(producer, _assets(images, f"e2e-{uuid.uuid4().hex[:4]}"), tasks)
        progress(f"brokers, {name}: killing the worker that runs a chunk")
        redelivery_s, complete_s = _kill_and_time(producer, workers, _assets(cycled(big, KILL_IMAGES), "kill"), tasks)
    return BrokerFigures(name, enqueue_per_s, images_per_s, redelivery_s, complete_s)


def _run_batch(producer: Producer, assets: list[dict[str, Any]], tasks: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    batch = producer.submit({"assets": assets, "tasks": tasks})
    status = producer.wait(batch, timeout_s=900)
    if status["ok"] != len(assets):
        raise RuntimeError(f"brokers: batch {batch} ended {status}")
    return time.perf_counter() - t0


def _kill_and_time(
    producer: Producer, workers: list[WorkerProcess], assets: list[dict[str, Any]], tasks: dict[str, Any]
) -> tuple[float, float]:
    """(kill -> the chunk started again, kill -> batch complete) for one chunk on one of the workers."""
    batch = f"kill-{uuid.uuid4().hex[:8]}"
    output = {"redis": True}
    producer.store.create_batch(batch, assets, tasks, output)
    chunk = f"{batch}-0"
    producer.send_chunk(batch, chunk, assets, tasks, output)  # one chunk: one worker runs it, the other idles

    def deliveries() -> int:
        return int(producer.redis.hget(key("chunk", chunk), "deliveries") or 0)

    wait_for(lambda: deliveries() >= 1, 120, f"{chunk} started")
    victim = _busiest(workers)
    victim.kill()
    killed = time.perf_counter()
    wait_for(lambda: deliveries() >= 2, 300, f"{chunk} delivered again")
    redelivered = time.perf_counter() - killed
    wait_for(lambda: bool((producer.status(batch) or {}).get("complete")), 300, f"{batch} complete")
    return redelivered, time.perf_counter() - killed


def section(run: Run, state: State) -> None:
    work = run.env.work / "brokers"
    work.mkdir(parents=True, exist_ok=True)
    figures: list[BrokerFigures] = []
    notes: list[str] = []
    for name, start in BROKERS.items():
        if name.startswith("RabbitMQ") and not _rabbitmq_up():
            notes.append(f"{name}: not measured, no RabbitMQ listening on 127.0.0.1:5672")
            continue
        with start() as (redis_url, broker_url):
            figures.append(_measure(run, name, redis_url, broker_url, work))
    run.say("\n## Brokers: the faces job over each, same run\n")
    run.say(
        "Batch state and results in Redis in every case. Enqueue: `Producer.submit` of one-asset jobs to a queue "
        "no worker consumes. End to end: the faces job on small photos through two workers of one process each. "
        "Death to redelivery: one chunk of 12 MP photos running on one worker; SIGKILL of that whole worker, until "
        "the idle survivor on the same machine starts the chunk again, and until the batch is complete.\n"
    )
    base = figures[0] if figures else None
    rows = [
        [
            f.name,
            f"{f.enqueue_per_s:.0f}" + (f" ({f.enqueue_per_s / base.enqueue_per_s:.2f}x)" if base else ""),
            f"{f.images_per_s:.1f}" + (f" ({f.images_per_s / base.images_per_s:.2f}x)" if base else ""),
            f"{f.redelivery_s:.2f}",
            f"{f.complete_after_kill_s:.1f}",
        ]
        for f in figures
    ]
    run.say(
        table(["broker", "enqueue jobs/s", "faces job images/s", "death -> redelivery s", "death -> complete s"], rows)
    )
    for note in notes:
        run.say(f"- {note}")
