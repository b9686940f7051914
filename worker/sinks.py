"""Where results go: Redis (the record of truth for batch state), S3, a local directory.

Every write is keyed by (batch id, asset id), so a re-run overwrites and never duplicates,
and every copy of an asset's result is the document Redis staged for it (``BatchStore.stage``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from contract import documents
from worker.pipeline.errors import TransientError

if TYPE_CHECKING:  # the redis client is imported by what makes a store: `assetq run` never loads it
    from contract.store import BatchStore


class Sink(Protocol):
    def write(self, results: list[dict[str, Any]], output: dict[str, Any]) -> None: ...


class RedisSink:
    """Per-asset result with expiry, exact batch counters, and the results stream."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store

    def stage(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The documents every sink writes: one per asset not final yet, the first one staged for it."""
        import redis

        try:
            return self.store.stage(results)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise TransientError(f"Redis unreachable staging results: {e}") from e

    def write(self, results: list[dict[str, Any]], output: dict[str, Any]) -> None:
        import redis

        try:
            for result in results:
                stored = result if output.get("redis", True) else _status_only(result)
                self.store.record(stored)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            raise TransientError(f"Redis unreachable writing results: {e}") from e


def _status_only(result: dict[str, Any]) -> dict[str, Any]:
    # Results not wanted in Redis: keep what batch tracking needs, not the payload.
    keep = ("batch_id", "asset_id", "status", "error", "image", "timings_ms")
    return {k: result[k] for k in keep if k in result}


def s3_key(prefix: str, batch_id: str, asset_id: str) -> str:
    return f"{prefix}{batch_id}/{asset_id}.json"


class S3Sink:
    """``s3://<bucket>/<prefix><batch>/<asset>.json``; PUT of the same key overwrites."""

    def __init__(self, make_client: Callable[[], Any], default_bucket: str | None, default_prefix: str) -> None:
        # The client (and boto3, ~0.3 s and tens of MB to import) is made on the first write to a bucket:
        # a worker whose jobs never ask for S3 never loads it.
        self._make_client = make_client
        self._client: Any = None
        self.default_bucket = default_bucket
        self.default_prefix = default_prefix

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def write(self, results: list[dict[str, Any]], output: dict[str, Any]) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        target = output.get("s3") or {}
        bucket = target.get("bucket") or self.default_bucket
        if not bucket:
            return
        prefix = target.get("prefix", self.default_prefix)
        try:
            for r in results:
                body = documents.encode(r)
                self.client.put_object(
                    Bucket=bucket,
                    Key=s3_key(prefix, r["batch_id"], r["asset_id"]),
                    Body=body,
                    ContentType="application/json",
                )
        except (BotoCoreError, ClientError) as e:
            raise TransientError(f"S3 write to {bucket} failed: {e}") from e


class LocalDirSink:
    """``<root>/<batch>/<asset>.json``, written atomically (temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def write(self, results: list[dict[str, Any]], output: dict[str, Any]) -> None:
        for r in results:
            target = self.root / r["batch_id"] / f"{r['asset_id']}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(documents.encode(r))
            os.replace(tmp, target)


def write_all(sinks: list[Sink], results: list[dict[str, Any]], output: dict[str, Any]) -> None:
    """Stage in Redis, then the external sinks, then the Redis record, which marks an asset done.

    A delivery killed anywhere in between leaves the asset pending; the next one writes the
    same staged document again, so S3 and Redis hold one and the same document.
    """
    records = [s for s in sinks if isinstance(s, RedisSink)]
    docs = records[0].stage(results) if records else results
    for sink in sorted(sinks, key=lambda s: isinstance(s, RedisSink)):
        sink.write(docs, output)
