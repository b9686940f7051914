"""A batch recorded and its chunks enqueued in one round trip, when the broker is the store's Redis.

``Producer.submit`` used to check the batch id, record the batch (a transaction) and
then publish each chunk through Celery's ``send_task`` (the transport's own round trip
per chunk). One script here does all of it atomically: if the batch id is taken
nothing is written; otherwise the batch, its assets and every chunk message (the
very bytes Celery would store, ``contract.broker.task_message``) with their wake
tokens are written together, so a batch is never recorded without its chunks or
the other way round.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from contract.broker import WAKE_TOKENS_MAX
from contract.keys import key, wake_key
from contract.store import batch_record

# KEYS: batch, assets, batches, wake, list per message...
# ARGV: batch id, created, ttl, meta (flat JSON array), assets (flat JSON array id, json, ...), wake tokens kept,
#       message...
_SUBMIT = """#!lua
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local meta = cjson.decode(ARGV[4])
redis.call('HSET', KEYS[1], unpack(meta))
local assets = cjson.decode(ARGV[5])
for i = 1, #assets, 1000 do
  redis.call('HSET', KEYS[2], unpack(assets, i, math.min(i + 999, #assets)))
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end
for i = 7, #ARGV do
  redis.call('LPUSH', KEYS[i - 2], ARGV[i])
  redis.call('LPUSH', KEYS[4], 1)
end
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[6]) - 1)
return 1
"""


class Submitter:
    """Runs the submit script on one Redis (the broker and the store both)."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._script = client.register_script(_SUBMIT)
        self.ttl_s = ttl_s

    def submit(
        self,
        batch_id: str,
        assets: Sequence[dict[str, Any]],
        tasks: dict[str, Any],
        output: dict[str, Any],
        queue: str,
        messages: Sequence[tuple[str, str]],
    ) -> bool:
        """Record the batch and push ``messages`` ((list key, body) for ``queue``); False if the id is taken."""
        now = time.time()
        meta = [part for item in batch_record(batch_id, len(assets), tasks, output, now).items() for part in item]
        flat: list[str] = []
        for a in assets:
            flat += [a["id"], json.dumps(a)]
        keys = [key("batch", batch_id), key("batch", batch_id, "assets"), key("batches"), wake_key(queue)]
        keys += [list_key for list_key, _ in messages]
        args: list[str | float] = [batch_id, now, self.ttl_s, json.dumps(meta), json.dumps(flat), WAKE_TOKENS_MAX]
        args += [body for _, body in messages]
        return bool(self._script(keys=keys, args=args))
