"""What the face detectors and recognizers share: batching, letterboxing, NMS.

A detector subclass only says how to turn letterboxed canvases into the
network's input and how to decode one image's raw outputs; a recognizer
subclass only says how to turn aligned 112×112 crops into the network's input.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from contract.names import ModelType, Task
from worker.models.base import AssetOutputs, InferenceModel, RuntimeOptions, SessionFactory, StepKey
from worker.models.face_align import ALIGNED_SIZE, align_face
from worker.models.outputs import FaceBox, rounded, vector_json
from worker.pipeline.graph import Step
from worker.pipeline.image import DecodedImage
from worker.pipeline.lanes import spread

DETECTION_STEP: StepKey = (Task.FACIAL_RECOGNITION, ModelType.DETECTION)

# The default of the request's "minScore" when a caller gives none (the spec fills it in).
DEFAULT_MIN_SCORE = 0.7
# Side of the square canvas the detectors letterbox to; also the short side a chunk is decoded at for them.
DEFAULT_INPUT_SIZE = 640
STRIDE_MULTIPLE = 32  # both detectors downsample by 32: canvas sides must be multiples of it


def batches(count: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(count)`` of at most ``size`` items."""
    size = max(1, int(size))
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


@dataclass(frozen=True)
class Letterbox:
    """One image shrunk or enlarged into the top-left of a square canvas."""

    canvas: np.ndarray  # (size, size, 3) uint8, same channel order as the source
    factor_x: float  # canvas pixels per source pixel, horizontally
    factor_y: float


def letterbox(pixels: np.ndarray, size: int) -> Letterbox:
    """Fit ``pixels`` into a ``size``×``size`` canvas, keeping its aspect ratio, padded with black."""
    height, width = pixels.shape[:2]
    fit = size / max(height, width)
    new_w = min(size, max(1, round(width * fit)))
    new_h = min(size, max(1, round(height * fit)))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(pixels, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return Letterbox(canvas, new_w / width, new_h / height)


def _letterboxed(image: DecodedImage, size: int) -> Letterbox:
    """``image`` letterboxed to ``size``, made once per image and size (see ``DecodedImage.derive``)."""
    return image.derive(("face.letterbox", size), lambda pixels: letterbox(pixels, size))


def box_iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``(4,)`` x1,y1,x2,y2 box with each row of ``others`` ``(N, 4)``."""
    ix1 = np.maximum(box[0], others[:, 0])
    iy1 = np.maximum(box[1], others[:, 1])
    ix2 = np.minimum(box[2], others[:, 2])
    iy2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class RawDetections:
    """One image's decoded candidates in canvas pixels, before NMS."""

    boxes: np.ndarray  # (K, 4) x1, y1, x2, y2
    scores: np.ndarray  # (K,)
    landmarks: np.ndarray  # (K, 5, 2)

    @classmethod
    def concat(cls, boxes: list[np.ndarray], scores: list[np.ndarray], landmarks: list[np.ndarray]) -> RawDetections:
        """Join per-stride pieces (possibly none) into one set."""
        if not scores:
            return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 2)))
        return cls(np.concatenate(boxes), np.concatenate(scores), np.concatenate(landmarks))


class FaceDetector(InferenceModel):
    """Letterbox a chunk into equal square canvases, run them in batches, decode, NMS.

    ``input_size`` (canvas side, a multiple of 32) is fixed per instance; a
    model file with a fixed input shape wins over it and over ``max_batch``.
    """

    task: ClassVar[Task] = Task.FACIAL_RECOGNITION
    type: ClassVar[ModelType] = ModelType.DETECTION
    depends_on: ClassVar[tuple[StepKey, ...]] = ()
    batch_setting: ClassVar[str | None] = "detection_batch_size"
    nms_threshold: ClassVar[float]
    # The letterbox resize runs in the decode threads.
    prepares: ClassVar[bool] = True

    def __init__(
        self,
        model_name: str,
        model_dir: Path,
        runtime: RuntimeOptions | None = None,
        session_factory: SessionFactory | None = None,
        *,
        input_size: int = DEFAULT_INPUT_SIZE,
        max_batch: int | None = None,
    ) -> None:
        super().__init__(model_name, model_dir, runtime, session_factory, max_batch=max_batch)
        self.input_size = _check_input_size(input_size)
        self._fixed_size: int | None = None
        self._fixed_batch: int | None = None

    def _after_load(self) -> None:
        shape = list(self.session.get_inputs()[0].shape)
        self._fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        if len(shape) == 4 and isinstance(shape[2], int) and shape[2] > 0:
            if shape[2] != shape[3]:
                raise ValueError(f"{self.model_path}: fixed non-square input {shape} is not supported")
            self._fixed_size = shape[2]

    @abstractmethod
    def _blob(self, canvases: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) RGB uint8 canvases -> the network's float32 NCHW input."""

    @abstractmethod
    def _decode(self, outputs: list[np.ndarray], index: int, size: int, min_score: float) -> RawDetections:
        """Candidates scoring at least ``min_score`` for image ``index`` of the batch."""

    @classmethod
    def decode_side(cls, options: Mapping[str, Any], detail_side: int) -> int:
        return DEFAULT_INPUT_SIZE  # the canvas: a finer decode would only be shrunk again

    def result_fields(self, output: list[FaceBox], step: Step, asset: AssetOutputs) -> dict[str, Any]:
        return {"faces": faces_json(output, None, step, None)}

    def warmup(self) -> None:
        size = self._canvas_size()
        self.predict(self._blob(np.zeros((1, size, size, 3), dtype=np.uint8)))

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[list[FaceBox]]:
        min_score = float(options.get("minScore", DEFAULT_MIN_SCORE))
        self.load()  # a model file with a fixed input shape overrides size and batch
        size = self._canvas_size()
        per_call = self._fixed_batch or self.batch_limit(max_batch)
        results: list[list[FaceBox]] = []
        for part in batches(len(images), per_call):
            boxed = [_letterboxed(image, size) for image in images[part]]
            outputs = self.predict(self._blob(np.stack([b.canvas for b in boxed])))
            for index, (image, fitted) in enumerate(zip(images[part], boxed, strict=True)):
                raw = self._decode(outputs, index, size, min_score)
                results.append(self._to_faces(raw, fitted, image))
        return results

    def prepare(self, image: DecodedImage, options: Mapping[str, Any]) -> None:
        if self.loaded:  # a fixed input size is known once loaded
            _letterboxed(image, self._canvas_size())

    def _canvas_size(self) -> int:
        return self._fixed_size or self.input_size

    def _to_faces(self, raw: RawDetections, fitted: Letterbox, image: DecodedImage) -> list[FaceBox]:
        keep = nms(raw.boxes, raw.scores, self.nms_threshold)
        # canvas pixels -> decoded pixels -> original-image pixels
        to_x = image.scale / fitted.factor_x
        to_y = image.scale / fitted.factor_y
        faces = []
        for i in keep:
            x1, y1, x2, y2 = raw.boxes[i]
            box = (
                float(np.clip(x1 * to_x, 0, image.width)),
                float(np.clip(y1 * to_y, 0, image.height)),
                float(np.clip(x2 * to_x, 0, image.width)),
                float(np.clip(y2 * to_y, 0, image.height)),
            )
            marks = tuple((float(x * to_x), float(y * to_y)) for x, y in raw.landmarks[i])
            faces.append(FaceBox(box=box, score=float(raw.scores[i]), landmarks=marks))
        return faces


def _check_input_size(size: int) -> int:
    if size <= 0 or size % STRIDE_MULTIPLE:
        raise ValueError(f"detection input size must be a positive multiple of {STRIDE_MULTIPLE}, got {size}")
    return size


def anchor_grid(size: int, stride: int, anchors_per_cell: int) -> np.ndarray:
    """(cells × anchors, 2) column/row indices of every anchor, row-major like the networks' outputs."""
    cells = size // stride
    rows, cols = np.mgrid[:cells, :cells]
    grid = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32)
    return np.repeat(grid, anchors_per_cell, axis=0)


class FaceRecognizer(InferenceModel):
    """Align every face of a chunk and embed them all together, in batches across images."""

    task: ClassVar[Task] = Task.FACIAL_RECOGNITION
    type: ClassVar[ModelType] = ModelType.RECOGNITION
    depends_on: ClassVar[tuple[StepKey, ...]] = (DETECTION_STEP,)
    batch_setting: ClassVar[str | None] = "face_batch_size"
    batches_images: ClassVar[bool] = False  # faces / text lines, found in the images
    embedding_dim: int  # per class; replaced by the loaded model's output width when it is fixed

    def __init__(
        self,
        model_name: str,
        model_dir: Path,
        runtime: RuntimeOptions | None = None,
        session_factory: SessionFactory | None = None,
        *,
        max_batch: int | None = None,
    ) -> None:
        super().__init__(model_name, model_dir, runtime, session_factory, max_batch=max_batch)
        self._fixed_batch: int | None = None

    @classmethod
    def decode_side(cls, options: Mapping[str, Any], detail_side: int) -> int:
        return detail_side  # faces are aligned from the decoded pixels: small ones need them fine

    def result_fields(self, output: np.ndarray, step: Step, asset: AssetOutputs) -> dict[str, Any]:
        # Rewrites the detector's "faces": the same boxes, filtered by this step's minScore, with embeddings.
        detection = asset.steps[DETECTION_STEP]
        return {"faces": faces_json(asset.outputs[DETECTION_STEP], output, detection, step)}

    def _after_load(self) -> None:
        first = self.session.get_inputs()[0].shape[0]
        self._fixed_batch = first if isinstance(first, int) and first > 0 else None
        width = self.session.get_outputs()[0].shape[-1]
        if isinstance(width, int) and width > 0:
            self.embedding_dim = width

    @abstractmethod
    def _blob(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) RGB uint8 aligned crops -> the network's float32 NCHW input."""

    def warmup(self) -> None:
        self.predict(self._blob(np.zeros((1, ALIGNED_SIZE, ALIGNED_SIZE, 3), dtype=np.uint8)))

    def embed(self, crops: np.ndarray, max_batch: int) -> np.ndarray:
        """L2-normalised embeddings of aligned crops, ``(N, dim)`` float32."""
        if len(crops) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        self.load()  # a model file with a fixed batch size overrides max_batch
        step = self._fixed_batch or max_batch
        # Independent calls: at a chunk's end, inference threads out of waves take some (``spread``).
        parts = spread(lambda part: self.predict(self._blob(crops[part]))[0], list(batches(len(crops), step)))
        vectors = np.concatenate([p.reshape(p.shape[0], -1) for p in parts]).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, np.finfo(np.float32).tiny)

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[np.ndarray]:
        faces_per_image: Sequence[Sequence[FaceBox]] = upstream[DETECTION_STEP]
        crops: list[np.ndarray] = []
        counts: list[int] = []
        for image, faces in zip(images, faces_per_image, strict=True):
            for face in faces:
                # FaceBox landmarks are in original pixels; the decoded pixels may be smaller.
                marks = np.asarray(face.landmarks, dtype=np.float64) / image.scale
                crops.append(align_face(image.pixels, marks))
            counts.append(len(faces))
        stacked = np.stack(crops) if crops else np.zeros((0, ALIGNED_SIZE, ALIGNED_SIZE, 3), dtype=np.uint8)
        vectors = self.embed(stacked, self.batch_limit(max_batch))
        return np.split(vectors, np.cumsum(counts)[:-1]) if counts else []


def faces_json(
    boxes: Sequence[FaceBox], embeddings: np.ndarray | None, detection: Step, recognition: Step | None
) -> list[dict[str, Any]]:
    """An asset's ``faces``: its boxes (those scoring at least recognition's ``minScore``), with embeddings if any."""
    min_score = (recognition.options.get("minScore") if recognition else None) or 0.0
    model = {"detection": detection.model_name, **({"recognition": recognition.model_name} if recognition else {})}
    faces = []
    for i, face in enumerate(boxes):
        if face.score < min_score:
            continue
        item: dict[str, Any] = {
            "box": [rounded(v, 2) for v in face.box],
            "score": rounded(face.score),
            "landmarks": [[rounded(x, 2), rounded(y, 2)] for x, y in face.landmarks],
        }
        if embeddings is not None:
            item["embedding"] = vector_json(embeddings[i])
        item["model"] = model
        faces.append(item)
    return faces
