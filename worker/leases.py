"""Leases: a worker holds a message only while its heartbeat says it is alive.

kombu's Redis transport pops a message (BRPOP) and records the delivery in a
second round trip, so a consumer killed in between loses the message; and it
hands back what a dead consumer held only after the visibility timeout (an
hour by default), which also re-delivers tasks still running on live workers.
Here instead (the design of dramatiq's Redis broker and Sidekiq's super_fetch):

* **Atomic fetch.** One Lua script pops the first message of the consumer's
  lists (priority, then queue order) and records it in ``held:<consumer>`` in
  the same step. At every instant a message is either queued or held by one
  consumer.
* **Heartbeats.** Each consumer process has a unique id (a restarted worker is
  a new consumer) and beats every few seconds from a thread of its own, so a
  task running for hours on a live worker is never handed to another one.
* **Recovery.** Every worker sweeps once a second. A consumer whose heartbeat
  is older than ``worker_dead_after_s`` -- or, on the same machine, whose
  process is gone, which is known at once -- has everything it held pushed back
  to the front of its queues, all in one script, so exactly once however many
  workers sweep. Those deliveries did not finish: the task's delivery count
  (``worker/tasks/deliveries.py``) still bounds a chunk that keeps killing
  its workers.
* **No false deaths after an outage.** A sweeper that could not reach Redis
  for a while renews every lease instead of judging: nobody could beat then.
* **Backstop.** A message this consumer holds in Redis but does not know of
  (the reply of a fetch was lost with its connection) is put back after
  ``worker_dead_after_s``.

The scripts declare themselves with ``#!lua``, so Redis refuses the whole
script up front when it is out of memory or read-only, instead of failing
half-way after the pop. Standalone Redis and Sentinel only (not Cluster, which
kombu does not support either).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import redis

from contract.connection import text
from contract.keys import CONSUMERS, CONSUMERS_META, METRICS, held_key
from worker import lease_scripts as scripts
from worker.backoff import until_accepted

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
MIN_REDIS_MAJOR = 7  # scripts that declare themselves (#!lua), refused whole when Redis cannot write
# Longest heartbeat interval; shorter when worker_dead_after_s is small.
MAX_HEARTBEAT_S = 5.0
# A sweeper that has not reached Redis for this long renews every lease instead of judging.
CUT_OFF_AFTER_S = 10.0
# Where fetched messages that are not kombu messages at all are kept (as raw bytes).
UNREADABLE = "assetq:unreadable"


@dataclass(frozen=True)
class Recovered:
    consumer: str
    fetch_id: str
    reason: str  # lease_expired | process_gone | unclaimed_fetch
    chunk: str  # the task's argsrepr ("batch=... chunk=..."), or "" for other messages


def _node() -> str | None:
    """This machine and PID namespace, where a PID can be checked; None off Linux."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def _started(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), which tells a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_gone(pid: int, started: str | None) -> bool:
    """Whether process ``pid`` (started at ``started``) has ended; on this machine only."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    now = _started(pid)
    return started is not None and now is not None and now != started


class Lease:
    """This process's consumer: its id, the messages it holds, and the thread that beats and sweeps."""

    _per_process: ClassVar[dict[int, Lease]] = {}
    _lock = threading.Lock()

    def __init__(self, client: redis.Redis, dead_after_s: float, queues: Callable[[], list[str]]) -> None:
        self.r = client
        self.dead_after_s = float(dead_after_s)
        self.heartbeat_s = min(MAX_HEARTBEAT_S, self.dead_after_s / 3)
        self.queues = queues
        self.pid = os.getpid()
        self.id = f"{socket.gethostname()}.{self.pid}.{uuid.uuid4().hex[:8]}"
        self.node = _node()
        self.started = _started(self.pid)
        self.held = held_key(self.id)
        self._fetch = client.register_script(scripts.FETCH)
        self._requeue = client.register_script(scripts.REQUEUE)
        self._heartbeat = client.register_script(scripts.HEARTBEAT)
        self._recover = client.register_script(scripts.RECOVER)
        self._retire = client.register_script(scripts.RETIRE)
        self._tags: dict[str, str] = {}  # delivery tag -> fetch id, of what this process knows it holds
        self._tags_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._registered = False
        self._last_ok = time.monotonic()
        self.on_recovered: Callable[[list[Recovered]], None] = _log_recovered

    @classmethod
    def for_process(cls, make: Callable[[], Lease]) -> Lease:
        """The one lease of this process (a forked child gets its own)."""
        with cls._lock:
            lease = cls._per_process.get(os.getpid())
            if lease is None:
                lease = cls._per_process[os.getpid()] = make()
            return lease

    # -- the consumer's side ------------------------------------------------------------------------
    def fetch(self, lists: list[str]) -> tuple[str, bytes, str] | None:
        """Take the first message of ``lists``, recorded as held in the same step: (list, message, fetch id)."""
        if not lists:
            return None
        fid = f"{time.time():.3f}-{uuid.uuid4().hex[:12]}"
        got = self._fetch(keys=[self.held, *lists], args=[fid])
        if not got:
            return None
        return text(got[0]), got[1], fid

    def hold(self, delivery_tag: str, fetch_id: str) -> None:
        with self._tags_lock:
            self._tags[delivery_tag] = fetch_id

    def forget(self, fetch_id: str) -> None:
        """A message taken for a consumer without acks: it is not held once handed over."""
        until_accepted(lambda: self.r.hdel(self.held, fetch_id), "forgetting a message taken without ack")

    def ack(self, delivery_tag: str) -> None:
        """Done with a message: it is no longer held (an ack or a reject without requeue)."""
        fid = self._release(delivery_tag)
        if fid is not None:
            until_accepted(lambda: self.r.hdel(self.held, fid), "acknowledging a message")

    def requeue(self, delivery_tag: str, back: bool) -> None:
        """Hand a message back: to the back of its queue (a rejected task) or the front (a restore)."""
        fid = self._release(delivery_tag)
        if fid is not None:
            until_accepted(lambda: self._requeue(keys=[self.held], args=[fid, int(back)]), "handing a message back")

    def set_aside(self, fetch_id: str, message: bytes) -> None:
        """A fetched message that is not a kombu message at all: keep its bytes, out of the way."""
        pipe = self.r.pipeline(transaction=True)
        pipe.lpush(UNREADABLE, message)
        pipe.hdel(self.held, fetch_id)
        until_accepted(pipe.execute, "setting aside an unreadable message")

    def _release(self, delivery_tag: str) -> str | None:
        # Forgotten before Redis is told: if telling fails, the backstop puts it back (a duplicate at
        # worst, never a message held forever by a live consumer).
        with self._tags_lock:
            return self._tags.pop(delivery_tag, None)

    # -- heartbeat and recovery ---------------------------------------------------------------------
    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                version = str(self.r.info("server").get("redis_version", "0"))
                if int(version.split(".")[0]) < MIN_REDIS_MAJOR:
                    raise RuntimeError(f"assetq needs Redis >= {MIN_REDIS_MAJOR}.0 (#!lua scripts), not {version}")
                self._beat()
                self._thread = threading.Thread(target=self._run, name="assetq-lease", daemon=True)
                self._thread.start()
                atexit.register(self.close)

    def _run(self) -> None:
        next_beat = time.monotonic()
        while True:  # the first sweep at once: a worker restarted after a crash recovers its predecessor's work
            try:
                found = []
                if time.monotonic() >= next_beat:
                    self._beat()
                    found += self.reclaim_unclaimed()
                    next_beat = time.monotonic() + self.heartbeat_s
                found += self.sweep()
                if found:
                    self.on_recovered(found)
            except redis.RedisError as e:
                log.debug("lease heartbeat/sweep failed: %s", e)
            except Exception:  # the thread must outlive any bug, or this worker would be declared dead
                log.exception("lease heartbeat/sweep failed")
            if self._stop.wait(SWEEP_INTERVAL_S):
                return

    def _beat(self) -> None:
        meta = {
            "host": socket.gethostname(),
            "node": self.node,
            "pid": self.pid,
            "started": self.started,
            "queues": self.queues(),
        }
        fresh = self._heartbeat(keys=[CONSUMERS, CONSUMERS_META], args=[self.id, json.dumps(meta)])
        if fresh and self._registered:
            log.warning(
                "consumer %s was declared dead (no heartbeat for %.0f s) and what it held was redelivered; "
                "tasks it is still running will run twice",
                self.id,
                self.dead_after_s,
            )
        self._registered = True

    def sweep(self) -> list[Recovered]:
        """Put back what dead consumers held (those past their lease, and local ones whose process is gone)."""
        cut_off = time.monotonic() - self._last_ok > CUT_OFF_AFTER_S
        gone = [] if cut_off else self._local_dead()
        raw = self._recover(keys=[CONSUMERS, CONSUMERS_META, METRICS], args=[self.dead_after_s, int(cut_off), *gone])
        self._last_ok = time.monotonic()
        if cut_off:
            log.warning("Redis was out of reach for a while: every consumer's lease renewed, none judged")
        fields = [text(v) for v in raw]
        return [Recovered(*fields[i : i + 4]) for i in range(0, len(fields), 4)]

    def _local_dead(self) -> list[str]:
        if self.node is None:
            return []
        dead = []
        for cid, raw in self.r.hgetall(CONSUMERS_META).items():
            consumer = text(cid)
            if consumer == self.id:
                continue
            try:
                meta = json.loads(raw)
            except ValueError:
                continue
            if meta.get("node") == self.node and process_gone(int(meta.get("pid") or 0), meta.get("started")):
                dead.append(consumer)
        return dead

    def reclaim_unclaimed(self) -> list[Recovered]:
        """The backstop: put back messages held under this consumer that this process does not know of."""
        with self._tags_lock:
            known = set(self._tags.values())
        found = []
        for raw in self.r.hkeys(self.held):
            fid = text(raw)
            if fid in known or time.time() - _fetched_at(fid) < self.dead_after_s:
                continue
            if self._requeue(keys=[self.held], args=[fid, 0]):
                self.r.hincrby(METRICS, "recovered|unclaimed_fetch", 1)
                found.append(Recovered(self.id, fid, "unclaimed_fetch", ""))
        return found

    def close(self) -> None:
        """Stop beating; leave the consumer list if nothing is held any more (else others recover it)."""
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self._retire(keys=[CONSUMERS, CONSUMERS_META, self.held], args=[self.id])


def _fetched_at(fetch_id: str) -> float:
    try:
        return float(fetch_id.split("-", 1)[0])
    except ValueError:
        return 0.0


def _log_recovered(found: list[Recovered]) -> None:
    for r in found:
        log.warning(
            "recovered a delivery held by dead consumer %s (%s): %s",
            r.consumer,
            r.reason.replace("_", " "),
            r.chunk or f"message {r.fetch_id}",
        )
