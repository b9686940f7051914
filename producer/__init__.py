"""assetq producer: the ``Producer`` API (validate, record, enqueue by task name, follow a batch).

Imports no worker code and no onnxruntime. ``Producer`` is imported on first use, so that
importing ``producer`` (or anything below it) costs nothing until a batch is sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from contract.errors import SpecError
from contract.spec import JobSpec, parse_spec

if TYPE_CHECKING:
    from producer.client import Producer

__all__ = ["JobSpec", "Producer", "SpecError", "parse_spec"]


def __getattr__(name: str) -> Any:
    if name == "Producer":
        from producer.client import Producer

        return Producer
    raise AttributeError(f"module 'producer' has no attribute {name!r}")
