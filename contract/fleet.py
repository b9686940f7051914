"""Workers advertise themselves (device, installed models, allowed roots) in Redis with a heartbeat TTL.

The producer reads this to validate specs against what the fleet can run and read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from contract.connection import text
from contract.keys import key
from contract.spec import Catalog

HEARTBEAT_TTL_S = 60
ALLOWED_ROOTS = "allowed_roots"  # the info key: the folders a worker reads file:// URIs in
PROCESSES = "processes"  # the info key: the worker's pool processes (chunks it can run at once)


def root_forms(roots: Iterable[Path | str]) -> list[str]:
    """Each root both as an absolute path and with its symlinks resolved.

    The worker checks a file against the resolved form; a producer may name the file through the
    symlink. Advertising both lets the producer's check pass whenever the worker's would.
    """
    return sorted({form for r in roots for form in (os.path.abspath(r), os.path.realpath(r))})


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

    def processes(self) -> int:
        """Pool processes of all live workers together (0 when none advertises them)."""
        return sum(int(info.get(PROCESSES) or 0) for info in self.live().values())

    def advertised_roots(self) -> list[list[str]]:
        """The allowed roots of each live worker that advertises them (older workers do not)."""
        return [list(info[ALLOWED_ROOTS]) for info in self.live().values() if isinstance(info.get(ALLOWED_ROOTS), list)]
