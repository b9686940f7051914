"""The ``Producer``: validate, split into chunks, record the batch, enqueue by task name."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import redis

from config import Settings, get_settings
from contract.broker import celery_wire_config, held_chunks, task_message, transport_for
from contract.catalog import merge, scan_model_dir
from contract.chunking import chunk_sizes, cut
from contract.connection import redis_client
from contract.errors import ReplicationError
from contract.fleet import WorkerRegistry, root_forms
from contract.payload import PROCESS_CHUNK, ChunkPayload
from contract.spec import Catalog, JobSpec, SpecError, check_models, parse_spec
from contract.store import BatchStore
from contract.submit import Submitter
from producer.expiring import Expiring
from producer.roots import outside_roots_errors

if TYPE_CHECKING:
    from celery import Celery

CATALOG_TTL_S = 10.0  # how long a fetched model catalog is trusted (workers heartbeat every 20 s)


def celery_client(settings: Settings) -> Celery:
    """A Celery app for sending only: same broker and serializer as the workers.

    Imported here: a submit to the store's Redis goes out in one script (``contract.submit``) and
    never needs Celery, whose import is a fifth of ``assetq submit``'s start-up.
    """
    from celery import Celery

    app = Celery("assetq-producer", set_as_current=False)
    # The transport publishes a wake-up token with every message, for idle workers (contract/broker.py).
    app.conf.update(celery_wire_config(settings, transport_for(settings.broker)))
    return app


class Producer:
    """Submit job specs and follow their batches.

    >>> p = Producer(redis_url="redis://localhost:6379/0")
    >>> batch = p.submit({"assets": [...], "tasks": {...}})
    >>> p.status(batch)["complete"]
    """

    def __init__(
        self,
        redis_url: str | None = None,
        settings: Settings | None = None,
        check_models: bool = True,
        check_roots: bool = True,
    ) -> None:
        base = settings or get_settings()
        self.settings = base.model_copy(update={"redis_url": redis_url}) if redis_url else base
        self.redis = redis_client(self.settings)
        self.store = BatchStore.from_settings(self.settings, self.redis)
        self.workers = WorkerRegistry(self.redis)
        self.check_models = check_models
        self.check_roots = check_roots
        self._celery: Celery | None = None
        # What the fleet and this machine advertise, read again after CATALOG_TTL_S.
        self._catalog = Expiring(
            lambda: merge(self.workers.catalog(), scan_model_dir(self.settings.model_dir)), CATALOG_TTL_S
        )
        self._roots = Expiring(self.workers.advertised_roots, CATALOG_TTL_S)
        self._local_roots = Expiring(lambda: root_forms(self.settings.allowed_roots), CATALOG_TTL_S)
        self._processes = Expiring(self.workers.processes, CATALOG_TTL_S)
        # One script records a batch and enqueues its chunks when the broker is this very Redis.
        same_redis = transport_for(self.settings.broker) is not None and self.settings.broker == self.settings.redis_url
        self._submitter = Submitter(self.redis, self.store.ttl_s) if same_redis else None

    @property
    def celery(self) -> Celery:
        if self._celery is None:
            self._celery = celery_client(self.settings)
        return self._celery

    # -- submit -------------------------------------------------------------------------
    def catalog(self) -> Catalog:
        """Models available: what live workers advertise, plus the local model directory.

        Cached for ``CATALOG_TTL_S``: a server submitting many small jobs should not scan
        Redis and the disk for every one of them.
        """
        return self._catalog.get()

    def advertised_roots(self, fresh: bool = False) -> list[list[str]]:
        """The allowed roots of each live worker that advertises them; cached like ``catalog``."""
        return self._roots.get(fresh)

    def local_roots(self) -> list[str]:
        """This machine's ``ASSETQ_ALLOWED_ROOTS`` in both forms (symlinks resolved); cached like ``catalog``."""
        return self._local_roots.get()

    def live_processes(self) -> int:
        """Pool processes the live workers advertise together (at least 1); cached like ``catalog``."""
        return max(1, self._processes.get())

    def validate(self, spec: JobSpec | dict[str, Any]) -> JobSpec:
        """The parsed spec, or a ``SpecError`` with every problem found: models, then ``file://`` roots."""
        job = spec if isinstance(spec, JobSpec) else parse_spec(spec)
        errors: list[tuple[str, str]] = []
        if self.check_models:
            errors += self._model_errors(job)
        if self.check_roots:
            errors += self._roots_errors(job)
        if errors:
            raise SpecError(errors)
        return job

    def _model_errors(self, job: JobSpec) -> list[tuple[str, str]]:
        catalog = self.catalog()
        if not catalog:
            return [
                (
                    "tasks",
                    "no models are known: start a worker (it advertises its models) "
                    f"or install models into {self.settings.model_dir}",
                )
            ]
        try:
            check_models(job.tasks, catalog)
        except SpecError as e:
            return e.errors
        return []

    def _roots_errors(self, job: JobSpec) -> list[tuple[str, str]]:
        if not any(a.uri and a.uri.startswith("file://") for a in job.assets):
            return []
        local = self.local_roots()
        errors = outside_roots_errors(job.assets, self.advertised_roots(), local)
        if errors:  # a worker may have started (or changed its roots) since the cached read: look again
            errors = outside_roots_errors(job.assets, self.advertised_roots(fresh=True), local)
        return errors

    def submit(self, spec: JobSpec | dict[str, Any], queue: str | None = None) -> str:
        """Validate ``spec`` and enqueue it; returns the batch id. Nothing is enqueued if it is invalid.

        Invalid includes ``file://`` assets outside every live worker's ``ASSETQ_ALLOWED_ROOTS``
        (this machine's setting when no worker advertises its roots): each would only be skipped.
        """
        job = self.validate(spec).with_batch_id()
        batch_id = job.batch_id
        assert batch_id is not None
        taken = SpecError([("batch_id", f"batch {batch_id!r} exists already; use replay to run it again")])
        assets = [a.model_dump(exclude_none=True) for a in job.assets]
        tasks = job.tasks.dump()
        output = job.output.model_dump(mode="json", exclude_none=True)
        queue = queue or self.settings.queue
        # Chunks of at most chunk_size, smaller towards the end so that every live worker process stays
        # busy to the end of the batch (contract.chunking).
        sizes = chunk_sizes(len(assets), self.settings.chunk_size, self.live_processes())
        chunks = [
            ChunkPayload(batch_id, f"{batch_id}-{n}", part, tasks, output) for n, part in enumerate(cut(assets, sizes))
        ]
        if self._submitter is not None:  # the broker is the store's Redis: everything in one script
            messages = [self._message(chunk, queue, job.priority) for chunk in chunks]
            if not self._submitter.submit(batch_id, assets, tasks, output, queue, messages):
                raise taken
        else:
            if self.store.exists(batch_id):
                raise taken
            self.store.create_batch(batch_id, assets, tasks, output)
            for chunk in chunks:
                self._publish(chunk, queue, job.priority)
        self._confirm_replicated(batch_id, len(chunks))
        return batch_id

    @staticmethod
    def _message(chunk: ChunkPayload, queue: str, priority: int) -> tuple[str, str]:
        described = chunk.describe()
        kwargs = {"payload": chunk.encode()}
        return task_message(PROCESS_CHUNK, kwargs, queue, priority, described["argsrepr"], described["kwargsrepr"])

    def _confirm_replicated(self, batch_id: str, chunks: int) -> None:
        # An acknowledged write that no replica has yet is lost if the master fails over now, and a lost
        # submit has nobody to send it again: so submit returns once a replica has it, or fails loudly.
        wanted = self.settings.replica_acks
        if wanted <= 0:
            return
        timeout_ms = self.settings.redis_replica_ack_timeout_ms
        acked = self.store.confirm_replicated(batch_id, chunks, wanted, timeout_ms)
        if acked < wanted:
            raise ReplicationError(
                batch_id,
                f"batch {batch_id} is queued on the Redis master, but {acked} of {wanted} replicas acknowledged it "
                f"within {timeout_ms} ms (ASSETQ_REDIS_REPLICA_ACKS): a failover now could lose it. Check "
                f"`assetq status {batch_id}` once the replicas are back, and submit it again if it is gone.",
            )

    def send_chunk(
        self,
        batch_id: str,
        chunk_id: str,
        assets: list[dict[str, Any]],
        tasks: dict[str, Any],
        output: dict[str, Any],
        queue: str | None = None,
        priority: int = 5,
    ) -> None:
        self._publish(ChunkPayload(batch_id, chunk_id, assets, tasks, output), queue or self.settings.queue, priority)

    def _publish(self, payload: ChunkPayload, queue: str, priority: int) -> None:
        self.celery.send_task(
            PROCESS_CHUNK,
            kwargs={"payload": payload.encode()},
            queue=queue,
            priority=priority,
            retries=0,
            **payload.describe(),  # short, readable arguments for Flower; the payload holds the rest
        )

    # -- failures and replay -------------------------------------------------------------
    def failures(self, batch_id: str | None = None) -> list[dict[str, Any]]:
        """Dead-lettered chunks (all batches, or one), with their reasons and asset ids."""
        batches = [batch_id] if batch_id else self.store.dead_letter_batches()
        out = []
        for bid in batches:
            for entry_id, entry in sorted(self.store.dead_letters(bid).items()):
                payload = entry.get("payload")
                assets = payload.get("assets", []) if isinstance(payload, dict) else []
                out.append(
                    {
                        "batch_id": bid,
                        "entry_id": entry_id,
                        "error": entry.get("error"),
                        "attempts": entry.get("attempts"),
                        "dead_lettered_at": entry.get("dead_lettered_at"),
                        "asset_ids": [a.get("id") for a in assets if isinstance(a, dict)],
                    }
                )
        return out

    def replay(
        self,
        batch_id: str,
        asset_ids: list[str] | None = None,
        include_skipped: bool = False,
        dry_run: bool = False,
        queue: str | None = None,
    ) -> dict[str, Any]:
        """Re-enqueue dead-lettered (and optionally skipped) assets of a batch with their original spec.

        Results overwrite idempotently; a replayed asset moves from ``failed`` to
        ``ok`` in the counters instead of being counted twice.
        """
        if not self.store.exists(batch_id):
            raise KeyError(f"unknown batch {batch_id!r} (expired or never submitted)")
        wanted = set(asset_ids) if asset_ids else None
        meta = self.store.batch_meta(batch_id)
        jobs: list[tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]] = []
        consumed: list[str] = []
        for entry_id, entry in self.store.dead_letters(batch_id).items():
            payload = entry.get("payload") or {}
            assets = [a for a in payload.get("assets", []) if wanted is None or a.get("id") in wanted]
            if assets:
                jobs.append((assets, payload.get("tasks") or meta["tasks"], payload.get("output") or meta["output"]))
                if wanted is None or {a.get("id") for a in payload.get("assets", [])} <= wanted:
                    consumed.append(entry_id)
        if include_skipped:
            skipped = [
                aid
                for aid, st in self.store.statuses(batch_id).items()
                if st == "skipped" and (wanted is None or aid in wanted)
            ]
            if skipped:
                jobs.append((self.store.assets(batch_id, skipped), meta["tasks"], meta["output"]))
        ids = sorted({a["id"] for assets, _, _ in jobs for a in assets})
        if not dry_run:
            self.store.reopen(batch_id, ids)
            size = max(1, self.settings.chunk_size)
            stamp = int(time.time() * 1000)
            n = 0
            for assets, tasks, output in jobs:
                for start in range(0, len(assets), size):
                    self.send_chunk(
                        batch_id,
                        f"{batch_id}-replay{stamp}-{n}",
                        assets[start : start + size],
                        tasks,
                        output,
                        queue=queue,
                    )
                    n += 1
            self.store.remove_dead_letters(batch_id, consumed)
        return {"batch_id": batch_id, "asset_ids": ids, "count": len(ids), "dry_run": dry_run}

    # -- follow ---------------------------------------------------------------------------
    def status(self, batch_id: str) -> dict[str, Any]:
        st = self.store.status(batch_id)
        if st is None:
            raise KeyError(f"unknown batch {batch_id!r} (expired or never submitted)")
        return st

    def held(self, batch_id: str) -> dict[str, Any]:
        """This batch's chunks that workers hold now, and those waiting on a dead worker to be put back.

        A chunk held by a consumer past ``worker_dead_after_s`` without a heartbeat waits for a live
        worker's sweep (about a second once one runs); ``no_heartbeat_s`` says for how long it has.
        """
        held = [h for h in held_chunks(self.redis, self.settings.worker_dead_after_s) if h.batch_id == batch_id]
        return {
            "chunks_held": len(held),
            "waiting_for_recovery": [
                {
                    "chunk_id": h.chunk_id,
                    "consumer": h.consumer,
                    "no_heartbeat_s": None if h.heartbeat_age_s is None else round(h.heartbeat_age_s, 1),
                }
                for h in held
                if h.dead
            ],
        }

    def results(self, batch_id: str) -> list[dict[str, Any]]:
        return sorted(self.store.iter_results(batch_id), key=lambda r: r["asset_id"])

    def iter_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        return self.store.iter_results(batch_id)

    def wait(
        self,
        batch_id: str,
        timeout_s: float | None = None,
        poll_s: float = 0.5,
        progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Until the batch is complete: follows the results stream (a blocking read), not a poll.

        ``poll_s`` bounds each blocking read, so the status is read again at least that often
        (progress callbacks, and a Redis that restarted and lost nothing but the stream position).
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        st: dict[str, Any] | None = None
        while True:
            try:
                # Where the stream is now, then the status: anything recorded after this read wakes us.
                last: Any = self.redis.xrevrange(self.settings.results_stream, count=1)
                seen = last[0][0] if last else "0-0"
                st = self.status(batch_id)
                if progress:
                    progress(st)
                if st["complete"]:
                    return st
                if deadline is not None and time.monotonic() > deadline:
                    break
                block_s = poll_s if deadline is None else max(0.001, min(poll_s, deadline - time.monotonic()))
                self.redis.xread({self.settings.results_stream: seen}, count=1, block=max(1, int(block_s * 1000)))
            except redis.ConnectionError:
                # Redis restarting: keep waiting, the client reconnects by itself.
                if deadline is not None and time.monotonic() > deadline:
                    break
                time.sleep(min(poll_s, 0.5))
        raise TimeoutError(f"batch {batch_id} not complete after {timeout_s}s: {st}")
