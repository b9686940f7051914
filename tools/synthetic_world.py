"""The tiny CLIP's world: one coloured shape on a plain, noisy background.

Eight shapes x eight colours. Every image is drawn from a seed, so the
training script and the tests draw from the same generator: training uses
``TRAIN_SEED`` and tests use ``HELD_OUT_SEED`` (a different stream, so no test
image was seen in training).

Images vary in size and aspect ratio (the runtime's resize and centre crop are
exercised); the shape always lies inside the central square the crop keeps.
Backgrounds are low-saturation mid tones, so they never pass for one of the
eight colours.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "star", "cross", "heart", "ring", "crescent")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 225, 40),
    "green": (35, 165, 55),
    "blue": (35, 75, 225),
    "purple": (130, 45, 175),
    "pink": (250, 125, 195),
    "white": (245, 245, 245),
}
TRAIN_SEED = 20_261_121
HELD_OUT_SEED = 7_777

_COLOUR_JITTER = 14  # per channel, so a colour is a small region, not one value
_SIZE_RANGE = (72, 168)  # image sides in pixels
_MAX_ASPECT = 1.4


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def _polygon(cx: float, cy: float, radii: list[float], angle0: float) -> list[tuple[float, float]]:
    n = len(radii)
    return [
        (cx + r * math.cos(angle0 + 2 * math.pi * k / n), cy + r * math.sin(angle0 + 2 * math.pi * k / n))
        for k, r in enumerate(radii)
    ]


def _rotate(points: list[tuple[float, float]], cx: float, cy: float, angle: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _draw_mask(shape: str, size: tuple[int, int], cx: float, cy: float, r: float, angle: float) -> Image.Image:
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=255)
    elif shape == "ring":
        draw.ellipse(box, outline=255, width=max(2, round(r * 0.32)))
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, [r * 0.95] * 4, math.pi / 4 + angle), fill=255)
    elif shape == "triangle":
        draw.polygon(_polygon(cx, cy * 1.0 + r * 0.15, [r * 1.1] * 3, -math.pi / 2 + angle), fill=255)
    elif shape == "star":
        draw.polygon(_polygon(cx, cy, [r * 1.05, r * 0.45] * 5, -math.pi / 2 + angle), fill=255)
    elif shape == "cross":
        t = r * 0.33
        # A plus sign: 12 corners, clockwise from the left arm's top edge.
        arm = [(-r, -t), (-t, -t), (-t, -r), (t, -r), (t, -t), (r, -t)]
        arm += [(-x, -y) for x, y in arm]
        draw.polygon(_rotate([(cx + x, cy + y) for x, y in arm], cx, cy, angle), fill=255)
    elif shape == "heart":
        pts = []
        for k in range(48):
            t = 2 * math.pi * k / 48
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + x * r / 16.5, cy - y * r / 16.5 + r * 0.08))
        draw.polygon(_rotate(pts, cx, cy, angle), fill=255)
    elif shape == "crescent":
        draw.ellipse(box, fill=255)
        dx, dy = r * 0.55 * math.cos(angle), r * 0.55 * math.sin(angle)
        draw.ellipse((cx - r * 0.85 + dx, cy - r * 0.85 + dy, cx + r * 0.85 + dx, cy + r * 0.85 + dy), fill=0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    level = rng.uniform(55, 175)
    tint = rng.uniform(-18, 18, size=3)
    base = np.clip(level + tint, 0, 255)
    gx, gy = rng.uniform(-30, 30, size=2)
    ramp = np.linspace(-0.5, 0.5, width)[None, :, None] * gx + np.linspace(-0.5, 0.5, height)[:, None, None] * gy
    noise = rng.normal(0, rng.uniform(2, 9), size=(height, width, 1))
    return np.clip(base[None, None, :] + ramp + noise, 0, 255)


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """One (H, W, 3) uint8 RGB image of ``scene``."""
    width = int(rng.integers(*_SIZE_RANGE))
    aspect = math.exp(rng.uniform(-math.log(_MAX_ASPECT), math.log(_MAX_ASPECT)))
    height = int(np.clip(round(width * aspect), _SIZE_RANGE[0] * 0.8, _SIZE_RANGE[1] * 1.2))
    side = min(width, height)
    r = side * rng.uniform(0.2, 0.36)
    slack = side / 2 - r * 1.12
    cx = width / 2 + rng.uniform(-slack, slack)
    cy = height / 2 + rng.uniform(-slack, slack)
    angle = math.radians(rng.uniform(-20, 20))
    mask = np.asarray(_draw_mask(scene.shape, (width, height), cx, cy, r, angle), dtype=np.float32)[..., None] / 255
    colour = np.clip(np.asarray(COLOURS[scene.colour]) + rng.integers(-_COLOUR_JITTER, _COLOUR_JITTER + 1, 3), 0, 255)
    shading = 1 + rng.normal(0, 0.02, size=(height, width, 1))
    image = _background(rng, width, height) * (1 - mask) + colour[None, None, :] * shading * mask
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def scenes(seed: int, count: int) -> Iterator[tuple[Scene, np.ndarray]]:
    """``count`` random scenes and their images, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        scene = Scene(SHAPES[int(rng.integers(len(SHAPES)))], list(COLOURS)[int(rng.integers(len(COLOURS)))])
        yield scene, render(scene, rng)


def balanced_scenes(seed: int, per_combination: int) -> list[tuple[Scene, np.ndarray]]:
    """Every shape x colour ``per_combination`` times (test sets with equal class sizes)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(per_combination):
        for shape in SHAPES:
            for colour in COLOURS:
                scene = Scene(shape, colour)
                out.append((scene, render(scene, rng)))
    return out


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def write_folders(root: Path, seed: int, per_combination: int, label: str = "shape") -> list[Path]:
    """Write a labelled folder tree ``root/<shape or colour>/<n>.png`` (for ``assetq classify --eval``)."""
    written = []
    for i, (scene, pixels) in enumerate(balanced_scenes(seed, per_combination)):
        folder = root / (scene.shape if label == "shape" else scene.colour)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{scene.colour}-{scene.shape}-{i:05d}.png"
        Image.fromarray(pixels).save(path)
        written.append(path)
    return written
