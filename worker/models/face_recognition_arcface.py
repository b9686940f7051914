"""ArcFace face recognizer (InsightFace ``w600k_*`` / ``glintr100`` models, e.g. buffalo_s's MobileFaceNet).

Input: aligned 112×112 RGB crops scaled to [-1, 1]; output: one embedding per
face (512-d for buffalo_s), L2-normalised here so a dot product is a cosine.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from worker.models.blobs import normalised
from worker.models.face_common import FaceRecognizer


class ArcFaceRecognizer(FaceRecognizer):
    embedding_dim = 512
    # Outputs checked bit-identical with subnormals flushed on real photos (tests/test_face_models.py).
    flush_denormals: ClassVar[bool] = True

    def _blob(self, crops: np.ndarray) -> np.ndarray:
        return normalised(crops, 127.5, 127.5)
