"""``assetq.process_chunk``: run one chunk of a batch and write its results.

Failure handling lives here, not in the pipeline:

* permanent problems are already ``skipped`` records from the pipeline;
* transient ones (storage down, device OOM) retry with exponential backoff and
  jitter, and after the last try the assets are recorded ``failed`` and the
  chunk is dead-lettered with its full payload for ``assetq replay``;
* a chunk delivered more than ``max_deliveries`` times without finishing (it
  keeps killing its worker) is dead-lettered instead of run again.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from producer.client import PROCESS_CHUNK
from producer.metrics import record_chunk
from worker.app import app, get_runtime
from worker.pipeline.errors import TransientError
from worker.sinks import write_all
from worker.tasks.deadletter import dead_letter_chunk, delivery_started, delivery_finished, invalid_payload

log = logging.getLogger(__name__)


def backoff_s(retries: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**retries)]."""
    return random.uniform(0, min(cap_s, base_s * (2 ** retries))) + base_s / 2


@app.task(bind=True, name=PROCESS_CHUNK, acks_late=True, reject_on_worker_lost=True)
def process_chunk(self: Task, payload: Any) -> dict[str, Any]:
    rt = get_runtime()
    s = rt.settings
    problem = invalid_payload(payload)
    if problem:
        dead_letter_chunk(rt.store, payload, "invalid_payload", problem, attempts=1, record_assets=False)
        return {"dead_lettered": problem}
    batch_id, chunk_id = payload["batch_id"], payload["chunk_id"]
    deliveries = delivery_started(rt.redis, chunk_id, s.result_ttl_s)
    if deliveries > s.max_deliveries:
        msg = f"delivered {deliveries} times without finishing (it keeps killing its worker)"
        dead_letter_chunk(rt.store, payload, "poison", msg, attempts=deliveries)
        delivery_finished(rt.redis, chunk_id)
        return {"dead_lettered": msg}
    t0 = time.perf_counter()
    try:
        results = rt.runtime.pipeline.process(batch_id, payload["assets"], payload["tasks"])
        write_all(rt.sinks, results, payload.get("output") or {})
    except (TransientError, SoftTimeLimitExceeded) as e:
        delivery_finished(rt.redis, chunk_id)
        if self.request.retries >= s.max_retries:
            dead_letter_chunk(rt.store, payload, "transient", f"{type(e).__name__}: {e}",
                              attempts=self.request.retries + 1)
            return {"dead_lettered": str(e)}
        delay = backoff_s(self.request.retries, s.retry_backoff_s, s.retry_backoff_max_s)
        log.warning("chunk %s: %s; retry %d in %.1fs", chunk_id, e, self.request.retries + 1, delay)
        raise self.retry(exc=e, countdown=delay, max_retries=s.max_retries) from e
    delivery_finished(rt.redis, chunk_id)
    record_chunk(rt.redis, results)
    rt.runtime.cache.evict_idle()
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {"batch_id": batch_id, "chunk_id": chunk_id, **counts, "ms": round((time.perf_counter() - t0) * 1000)}
