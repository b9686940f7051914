"""Messages Celery refuses before any task runs: keep them as dead letters instead of only a log line.

Celery 5.7's consumer drops such messages itself (in the worker's main process):

* a serializer outside ``accept_content`` (a pickle, say) or a malformed task
  message: rejected, then the ``task_rejected`` signal;
* a task name no worker registered: rejected, then ``task_unknown``;
* a body that cannot be decoded at all, or a protocol-1 message in a refused
  serializer: acked by ``Consumer.on_decode_error``, with no signal, so a
  consumer bootstep wraps that method.

None of these bodies is ever deserialized here: the dead-letter entry keeps the
raw bytes (base64) with the reason, and the worker goes on consuming.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, bootsteps, signals

from contract.store import BatchStore
from worker.tasks.deadletter import dead_letter_invalid, message_evidence

log = logging.getLogger(__name__)

_store: BatchStore | None = None
_store_lock = threading.Lock()


def _main_process_store() -> BatchStore:
    # The consumer runs in the worker's main process, which never builds the
    # model runtime (pool children do): a plain Redis client is all it needs.
    global _store
    with _store_lock:
        if _store is None:
            from config import get_settings

            _store = BatchStore.from_settings(get_settings())
        return _store


def keep_refused(message: Any, kind: str, reason: str) -> None:
    """Dead-letter a refused message; never raises (the consumer must keep consuming)."""
    evidence = message_evidence(message)
    try:
        entry = dead_letter_invalid(_main_process_store(), evidence.get("id"), kind, reason, evidence)
    except Exception:
        log.exception("could not dead-letter a refused message (%s: %s)", kind, reason)
        return
    log.error("refused message dead-lettered as %s/%s: %s: %s", "_invalid", entry, kind, reason)


def _on_rejected(sender: Any = None, message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    if message is None:
        return
    if exc is None:
        keep_refused(message, "invalid_message", "not a task message (no task name in its headers)")
    else:
        keep_refused(message, "invalid_message", f"{type(exc).__name__}: {exc}")


def _on_unknown(
    sender: Any = None, message: Any = None, exc: BaseException | None = None, name: str | None = None, **_: Any
) -> None:
    if message is not None:
        keep_refused(message, "unknown_task", f"no task named {str(name)[:200]!r} is registered")


class DeadLetterUndecodable(bootsteps.Step):
    """Consumer step: dead-letter what ``Consumer.on_decode_error`` would only log and ack."""

    name = "assetq dead-letter undecodable messages"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        # Steps are built before the Tasks step starts its consumer, which is where
        # Celery hands ``on_decode_error`` to kombu: wrap it now.
        original = parent.on_decode_error

        def on_decode_error(message: Any, exc: BaseException) -> None:
            keep_refused(message, "undecodable", f"{type(exc).__name__}: {exc}")
            original(message, exc)

        parent.on_decode_error = on_decode_error


def install(app: Celery) -> None:
    """Connect the hooks to ``app``'s workers (``worker.app.create_app`` calls it once)."""
    signals.task_rejected.connect(_on_rejected, weak=False)
    signals.task_unknown.connect(_on_unknown, weak=False)
    app.steps["consumer"].add(DeadLetterUndecodable)
