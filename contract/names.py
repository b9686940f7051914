"""Names both sides use: tasks and model types (Immich's), and result statuses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any, Literal


class Task(StrEnum):
    """A job-spec task (the keys of ``tasks``), named as in Immich's machine-learning requests."""

    FACIAL_RECOGNITION = "facial-recognition"
    OCR = "ocr"
    CLIP = "clip"
    ZERO_SHOT = "zero-shot"


class ModelType(StrEnum):
    """A step of a task (``tasks.<task>.<type>``), and the model directory below the model name."""

    DETECTION = "detection"
    RECOGNITION = "recognition"
    CLASSIFICATION = "classification"
    VISUAL = "visual"
    TEXTUAL = "textual"
    # Zero-shot's one step: no type key in the spec and no directory of its own (it uses the CLIP pack).
    CLASSIFIER = "classifier"


Status = Literal["ok", "skipped", "failed"]
FINAL_STATUSES: tuple[Status, ...] = ("ok", "skipped")  # an asset in one of these is done for good


def count_statuses(results: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``{"ok": n, "skipped": n, "failed": n}`` for result documents (every status present, zeros too)."""
    counts = {"ok": 0, "skipped": 0, "failed": 0}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts
