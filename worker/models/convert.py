"""Install-time rewrites of ONNX files that ship with a fixed batch of 1.

Each converter edits one file in place so the session accepts ``[N, ...]``
inputs; the model's numbers are untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

CONVERTERS: dict[str, Callable[[Path], None]] = {}
