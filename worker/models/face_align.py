"""Five-point face alignment shared by every face recognizer.

Recognizers are trained on 112×112 crops in which the eyes, nose tip and mouth
corners sit at fixed template positions. A crop is made by estimating the
similarity transform (rotation, uniform scale, translation) that best maps the
detected landmarks onto that template in the least-squares sense (Umeyama,
"Least-squares estimation of transformation parameters between two point
patterns", IEEE PAMI 1991) and warping the image with it.
"""

from __future__ import annotations

import cv2
import numpy as np

ALIGNED_SIZE = 112
"""Side of the square crop ArcFace and SFace expect."""

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # eye on the image's left
        [73.5318, 51.5014],  # eye on the image's right
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # mouth corner on the image's left
        [70.7299, 92.2041],  # mouth corner on the image's right
    ],
    dtype=np.float64,
)
"""Landmark positions in the 112×112 ArcFace crop (the InsightFace training layout)."""


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 similarity matrix ``M`` minimising ``sum |M @ [src_i, 1] - dst_i|²``.

    ``src`` and ``dst`` are ``(N, 2)`` point sets, ``N >= 2``. Reflections are
    excluded: the result is always a proper rotation times a positive scale.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need two (N>=2, 2) point sets of equal shape, got {src.shape} and {dst.shape}")
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_c = src - src_mean
    dst_c = dst - dst_mean
    src_var = float((src_c**2).sum(axis=1).mean())
    if src_var == 0.0:
        raise ValueError("source points all coincide; no transform is defined")
    cov = dst_c.T @ src_c / src.shape[0]
    u, singular, vt = np.linalg.svd(cov)
    # Flip the weakest axis when the best orthogonal fit would be a reflection.
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float((singular * sign).sum()) / src_var
    translation = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(pixels: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Warp the face with five ``landmarks`` (pixel coordinates of ``pixels``) to a 112×112 crop.

    Channel order is kept; areas outside the image are black, as in training.
    """
    matrix = umeyama_similarity(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), ARCFACE_TEMPLATE)
    return cv2.warpAffine(pixels, matrix, (ALIGNED_SIZE, ALIGNED_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)
