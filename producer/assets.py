"""Turn paths given on the command line into asset references."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._:@=+-]")


def walk(paths: Iterable[Path]) -> list[tuple[Path, Path]]:
    """Every regular, non-hidden file under ``paths`` as (root, file), sorted; files decode by content later."""
    found: list[tuple[Path, Path]] = []
    for p in paths:
        p = p.expanduser()
        if p.is_dir():
            found.extend(
                (p, f)
                for f in sorted(p.rglob("*"))
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        elif p.exists():
            found.append((p.parent, p))
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return found


def asset_id_for(root: Path, file: Path) -> str:
    rel = file.relative_to(root).as_posix()
    clean = _UNSAFE.sub("_", rel).lstrip("._-+:@=") or "asset"
    return clean[:200]


def assets_from_paths(paths: Iterable[Path], inline: bool = False) -> list[dict[str, Any]]:
    assets: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for root, file in walk(paths):
        aid = asset_id_for(root, file)
        if aid in seen:  # same relative name under two roots
            seen[aid] += 1
            aid = f"{aid[:190]}~{seen[aid]}"
        else:
            seen[aid] = 0
        if inline:
            assets.append({"id": aid, "data": base64.b64encode(file.read_bytes()).decode()})
        else:
            assets.append({"id": aid, "uri": file.resolve().as_uri()})
    return assets
