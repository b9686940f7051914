"""YuNet face detector (OpenCV model zoo, 2023mar).

Anchor-free: for strides 8, 16 and 32 the network gives, per grid cell, a class
score and an objectness (sigmoid applied), a box ``(dx, dy, log w, log h)`` and
five landmark offsets, all in units of the stride from the cell's corner. The
face score is the geometric mean of class score and objectness, as in OpenCV's
``cv2.FaceDetectorYN``, the reference decoder this one is tested against.

The shipped file has a fixed ``[1, 3, 640, 640]`` input; ``assetq models
install`` rewrites it for any batch and size (``convert.yunet_dynamic_batch``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from worker.models.blobs import nchw_float32
from worker.models.face_common import FaceDetector, RawDetections, anchor_grid

STRIDES = (8, 16, 32)


class YunetDetector(FaceDetector):
    nms_threshold: ClassVar[float] = 0.3  # cv2.FaceDetectorYN's default
    _output_names: list[str]
    # Outputs checked bit-identical with subnormals flushed on real photos (tests/test_face_models.py).
    flush_denormals: ClassVar[bool] = True

    def _after_load(self) -> None:
        super()._after_load()
        # Heads are looked up by name (cls_8, obj_8, bbox_8, kps_8, ...), not by position.
        self._output_names = [o.name for o in self.session.get_outputs()]

    def _blob(self, canvases: np.ndarray) -> np.ndarray:
        # BGR, raw 0-255 values: the network normalises internally.
        return nchw_float32(canvases, bgr=True)

    def _decode(self, outputs: list[np.ndarray], index: int, size: int, min_score: float) -> RawDetections:
        by_name = dict(zip(self._output_names, outputs, strict=True))
        boxes, scores, marks = [], [], []
        for stride in STRIDES:
            cls = np.clip(by_name[f"cls_{stride}"][index, :, 0], 0.0, 1.0)
            obj = np.clip(by_name[f"obj_{stride}"][index, :, 0], 0.0, 1.0)
            score = np.sqrt(cls * obj)
            hit = score >= min_score
            if not hit.any():
                continue
            cells = anchor_grid(size, stride, 1)[hit]
            raw_box = by_name[f"bbox_{stride}"][index][hit]
            centres = (cells + raw_box[:, :2]) * stride
            half = np.exp(raw_box[:, 2:]) * stride / 2
            boxes.append(np.concatenate([centres - half, centres + half], axis=1))
            scores.append(score[hit])
            offsets = by_name[f"kps_{stride}"][index][hit].reshape(-1, 5, 2)
            marks.append((cells[:, None, :] + offsets) * stride)
        return RawDetections.concat(boxes, scores, marks)
