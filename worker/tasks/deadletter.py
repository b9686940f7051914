"""Dead letters: chunks that will not finish by themselves, and messages that are not tasks.

A chunk's entry keeps its full payload (assets, tasks, output) so ``assetq
replay`` can run it again, with the error, the attempt count and timestamps;
its assets are recorded ``failed`` unless they already have a final result.
Messages that never reach the task (wrong serializer, unknown task name,
undecodable body) are kept under the pseudo-batch ``_invalid`` with why they
were refused; they are evidence, not replayable work.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

from contract.metrics import record_chunk, record_dead_letter
from contract.payload import ChunkPayload
from contract.store import BatchStore
from worker.pipeline.results import skipped

INVALID_BATCH = "_invalid"
# How much of a refused message's raw body to keep for inspection.
MAX_KEPT_BODY_BYTES = 16 * 1024


def dead_letter_chunk(
    store: BatchStore,
    chunk: ChunkPayload,
    kind: str,
    message: str,
    attempts: int,
    first_failed_at: float | None = None,
) -> list[str]:
    """Keep a (valid) chunk for replay and mark its unfinished assets ``failed``; returns the ids newly failed."""
    now = time.time()
    batch_id, chunk_id = chunk.batch_id, chunk.chunk_id
    store.dead_letter(
        batch_id,
        chunk_id,
        {
            "entry_id": chunk_id,
            "batch_id": batch_id,
            "payload": chunk.encode(),
            "error": {"kind": kind, "message": message},
            "attempts": attempts,
            "first_failed_at": first_failed_at or now,
            "dead_lettered_at": now,
        },
    )
    record_dead_letter(store.r, kind)
    failed = []
    for asset in chunk.assets:
        record = skipped(batch_id, asset["id"], kind, message, status="failed")
        # A result written before the failure stands (a duplicate delivery may have finished it).
        if store.record(record, keep_final=True):
            failed.append(record)
    record_chunk(store.r, failed)
    return [r["asset_id"] for r in failed]


def dead_letter_invalid(store: BatchStore, entry_id: str | None, kind: str, reason: str, evidence: Any) -> str:
    """Keep something that is not a runnable chunk (bad payload or refused message) under ``_invalid``."""
    now = time.time()
    entry_id = entry_id or f"msg-{uuid.uuid4().hex}"
    store.dead_letter(
        INVALID_BATCH,
        entry_id,
        {
            "entry_id": entry_id,
            "batch_id": INVALID_BATCH,
            "payload": evidence,
            "error": {"kind": kind, "message": reason},
            "attempts": 1,
            "first_failed_at": now,
            "dead_lettered_at": now,
        },
    )
    record_dead_letter(store.r, kind)
    return entry_id


def message_evidence(message: Any) -> dict[str, Any]:
    """What we keep of a refused broker message: headers that say what it claimed to be, and its raw body.

    The body is kept base64-encoded and never decoded: it may be a pickle.
    """
    headers = getattr(message, "headers", None) or {}
    body = getattr(message, "body", b"") or b""
    raw = body.encode() if isinstance(body, str) else bytes(body)
    return {
        "task": _short(headers.get("task")),
        "id": _short(headers.get("id")),
        "argsrepr": _short(headers.get("argsrepr")),
        "content_type": getattr(message, "content_type", None),
        "content_encoding": getattr(message, "content_encoding", None),
        "body_bytes": len(raw),
        "body_base64": base64.b64encode(raw[:MAX_KEPT_BODY_BYTES]).decode(),
    }


def _short(value: Any, limit: int = 200) -> str | None:
    return None if value is None else str(value)[:limit]
