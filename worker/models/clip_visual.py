"""CLIP image embeddings from the visual tower of an OpenCLIP export.

Pack layout (Immich's): ``clip/<modelName>/visual/model.onnx`` with
``visual/preprocess_cfg.json`` (or only ``config.json`` at the pack root).
The tower maps a normalised ``(N, 3, H, W)`` batch to ``(N, dim)`` embeddings.

Exports made with a dynamic batch axis are run in batches across the chunk.
Immich's own exports fix the batch at 1; those are run one image at a time,
which gives the same numbers, only slower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np

from contract.names import ModelType, Task
from worker.models.base import AssetOutputs, InferenceModel, StepKey
from worker.models.clip_preprocess import PreprocessConfig, normalise_batch, resize_and_crop
from worker.models.outputs import vector_json
from worker.pipeline.graph import Step
from worker.pipeline.image import DecodedImage
from worker.pipeline.jpeg import draft_scale

# Short side a chunk is decoded at for CLIP: towers crop 224 px, and 448 leaves room for 336/384 px exports.
DECODE_SIDE = 448


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32; an all-zero row stays zero instead of becoming NaN."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def session_batch_limit(shape: Sequence[int | str | None], requested: int) -> tuple[int, int | None]:
    """(batch size to use, fixed batch the graph demands or None) for an input of ``shape``."""
    first = shape[0] if shape else None
    if isinstance(first, int) and first > 0:
        return first, first
    return max(1, requested), None


def onnx_float_type(type_name: str | None) -> np.dtype[Any]:
    """The numpy dtype for an image input (float16 exports exist; everything else takes float32)."""
    return np.dtype(np.float16) if type_name == "tensor(float16)" else np.dtype(np.float32)


def run_in_batches(model: InferenceModel, inputs: np.ndarray, batch_size: int, fixed: int | None) -> np.ndarray:
    """Run ``inputs`` through ``model`` ``batch_size`` rows at a time (padding a short batch for fixed-batch graphs)."""
    outputs = []
    for start in range(0, len(inputs), batch_size):
        part = inputs[start : start + batch_size]
        n = len(part)
        if fixed is not None and n < fixed:
            part = np.concatenate([part, np.zeros((fixed - n, *part.shape[1:]), dtype=part.dtype)])
        outputs.append(np.asarray(model.predict(part)[0], dtype=np.float32)[:n])
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


class ClipVisual(InferenceModel):
    task = Task.CLIP
    type = ModelType.VISUAL
    batch_setting: ClassVar[str | None] = "clip_batch_size"
    # The resize and centre crop (~20 ms from a 2000x1500 decode) run in the decode threads.
    prepares: ClassVar[bool] = True

    preprocess_cfg: PreprocessConfig
    _fixed_batch: int | None
    _input_dtype: np.dtype[Any]

    def _after_load(self) -> None:
        self.preprocess_cfg = PreprocessConfig.from_pack(self.pack_dir)
        model_input = self.session.get_inputs()[0]
        _, self._fixed_batch = session_batch_limit(model_input.shape, 1)
        self._input_dtype = onnx_float_type(getattr(model_input, "type", None))

    @classmethod
    def decode_side(cls, options: Mapping[str, Any], detail_side: int) -> int:
        return DECODE_SIDE

    def result_fields(self, output: np.ndarray, step: Step, asset: AssetOutputs) -> dict[str, Any]:
        if Task.CLIP not in asset.requested:
            return {}  # run only for zero-shot, which reads the embedding: not asked for
        return {"clip": {"embedding": vector_json(output), "model": step.model_name}}

    def warmup(self) -> None:
        height, width = self.preprocess_cfg.size
        self.embed_pixels([np.zeros((height, width, 3), dtype=np.uint8)], self.max_batch)

    def prepare(self, image: DecodedImage, options: Mapping[str, Any]) -> None:
        cfg = getattr(self, "preprocess_cfg", None)  # set once loaded; never loads from here
        if cfg is not None:
            _crop(image, cfg)

    def embed_pixels(self, pixels: Sequence[np.ndarray], max_batch: int) -> np.ndarray:
        """RGB uint8 images -> (n, dim) float32, L2-normalised; at most ``max_batch`` images per session call."""
        self.load()  # reads the preprocess config
        return self.embed_crops([resize_and_crop(p, self.preprocess_cfg) for p in pixels], max_batch)

    def embed_crops(self, crops: Sequence[np.ndarray], max_batch: int) -> np.ndarray:
        """Crops already resized to the input size (``resize_and_crop``) -> (n, dim) float32, L2-normalised."""
        if not crops:
            return np.zeros((0, 0), dtype=np.float32)
        batch_size, fixed = session_batch_limit(self.session.get_inputs()[0].shape, max_batch)
        outputs = []
        for start in range(0, len(crops), batch_size):
            # Normalise one batch at a time so a large chunk never holds every float tensor at once.
            batch = normalise_batch(crops[start : start + batch_size], self.preprocess_cfg)
            outputs.append(run_in_batches(self, batch.astype(self._input_dtype, copy=False), batch_size, fixed))
        return l2_normalise(np.concatenate(outputs))

    def run_chunk(
        self,
        images: Sequence[DecodedImage],
        upstream: Mapping[StepKey, Sequence[Any]],
        options: Mapping[str, Any],
        *,
        max_batch: int | None = None,
    ) -> list[np.ndarray]:
        """One (dim,) float32 L2-normalised embedding per image, batched across the chunk."""
        self.load()
        crops = [_crop(image, self.preprocess_cfg) for image in images]
        return [np.ascontiguousarray(row) for row in self.embed_crops(crops, self.batch_limit(max_batch))]


def _crop(image: DecodedImage, cfg: PreprocessConfig) -> np.ndarray:
    """The image resized and centre-cropped for ``cfg``, made once per image (see ``DecodedImage.derive``)."""
    return image.derive(("clip.visual", cfg), lambda pixels: resize_and_crop(shrunk(pixels), cfg))


def shrunk(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` area-averaged down by the power of two a JPEG decode DCT-scaled to ``DECODE_SIDE`` would use.

    A chunk whose faces are aligned from full-size pixels hands CLIP a full-size 12 MP image: Pillow's
    bicubic resize from it took 134 ms, against 8.6 ms from the quarter-size image the DCT would have
    given CLIP alone, and this box average costs ~7 ms. Smaller images are left exactly as they are.
    """
    height, width = pixels.shape[:2]
    scale = draft_scale(width, height, DECODE_SIDE)
    if scale == 1:
        return pixels
    return cv2.resize(pixels, (-(-width // scale), -(-height // scale)), interpolation=cv2.INTER_AREA)
