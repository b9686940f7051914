"""Batch state in Redis (the key layout is in ``contract/keys.py``).

Result writes are idempotent: a Lua script moves the asset's status and the
counters in one step, so writing the same asset twice never counts twice and
a replayed asset moves from ``failed`` to ``ok``.

**One truth per asset.** However often a chunk runs, the Redis record decides
which document is an asset's result, and every copy (S3, a local directory) is
written from it: ``stage`` keeps the first document a delivery produced for an
asset (or skips an asset that is already final), the sinks write that
document, and ``record`` makes it the result and counts it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import redis

from config import Settings
from contract import documents
from contract.connection import redis_client, text
from contract.keys import PREFIX, key

__all__ = ["PREFIX", "BatchStore", "key"]

# KEYS: batch, status, results, stream, staged   ARGV: asset, status, json, ttl, maxlen, keep_final
_RECORD = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if ARGV[6] == '1' and (old == 'ok' or old == 'skipped') then return 0 end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
if old ~= ARGV[2] then
  if old then redis.call('HINCRBY', KEYS[1], old, -1) end
  redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  local bid = redis.call('HGET', KEYS[1], 'id') or ''
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'batch', bid, 'asset', ARGV[1], 'status', ARGV[2])
end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ttl) end
end
if old == ARGV[2] then return 0 end
return 1
"""


# KEYS: batch, status   ARGV: asset ids. Moves replayed assets back to pending.
_REOPEN = """
local n = 0
for i = 1, #ARGV do
  local old = redis.call('HGET', KEYS[2], ARGV[i])
  if old == 'failed' or old == 'skipped' then
    redis.call('HINCRBY', KEYS[1], old, -1)
    redis.call('HDEL', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
"""

# KEYS: status, staged   ARGV: ttl, then asset id and result JSON pairs.
# Per asset: 0 = already final (write nothing), 1 = this document is staged, else the document staged before.
_STAGE = """
local out = {}
for i = 2, #ARGV, 2 do
  local st = redis.call('HGET', KEYS[1], ARGV[i])
  if st == 'ok' or st == 'skipped' then
    out[#out + 1] = 0
  else
    local prev = redis.call('HGET', KEYS[2], ARGV[i])
    if prev then
      out[#out + 1] = prev
    else
      redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
      out[#out + 1] = 1
    end
  end
end
local ttl = tonumber(ARGV[1])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
return out
"""


def batch_record(
    batch_id: str, total: int, tasks: dict[str, Any], output: dict[str, Any], now: float
) -> dict[str, str]:
    """The fields of a new batch's hash, as Redis stores them (``create_batch`` and the submit script write it)."""
    return {
        "id": batch_id,
        "total": str(total),
        "created_at": repr(now),
        "tasks": json.dumps(tasks),
        "output": json.dumps(output),
        "ok": "0",
        "skipped": "0",
        "failed": "0",
    }


class BatchStore:
    def __init__(
        self,
        client: redis.Redis,
        ttl_s: int = 7 * 24 * 3600,
        stream: str = "assetq:results",
        stream_maxlen: int = 1_000_000,
    ) -> None:
        self.r = client
        self.ttl_s = ttl_s
        self.stream = stream
        self.stream_maxlen = stream_maxlen
        self._record = self.r.register_script(_RECORD)
        self._reopen = self.r.register_script(_REOPEN)
        self._stage = self.r.register_script(_STAGE)

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None) -> BatchStore:
        """The store as ``settings`` configure it (on ``client``, or a new connection)."""
        return cls(
            client or redis_client(settings),
            settings.result_ttl_s,
            settings.results_stream,
            settings.results_stream_maxlen,
        )

    # -- batches ----------------------------------------------------------------------
    def create_batch(
        self, batch_id: str, assets: list[dict[str, Any]], tasks: dict[str, Any], output: dict[str, Any]
    ) -> None:
        bkey = key("batch", batch_id)
        pipe = self.r.pipeline(transaction=True)
        record: dict[Any, Any] = batch_record(batch_id, len(assets), tasks, output, time.time())  # redis' Mapping
        pipe.hset(bkey, mapping=record)
        for i in range(0, len(assets), 1000):
            pipe.hset(key("batch", batch_id, "assets"), mapping={a["id"]: json.dumps(a) for a in assets[i : i + 1000]})
        pipe.zadd(key("batches"), {batch_id: time.time()})
        if self.ttl_s > 0:
            pipe.expire(bkey, self.ttl_s)
            pipe.expire(key("batch", batch_id, "assets"), self.ttl_s)
        pipe.execute()

    def confirm_replicated(self, batch_id: str, chunks: int, replicas: int, timeout_ms: int) -> int:
        """Mark the batch published, and wait until ``replicas`` replicas have it; returns how many did.

        Redis replicates in order, and WAIT waits for this connection's last write, so a replica
        that has the mark has the batch record and every chunk published before it (kombu's own
        connection sent those, and each had been answered before this write was sent).
        """
        pipe = self.r.pipeline(transaction=False)  # one connection: the WAIT follows this very write
        pipe.hset(key("batch", batch_id), "published", chunks)
        pipe.execute_command("WAIT", replicas, timeout_ms)
        _, acked = pipe.execute()
        return int(acked)

    def exists(self, batch_id: str) -> bool:
        return bool(self.r.exists(key("batch", batch_id)))

    def status(self, batch_id: str) -> dict[str, Any] | None:
        raw = self.r.hgetall(key("batch", batch_id))
        if not raw:
            return None
        h = {text(k): text(v) for k, v in raw.items()}
        total, ok, skipped, failed = (int(h.get(f, 0)) for f in ("total", "ok", "skipped", "failed"))
        done = ok + skipped + failed
        return {
            "batch_id": batch_id,
            "total": total,
            "ok": ok,
            "skipped": skipped,
            "failed": failed,
            "done": done,
            "pending": max(total - done, 0),
            "complete": done >= total,
            "created_at": float(h.get("created_at", 0)),
            "dead_letters": int(self.r.hlen(key("deadletter", batch_id))),
        }

    def batch_meta(self, batch_id: str) -> dict[str, Any]:
        h = {text(k): text(v) for k, v in self.r.hgetall(key("batch", batch_id)).items()}
        return {"tasks": json.loads(h.get("tasks", "{}")), "output": json.loads(h.get("output", "{}"))}

    def assets(self, batch_id: str, ids: list[str] | None = None) -> list[dict[str, Any]]:
        k = key("batch", batch_id, "assets")
        raw = self.r.hmget(k, ids) if ids else list(self.r.hgetall(k).values())
        return [json.loads(v) for v in raw if v is not None]

    def statuses(self, batch_id: str) -> dict[str, str]:
        return {text(k): text(v) for k, v in self.r.hgetall(key("batch", batch_id, "status")).items()}

    def all_final(self, batch_id: str, asset_ids: list[str]) -> bool:
        """Whether every one of ``asset_ids`` already has its final result (``ok`` or ``skipped``)."""
        if not asset_ids:
            return False
        found = self.r.hmget(key("batch", batch_id, "status"), asset_ids)
        return all(text(v) in ("ok", "skipped") for v in found if v is not None) and None not in found

    def recent_batches(self, limit: int = 20) -> list[str]:
        return [text(b) for b in self.r.zrevrange(key("batches"), 0, limit - 1)]

    # -- results ---------------------------------------------------------------------
    def stage(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The documents to write for ``results`` (all of one batch), one truth per asset.

        An asset already ``ok`` or ``skipped`` is left out (its copies were written before it was
        recorded); one staged by an earlier delivery keeps that earlier document.
        """
        if not results:
            return []
        bid = results[0]["batch_id"]
        args: list[Any] = [self.ttl_s]
        for r in results:
            args += [r["asset_id"], documents.encode(r)]
        answers = self._stage(keys=[key("batch", bid, "status"), key("batch", bid, "staged")], args=args)
        out = []
        for r, answer in zip(results, answers, strict=True):
            if answer == 1:
                out.append(r)
            elif answer != 0:
                out.append(documents.decode(answer))
        return out

    def record(self, result: dict[str, Any], keep_final: bool = False) -> bool:
        """Store one asset's result; returns True when its status changed (counted).

        ``keep_final``: leave an asset that is already ``ok`` or ``skipped`` as it is
        (dead-lettering must not overwrite a result a duplicate delivery wrote meanwhile).
        """
        bid, aid = result["batch_id"], result["asset_id"]
        changed = self._record(
            keys=[
                key("batch", bid),
                key("batch", bid, "status"),
                key("batch", bid, "results"),
                self.stream,
                key("batch", bid, "staged"),
            ],
            args=[
                aid,
                result["status"],
                documents.encode(result),
                self.ttl_s,
                self.stream_maxlen,
                int(keep_final),
            ],
        )
        return bool(changed)

    def reopen(self, batch_id: str, asset_ids: list[str]) -> int:
        """Move ``failed``/``skipped`` assets back to pending (before a replay); returns how many moved.

        The batch is then incomplete again until their new results land, and the
        counters stay exact: each asset is counted once, in its latest state.
        """
        if not asset_ids:
            return 0
        moved = self._reopen(keys=[key("batch", batch_id), key("batch", batch_id, "status")], args=asset_ids)
        return int(moved)

    def result(self, batch_id: str, asset_id: str) -> dict[str, Any] | None:
        raw = self.r.hget(key("batch", batch_id, "results"), asset_id)
        return documents.decode(raw) if raw else None

    def iter_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        for _, raw in self.r.hscan_iter(key("batch", batch_id, "results"), count=500):
            yield documents.decode(raw)

    # -- dead letters ------------------------------------------------------------------
    def dead_letter(self, batch_id: str, entry_id: str, entry: dict[str, Any]) -> None:
        k = key("deadletter", batch_id)
        self.r.hset(k, entry_id, json.dumps(entry))
        self.r.zadd(key("deadletters"), {batch_id: time.time()})
        if self.ttl_s > 0:
            self.r.expire(k, self.ttl_s)

    def dead_letters(self, batch_id: str) -> dict[str, dict[str, Any]]:
        return {text(k): json.loads(v) for k, v in self.r.hgetall(key("deadletter", batch_id)).items()}

    def remove_dead_letters(self, batch_id: str, entry_ids: list[str]) -> None:
        if entry_ids:
            self.r.hdel(key("deadletter", batch_id), *entry_ids)

    def dead_letter_batches(self) -> list[str]:
        batches = [text(b) for b in self.r.zrevrange(key("deadletters"), 0, -1)]
        return [b for b in batches if self.r.exists(key("deadletter", b))]
