"""Errors the pipeline turns into per-asset records."""

from __future__ import annotations


class AssetError(Exception):
    """A permanent, per-asset problem: the asset becomes a ``skipped`` record.

    ``kind`` is a short machine-readable reason (``empty``, ``truncated``,
    ``corrupt``, ``unsupported_format``, ``too_large``, ``not_found``,
    ``access_denied``, ``outside_roots`` ...).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message}


class TransientError(Exception):
    """A failure that may pass (storage unreachable, timeout, device OOM): retry the task."""
