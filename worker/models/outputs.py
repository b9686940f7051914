"""What model steps hand to each other and to the result builder, and the rounding of their JSON.

Coordinates are always in original-image pixels (see ``DecodedImage.scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DIGITS = 5  # coordinates and scores; embeddings keep 7 (float32 has ~7 significant digits)


def rounded(x: float, digits: int = DIGITS) -> float:
    """A number as result documents hold it."""
    return round(float(x), digits)


def vector_json(v: np.ndarray) -> list[float]:
    """An embedding as result documents hold it: a flat list of 7-digit floats.

    Rounded by numpy in one call, not ``round()`` per element: the same floats (tests/test_outputs.py
    compares them), 20x faster, and the result build holds the GIL while the other inference
    threads wait for it (200 us a face, 17% of the faces job's GIL time on small photos).
    """
    return np.round(np.asarray(v, dtype=np.float32).ravel().astype(np.float64), 7).tolist()


@dataclass(frozen=True)
class FaceBox:
    """One detected face: output of a face-detection step."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    score: float
    landmarks: tuple[tuple[float, float], ...]  # 5 points: eyes, nose, mouth corners (ArcFace order)


@dataclass(frozen=True)
class TextBox:
    """One detected text region: output of a text-detection step."""

    quad: tuple[tuple[float, float], ...]  # 4 points, clockwise from top-left
    score: float  # the detector's box score


@dataclass(frozen=True)
class TextLine:
    """One recognised line: output of the text-recognition step."""

    quad: tuple[tuple[float, float], ...]
    text: str
    score: float  # recognition confidence (mean of per-character max probabilities)
    box_score: float


@dataclass(frozen=True)
class Label:
    name: str
    score: float


# A recognition step returns, per image, an (n_faces, dim) float32 array of
# L2-normalised embeddings in the order of that image's FaceBox list.
Embeddings = np.ndarray
