"""Fault injection against real processes: tasks that must never run to completion.

A poison task that kills its worker process every time, one that raises an
unexpected error, one stuck past the hard time limit, and messages that are
not valid tasks at all (pickles, bad JSON, unknown task names): each is
isolated and dead-lettered, never run, while the worker keeps consuming. The
scene, fixtures and promise checks are those of tests/test_faults.py (see
``tests/fault_scene.py`` and ``tests/faultinject/``).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kombu import Connection, Exchange, Queue

from contract.payload import PROCESS_CHUNK
from tests.fault_scene import CHUNK, Scene, model_dir, photos, redis_server_faults, s3, scene
from tests.faultinject.scenario import TASKS, chunk_assets, cli, producer_for, wait_until
from tests.faultinject.sitecustomize import CRASHES_KEY
from worker.tasks.deadletter import INVALID_BATCH

__all__ = ["model_dir", "photos", "redis_server_faults", "s3", "scene"]  # fixtures
pytestmark = [pytest.mark.integration, pytest.mark.faults]


# --- 4. a poison task that kills its worker every time, and one that raises --------------------------


def test_poison_task_is_isolated_and_dead_lettered_as_is_an_unexpected_error(scene: Scene) -> None:
    photos = scene.photos
    poison, broken = photos.good[10], photos.good[30]
    max_deliveries = 2
    env = scene.env(fault_poison=poison, fault_raise=broken, max_deliveries=max_deliveries)
    w = scene.worker(env)
    p = producer_for(env)
    batch = p.submit(scene.spec())
    scene.wait(p, batch, 120)

    out = scene.check(p, batch, max_processed=1, may_fail=True)
    letters = p.store.dead_letters(batch)
    # the poison: crashed max_deliveries times in its chunk, then max_deliveries times alone; never again
    entry = letters[out.dead_lettered[poison]]
    assert [a["id"] for a in entry["payload"]["assets"]] == [poison]  # isolated from its chunk-mates
    assert entry["error"]["kind"] == "poison" and entry["attempts"] == max_deliveries, entry
    assert int(p.redis.hget(CRASHES_KEY, poison) or 0) == 2 * max_deliveries
    mates = [a for a in chunk_assets(batch, out.dead_lettered[poison].split(".")[0], photos.ids, CHUNK) if a != poison]
    assert mates and all(out.statuses[a] in ("ok", "skipped") for a in mates)
    # an unexpected error (a broken model, say) is not retried blindly: its chunk is dead-lettered at once
    crashed = letters[out.dead_lettered[broken]]
    assert crashed["error"]["kind"] == "error" and "injected failure" in crashed["error"]["message"]
    assert crashed["attempts"] == 1
    in_error_chunk = {a["id"] for a in crashed["payload"]["assets"]}
    assert broken in in_error_chunk and len(in_error_chunk) == CHUNK
    assert {a for a, s in out.statuses.items() if s == "failed"} == {poison} | in_error_chunk
    listed = cli(env, "failures", batch)
    assert listed.returncode == 0 and "poison" in listed.stdout and poison in listed.stdout, listed
    assert w.proc is not None and w.proc.poll() is None, w.tail()


def test_a_chunk_stuck_past_the_hard_time_limit_is_requeued_then_isolated(scene: Scene) -> None:
    """Code that ignores the soft time limit (stuck in C) is killed at the hard limit; the message
    comes back (acks_on_timeout=False), and the delivery count isolates and dead-letters the asset."""
    photos = scene.photos
    stuck = photos.good[10]
    max_deliveries = 2
    # Limits short enough for the hangs to end soon, long enough that a restarted pool child loading
    # its models and running a chunk of 3 beside the rest of the suite (make test runs 3 at once) stays under.
    env = scene.env(fault_hang=stuck, soft_time_limit_s=4, time_limit_s=6, max_deliveries=max_deliveries)
    w = scene.worker(env)
    p = producer_for(env)
    batch = p.submit(scene.spec())
    scene.wait(p, batch, 150)

    out = scene.check(p, batch, max_processed=1, may_fail=True)
    entry = p.store.dead_letters(batch)[out.dead_lettered[stuck]]
    assert [a["id"] for a in entry["payload"]["assets"]] == [stuck] and entry["error"]["kind"] == "poison", entry
    # hung (and killed at the hard limit) max_deliveries times in its chunk, then as often alone
    assert int(p.redis.hget(CRASHES_KEY, stuck) or 0) == 2 * max_deliveries
    assert {a for a, s in out.statuses.items() if s == "failed"} == {stuck}
    assert "Hard time limit (6" in w.log.read_text()
    assert w.proc is not None and w.proc.poll() is None, w.tail()


# --- 6. messages that are not valid tasks ------------------------------------------------------------


class Trap:
    """Unpickling this creates a file: proof that a worker deserialized a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (open, (str(self.marker), "w"))


def test_invalid_and_pickled_messages_are_dead_lettered_not_run(scene: Scene, tmp_path: Path) -> None:
    env = scene.env()
    w = scene.worker(env)
    p = producer_for(env)
    queue = env["ASSETQ_QUEUE"]
    marker = tmp_path / "unpickled"
    chunk = {"batch_id": "pickled", "chunk_id": "pickled-0", "assets": scene.photos.assets()[:2], "tasks": TASKS}

    sender = Celery("hostile", broker=env["ASSETQ_REDIS_URL"], set_as_current=False)
    sender.conf.update(accept_content=["json", "pickle"])
    sender.send_task(PROCESS_CHUNK, kwargs={"payload": chunk, "trap": Trap(marker)}, queue=queue, serializer="pickle")
    sender.send_task(PROCESS_CHUNK, kwargs={"payload": "not a chunk"}, queue=queue)
    sender.send_task(PROCESS_CHUNK, args=[1, 2, 3], queue=queue)
    sender.send_task("assetq.no_such_task", kwargs={"payload": chunk}, queue=queue)
    with Connection(env["ASSETQ_REDIS_URL"]) as conn:
        publish = conn.Producer().publish
        target = {"exchange": Exchange(queue), "routing_key": queue, "declare": [Queue(queue, Exchange(queue), queue)]}
        publish(Trap(marker), serializer="pickle", **target)  # no task headers at all
        publish(
            b"{not json",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": PROCESS_CHUNK, "id": "bad-json"},
            **target,
        )
    wait_until(lambda: len(p.store.dead_letters(INVALID_BATCH)) >= 6, 30, "six dead letters")

    entries = sorted(p.store.dead_letters(INVALID_BATCH).values(), key=lambda e: e["error"]["kind"])
    kinds = sorted(e["error"]["kind"] for e in entries)
    assert kinds == [
        "invalid_message",
        "invalid_payload",
        "invalid_payload",
        "undecodable",
        "undecodable",
        "unknown_task",
    ], entries
    by_kind = {e["error"]["kind"]: e for e in entries}
    assert "ContentDisallowed" in by_kind["invalid_message"]["error"]["message"]
    assert by_kind["invalid_message"]["payload"]["content_type"] == "application/x-python-serialize"
    assert "assetq.no_such_task" in by_kind["unknown_task"]["error"]["message"]
    assert not marker.exists()  # nothing was unpickled
    assert not p.store.exists("pickled") and not p.store.statuses("pickled")  # nothing was run
    # the worker kept consuming: a real batch after the garbage completes in full
    batch = p.submit(scene.spec())
    scene.wait(p, batch, 90)
    scene.check(p, batch, max_processed=1)
    assert w.proc is not None and w.proc.poll() is None
    # the trap works: unpickling it here does create its file
    guard = tmp_path / "guard"
    pickle.loads(pickle.dumps(Trap(guard))).close()
    assert guard.exists()
