"""OCR geometry: DB box extraction, reading order, line crops (no models)."""

from __future__ import annotations

import cv2
import numpy as np

from worker.models.ocr_geometry import (
    DBParams,
    boxes_from_probability,
    crop_quad,
    mean_inside,
    min_area_quad,
    order_clockwise,
    quad_size,
    reading_order,
    unclip,
)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def test_order_clockwise_from_any_order() -> None:
    shuffled = np.array([[10, 20], [0, 0], [10, 0], [0, 20]], dtype=np.float32)
    assert order_clockwise(shuffled).tolist() == rect(0, 0, 10, 20).tolist()


def test_min_area_quad_of_a_tilted_rectangle() -> None:
    corners = cv2.boxPoints(((50.0, 40.0), (60.0, 12.0), 8.0))
    quad, short = min_area_quad(corners)
    assert abs(short - 12.0) < 1e-3
    width, height = quad_size(quad)
    assert abs(width - 60.0) < 1e-3 and abs(height - 12.0) < 1e-3
    assert quad[0, 0] < quad[1, 0] and quad[0, 1] < quad[3, 1]  # top-left first, clockwise


def test_unclip_grows_by_area_over_perimeter() -> None:
    box = rect(0, 0, 100, 10)
    distance = 100 * 10 * 1.5 / 220
    grown, short = min_area_quad(unclip(box, 1.5))  # type: ignore[arg-type]
    assert abs(short - (10 + 2 * distance)) < 1.0
    assert abs(quad_size(grown)[0] - (100 + 2 * distance)) < 1.0


def test_mean_inside_counts_only_the_quad() -> None:
    prob = np.zeros((50, 50), dtype=np.float32)
    prob[10:20, 10:30] = 1.0
    assert mean_inside(prob, rect(10, 10, 29, 19)) == 1.0
    assert mean_inside(prob, rect(0, 0, 49, 49)) == 200 / 2500


def test_boxes_from_probability_map_scaled_to_output_frame() -> None:
    prob = np.zeros((64, 128), dtype=np.float32)
    prob[20:30, 10:90] = 0.9  # one text kernel
    prob[50:52, 100:102] = 0.9  # a speck under the minimum size
    quads, scores = boxes_from_probability(prob, out_width=256, out_height=128, params=DBParams())
    assert len(quads) == 1
    # The box's border row and column lie just outside the kernel: 80x10 of 81x11 pixels at 0.9.
    assert abs(scores[0] - 0.9 * 800 / 891) < 1e-4
    x0, y0 = quads[0].min(axis=0)
    x1, y1 = quads[0].max(axis=0)
    # The kernel spans x 10..90, y 20..30 at half resolution; unclipping grows it a few pixels.
    assert 2 * 10 - 16 < x0 < 2 * 10 and 2 * 90 < x1 < 2 * 90 + 16
    assert 2 * 20 - 16 < y0 < 2 * 20 and 2 * 30 < y1 < 2 * 30 + 16


def test_box_threshold_drops_faint_regions() -> None:
    prob = np.zeros((64, 128), dtype=np.float32)
    prob[20:30, 10:90] = 0.4
    assert boxes_from_probability(prob, 128, 64, DBParams(box_threshold=0.5))[0] == []
    assert len(boxes_from_probability(prob, 128, 64, DBParams(box_threshold=0.3))[0]) == 1


def test_candidate_contours_are_capped() -> None:
    prob = np.zeros((736, 736), dtype=np.float32)
    for y in range(2, 732, 10):
        for x in range(2, 732, 10):
            prob[y : y + 4, x : x + 4] = 0.9  # 73 x 73 = 5329 separate blobs
    quads, _ = boxes_from_probability(prob, 736, 736, DBParams(max_candidates=1000))
    assert len(quads) == 1000


def test_reading_order_lines_then_left_to_right() -> None:
    quads = [
        rect(200, 52, 300, 70),  # line 2, right (slightly lower: same line)
        rect(10, 10, 100, 30),  # line 1, left
        rect(10, 50, 150, 68),  # line 2, left
        rect(120, 12, 260, 31),  # line 1, right
        rect(0, 100, 40, 112),  # line 3
    ]
    assert reading_order(quads) == [1, 3, 2, 0, 4]


def test_reading_order_keeps_a_tilted_line_together() -> None:
    # Five words along a line falling 4 px per word: each close to its neighbour.
    words = [rect(60 * i, 100 + 4 * i, 60 * i + 50, 120 + 4 * i) for i in range(5)]
    below = rect(0, 150, 50, 170)
    assert reading_order([below, *reversed(words)]) == [5, 4, 3, 2, 1, 0]


def test_crop_quad_straightens_a_perspective_quad() -> None:
    image = np.full((200, 300, 3), 255, dtype=np.uint8)
    cv2.rectangle(image, (50, 80), (249, 119), (0, 0, 0), thickness=-1)
    crop = crop_quad(image, rect(50, 80, 250, 120))
    assert crop.shape == (40, 200, 3)
    assert crop.mean() < 10


def test_tall_crops_are_turned_on_their_side() -> None:
    image = np.zeros((300, 100, 3), dtype=np.uint8)
    image[:, :, 0] = np.arange(300, dtype=np.uint8)[:, None] // 2  # red grows downwards
    crop = crop_quad(image, rect(10, 0, 40, 300))
    assert crop.shape[:2] == (30, 300)
    # Turned anticlockwise: the top of the column is now on the left.
    assert crop[:, 0, 0].mean() < crop[:, -1, 0].mean()
