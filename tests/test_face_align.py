"""Alignment math (Umeyama, warping) and the shared box helpers (letterbox, IoU, NMS)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from worker.models.face_align import ALIGNED_SIZE, ARCFACE_TEMPLATE, align_face, umeyama_similarity
from worker.models.face_common import anchor_grid, batches, box_iou, letterbox, nms


def similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array(
        [[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]], dtype=np.float64
    )


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.parametrize(
    ("angle", "scale", "tx", "ty"),
    [(0.0, 1.0, 0.0, 0.0), (17.0, 2.5, -40.0, 13.0), (-130.0, 0.3, 500.0, 900.0), (180.0, 7.0, 1.0, -1.0)],
)
def test_umeyama_recovers_an_exact_similarity(angle: float, scale: float, tx: float, ty: float) -> None:
    truth = similarity(angle, scale, tx, ty)
    src = np.random.default_rng(0).uniform(-100, 300, size=(5, 2))
    estimated = umeyama_similarity(src, apply(truth, src))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_umeyama_inverts_onto_the_template() -> None:
    # Landmarks of a face rotated by 30°, scaled ×3 and moved: the estimate maps them back onto the template.
    truth = similarity(30.0, 3.0, 250.0, 80.0)
    detected = apply(truth, ARCFACE_TEMPLATE)
    estimated = umeyama_similarity(detected, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(apply(estimated, detected), ARCFACE_TEMPLATE, atol=1e-9)
    np.testing.assert_allclose(estimated, cv2.invertAffineTransform(truth), atol=1e-9)


def test_umeyama_least_squares_matches_scikit_image_on_noisy_points() -> None:
    rng = np.random.default_rng(1)
    src = ARCFACE_TEMPLATE * 2.2 + 60 + rng.normal(0, 3, size=(5, 2))
    reference = SimilarityTransform.from_estimate(src, ARCFACE_TEMPLATE)
    assert reference
    np.testing.assert_allclose(umeyama_similarity(src, ARCFACE_TEMPLATE), reference.params[:2], atol=1e-9)


def test_umeyama_never_reflects() -> None:
    mirrored = ARCFACE_TEMPLATE * np.array([-1.0, 1.0])  # a left-right mirror image of the template
    matrix = umeyama_similarity(mirrored, ARCFACE_TEMPLATE)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_umeyama_rejects_degenerate_input() -> None:
    with pytest.raises(ValueError, match="coincide"):
        umeyama_similarity(np.ones((5, 2)), ARCFACE_TEMPLATE)
    with pytest.raises(ValueError, match="point sets"):
        umeyama_similarity(np.ones((5, 3)), np.ones((5, 3)))


def blob_centres(gray: np.ndarray) -> np.ndarray:
    """Intensity-weighted centres of the bright blobs, sorted by x then y."""
    count, labels = cv2.connectedComponents((gray > 40).astype(np.uint8))
    ys, xs = np.indices(gray.shape)
    weights = gray.astype(np.float64)
    centres = []
    for label in range(1, count):
        w = weights * (labels == label)
        centres.append(((w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()))
    return np.array(sorted(centres))


def test_aligned_landmarks_land_on_the_template() -> None:
    # Draw five soft dots at the template positions of a 112 crop, place that
    # "face" rotated, scaled and shifted in a larger image, then align it back.
    truth = similarity(-25.0, 2.7, 180.0, 140.0)
    dots = np.zeros((600, 700, 3), dtype=np.uint8)
    landmarks = apply(truth, ARCFACE_TEMPLATE)
    for x, y in landmarks:
        cv2.circle(dots, (round(x * 16), round(y * 16)), 16 * 6, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    crop = align_face(np.asarray(cv2.GaussianBlur(dots, (0, 0), 2.0)), landmarks)
    assert crop.shape == (ALIGNED_SIZE, ALIGNED_SIZE, 3)
    found = blob_centres(crop[:, :, 0])
    expected = np.array(sorted(map(tuple, ARCFACE_TEMPLATE)))
    # The dots were drawn at rounded 1/16-pixel positions: they land within a tenth of a pixel.
    np.testing.assert_allclose(found, expected, atol=0.1)


def test_align_face_keeps_channels_and_pads_black() -> None:
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    image[..., 0] = 200  # a pure red image
    # Landmarks of a face much larger than the image: most of the crop falls outside it.
    crop = align_face(image, ARCFACE_TEMPLATE * 6.0 - 150)
    assert crop[..., 1:].max() == 0
    assert crop[..., 0].max() == 200
    assert (crop[..., 0] == 0).any()


def test_letterbox_keeps_aspect_ratio_top_left() -> None:
    image = np.full((300, 600, 3), 255, dtype=np.uint8)
    fitted = letterbox(image, 320)
    assert fitted.canvas.shape == (320, 320, 3)
    assert fitted.factor_x == pytest.approx(320 / 600)
    assert fitted.factor_y == pytest.approx(160 / 300)
    assert fitted.canvas[:160].min() == 255
    assert fitted.canvas[160:].max() == 0


def test_letterbox_enlarges_small_images() -> None:
    fitted = letterbox(np.full((20, 10, 3), 9, dtype=np.uint8), 64)
    assert (fitted.factor_x, fitted.factor_y) == (32 / 10, 64 / 20)
    assert fitted.canvas[:, :32].min() == 9


def test_box_iou() -> None:
    box = np.array([0.0, 0.0, 10.0, 10.0])
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], dtype=np.float64)
    np.testing.assert_allclose(box_iou(box, others), [1.0, 50 / 150, 0.0, 0.0])


def test_nms_keeps_the_best_of_each_cluster_best_first() -> None:
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9], [51, 50, 61, 60], [100, 0, 110, 10]],
        dtype=np.float64,
    )
    scores = np.array([0.8, 0.9, 0.7, 0.95, 0.6, 0.75])
    keep = nms(boxes, scores, iou_threshold=0.4)
    assert keep.tolist() == [3, 5, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.4).tolist() == []


def test_anchor_grid_is_row_major_with_repeated_anchors() -> None:
    grid = anchor_grid(64, 32, 2)
    assert grid.tolist() == [[0, 0], [0, 0], [1, 0], [1, 0], [0, 1], [0, 1], [1, 1], [1, 1]]


def test_batches() -> None:
    assert [(s.start, s.stop) for s in batches(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    assert list(batches(0, 3)) == []
