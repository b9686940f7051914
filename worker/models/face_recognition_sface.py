"""SFace face recognizer (OpenCV model zoo, 2021dec, 128-d).

Input: aligned 112×112 RGB crops with raw 0-255 values (the network
normalises internally); output: one embedding per face, L2-normalised here.
The shipped file has a fixed batch of 1; ``assetq models install`` makes it
dynamic (``convert.sface_dynamic_batch``).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from worker.models.blobs import nchw_float32
from worker.models.face_common import FaceRecognizer


class SFaceRecognizer(FaceRecognizer):
    embedding_dim = 128
    # Outputs checked bit-identical with subnormals flushed on real photos (tests/test_face_models.py).
    flush_denormals: ClassVar[bool] = True

    def _blob(self, crops: np.ndarray) -> np.ndarray:
        return nchw_float32(crops)
