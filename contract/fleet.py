"""Workers advertise themselves (device, installed models) in Redis with a heartbeat TTL.

The producer reads this to validate specs against what the fleet can run.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from contract.connection import text
from contract.keys import key
from contract.spec import Catalog

HEARTBEAT_TTL_S = 60


class WorkerRegistry:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def advertise(self, node: str, info: dict[str, Any], ttl_s: int = HEARTBEAT_TTL_S) -> None:
        catalog = {t: {ty: sorted(n) for ty, n in types.items()} for t, types in info.get("catalog", {}).items()}
        self.r.set(key("worker", node), json.dumps({**info, "catalog": catalog, "seen": time.time()}), ex=ttl_s)

    def forget(self, node: str) -> None:
        self.r.delete(key("worker", node))

    def live(self) -> dict[str, dict[str, Any]]:
        out = {}
        for k in self.r.scan_iter(match=key("worker", "*"), count=200):
            raw = self.r.get(k)
            if raw:
                name = text(k).removeprefix(key("worker", ""))
                out[name] = json.loads(raw)
        return out

    def catalog(self) -> Catalog:
        merged: Catalog = {}
        for info in self.live().values():
            for task, types in info.get("catalog", {}).items():
                for type_, names in types.items():
                    merged.setdefault(task, {}).setdefault(type_, set()).update(names)
        return merged
