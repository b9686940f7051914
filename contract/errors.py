"""assetq's exceptions: one base class, so a caller can catch everything assetq raises on purpose."""

from __future__ import annotations

from typing import Any


class AssetqError(Exception):
    """Base of every error assetq raises on purpose."""


class SpecError(AssetqError, ValueError):
    """An invalid spec or request; ``errors`` are ``(field path, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{loc}: {msg}" for loc, msg in errors))

    @classmethod
    def from_validation(cls, e: Any, prefix: str = "") -> SpecError:
        """From a pydantic ``ValidationError``: one (field, message) per problem."""
        out = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(spec)"
            out.append((prefix + loc, err["msg"].removeprefix("Value error, ")))
        return cls(out)


class PayloadError(AssetqError, ValueError):
    """A task message whose payload is not a chunk (kept as a dead letter, never run)."""


class ReplicationError(AssetqError):
    """A batch the master took but too few replicas acknowledged in time: a failover now could lose it."""

    def __init__(self, batch_id: str, message: str) -> None:
        self.batch_id = batch_id
        super().__init__(message)
