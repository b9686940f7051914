"""``assetq.process_chunk``: run one chunk of a batch and write its results.

Every delivery ends in exactly one of these, so no asset is left pending:

* results written (``ok`` and ``skipped`` records; permanent per-asset problems
  are already ``skipped`` records from the pipeline), message acked;
* a transient error (storage down, device out of memory, soft time limit):
  a Celery retry with exponential backoff and jitter, and after
  ``max_retries`` a dead letter with the chunk's full payload, its assets
  ``failed``;
* an unexpected error (a bug, a broken model file): dead letter, assets
  ``failed``, so it can be replayed once fixed instead of retried blindly;
* a payload that is not a chunk: dead letter under ``_invalid``;
* a worker killed mid-task (SIGKILL, out-of-memory killer, hard time limit):
  the message is requeued by Celery (``reject_on_worker_lost``,
  ``acks_on_timeout=False``) or, when the whole worker died, put back by
  another worker once its lease lapses or its process is found gone
  (``worker/leases.py``). Deliveries that never finished are counted per chunk; past
  ``max_deliveries`` a multi-asset chunk is split into one-asset chunks so
  the asset that kills workers is isolated, and a one-asset chunk is
  dead-lettered as ``poison`` instead of looping. On RabbitMQ the broker counts
  (``x-delivery-count``) and moves a chunk at its delivery limit to the
  dead-letter queue, where this task splits it or records it as ``poison``
  (``contract/amqp.py``).

While Redis itself is unreachable, or refuses writes (out of memory, a
read-only replica), nothing can be recorded, so the task waits for it (backoff
with jitter, up to its soft time limit) rather than fail; if it still cannot
record an outcome it leaves the message to be delivered again (and the broker
transport, ``worker/broker.py``, waits until Redis takes it back).
Results are keyed by (batch, asset), so running a chunk twice never counts twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import redis
from celery import Task
from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded
from kombu.exceptions import OperationalError

from contract.amqp import delivery_limit, is_amqp
from contract.errors import PayloadError
from contract.metrics import record_chunk
from contract.names import count_statuses
from contract.payload import PROCESS_CHUNK, ChunkPayload
from worker.app import app
from worker.backoff import WRITE_REFUSED, backoff_s
from worker.bootstrap import context
from worker.pipeline.errors import TransientError
from worker.sinks import write_all
from worker.tasks import deliveries as dl
from worker.tasks.deadletter import dead_letter_chunk, dead_letter_invalid

log = logging.getLogger(__name__)
T = TypeVar("T")

# Waiting for Redis to come back (it restarts, fails over): first pause and cap, in seconds.
REDIS_WAIT_FIRST_S = 0.5
REDIS_WAIT_MAX_S = 5.0
# Pause before handing back a message no outcome could be recorded for, so a Redis that
# refuses writes (out of memory, read-only replica) is not hammered by instant redeliveries.
REQUEUE_PAUSE_S = 1.0
# Share of the soft time limit a task spends waiting for Redis before it hands its message back.
REDIS_WAIT_SHARE = 0.8


def redis_down(e: BaseException) -> bool:
    """Redis (the broker and the result store) unreachable or refusing writes (out of memory, read-only),
    directly or behind a sink's TransientError: all are waited out the same way."""
    down = (redis.ConnectionError, redis.TimeoutError, OperationalError, *WRITE_REFUSED)
    return isinstance(e, down) or (isinstance(e, TransientError) and isinstance(e.__cause__, down))


def when_redis_answers(call: Callable[[], T], deadline: float) -> T:
    """Run ``call``, waiting out a Redis outage until ``deadline`` (monotonic); other errors pass through."""
    tries = 0
    while True:
        try:
            return call()
        except Exception as e:
            if not redis_down(e):
                raise
            delay = backoff_s(tries, REDIS_WAIT_FIRST_S, REDIS_WAIT_MAX_S)
            if time.monotonic() + delay > deadline:
                raise
            log.warning("Redis unreachable or refusing writes (%s); trying again in %.1fs", e, delay)
            time.sleep(delay)
            tries += 1


@app.task(
    bind=True,
    name=PROCESS_CHUNK,
    acks_late=True,
    reject_on_worker_lost=True,
    acks_on_timeout=False,  # a hard time limit kills the child: requeue, the delivery count bounds it
)
def process_chunk(self: Task, payload: Any = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        return _process(self, payload, args, kwargs)
    except Retry:
        raise
    except Exception as e:
        # Nothing could be recorded (Redis still down at the soft time limit, say): acking
        # would lose the chunk, so hand the message back. Its delivery count still bounds it.
        log.exception("no outcome recorded for this delivery; requeueing it")
        # The soft time limit may fire during this pause: a task that failed is acked, so
        # it must not escape and turn the hand-back into a loss.
        with contextlib.suppress(SoftTimeLimitExceeded):
            time.sleep(REQUEUE_PAUSE_S)
        raise Reject(f"no outcome recorded: {type(e).__name__}: {e}", requeue=True) from e


def _process(self: Task, payload: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    ctx = context()
    s = ctx.settings
    # Stop waiting for Redis a little before the soft time limit, so that giving up (handing the
    # message back) happens before the limit's exception can interrupt it.
    deadline = time.monotonic() + s.soft_time_limit_s * REDIS_WAIT_SHARE

    def redis_call(call: Callable[[], T]) -> T:
        return when_redis_answers(call, deadline)

    try:
        if args or kwargs:
            raise PayloadError("unexpected extra arguments")
        chunk = ChunkPayload.decode(payload)
    except PayloadError as e:
        problem = str(e)
        evidence = {"payload": payload, "args": list(args), "kwargs": kwargs}
        redis_call(lambda: dead_letter_invalid(ctx.store, self.request.id, "invalid_payload", problem, evidence))
        log.error("invalid payload dead-lettered: %s", problem)
        return {"dead_lettered": "invalid_payload", "reason": problem}

    batch_id, chunk_id = chunk.batch_id, chunk.chunk_id
    asset_ids = chunk.asset_ids
    broker = dl.broker_delivery(self.request)
    if broker.death_reason is not None:
        # RabbitMQ dead-lettered it at its delivery limit: delivered max_deliveries times, never finished.
        crashed = delivery_limit(s) + 1
        return _poison(self, chunk, crashed, redis_call, queue=broker.dead_lettered_from)
    returned = broker.count
    if returned is None:
        deliveries = redis_call(lambda: dl.delivery_started(ctx.redis, chunk_id, s.result_ttl_s))
    else:
        # RabbitMQ counts deliveries itself: assetq's count is the broker's.
        deliveries = redis_call(lambda: dl.delivery_seen(ctx.redis, chunk_id, returned + 1, s.result_ttl_s))
        if returned and redis_call(lambda: ctx.store.all_final(batch_id, asset_ids)):
            # Redelivered after its results were recorded (the channel closed before the ack reached
            # RabbitMQ: a consumer_timeout, a cut connection): done, not worth running again.
            log.warning("chunk %s redelivered (%d) with every result recorded; acknowledging it", chunk_id, returned)
            redis_call(lambda: dl.chunk_finished(ctx.redis, chunk_id))
            return {"batch_id": batch_id, "chunk_id": chunk_id, "already_recorded": len(asset_ids)}
    if deliveries > s.max_deliveries:
        return _poison(self, chunk, deliveries - 1, redis_call)
    redis_call(lambda: dl.count_assets(ctx.redis, batch_id, "attempts", asset_ids, s.result_ttl_s))

    t0 = time.perf_counter()
    try:
        results = ctx.pipeline.process(batch_id, chunk.assets, chunk.tasks)
        redis_call(lambda: dl.count_assets(ctx.redis, batch_id, "processed", asset_ids, s.result_ttl_s))
        redis_call(lambda: write_all(ctx.sinks, results, chunk.output))
    except (TransientError, SoftTimeLimitExceeded) as e:
        return _retry_or_give_up(self, chunk, e, redis_call)
    except Exception as e:
        if redis_down(e):
            raise  # not the chunk's fault, and nothing can be recorded: process_chunk hands it back
        log.exception("chunk %s failed unexpectedly; dead-lettering it", chunk_id)
        first = redis_call(lambda: dl.first_failed_at(ctx.redis, chunk_id))
        message = f"{type(e).__name__}: {e}"
        redis_call(lambda: dead_letter_chunk(ctx.store, chunk, "error", message, self.request.retries + 1, first))
        redis_call(lambda: dl.chunk_finished(ctx.redis, chunk_id))
        return {"batch_id": batch_id, "chunk_id": chunk_id, "dead_lettered": "error"}

    redis_call(lambda: dl.chunk_finished(ctx.redis, chunk_id))
    redis_call(lambda: record_chunk(ctx.redis, results))
    ctx.cache.evict_idle()
    counts = count_statuses(results)
    return {"batch_id": batch_id, "chunk_id": chunk_id, **counts, "ms": round((time.perf_counter() - t0) * 1000)}


def _retry_or_give_up(
    self: Task, chunk: ChunkPayload, e: BaseException, redis_call: Callable[[Callable[[], Any]], Any]
) -> dict[str, Any]:
    ctx = context()
    s = ctx.settings
    chunk_id = chunk.chunk_id
    first = redis_call(lambda: dl.delivery_retrying(ctx.redis, chunk_id, s.result_ttl_s))
    retries = self.request.retries
    if retries >= s.max_retries:
        message = f"{type(e).__name__}: {e}"
        failed = redis_call(lambda: dead_letter_chunk(ctx.store, chunk, "transient", message, retries + 1, first))
        redis_call(lambda: dl.chunk_finished(ctx.redis, chunk_id))
        log.error("chunk %s dead-lettered after %d tries: %s", chunk_id, retries + 1, message)
        return {"batch_id": chunk.batch_id, "chunk_id": chunk_id, "dead_lettered": "transient", "failed": failed}
    delay = backoff_s(retries, s.retry_backoff_s, s.retry_backoff_max_s)
    log.warning("chunk %s: %s; retry %d/%d in %.1fs", chunk_id, e, retries + 1, s.max_retries, delay)
    if is_amqp(s.broker):
        # RabbitMQ's native delayed delivery counts whole seconds (celery truncates): round up, so the
        # message never arrives before its ETA and waits in a worker that cannot prefetch past it.
        delay = float(math.ceil(delay))
    # ``retry`` publishes a new message (through the broker) and raises Retry when that worked.
    redis_call(lambda: self.retry(exc=e, countdown=delay, max_retries=s.max_retries, **chunk.describe()))
    raise AssertionError("unreachable: Task.retry always raises")


def _poison(
    self: Task,
    chunk: ChunkPayload,
    crashed: int,
    redis_call: Callable[[Callable[[], Any]], Any],
    queue: str | None = None,
) -> dict[str, Any]:
    """``crashed`` deliveries never finished: isolate the culprit, or dead-letter it.

    ``queue``: where the parts of a split chunk go (the work queue RabbitMQ dead-lettered it
    from); by default the queue it was delivered from.
    """
    ctx = context()
    batch_id, chunk_id, assets = chunk.batch_id, chunk.chunk_id, chunk.assets
    if redis_call(lambda: ctx.store.all_final(batch_id, chunk.asset_ids)):
        # Its results were recorded by a delivery whose acknowledgement never reached the broker.
        redis_call(lambda: dl.chunk_finished(ctx.redis, chunk_id))
        return {"batch_id": batch_id, "chunk_id": chunk_id, "already_recorded": len(assets)}
    if len(assets) > 1:
        log.error("chunk %s: %d deliveries never finished; splitting its %d assets", chunk_id, crashed, len(assets))
        info = self.request.delivery_info or {}
        queue = queue or info.get("routing_key") or ctx.settings.queue

        def send(part: ChunkPayload) -> None:
            self.apply_async(
                kwargs={"payload": part.encode()}, queue=queue, priority=info.get("priority"), **part.describe()
            )

        for n, asset in enumerate(assets):
            redis_call(partial(send, chunk.part(n, asset)))
        redis_call(lambda: dl.chunk_finished(ctx.redis, chunk_id))
        return {"batch_id": batch_id, "chunk_id": chunk_id, "split": len(assets)}
    message = f"delivered {crashed} times and its worker died every time (max_deliveries={ctx.settings.max_deliveries})"
    log.error("chunk %s dead-lettered as poison: %s", chunk_id, message)
    first = redis_call(lambda: dl.first_failed_at(ctx.redis, chunk_id))
    redis_call(lambda: dead_letter_chunk(ctx.store, chunk, "poison", message, crashed, first))
    redis_call(lambda: dl.chunk_finished(ctx.redis, chunk_id))
    return {"batch_id": batch_id, "chunk_id": chunk_id, "dead_lettered": "poison"}
