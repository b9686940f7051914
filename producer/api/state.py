"""What the endpoints of one server process share: settings, the producer, Redis clients, waiting requests."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import redis
import redis.asyncio as aioredis
from fastapi import Request

from config import Settings
from contract import connection
from contract.keys import key
from contract.spec import Catalog
from producer.api.auth import TokenCheck
from producer.api.clip_text import TextTowers
from producer.api.interactive import INTERACTIVE_PRIORITY, ChunkBatcher, ResultWatcher
from producer.client import Producer
from producer.expiring import Expiring

log = logging.getLogger(__name__)

POOL_REFRESH_S = 15.0  # how often the fleet's pool sizes are asked again
LIVE_CATALOG_TTL_S = 2.0  # how long the live workers' models are trusted (a scan of Redis per request is too much)
INTERACTIVE_OUTPUT: dict[str, Any] = {"redis": True}  # answers are read from Redis; nothing else is written


@dataclass
class ApiState:
    settings: Settings
    auth: TokenCheck
    producer: Producer
    aredis: aioredis.Redis
    watcher: ResultWatcher
    text: TextTowers
    batcher: ChunkBatcher = field(init=False)
    _live: Expiring[Catalog] = field(init=False, repr=False)

    pools: PoolSizes = field(init=False)

    def __post_init__(self) -> None:
        window_s = self.settings.api_predict_window_ms / 1000
        self.pools = PoolSizes(self.producer)
        self._live = Expiring(self.producer.workers.catalog, LIVE_CATALOG_TTL_S)
        self.batcher = ChunkBatcher(self.send_interactive, window_s, self.settings.chunk_size, self.pools.total)

    @classmethod
    def build(cls, settings: Settings, auth: bool = True) -> ApiState:
        tokens = [t.get_secret_value() for t in settings.api_tokens]
        producer = Producer(settings=settings)
        # The blocking client's timeouts and Sentinel handling (contract/connection.py), for the event loop.
        aredis = connection.async_redis_client(settings)
        return cls(
            settings=settings,
            auth=TokenCheck(tokens, enabled=auth),
            producer=producer,
            aredis=aredis,
            watcher=ResultWatcher(aredis, settings.results_stream),
            text=TextTowers(settings.model_dir, threads=max(1, settings.intra_op_threads)),
        )

    async def start(self) -> None:
        await self.watcher.start()
        self.pools.start()
        # Before the server answers anything: once /ping says pong, a text query is fast. The towers are
        # small and the server is interactive, so it warms them whatever a worker's ASSETQ_PRELOAD default
        # is; a list names which.
        wanted = self.settings.preload if isinstance(self.settings.preload, list) else True
        names = await anyio.to_thread.run_sync(self.text.preload, wanted)
        log.info("clip text towers warm: %s", ", ".join(names) or "none")

    async def stop(self) -> None:
        self.pools.stop()
        await self.watcher.stop()
        await self.aredis.aclose()

    # -- interactive chunks -----------------------------------------------------------
    def send_interactive(self, batch_id: str, assets: list[dict[str, Any]], tasks: dict[str, Any]) -> None:
        """Record a one-chunk batch (not listed among the batches) and enqueue it as interactive."""
        store = self.producer.store
        # The batch keeps asset ids only: the image bytes travel in the chunk, not in the batch record.
        store.create_batch(batch_id, [{"id": a["id"]} for a in assets], tasks, INTERACTIVE_OUTPUT)
        store.r.zrem(key("batches"), batch_id)
        self.producer.send_chunk(
            batch_id,
            f"{batch_id}-0",
            assets,
            tasks,
            INTERACTIVE_OUTPUT,
            queue=self.settings.interactive_queue,
            priority=INTERACTIVE_PRIORITY,
        )

    def live_catalog(self) -> Catalog:
        """Models the live workers advertise now (blocking; cached for ``LIVE_CATALOG_TTL_S``)."""
        return self._live.get()


class PoolSizes:
    """How many chunks the fleet runs at once: its workers' pool processes, asked every ``POOL_REFRESH_S``.

    Celery's remote control answers it (``inspect().stats()``, each worker's pool size), from a
    thread of its own, so no request waits for the broadcast. Until the first answer, or when
    none comes, each live worker counts as one process.
    """

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self._total: int | None = None
        self._stop = threading.Event()

    def total(self) -> int:
        return self._total or max(1, len(self._live()))

    def start(self) -> None:
        threading.Thread(target=self._run, name="assetq-pool-sizes", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _live(self) -> dict[str, Any]:
        try:
            return self.producer.workers.live()
        except redis.RedisError:
            return {}

    def _run(self) -> None:
        while not self._stop.is_set():
            live = self._live()
            try:
                # limit: return as soon as every live worker has answered, not after the whole timeout
                stats = self.producer.celery.control.inspect(timeout=1.0, limit=max(1, len(live))).stats() or {}
                sizes = [int(s.get("pool", {}).get("max-concurrency") or 1) for s in stats.values()]
                self._total = sum(sizes) or None
            except Exception as e:  # the broker unreachable: keep the last answer
                log.debug("asking the workers' pool sizes failed: %s", e)
            self._stop.wait(POOL_REFRESH_S)


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state
