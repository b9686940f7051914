"""How cost grows: chunk size, faces per image, the producer's enqueue rate, worker memory over many assets."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery

from benchmarks.common import average_timings
from benchmarks.distributed import Deployment
from benchmarks.inprocess import InProcess
from producer import Producer

ENQUEUE_QUEUE = "assetq-bench-enqueue"  # a queue no worker consumes; emptied afterwards
NOOP_TASK = "assetq_bench.noop"


@dataclass
class Rate:
    what: str
    count: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def chunk_size_sweep(
    make: Callable[[int], InProcess], assets: list[dict[str, Any]], tasks: dict[str, Any], sizes: tuple[int, ...]
) -> list[tuple[int, float, dict[str, float]]]:
    """(chunk size, images/s, per-image step ms) for each size, the same assets every time."""
    out = []
    for size in sizes:
        runner = make(size)
        try:
            runner.run(assets[: max(2, size)], tasks)  # warm this chunk size's shapes
            wall, results = runner.run(assets, tasks)
        finally:
            runner.close()
        out.append((size, len(assets) / wall, average_timings(results)))
    return out


def faces_sweep(
    runner: InProcess, assets_by_count: dict[int, list[dict[str, Any]]], tasks: dict[str, Any]
) -> list[tuple[int, int, float, float]]:
    """(faces per image asked, faces found per image, images/s, recognition ms per face) per face count."""
    out = []
    for count, assets in assets_by_count.items():
        runner.run(assets[:2], tasks)
        wall, results = runner.run(assets, tasks)
        found = sum(len(r.get("faces", [])) for r in results) / len(results)
        rec_ms = average_timings(results).get("facial-recognition.recognition", 0.0)
        out.append((count, round(found), len(assets) / wall, rec_ms / found if found else 0.0))
    return out


def producer_enqueue_rate(deployment: Deployment, jobs: int, uri: str, tasks: dict[str, Any]) -> Rate:
    """``Producer.submit`` of ``jobs`` one-asset jobs (validated, recorded, enqueued) to an idle queue."""
    producer = Producer(settings=deployment.settings(queue=ENQUEUE_QUEUE))
    spec = {"assets": [{"id": "a", "uri": uri}], "tasks": tasks, "output": {"redis": True}}
    producer.submit(spec)  # connect, first catalog read
    t0 = time.perf_counter()
    for _ in range(jobs):
        producer.submit(spec)
    seconds = time.perf_counter() - t0
    _drop_bench_keys(producer)
    return Rate("assetq Producer.submit (1-asset job: validate + record batch + enqueue)", jobs, seconds)


def celery_noop_rate(deployment: Deployment, jobs: int) -> Rate:
    """Plain Celery: ``send_task`` of a no-op task, same Redis, same serializer, same kind of queue."""
    settings = deployment.settings()
    app = Celery("assetq-bench-noop", broker=settings.broker, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], task_create_missing_queues=True)
    app.send_task(NOOP_TASK, kwargs={"x": 0}, queue=ENQUEUE_QUEUE)
    t0 = time.perf_counter()
    for i in range(jobs):
        app.send_task(NOOP_TASK, kwargs={"x": i}, queue=ENQUEUE_QUEUE)
    seconds = time.perf_counter() - t0
    app.close()
    return Rate("plain Celery send_task (no-op task)", jobs, seconds)


def _drop_bench_keys(producer: Producer) -> None:
    """Empty the idle queue and the recorded batches, so later sections start clean."""
    r = producer.redis
    r.delete(ENQUEUE_QUEUE)
    for pattern in ("assetq:batch:*",):
        for key in r.scan_iter(match=pattern, count=1000):
            r.delete(key)


def memory_growth(
    deployment: Deployment, assets: list[dict[str, Any]], tasks: dict[str, Any], total: int, batch_size: int = 500
) -> tuple[float, float, float]:
    """(worker RSS MiB before, after, seconds) for ``total`` assets cycled from ``assets`` in batches."""
    producer = deployment.producer()
    before = deployment.worker_rss_mb()
    t0 = time.perf_counter()
    done = 0
    while done < total:
        n = min(batch_size, total - done)
        batch = [{**assets[(done + i) % len(assets)], "id": f"m{done + i}-{uuid.uuid4().hex[:6]}"} for i in range(n)]
        deployment.run(producer, batch, tasks)
        done += n
    seconds = time.perf_counter() - t0
    return before, deployment.worker_rss_mb(), seconds
