"""Turn paths given on the command line into asset references.

A folder expands to the image files under it, chosen by extension (``ASSETQ_IMAGE_EXTENSIONS``,
compared case-insensitively), so the sidecars photo libraries keep next to each photo (Google
Takeout's ``.json``, ``.xmp``, ``.txt``) are not sent as assets that can only be skipped; what was
left out is counted by extension. Hidden files and folders (a leading dot: ``.DS_Store``, macOS's
``._IMG_0001.jpg`` resource forks, ``.thumbnails``) are skipped and not counted: they are the file
system's bookkeeping, not the library. A file named on its own is taken whatever its name, since
the decoder finds the format from the content.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.settings import IMAGE_EXTENSIONS

_UNSAFE = re.compile(r"[^A-Za-z0-9._:@=+-]")
NO_EXTENSION = "(no extension)"


@dataclass
class FoundFiles:
    """The files paths expand to, as (root, file) pairs sorted per root, and the folder files left out."""

    files: list[tuple[Path, Path]] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)  # lower-case extension -> files not taken

    def left_out_note(self) -> str:
        """``3 files left out (not images by extension: .json 2, .txt 1)``, or "" when none were."""
        total = sum(self.left_out.values())
        if not total:
            return ""
        by_count = sorted(self.left_out.items(), key=lambda kv: (-kv[1], kv[0]))
        counts = ", ".join(f"{ext} {n}" for ext, n in by_count)
        return f"{total} file{'s' if total != 1 else ''} left out (not images by extension: {counts})"


def _hidden(file: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in file.relative_to(root).parts)


def walk(paths: Iterable[Path], extensions: Collection[str] = IMAGE_EXTENSIONS) -> FoundFiles:
    """Every file named in ``paths``, and the image files under each folder in them."""
    wanted = {"." + e.lower().lstrip(".") for e in extensions}
    found = FoundFiles()
    for p in paths:
        p = p.expanduser()
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if not f.is_file() or _hidden(f, p):
                    continue
                suffix = f.suffix.lower()
                if suffix in wanted:
                    found.files.append((p, f))
                else:
                    found.left_out[suffix or NO_EXTENSION] += 1
        elif p.exists():
            found.files.append((p.parent, p))
        else:
            raise FileNotFoundError(f"{p} does not exist")
    return found


def asset_id_for(root: Path, file: Path) -> str:
    rel = file.relative_to(root).as_posix()
    clean = _UNSAFE.sub("_", rel).lstrip("._-+:@=") or "asset"
    return clean[:200]


@dataclass
class Collected:
    """Asset references for the found files; ``files`` maps each asset id back to its file."""

    assets: list[dict[str, Any]]
    files: dict[str, Path]
    found: FoundFiles


def collect_assets(
    paths: Iterable[Path], inline: bool = False, extensions: Collection[str] = IMAGE_EXTENSIONS
) -> Collected:
    assets: list[dict[str, Any]] = []
    files: dict[str, Path] = {}
    seen: dict[str, int] = {}
    found = walk(paths, extensions)
    for root, file in found.files:
        aid = asset_id_for(root, file)
        if aid in seen:  # same relative name under two roots
            seen[aid] += 1
            aid = f"{aid[:190]}~{seen[aid]}"
        else:
            seen[aid] = 0
        files[aid] = file
        if inline:
            assets.append({"id": aid, "data": base64.b64encode(file.read_bytes()).decode()})
        else:
            assets.append({"id": aid, "uri": file.resolve().as_uri()})
    return Collected(assets, files, found)


def assets_from_paths(
    paths: Iterable[Path], inline: bool = False, extensions: Collection[str] = IMAGE_EXTENSIONS
) -> list[dict[str, Any]]:
    return collect_assets(paths, inline, extensions).assets
