"""PP-OCR text-line orientation: which detected lines are upside down.

An optional step between detection and recognition. Each detected line is
cropped the way recognition crops it, stretched to the classifier's 80x160
input (PP-LCNet textline-orientation preprocessing: BGR, ImageNet mean/std)
and classified as 0° or 180°. Recognition turns the flagged crops by 180°.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np

from contract.chunking import cut
from contract.names import ModelType, Task
from worker.models.base import InferenceModel, ModelNotInstalled, StepKey
from worker.models.ocr_geometry import crops_for
from worker.models.outputs import TextBox
from worker.pipeline.image import DecodedImage

DETECTION: StepKey = (Task.OCR, ModelType.DETECTION)
INPUT_HEIGHT, INPUT_WIDTH = 80, 160
# Turn a line only when the classifier is this sure it is upside down (RapidOCR's cls_thresh).
DEFAULT_MIN_SCORE = 0.9
UPSIDE_DOWN = 1  # class index of "180°" in PP-OCR's textline orientation models
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
_INV_STD = 1.0 / (np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0)


def orientation_input(crop: np.ndarray) -> np.ndarray:
    """(3, 80, 160) float32 from an RGB line crop."""
    resized = cv2.resize(crop, (INPUT_WIDTH, INPUT_HEIGHT), interpolation=cv2.INTER_LINEAR)
    bgr = resized[:, :, ::-1].astype(np.float32)
    return ((bgr - _MEAN) * _INV_STD).transpose(2, 0, 1)


class PPOCRTextOrientation(InferenceModel):
    """Text-line orientation classifier of a PP-OCR pack (``ocr/<pack>/classification/model.onnx``).

    ``run_chunk`` returns, per image, a ``list[bool]`` aligned with that image's
    detected boxes: True where the line is upside down. Options: ``minScore``
    (probability of 180° needed to flip, default 0.9). Its output reaches the
    result only through recognition (no ``result_fields`` of its own).
    Packs without a classifier (PP-OCRv6_small) raise :class:`ModelNotInstalled`
    naming the problem.
    """

    task: ClassVar[Task] = Task.OCR
    type: ClassVar[ModelType] = ModelType.CLASSIFICATION
    depends_on: ClassVar[tuple[StepKey, ...]] = (DETECTION,)
    batch_setting: ClassVar[str | None] = "text_batch_size"
    batches_images: ClassVar[bool] = False  # faces / text lines, found in the images

    @classmethod
    def decode_side(cls, options: Mapping[str, Any], detail_side: int) -> int:
        return detail_side  # classifies crops of text lines

    def load(self) -> None:
        if self._session is None and not self.model_path.is_file() and self.pack_dir.is_dir():
            raise ModelNotInstalled(
                f"OCR pack {self.model_name!r} has no text-line orientation classifier "
                f"({self.model_path} not found); name a pack that ships one, e.g. "
                '"classification": {"modelName": "PP-OCRv5_mobile"}'
            )
        super().load()

    def warmup(self) -> None:
        self.predict(np.zeros((1, 3, INPUT_HEIGHT, INPUT_WIDTH), dtype=np.float32))

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[list[bool]]:
        min_score = float(options.get("minScore", DEFAULT_MIN_SCORE))
        boxes_per_image: Sequence[Sequence[TextBox]] = upstream[DETECTION]
        counts: list[int] = []
        crops: list[np.ndarray] = []
        for image, boxes in zip(images, boxes_per_image, strict=True):
            crops.extend(crops_for(image.pixels, [np.asarray(b.quad) for b in boxes], image.scale))
            counts.append(len(boxes))
        # Back to one list per image.
        return cut(self.classify(crops, self.batch_limit(max_batch), min_score), counts)

    def classify(self, crops: Sequence[np.ndarray], max_batch: int, min_score: float) -> list[bool]:
        """True for each RGB line crop the model finds upside down with probability >= ``min_score``."""
        flags: list[bool] = []
        for start in range(0, len(crops), max_batch):
            batch = np.stack([orientation_input(c) for c in crops[start : start + max_batch]])
            probs = self.predict(batch)[0]
            flags.extend(bool(p[UPSIDE_DOWN] >= min_score) for p in probs)
        return flags
