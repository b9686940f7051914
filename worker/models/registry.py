"""Which class serves a requested ``(task, type, modelName)``.

A model pack directory (``<model_dir>/<task>/<modelName>/``) may carry an
``assetq.json`` naming its ``family``; ``assetq models install`` writes one.
Packs a user drops in by hand are recognised by name, the way Immich names
them (``buffalo_*`` is InsightFace, ``PP-OCR*`` is PaddleOCR, every ``clip``
pack is an OpenCLIP export).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path

from worker.models.base import InferenceModel

_CLASSES: dict[tuple[str, str, str], type[InferenceModel]] = {}

# Modules that register model classes; imported on first lookup.
MODEL_MODULES = (
    "worker.models.face_detection_scrfd",
    "worker.models.face_detection_yunet",
    "worker.models.face_recognition_arcface",
    "worker.models.face_recognition_sface",
    "worker.models.text_detection",
    "worker.models.text_recognition",
    "worker.models.text_orientation",
    "worker.models.clip_visual",
    "worker.models.clip_textual",
    "worker.models.zero_shot",
)
_loaded = False


def register(family: str) -> Callable[[type[InferenceModel]], type[InferenceModel]]:
    """Class decorator: ``@register("insightface")`` on a model class."""

    def wrap(cls: type[InferenceModel]) -> type[InferenceModel]:
        _CLASSES[(cls.task, cls.type, family)] = cls
        return cls

    return wrap


def _load_modules() -> None:
    global _loaded
    if _loaded:
        return
    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real import error inside the module
                raise
    _loaded = True


_NAME_RULES: tuple[tuple[str, str, str], ...] = (
    # (task, lower-case name fragment, family)
    ("facial-recognition", "buffalo", "insightface"),
    ("facial-recognition", "antelope", "insightface"),
    ("facial-recognition", "yunet", "opencv"),
    ("facial-recognition", "sface", "opencv"),
    ("ocr", "ocr", "ppocr"),
    ("clip", "", "openclip"),
    ("zero-shot", "", "openclip"),
)


def family_of(task: str, model_name: str, model_dir: Path) -> str:
    manifest = model_dir / task / model_name / "assetq.json"
    if manifest.is_file():
        family = json.loads(manifest.read_text()).get("family")
        if isinstance(family, str) and family:
            return family
    lowered = model_name.lower()
    for rule_task, fragment, family in _NAME_RULES:
        if rule_task == task and fragment in lowered:
            return family
    raise LookupError(f"cannot tell which model family {task}/{model_name} is; add {manifest} with a 'family' key")


def model_class(task: str, type_: str, model_name: str, model_dir: Path) -> type[InferenceModel]:
    _load_modules()
    family = family_of(task, model_name, model_dir)
    try:
        return _CLASSES[(task, type_, family)]
    except KeyError:
        known = sorted(f"{t}/{ty} ({f})" for t, ty, f in _CLASSES)
        raise LookupError(
            f"no model class for {task}/{type_} of family {family!r}; known: {', '.join(known)}"
        ) from None


def registered() -> dict[tuple[str, str, str], type[InferenceModel]]:
    _load_modules()
    return dict(_CLASSES)
