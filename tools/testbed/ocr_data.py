"""Test images for the OCR steps: rendered text with known ground truth, and printed pages.

Rendered images use the DejaVu fonts (Debian package ``fonts-dejavu-core``) when
present and always Pillow's bundled Aileron Regular. Real printed text comes from
scikit-image's ``page.png`` (a photographed book page, BSD-3 with scikit-image)
and ``tests/data/ocr/eurotext.png`` (see the README there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DATA_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "ocr"  # the images stay with the tests
DEJAVU_DIR = Path("/usr/share/fonts/truetype/dejavu")
DEFAULT_FONT = "Aileron (Pillow)"

EUROTEXT_LINES = (
    "The (quick) [brown] {fox} jumps!",
    "Over the $43,456.78 <lazy> #90 dog",
    "& duck/goose, as 12.5% of E-mail",
    "from aspammer@website.com is spam.",
    "Der „schnelle” braune Fuchs springt",
    "über den faulen Hund. Le renard brun",
    "«rapide» saute par-dessus le chien",
    "paresseux. La volpe marrone rapida",
    "salta sopra il cane pigro. El zorro",
    "marrón rápido salta sobre el perro",
    "perezoso. A raposa marrom rápida",
    "salta sobre o cão preguiçoso.",
)

PAGE_LINES = (
    "Region-based segmentation",
    "Let us first determine markers of the coins and the",
    "background. These markers are pixels that we can label",
    "unambiguously as either object or background. Here,",
    "the markers are found at the two extreme parts of the",
    "histogram of grey values:",
    ">>> markers = np.zeros_like(coins)",
)


def eurotext() -> np.ndarray:
    return np.asarray(Image.open(DATA_DIR / "eurotext.png").convert("RGB"))


def page() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(np.repeat(data.page()[:, :, None], 3, axis=2))


def available_fonts() -> dict[str, Path | None]:
    """Font name -> TTF path (None: Pillow's bundled default)."""
    fonts: dict[str, Path | None] = {DEFAULT_FONT: None}
    for name in ("DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "DejaVuSans-Bold", "DejaVuSerif-Italic"):
        path = DEJAVU_DIR / f"{name}.ttf"
        if path.is_file():
            fonts[name] = path
    return fonts


def load_font(path: Path | None, size: int) -> ImageFont.FreeTypeFont:
    if path is None:
        font = ImageFont.load_default(size=size)
        assert isinstance(font, ImageFont.FreeTypeFont), "Pillow without FreeType"
        return font
    return ImageFont.truetype(str(path), size)


def missing_glyphs(font: ImageFont.FreeTypeFont, text: str) -> str:
    """Characters of ``text`` the font draws as its "missing glyph" box (Aileron has no accents)."""
    notdef = font.getmask("\U0010fffd")
    notdef_key = (notdef.size, bytes(notdef))
    return "".join(
        sorted(
            {ch for ch in text if not ch.isspace() and (font.getmask(ch).size, bytes(font.getmask(ch))) == notdef_key}
        )
    )


@dataclass(frozen=True)
class RenderedLine:
    text: str
    quad: np.ndarray  # (4, 2) clockwise from top-left, in image pixels


@dataclass(frozen=True)
class RenderedImage:
    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    lines: tuple[RenderedLine, ...]


def render_lines(
    lines: Sequence[str],
    font_path: Path | None,
    size: int,
    ink: tuple[int, int, int] = (20, 20, 20),
    paper: tuple[int, int, int] = (250, 250, 245),
    angle: float = 0.0,
    margin: int = 24,
    spacing: float = 0.8,
) -> RenderedImage:
    """Draw ``lines`` left-aligned, then rotate the page by ``angle`` degrees (anticlockwise)."""
    font = load_font(font_path, size)
    for text in lines:
        if missing := missing_glyphs(font, text):
            raise ValueError(f"font {font_path or DEFAULT_FONT} has no glyph for {missing!r}: the truth would be wrong")
    boxes = [font.getbbox(t) for t in lines]
    step = int(size * (1 + spacing))
    width = int(max(b[2] for b in boxes)) + 2 * margin
    height = margin * 2 + step * (len(lines) - 1) + size + size // 3
    canvas = Image.new("RGB", (width, height), paper)
    draw = ImageDraw.Draw(canvas)
    quads = []
    for i, (text, box) in enumerate(zip(lines, boxes, strict=True)):
        x, y = margin, margin + i * step
        draw.text((x, y), text, font=font, fill=ink)
        x0, y0, x1, y1 = x + box[0], y + box[1], x + box[2], y + box[3]
        quads.append(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64))
    rotated = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=paper)
    # Pillow rotates about the centre and then shifts by the growth of the canvas.
    theta = math.radians(angle)
    cx, cy = width / 2, height / 2
    ncx, ncy = rotated.width / 2, rotated.height / 2
    rot = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    out_lines = tuple(
        RenderedLine(text, (q - [cx, cy]) @ rot.T + [ncx, ncy]) for text, q in zip(lines, quads, strict=True)
    )
    return RenderedImage(np.asarray(rotated), out_lines)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def normalise(text: str) -> str:
    return " ".join(text.split())


def inside(point: np.ndarray, quad: np.ndarray) -> bool:
    import cv2

    return (
        cv2.pointPolygonTest(quad.astype(np.float32).reshape(-1, 1, 2), (float(point[0]), float(point[1])), False) >= 0
    )


def read_per_truth_line(truth: Sequence[RenderedLine], quads: Sequence[np.ndarray], texts: Sequence[str]) -> list[str]:
    """For each true line, the text of the read lines whose centre falls in it, left to right."""
    out = []
    for line in truth:
        found = [
            (float(q[:, 0].min()), t)
            for q, t in zip(quads, texts, strict=True)
            if inside(np.asarray(q).mean(axis=0), line.quad)
        ]
        out.append(normalise(" ".join(t for _, t in sorted(found))))
    return out


def character_accuracy(truth: Sequence[str], read: Sequence[str]) -> float:
    """1 - total edit distance / total true characters, over whitespace-normalised lines."""
    errors = sum(edit_distance(normalise(t), normalise(r)) for t, r in zip(truth, read, strict=True))
    return 1.0 - errors / max(1, sum(len(normalise(t)) for t in truth))


SENTENCES = (
    "Invoice 2024-117 due 14 March",
    "Meet at Gate B7, 09:45 sharp!",
    "Total: $1,284.50 (incl. VAT)",
    "The quick brown fox jumps over",
    "Café Müller, Große Straße 12",
    "Call 0800 555 0199 for help",
    "Keep left; slow down ahead",
    "Summer sale - 30% off shoes",
    "Platform 9 departs at 17:05",
    "Fresh bread & pastries daily",
    "Room 402: authorised staff only",
    "Happy birthday, dear Lena",
)


@dataclass(frozen=True)
class RenderCase:
    font: str
    size: int
    ink: tuple[int, int, int]
    paper: tuple[int, int, int]
    angle: float
    lines: tuple[str, ...]


def render_cases(fonts: dict[str, Path | None]) -> list[RenderCase]:
    """Several fonts, sizes, colours and angles up to ±5°, three lines each."""
    styles = [
        (DEFAULT_FONT, 22, (20, 20, 20), (250, 250, 245), 0.0),
        ("DejaVuSans", 18, (10, 10, 90), (235, 240, 250), -3.0),
        ("DejaVuSerif", 26, (120, 20, 20), (255, 250, 230), 5.0),
        ("DejaVuSansMono", 20, (240, 240, 240), (30, 40, 60), -5.0),
        ("DejaVuSans-Bold", 30, (250, 220, 0), (20, 20, 20), 2.0),
        ("DejaVuSerif-Italic", 24, (0, 80, 0), (245, 245, 245), -1.5),
        (DEFAULT_FONT, 34, (255, 255, 255), (200, 30, 30), 4.0),
        (DEFAULT_FONT, 16, (60, 60, 60), (210, 210, 200), -4.0),
    ]
    cases = []
    for k, (font, size, ink, paper, angle) in enumerate(styles):
        if font in fonts:
            lines = tuple(SENTENCES[(3 * k + j) % len(SENTENCES)] for j in range(3))
            cases.append(RenderCase(font, size, ink, paper, angle, lines))
    return cases


def render_case(case: RenderCase, fonts: dict[str, Path | None]) -> RenderedImage:
    return render_lines(case.lines, fonts[case.font], case.size, case.ink, case.paper, case.angle)


def on_photo(block: RenderedImage, long_side: int = 1600, at: tuple[int, int] = (40, 300)) -> RenderedImage:
    """``block`` pasted onto scikit-image's coffee photo enlarged to ``long_side`` px (a camera-sized image)."""
    from skimage import data

    photo = Image.fromarray(data.coffee())
    scale = long_side / max(photo.size)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC)
    photo.paste(Image.fromarray(block.pixels), at)
    shift = np.array(at, dtype=np.float64)
    return RenderedImage(np.asarray(photo), tuple(RenderedLine(ln.text, ln.quad + shift) for ln in block.lines))
