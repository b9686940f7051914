"""Dead letters and delivery counting for chunk tasks."""

from __future__ import annotations

import time
from typing import Any

import redis

from producer.metrics import record_dead_letter
from producer.store import BatchStore, key
from worker.pipeline.results import skipped

INVALID_BATCH = "_invalid"


def invalid_payload(payload: Any) -> str | None:
    """Why ``payload`` is not a chunk task payload, or None when it is one."""
    if not isinstance(payload, dict):
        return f"payload is a {type(payload).__name__}, not an object"
    for field, typ in (("batch_id", str), ("chunk_id", str), ("assets", list), ("tasks", dict)):
        if not isinstance(payload.get(field), typ):
            return f"payload field {field!r} is missing or not a {typ.__name__}"
    if not all(isinstance(a, dict) and isinstance(a.get("id"), str) for a in payload["assets"]):
        return "every asset needs a string 'id'"
    return None


def delivery_started(r: redis.Redis, chunk_id: str, ttl_s: int) -> int:
    """Count a delivery; a chunk that finishes (or retries) clears its count."""
    k = key("deliveries", chunk_id)
    n = int(r.incr(k))
    r.expire(k, ttl_s)
    return n


def delivery_finished(r: redis.Redis, chunk_id: str) -> None:
    r.delete(key("deliveries", chunk_id))


def dead_letter_chunk(store: BatchStore, payload: Any, kind: str, message: str, attempts: int,
                      record_assets: bool = True) -> None:
    """Keep the chunk with its full payload for replay; mark its assets ``failed`` (idempotently)."""
    now = time.time()
    record_dead_letter(store.r, kind)
    is_chunk = isinstance(payload, dict) and isinstance(payload.get("batch_id"), str)
    batch_id = payload["batch_id"] if is_chunk else INVALID_BATCH
    entry_id = str(payload.get("chunk_id")) if is_chunk and payload.get("chunk_id") else f"msg-{now:.6f}"
    store.dead_letter(batch_id, entry_id, {
        "entry_id": entry_id, "batch_id": batch_id, "payload": payload,
        "error": {"kind": kind, "message": message}, "attempts": attempts,
        "first_failed_at": now, "dead_lettered_at": now,
    })
    if record_assets and is_chunk:
        for asset in payload.get("assets", []):
            if isinstance(asset, dict) and isinstance(asset.get("id"), str):
                # Only if not already done: a result written before the crash stands.
                if store.r.hget(key("batch", batch_id, "status"), asset["id"]) in (b"ok", b"skipped"):
                    continue
                store.record(skipped(batch_id, asset["id"], kind, message, status="failed"))
