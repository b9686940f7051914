"""JSON request bodies, read as strictly as ``assetq validate`` reads a spec file."""

from __future__ import annotations

import json
from typing import Any


def loads_strict(text: str | bytes) -> Any:
    """``json.loads`` that refuses a key given twice (``ValueError``, as a syntax error is).

    Plain json keeps the last of two equal keys, so a task or option given twice would silently vanish.
    """
    return json.loads(text, object_pairs_hook=_no_duplicate_keys)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dups = sorted({k for k in keys if keys.count(k) > 1})
    if dups:
        raise ValueError(f"duplicate key(s) {', '.join(map(repr, dups))}")
    return dict(pairs)
