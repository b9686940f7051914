"""The faces job's three image sets, generated at run time like the main photo set.

* ``previews``: short side 1440 px, what Immich's server sends its machine learning;
* ``small``: 0.3-1.6 MP photos;
* ``12mp``: camera originals, 4000 x 3000 (either way up).

Each set is a dozen distinct compositions (0 to 16 faces: the team photo, tiled heads,
the astronaut, scenes without faces) written once as JPEGs; a run of N images cycles
through them. ``folder`` lays N of them out as files of their own (hard links) for the
whole-command runs, which take a folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from benchmarks.photos import (
    PHOTO_SET_VERSION,
    _astronaut_sign,
    _cat_street,
    _coffee_menu,
    _eurotext,
    _plain,
    _players,
    face_grid,
    write_jpeg,
)

Maker = Callable[[tuple[int, int]], Image.Image]


@dataclass(frozen=True)
class FaceSet:
    name: str
    label: str
    sizes: tuple[tuple[int, int], ...]  # cycled over the compositions
    whole_command_images: int  # the whole-command runs: 60 small, 120 previews, 24 12 MP


FACE_SETS = (
    FaceSet("previews", "previews, short side 1440", ((1920, 1440), (1440, 1920), (2160, 1440), (1440, 1440)), 120),
    FaceSet(
        "small",
        "small photos, 0.3-1.6 MP",
        ((640, 480), (800, 600), (1024, 768), (1200, 900), (1280, 960), (1440, 1080), (960, 1280), (1000, 1000)),
        60,
    ),
    FaceSet("12mp", "12 MP originals", ((4000, 3000), (3000, 4000)), 24),
)


def _compositions(wheel_cache: Path) -> list[Maker]:
    return [
        _players(wheel_cache, False),
        lambda s: face_grid(1, s),
        _astronaut_sign,
        lambda s: face_grid(4, s),
        _cat_street,
        _eurotext,
        lambda s: face_grid(2, s),
        _plain("astronaut"),
        _coffee_menu,
        lambda s: face_grid(6, s),
        _players(wheel_cache, True),
        _plain("chelsea"),
    ]


def distinct_photos(work: Path, wheel_cache: Path, face_set: FaceSet) -> list[Path]:
    """The set's distinct JPEGs, generated once into ``work``."""
    root = work / f"photos-v{PHOTO_SET_VERSION}" / f"faces-{face_set.name}"
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, make in enumerate(_compositions(wheel_cache)):
        size = face_set.sizes[i % len(face_set.sizes)]
        path = root / f"{face_set.name}_{i:02d}_{size[0]}x{size[1]}.jpg"
        if not path.is_file():
            write_jpeg(make(size), path)
        out.append(path)
    return out


def cycled(photos: list[Path], count: int) -> list[Path]:
    return [photos[i % len(photos)] for i in range(count)]


def folder(photos: list[Path], count: int, where: Path) -> Path:
    """A folder of ``count`` image files (hard links to the distinct photos), for a whole command."""
    where.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(cycled(photos, count)):
        dst = where / f"img{i:04d}{src.suffix}"
        if not dst.exists():
            try:
                os.link(src, dst)
            except OSError:  # another file system: a copy does as well
                dst.write_bytes(src.read_bytes())
    return where
