"""Section "enqueue": the producer's enqueue rate against plain Celery's, on the same Redis.

Both send to a queue no worker consumes, so only the client side is timed;
the queue and the recorded batches are emptied afterwards. The two clients take turns for
``ROUNDS`` rounds and each keeps its best: one round of each, minutes apart, measured the
machine's mood as much as the clients (0.76x to 0.96x on the same code).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from celery import Celery

from benchmarks.common import Run, State, progress, table
from benchmarks.distributed import Deployment
from benchmarks.photos import small_photo
from producer import Producer

ENQUEUE_QUEUE = "assetq-bench-enqueue"  # a queue no worker consumes; emptied afterwards
NOOP_TASK = "assetq_bench.noop"
ROUNDS = 3


@dataclass
class Rate:
    what: str
    count: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def producer_enqueue_rate(producer: Producer, spec: dict[str, Any], jobs: int) -> Rate:
    """``Producer.submit`` of ``jobs`` one-asset jobs (validated, recorded, enqueued) to an idle queue."""
    t0 = time.perf_counter()
    for _ in range(jobs):
        producer.submit(spec)
    seconds = time.perf_counter() - t0
    _drop_bench_keys(producer)
    return Rate("assetq Producer.submit (1-asset job: validate + record batch + enqueue)", jobs, seconds)


def celery_noop_rate(app: Celery, jobs: int) -> Rate:
    """Plain Celery: ``send_task`` of a no-op task, same Redis, same serializer, same kind of queue."""
    t0 = time.perf_counter()
    for i in range(jobs):
        app.send_task(NOOP_TASK, kwargs={"x": i}, queue=ENQUEUE_QUEUE)
    seconds = time.perf_counter() - t0
    return Rate("plain Celery send_task (no-op task)", jobs, seconds)


def best_rates(deployment: Deployment, jobs: int, uri: str, tasks: dict[str, Any]) -> tuple[Rate, Rate]:
    """The best round of each client over ``ROUNDS`` alternating rounds of ``jobs // ROUNDS`` jobs."""
    settings = deployment.settings()
    app = Celery("assetq-bench-noop", broker=settings.broker, set_as_current=False)
    app.conf.update(task_serializer="json", accept_content=["json"], task_create_missing_queues=True)
    producer = Producer(settings=deployment.settings(queue=ENQUEUE_QUEUE))
    spec = {"assets": [{"id": "a", "uri": uri}], "tasks": tasks, "output": {"redis": True}}
    app.send_task(NOOP_TASK, kwargs={"x": 0}, queue=ENQUEUE_QUEUE)  # connect, declare
    producer.submit(spec)  # connect, first catalog read
    per_round = max(1, jobs // ROUNDS)
    celery: list[Rate] = []
    assetq: list[Rate] = []
    for _ in range(ROUNDS):
        celery.append(celery_noop_rate(app, per_round))
        assetq.append(producer_enqueue_rate(producer, spec, per_round))
    app.close()
    return max(celery, key=lambda r: r.per_s), max(assetq, key=lambda r: r.per_s)


def _drop_bench_keys(producer: Producer) -> None:
    """Empty the idle queue and the recorded batches, so later sections start clean."""
    r = producer.redis
    r.delete(ENQUEUE_QUEUE)
    for pattern in ("assetq:batch:*",):
        for key in r.scan_iter(match=pattern, count=1000):
            r.delete(key)


def section(run: Run, state: State) -> None:
    """Jobs/s of plain Celery and of ``Producer.submit``, on the headline's worker's Redis."""
    deployment = state.deployment
    assert deployment is not None, "the enqueue section uses the headline's Redis"
    progress(f"enqueue rates ({run.sizes.enqueue_jobs} jobs each, {ROUNDS} alternating rounds)")
    uri = small_photo(run.env.work).as_uri()
    celery, producer = best_rates(deployment, run.sizes.enqueue_jobs, uri, run.env.tasks())
    run.say(
        f"\n## Enqueue rate, same Redis, {run.sizes.enqueue_jobs} jobs each "
        f"(best of {ROUNDS} alternating rounds of {celery.count})\n"
    )
    run.say(
        table(
            ["client", "jobs", "jobs/s", "vs plain Celery"],
            [[r.what, r.count, r.per_s, f"{r.per_s / celery.per_s:.2f}x"] for r in (celery, producer)],
        )
    )
    run.ratios["enqueue_vs_celery"] = producer.per_s / celery.per_s
