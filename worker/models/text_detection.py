"""PP-OCR text detection (DBNet): where the lines of text are.

The image is shrunk so its long side is at most ``maxResolution`` (both sides rounded
to multiples of 32, as the network needs), normalised the PP-OCR way (BGR
channel order, ImageNet mean/std) and turned into a text-probability map. The
map is binarised, its contours scored and grown back ("unclipped") into
quadrilaterals, which are returned in original-image pixels in reading order.

Images of the chunk that resize to the same shape are run as one batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np

from contract.names import ModelType, Task
from worker.models.base import AssetOutputs, InferenceModel, StepKey
from worker.models.blobs import nchw_float32
from worker.models.ocr_geometry import DBParams, boxes_from_probability, quad_size, reading_order
from worker.models.outputs import TextBox, rounded
from worker.pipeline.graph import Step
from worker.pipeline.image import DecodedImage

# Defaults of the per-call options when a caller gives none (Immich's: maxResolution 736,
# minDetectionScore 0.5; the spec fills them in).
DEFAULT_MAX_RESOLUTION = 736
DEFAULT_MIN_SCORE = 0.5
# Images smaller than this on either side carry no readable text (and the network needs 32).
MIN_IMAGE_SIDE = 32
# Boxes this small (original pixels) on either side are specks, not text.
MIN_BOX_SIDE = 3.0
# PP-OCR's detection normalisation: ImageNet statistics applied to B, G, R in that order.
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32) * 255.0
_INV_STD = 1.0 / (np.array([0.229, 0.224, 0.225], dtype=np.float32) * 255.0)


def network_size(height: int, width: int, max_resolution: int) -> tuple[int, int]:
    """(height, width) the detector sees: long side at most ``max_resolution``, both multiples of 32.

    Smaller images are not enlarged: that measured no better on small text and costs time.
    """
    ratio = min(1.0, max_resolution / max(height, width))
    return (max(32, round(height * ratio / 32) * 32), max(32, round(width * ratio / 32) * 32))


def detection_input(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(3, H, W) float32 network input from RGB ``pixels`` resized to ``size``."""
    return detection_blob(resized_for_detection(pixels, size))


def resized_for_detection(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB ``pixels`` resized to ``size`` (height, width), area-averaged when shrinking."""
    h, w = size
    shrinking = h * w < pixels.shape[0] * pixels.shape[1]
    return cv2.resize(pixels, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def detection_blob(resized: np.ndarray) -> np.ndarray:
    """(3, H, W) float32: BGR, ImageNet mean and std, from already resized RGB pixels."""
    blob = nchw_float32(resized[None], bgr=True)[0]  # in place below: one allocation (see blobs.py)
    blob -= _MEAN.reshape(3, 1, 1)
    blob *= _INV_STD.reshape(3, 1, 1)
    return blob


class PPOCRTextDetector(InferenceModel):
    """DBNet text detector of a PP-OCR pack (``ocr/<pack>/detection/model.onnx``).

    ``run_chunk`` returns, per image, a ``list[TextBox]`` in reading order with
    quads in original-image pixels. Options: ``maxResolution`` (long side fed to
    the network, default 736), ``minScore`` (box score, default 0.5).
    """

    task: ClassVar[Task] = Task.OCR
    type: ClassVar[ModelType] = ModelType.DETECTION
    batch_setting: ClassVar[str | None] = "detection_batch_size"
    # PP-OCRv6's detector stores ~256k subnormal weights. Flushing them leaves the probability
    # maps bit-identical on real images (benchmarks/ocr_bench.py); it was ~3x faster on the CPU
    # in shared/MODELS.md, and made no measurable difference on an AMD EPYC.
    flush_denormals: ClassVar[bool] = True
    # The resize to the network's size runs in the decode threads.
    prepares: ClassVar[bool] = True

    @classmethod
    def decode_side(cls, options: Mapping[str, Any], detail_side: int) -> int:
        # The network sees at most maxResolution on the long side, so the short side never needs more.
        return int(options.get("maxResolution", DEFAULT_MAX_RESOLUTION))

    def result_fields(self, output: list[TextBox], step: Step, asset: AssetOutputs) -> dict[str, Any]:
        # Boxes without text; the recognition step, when requested, rewrites "ocr" with the lines read.
        return {
            "ocr": [
                {
                    "box": [[rounded(x), rounded(y)] for x, y in b.quad],
                    "text": None,
                    "score": None,
                    "box_score": rounded(b.score),
                }
                for b in output
            ]
        }

    def warmup(self) -> None:
        self.predict(np.zeros((1, 3, 64, 64), dtype=np.float32))

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[list[TextBox]]:
        max_resolution = _max_resolution(options)
        params = DBParams(box_threshold=float(options.get("minScore", DEFAULT_MIN_SCORE)))
        per_call = self.batch_limit(max_batch)

        results: list[list[TextBox]] = [[] for _ in images]
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            size = _network_size_of(image, max_resolution)
            if size is not None:
                by_shape[size].append(i)
        for size, members in by_shape.items():
            for start in range(0, len(members), per_call):
                group = members[start : start + per_call]
                batch = np.stack([detection_blob(_resized(images[i], size)) for i in group])
                maps = self.predict(batch)[0]
                for i, prob in zip(group, maps, strict=True):
                    results[i] = self._boxes(prob[0], images[i], params)
        return results

    def prepare(self, image: DecodedImage, options: Mapping[str, Any]) -> None:
        size = _network_size_of(image, _max_resolution(options))
        if size is not None:
            _resized(image, size)

    @staticmethod
    def _boxes(prob: np.ndarray, image: DecodedImage, params: DBParams) -> list[TextBox]:
        quads, scores = boxes_from_probability(prob, float(image.width), float(image.height), params)
        kept = [(q, s) for q, s in zip(quads, scores, strict=True) if min(quad_size(q)) > MIN_BOX_SIDE]
        order = reading_order([q for q, _ in kept])
        return [
            TextBox(quad=tuple((float(x), float(y)) for x, y in kept[i][0]), score=float(kept[i][1])) for i in order
        ]


def _max_resolution(options: Mapping[str, Any]) -> int:
    max_resolution = int(options.get("maxResolution", DEFAULT_MAX_RESOLUTION))
    if max_resolution < 32:
        raise ValueError(f"maxResolution must be at least 32, got {max_resolution}")
    return max_resolution


def _network_size_of(image: DecodedImage, max_resolution: int) -> tuple[int, int] | None:
    """The detector's input size for ``image``, or None for an image too small to hold text."""
    h, w = image.pixels.shape[:2]
    if min(image.width, image.height) < MIN_IMAGE_SIDE or min(h, w) == 0:
        return None
    return network_size(h, w, max_resolution)


def _resized(image: DecodedImage, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized for the detector, made once per image and size (see ``DecodedImage.derive``)."""
    return image.derive(("ocr.detection", size), lambda pixels: resized_for_detection(pixels, size))
