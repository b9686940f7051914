"""The wire format between producers and workers: one chunk of a batch, sent as a Celery task by name.

The task is ``assetq.process_chunk`` with one keyword argument, ``payload``: a
JSON object with ``batch_id``, ``chunk_id``, ``assets`` (asset refs, each with a
string ``id``), ``tasks`` (the spec's ``tasks`` block, dumped) and ``output``.
``ChunkPayload`` builds it (producers) and checks it (workers), here only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from contract.errors import PayloadError

PROCESS_CHUNK = "assetq.process_chunk"


@dataclass(frozen=True)
class ChunkPayload:
    batch_id: str
    chunk_id: str
    assets: list[dict[str, Any]]
    tasks: dict[str, Any]
    output: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> dict[str, Any]:
        """The JSON object sent as the task's ``payload`` keyword argument."""
        return {
            "batch_id": self.batch_id,
            "chunk_id": self.chunk_id,
            "assets": self.assets,
            "tasks": self.tasks,
            "output": self.output,
        }

    @classmethod
    def decode(cls, raw: Any) -> ChunkPayload:
        """Check what arrived; ``PayloadError`` says what is wrong (it is never run then)."""
        if not isinstance(raw, dict):
            raise PayloadError(f"payload is a {type(raw).__name__}, not an object")
        for name, typ in (("batch_id", str), ("chunk_id", str), ("assets", list), ("tasks", dict)):
            if not isinstance(raw.get(name), typ):
                raise PayloadError(f"payload field {name!r} is missing or not a {typ.__name__}")
        if not raw["assets"]:
            raise PayloadError("payload has no assets")
        if not all(isinstance(a, dict) and isinstance(a.get("id"), str) for a in raw["assets"]):
            raise PayloadError("every asset needs a string 'id'")
        output = raw.get("output") or {}
        if not isinstance(output, dict):
            raise PayloadError("payload field 'output' is not an object")
        return cls(raw["batch_id"], raw["chunk_id"], raw["assets"], raw["tasks"], output)

    @property
    def asset_ids(self) -> list[str]:
        return [a["id"] for a in self.assets]

    def part(self, n: int, asset: dict[str, Any]) -> ChunkPayload:
        """The ``n``-th one-asset chunk split off this one (isolating an asset that kills workers)."""
        return ChunkPayload(self.batch_id, f"{self.chunk_id}.{n}", [asset], self.tasks, self.output)

    def describe(self) -> dict[str, str]:
        """Readable task arguments for Flower and logs (ids and a count, never the assets themselves)."""
        return {
            "argsrepr": f"batch={self.batch_id} chunk={self.chunk_id}",
            "kwargsrepr": f"{{assets: {len(self.assets)}}}",
        }
