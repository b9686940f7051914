"""Interactive work: ``/predict`` images become chunks that every worker takes before any bulk chunk.

**The queueing, explicitly.** An interactive chunk is sent to the queue
``interactive_queue`` (``assetq.interactive``) at Celery priority 0. Every
worker consumes that queue first: ``assetq worker`` puts it at the head of its
``-Q`` list, and the transport reads its queues in that fixed order
(``queue_order_strategy: priority`` in ``worker/app.py``). A worker's fetch
looks at the lists in this order, and takes the first message it finds:

    priority step 0 (priorities 0-2):  assetq.interactive, [gpu,] assetq
    priority step 3 (priorities 3-5):  assetq.interactive, [gpu,] assetq    <- batches by default (5)
    priority step 6, then 9            the same

So an interactive chunk is the next one a worker takes, ahead of every waiting
bulk chunk; what stands before it is at most the chunk each pool process is
running (prefetch is 1). A batch submitted with priority 0-2 likewise
overtakes batches at the default 5 (in Redis, 0 is the most urgent).

**Batching across requests.** Concurrent image requests for the same tasks that
arrive within ``api_predict_window_ms`` of the first one are sent together, so
the workers batch their model steps: as one chunk where the fleet has one pool
process, else spread over at most one chunk per pool process (``ChunkBatcher``),
each of at most ``chunk_size`` images.

**Waiting.** Each chunk is a small batch of its own (kept out of the list of
batches). One reader per server process follows the results stream
(``assetq:results``) and wakes the request whose asset changed status; each
waiting request also reads its result directly once a second, so nothing
depends on the stream alone. A batch is deleted once every request of it has
its answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import redis
import redis.asyncio as aioredis

from contract.connection import text
from contract.keys import key

log = logging.getLogger(__name__)

INTERACTIVE_PRIORITY = 0  # Celery priority of interactive chunks: step 0, the first a worker looks at
FALLBACK_POLL_S = 1.0  # a waiting request reads its result this often even when the stream says nothing
STREAM_BLOCK_MS = 1000
# Every key a one-chunk interactive batch leaves (contract/keys.py), deleted once it is answered.
BATCH_KEY_PARTS = ((), ("assets",), ("status",), ("results",), ("staged",), ("attempts",), ("processed",))

# (batch id, chunk assets, tasks block) -> records the batch and enqueues its one chunk (blocking).
SendChunk = Callable[[str, list[dict[str, Any]], dict[str, Any]], None]


@dataclass
class Ticket:
    """Where one request's image went: its batch and its asset id there, and how many shared the chunk."""

    batch_id: str
    asset_id: str
    chunk_images: int


@dataclass
class _Group:
    tasks: dict[str, Any]
    assets: list[dict[str, Any]] = field(default_factory=list)
    tickets: list[asyncio.Future[Ticket]] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class ChunkBatcher:
    """Gathers concurrent image requests for the same tasks into chunks: one per pool process at most.

    A window's requests become ``max(ceil(n / chunk_size), min(n, slots()))`` chunks of near
    equal size, where ``slots()`` is the fleet's pool processes: one chunk would leave every
    process but one idle while the requests wait, and more chunks than processes would only
    wait in the queue unbatched. With one pool process, a window's requests are one chunk.
    """

    def __init__(self, send: SendChunk, window_s: float, chunk_size: int, slots: Callable[[], int]) -> None:
        self.send = send
        self.window_s = window_s
        self.chunk_size = max(1, chunk_size)
        self.slots = slots
        self._open: dict[str, _Group] = {}
        self._flushing: set[asyncio.Task[None]] = set()

    async def submit(self, tasks: dict[str, Any], image: bytes) -> Ticket:
        """Queue ``image`` for ``tasks``; returns once its chunk is enqueued (raises what enqueuing raised)."""
        loop = asyncio.get_running_loop()
        group_key = json.dumps(tasks, sort_keys=True, separators=(",", ":"))
        group = self._open.get(group_key)
        if group is None:
            group = self._open[group_key] = _Group(tasks)
            group.timer = loop.call_later(self.window_s, self._flush, group_key, group)
        ticket: asyncio.Future[Ticket] = loop.create_future()
        group.assets.append({"id": f"r{len(group.assets)}", "data": base64.b64encode(image).decode()})
        group.tickets.append(ticket)
        if len(group.assets) >= self.chunk_size * max(1, self.slots()):  # every process has a full chunk
            self._flush(group_key, group)
        return await ticket

    def _flush(self, group_key: str, group: _Group) -> None:
        if self._open.get(group_key) is not group:
            return  # flushed already (full before its window ended)
        del self._open[group_key]
        if group.timer is not None:
            group.timer.cancel()
        for part in split(len(group.assets), self.chunk_size, self.slots()):
            task = asyncio.get_running_loop().create_task(self._send(group, part))
            self._flushing.add(task)  # a reference, so the task is not collected while it runs
            task.add_done_callback(self._flushing.discard)

    async def _send(self, group: _Group, part: slice) -> None:
        batch_id = f"predict-{uuid.uuid4().hex}"
        assets, tickets = group.assets[part], group.tickets[part]
        try:
            # Redis and the broker are reached with blocking clients: off the event loop.
            await anyio.to_thread.run_sync(self.send, batch_id, assets, group.tasks)
        except Exception as e:
            for ticket in tickets:
                if not ticket.done():
                    ticket.set_exception(e)
            return
        for asset, ticket in zip(assets, tickets, strict=True):
            if not ticket.done():
                ticket.set_result(Ticket(batch_id, asset["id"], len(assets)))


def split(n: int, chunk_size: int, slots: int) -> list[slice]:
    """``n`` requests as consecutive chunks: no more than ``chunk_size`` each, and one per slot if there are enough."""
    parts = max(math.ceil(n / chunk_size), min(n, max(1, slots)))
    size, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(slice(start, end))
        start = end
    return out


class ResultWatcher:
    """Waits for asset results: woken by the results stream, with a direct read as the fallback."""

    def __init__(self, client: aioredis.Redis, stream: str) -> None:
        self.r = client
        self.stream = stream
        self._waiting: dict[tuple[str, str], asyncio.Event] = {}
        self._open_requests: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._follow())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def result(self, ticket: Ticket, timeout_s: float) -> dict[str, Any] | None:
        """The asset's result document once it has one, or None after ``timeout_s``."""
        where = (ticket.batch_id, ticket.asset_id)
        event = self._waiting[where] = asyncio.Event()
        self._open_requests[ticket.batch_id] = self._open_requests.get(ticket.batch_id, 0) + 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        answered = False
        try:
            while True:
                event.clear()  # before the read: a status change landing after it sets the event again
                raw = await self._read(ticket)
                if raw is not None:
                    answered = True
                    doc: dict[str, Any] = json.loads(raw)
                    return doc
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, FALLBACK_POLL_S))
        finally:
            del self._waiting[where]
            await self._release(ticket.batch_id, answered)

    async def _read(self, ticket: Ticket) -> bytes | None:
        try:
            raw: Any = await self.r.hget(key("batch", ticket.batch_id, "results"), ticket.asset_id)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            log.warning("reading result of %s/%s: %s", ticket.batch_id, ticket.asset_id, e)
            return None
        return raw

    async def _release(self, batch_id: str, answered: bool) -> None:
        left = self._open_requests[batch_id] - 1
        if left:
            self._open_requests[batch_id] = left
            return
        del self._open_requests[batch_id]
        if answered:
            # Unanswered (timed out): a worker may still write; its records expire with result_ttl_s.
            with contextlib.suppress(redis.RedisError):
                await self.r.delete(*(key("batch", batch_id, *part) for part in BATCH_KEY_PARTS))

    async def _follow(self) -> None:
        last_id = await self._stream_end()
        while True:
            try:
                entries: Any = await self.r.xread({self.stream: last_id}, count=1000, block=STREAM_BLOCK_MS)
            except (redis.ConnectionError, redis.TimeoutError) as e:
                log.warning("results stream unreachable (%s); requests read their results directly", e)
                await asyncio.sleep(FALLBACK_POLL_S)
                continue
            for _stream, items in entries or []:
                for entry_id, fields in items:
                    last_id = entry_id
                    where = (text(fields.get(b"batch", b"")), text(fields.get(b"asset", b"")))
                    event = self._waiting.get(where)
                    if event is not None:
                        event.set()

    async def _stream_end(self) -> str:
        """The id of the stream's last entry now (requests wait only for entries after it)."""
        while True:
            try:
                last: Any = await self.r.xrevrange(self.stream, count=1)
                return text(last[0][0]) if last else "0-0"
            except (redis.ConnectionError, redis.TimeoutError) as e:
                log.warning("results stream unreachable (%s); trying again", e)
                await asyncio.sleep(FALLBACK_POLL_S)
