"""Geometry shared by the OCR steps: DB box extraction, reading order, line crops.

Quadrilaterals are float arrays of shape (4, 2) in (x, y), clockwise from the
top-left corner. Contour work and perspective warps are OpenCV's; polygon
offsetting ("unclip") is pyclipper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pyclipper

# A line crop this much taller than wide is vertical text: turn it on its side.
TALL_CROP_RATIO = 1.5


@dataclass(frozen=True)
class DBParams:
    """Post-processing knobs of a DBNet probability map (PP-OCR's defaults)."""

    binary_threshold: float = 0.3  # pixel probability that counts as "text"
    box_threshold: float = 0.5  # mean probability inside a box to keep it (option minScore)
    unclip_ratio: float = 1.6  # how far the shrunk text kernel is grown back
    max_candidates: int = 1000  # contours looked at per image; bounds work on noisy maps
    min_side: float = 3.0  # shorter side of a box, in map pixels, before growing it


def order_clockwise(points: np.ndarray) -> np.ndarray:
    """Order four points top-left, top-right, bottom-right, bottom-left."""
    pts = np.asarray(points, dtype=np.float32).reshape(4, 2)
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def min_area_quad(points: np.ndarray) -> tuple[np.ndarray, float]:
    """The minimum-area rectangle around ``points`` as a clockwise quad, and its shorter side."""
    rect = cv2.minAreaRect(np.asarray(points, dtype=np.float32).reshape(-1, 1, 2))
    return order_clockwise(cv2.boxPoints(rect)), float(min(rect[1]))


def mean_inside(prob: np.ndarray, quad: np.ndarray) -> float:
    """Mean of ``prob`` over the pixels inside ``quad`` (DB's "fast" box score)."""
    h, w = prob.shape
    x0 = int(np.clip(np.floor(quad[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(quad[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(quad[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(quad[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    local = (quad - np.array([x0, y0], dtype=np.float32)).astype(np.int32)
    cv2.fillPoly(mask, [local], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def unclip(quad: np.ndarray, ratio: float) -> np.ndarray | None:
    """Grow ``quad`` outwards by area * ratio / perimeter (DBNet's inverse of its label shrink)."""
    area = abs(float(cv2.contourArea(quad.astype(np.float32))))
    perimeter = float(cv2.arcLength(quad.astype(np.float32).reshape(-1, 1, 2), True))
    if perimeter <= 0:
        return None
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(quad.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = offset.Execute(area * ratio / perimeter)
    if len(grown) != 1:  # nothing, or a shape that split: not a text line
        return None
    return np.asarray(grown[0], dtype=np.float32)


def boxes_from_probability(
    prob: np.ndarray, out_width: float, out_height: float, params: DBParams
) -> tuple[list[np.ndarray], list[float]]:
    """Text quads (in an ``out_width`` x ``out_height`` frame) and box scores from one DB map.

    ``prob`` is the (H, W) text-probability map. Binarise, dilate by 2x2 (as
    PP-OCR does, joining characters split by a pixel), take contours, score each
    box on the unbinarised map, grow it, and scale it to the output frame.
    """
    height, width = prob.shape
    binary = (prob > params.binary_threshold).astype(np.uint8)
    bitmap = cv2.dilate(binary, np.ones((2, 2), dtype=np.uint8))
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    sx, sy = out_width / width, out_height / height
    quads: list[np.ndarray] = []
    scores: list[float] = []
    for contour in contours[: params.max_candidates]:
        quad, short_side = min_area_quad(contour)
        if short_side < params.min_side:
            continue
        score = mean_inside(prob, quad)
        if score < params.box_threshold:
            continue
        grown = unclip(quad, params.unclip_ratio)
        if grown is None:
            continue
        quad, short_side = min_area_quad(grown)
        if short_side < params.min_side + 2:
            continue
        quad[:, 0] = np.clip(quad[:, 0] * sx, 0, out_width)
        quad[:, 1] = np.clip(quad[:, 1] * sy, 0, out_height)
        quads.append(quad)
        scores.append(score)
    return quads, scores


def quad_size(quad: np.ndarray) -> tuple[float, float]:
    """Width and height of a clockwise quad (the longer of each pair of opposite sides)."""
    width = max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[3] - quad[2]))
    height = max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2]))
    return float(width), float(height)


def reading_order(quads: Sequence[np.ndarray]) -> list[int]:
    """Indices of ``quads`` top-to-bottom, then left-to-right within a line.

    Boxes are visited by vertical centre; a box continues the current line when
    its centre is within half a box height of the centre of the line's last box
    (the last, not the first, so a slightly tilted line stays one line).
    """
    if not quads:
        return []
    centres = np.array([float(q[:, 1].mean()) for q in quads])
    heights = np.array([quad_size(q)[1] for q in quads])
    lefts = np.array([float(q[:, 0].min()) for q in quads])
    lines: list[list[int]] = []
    for i in np.argsort(centres, kind="stable").tolist():
        if lines:
            last = lines[-1][-1]
            if abs(centres[i] - centres[last]) < 0.5 * min(heights[i], heights[last]):
                lines[-1].append(i)
                continue
        lines.append([i])
    return [i for line in lines for i in sorted(line, key=lambda j: lefts[j])]


def crop_quad(pixels: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """The quad's content warped upright to its own width x height; tall crops turned 90° anticlockwise."""
    width, height = quad_size(quad)
    w, h = max(1, int(width)), max(1, int(height))
    target = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    crop = cv2.warpPerspective(pixels, matrix, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if h / w >= TALL_CROP_RATIO:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop)


def crops_for(pixels: np.ndarray, quads: Sequence[np.ndarray], scale: float) -> list[np.ndarray]:
    """Crops of original-pixel ``quads`` from ``pixels`` (which may be ``scale`` times smaller)."""
    return [crop_quad(pixels, np.asarray(q, dtype=np.float32) / scale) for q in quads]
