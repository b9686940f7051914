"""Turn model-step outputs into the per-asset result documents (JSON-ready dicts)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from worker.models.outputs import FaceBox, Label, TextLine
from worker.pipeline.graph import Step, StepKey

FACE_DET: StepKey = ("facial-recognition", "detection")
FACE_REC: StepKey = ("facial-recognition", "recognition")
TEXT_DET: StepKey = ("ocr", "detection")
TEXT_REC: StepKey = ("ocr", "recognition")
CLIP_VIS: StepKey = ("clip", "visual")
ZERO_SHOT: StepKey = ("zero-shot", "classifier")

DIGITS = 5  # coordinates and scores; embeddings keep 7 (float32 has ~7 significant digits)


def _r(x: float, digits: int = DIGITS) -> float:
    return round(float(x), digits)


def _vector(v: np.ndarray) -> list[float]:
    return [round(float(x), 7) for x in np.asarray(v, dtype=np.float32).ravel()]


def skipped(
    batch_id: str,
    asset_id: str,
    kind: str,
    message: str,
    status: str = "skipped",
    timings: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "asset_id": asset_id,
        "status": status,
        "error": {"kind": kind, "message": message},
        "timings_ms": dict(timings or {}),
    }


def build(
    batch_id: str,
    asset_id: str,
    width: int,
    height: int,
    plan: Sequence[Step],
    outputs: Mapping[StepKey, Any],
    timings: Mapping[str, float],
    emit_clip: bool,
) -> dict[str, Any]:
    """``outputs`` holds this asset's output of every step in ``plan``."""
    steps = {s.key: s for s in plan}
    result: dict[str, Any] = {
        "batch_id": batch_id,
        "asset_id": asset_id,
        "status": "ok",
        "error": None,
        "image": {"width": width, "height": height},
    }
    if FACE_DET in steps:
        result["faces"] = _faces(outputs[FACE_DET], outputs.get(FACE_REC), steps[FACE_DET], steps.get(FACE_REC))
    if TEXT_DET in steps:
        if TEXT_REC in steps:
            result["ocr"] = [_line(line) for line in outputs[TEXT_REC]]
        else:
            result["ocr"] = [
                {"box": [[_r(x), _r(y)] for x, y in b.quad], "text": None, "score": None, "box_score": _r(b.score)}
                for b in outputs[TEXT_DET]
            ]
    if CLIP_VIS in steps and emit_clip:
        result["clip"] = {"embedding": _vector(outputs[CLIP_VIS]), "model": steps[CLIP_VIS].model_name}
    if ZERO_SHOT in steps:
        labels: list[Label] = outputs[ZERO_SHOT]
        result["labels"] = [{"name": lab.name, "score": _r(lab.score)} for lab in labels]
    result["timings_ms"] = {k: round(v, 3) for k, v in timings.items()}
    return result


def _faces(boxes: list[FaceBox], embeddings: np.ndarray | None, det: Step, rec: Step | None) -> list[dict[str, Any]]:
    min_score = (rec.options.get("minScore") if rec else None) or 0.0
    model = {"detection": det.model_name, **({"recognition": rec.model_name} if rec else {})}
    faces = []
    for i, face in enumerate(boxes):
        if face.score < min_score:
            continue
        item: dict[str, Any] = {
            "box": [_r(v, 2) for v in face.box],
            "score": _r(face.score),
            "landmarks": [[_r(x, 2), _r(y, 2)] for x, y in face.landmarks],
        }
        if embeddings is not None:
            item["embedding"] = _vector(embeddings[i])
        item["model"] = model
        faces.append(item)
    return faces


def _line(line: TextLine) -> dict[str, Any]:
    return {
        "box": [[_r(x, 2), _r(y, 2)] for x, y in line.quad],
        "text": line.text,
        "score": _r(line.score),
        "box_score": _r(line.box_score),
    }
