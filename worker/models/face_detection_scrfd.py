"""SCRFD face detector (InsightFace ``det_*`` models, e.g. buffalo_s's SCRFD-500M).

Outputs, in this order, for strides 8, 16 and 32 with two anchors per cell:
scores ``[N, A, 1]`` (sigmoid applied), box distances ``[N, A, 4]`` and
landmark offsets ``[N, A, 10]``, both in units of the stride, measured from
the anchor's cell corner.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from worker.models.blobs import normalised
from worker.models.face_common import FaceDetector, RawDetections, anchor_grid

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2


class ScrfdDetector(FaceDetector):
    nms_threshold: ClassVar[float] = 0.4  # InsightFace's default for SCRFD
    # Outputs checked bit-identical with subnormals flushed on real photos (tests/test_face_models.py).
    flush_denormals: ClassVar[bool] = True

    def _blob(self, canvases: np.ndarray) -> np.ndarray:
        # RGB, (x - 127.5) / 128 as the network was trained.
        return normalised(canvases, 127.5, 128.0)

    def _decode(self, outputs: list[np.ndarray], index: int, size: int, min_score: float) -> RawDetections:
        levels = len(STRIDES)
        boxes, scores, marks = [], [], []
        for level, stride in enumerate(STRIDES):
            anchors = (size // stride) ** 2 * ANCHORS_PER_CELL
            score = _rows(outputs[level], index, anchors)[:, 0]
            hit = score >= min_score
            if not hit.any():
                continue
            centres = anchor_grid(size, stride, ANCHORS_PER_CELL)[hit] * stride
            dist = _rows(outputs[levels + level], index, anchors)[hit] * stride
            offsets = _rows(outputs[2 * levels + level], index, anchors)[hit].reshape(-1, 5, 2) * stride
            boxes.append(np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1))
            scores.append(score[hit])
            marks.append(centres[:, None, :] + offsets)
        return RawDetections.concat(boxes, scores, marks)


def _rows(output: np.ndarray, index: int, anchors: int) -> np.ndarray:
    """Image ``index``'s ``(anchors, k)`` rows.

    Older exports flatten the batch into the anchor axis (``[N·A, k]``).
    """
    if output.ndim == 2:
        return output[index * anchors : (index + 1) * anchors]
    return output[index]
