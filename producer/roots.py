"""Refuse ``file://`` assets that no worker may read, at submit time.

Workers read ``file://`` URIs only inside their ``ASSETQ_ALLOWED_ROOTS`` (empty by default, so
none) and record every other one as ``outside_roots``. A first ``assetq submit ./photos`` would
come back all skipped; this check says why before anything is enqueued. It is a courtesy, not the
guard: the worker still resolves symlinks and refuses what escapes its roots. So a path passes
here when either its lexical form or its local resolved form lies inside a root: a false refusal
would block a batch the workers would have read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from urllib.parse import unquote

from contract.spec import Asset

SETTING = "ASSETQ_ALLOWED_ROOTS"
MAX_LISTED = 10  # per-asset errors named before the rest are counted in one line


def file_path(uri: str | None) -> str | None:
    """The normalised local path of a ``file://`` URI (``..`` collapsed), or None for other URIs."""
    if not uri or not uri.startswith("file://"):
        return None
    rest = uri[len("file://") :]
    if rest.startswith("localhost/"):
        rest = rest[len("localhost") :]
    return os.path.normpath(unquote(rest))


def _inside(path: str, roots: Sequence[str]) -> bool:
    # Both sides are absolute and normalised, so a prefix ending in "/" is the path test (and cheap).
    return any(path == root or path.startswith(root if root.endswith("/") else root + "/") for root in roots)


def covered(path: str, roots: Sequence[str]) -> bool:
    # The lexical test first: resolving symlinks costs a system call per path component.
    if _inside(path, roots):
        return True
    try:
        return _inside(os.path.realpath(path), roots)
    except (OSError, ValueError):  # a NUL byte, a symlink loop: the worker refuses those anyway
        return False


def _where(fleet: list[list[str]], local: list[str]) -> str:
    """Whose roots the path was checked against, for the message."""
    if fleet:
        roots = sorted({r for worker in fleet for r in worker})
        return f"every live worker's {SETTING} ({', '.join(roots) or 'all empty'})"
    return f"{SETTING} ({', '.join(local) or 'empty'}; the setting here, as no live worker advertises its own)"


def outside_roots_errors(assets: Sequence[Asset], fleet: list[list[str]], local: list[str]) -> list[tuple[str, str]]:
    """One error per ``file://`` asset no live worker's roots cover (``fleet``; ``local`` if none advertise).

    A path is covered when at least one worker's roots hold it. ``s3://`` and inline assets pass.
    """
    rootsets = fleet or [local]
    outside = [
        (n, path)
        for n, asset in enumerate(assets)
        if (path := file_path(asset.uri)) is not None and not any(covered(path, roots) for roots in rootsets)
    ]
    if not outside:
        return []
    where = _where(fleet, local)
    errors = [
        (
            f"assets.{n}.uri",
            f"{path} is outside {where}, so a worker would skip it as outside_roots; set {SETTING} on the "
            f"workers to a JSON list of folders that holds it, e.g. {SETTING}='{json.dumps([os.path.dirname(path)])}'",
        )
        for n, path in outside[:MAX_LISTED]
    ]
    if len(outside) > MAX_LISTED:
        errors.append(("assets", f"{len(outside) - MAX_LISTED} more file:// assets are outside {SETTING}"))
    return errors
