"""Which class serves a requested ``(task, type, modelName)``: the one table of model classes.

``MODELS`` lists every model class once. Everything else about a model (its
step, dependencies, batch setting, decode side, result JSON) is declared on
the class itself (see ``worker.models.base``); the pipeline reads it from there.

A model pack directory (``<model_dir>/<task>/<modelName>/``) may carry an
``assetq.json`` naming its ``family``; ``assetq models install`` writes one.
Packs a user drops in by hand are recognised by name, the way Immich names
them (``buffalo_*`` is InsightFace, ``PP-OCR*`` is PaddleOCR, every ``clip``
pack is an OpenCLIP export): each entry says which names its family's packs go by.
"""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from config.settings import Settings
from contract.names import ModelType, Task
from worker.models.base import InferenceModel


@dataclass(frozen=True)
class ModelEntry:
    """One model class, and how packs of its family are recognised."""

    cls: str  # "package.module:ClassName", imported on the first lookup
    family: str  # the pack family, as an ``assetq.json`` names it
    # Lower-case fragments of the pack names this family's packs go by, for packs without
    # an ``assetq.json`` (checked in table order); "" matches every name of the task.
    pack_names: tuple[str, ...] = ()


_INSIGHTFACE = ("buffalo", "antelope")

MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("worker.models.face_detection_scrfd:ScrfdDetector", "insightface", _INSIGHTFACE),
    ModelEntry("worker.models.face_recognition_arcface:ArcFaceRecognizer", "insightface", _INSIGHTFACE),
    ModelEntry("worker.models.face_detection_yunet:YunetDetector", "opencv", ("yunet",)),
    ModelEntry("worker.models.face_recognition_sface:SFaceRecognizer", "opencv", ("sface",)),
    ModelEntry("worker.models.text_detection:PPOCRTextDetector", "ppocr", ("ocr",)),
    ModelEntry("worker.models.text_recognition:PPOCRTextRecognizer", "ppocr", ("ocr",)),
    ModelEntry("worker.models.text_orientation:PPOCRTextOrientation", "ppocr", ("ocr",)),
    ModelEntry("worker.models.clip_visual:ClipVisual", "openclip", ("",)),
    ModelEntry("worker.models.clip_textual:ClipTextual", "openclip", ("",)),
    ModelEntry("worker.models.zero_shot:ZeroShotClassifier", "openclip", ("",)),
)

ClassKey = tuple[str, str, str]  # (task, type, family)

_CLASSES: dict[ClassKey, type[InferenceModel]] = {}
_NAME_RULES: list[tuple[str, str, str]] = []  # (task, lower-case name fragment, family), in table order
_lock = threading.RLock()  # re-entrant: a listed module may itself call register()
_loaded = False


def check_declarations(cls: type[InferenceModel]) -> None:
    """Refuse a class whose declarations the pipeline could not use, naming what is wrong."""
    problems = []
    if getattr(cls, "task", None) not in set(Task):
        problems.append(f"task {getattr(cls, 'task', None)!r} is not one of {', '.join(Task)}")
    if getattr(cls, "type", None) not in set(ModelType):
        problems.append(f"type {getattr(cls, 'type', None)!r} is not one of {', '.join(ModelType)}")
    if cls.batch_setting is not None and cls.batch_setting not in Settings.model_fields:
        problems.append(f"batch_setting {cls.batch_setting!r} is not a field of config.Settings")
    for key in (*cls.depends_on, *cls.runs_after):
        if not (isinstance(key, tuple) and len(key) == 2):
            problems.append(f"dependency {key!r} is not a (task, type) pair")
    if problems:
        raise TypeError(f"{cls.__module__}.{cls.__qualname__}: " + "; ".join(problems))


def _add(cls: type[InferenceModel], family: str, pack_names: tuple[str, ...]) -> None:
    check_declarations(cls)
    _CLASSES[(cls.task, cls.type, family)] = cls
    for fragment in pack_names:
        rule = (str(cls.task), fragment, family)
        if rule not in _NAME_RULES:
            _NAME_RULES.append(rule)


def register(family: str, pack_names: tuple[str, ...] = ()) -> Callable[[type[InferenceModel]], type[InferenceModel]]:
    """Class decorator for a model class outside ``MODELS`` (tests, experiments): ``@register("acme")``."""

    def wrap(cls: type[InferenceModel]) -> type[InferenceModel]:
        with _lock:
            _add(cls, family, pack_names)
        return cls

    return wrap


def _load_models() -> None:
    global _loaded
    with _lock:
        if _loaded:
            return
        for entry in MODELS:
            module_name, _, class_name = entry.cls.partition(":")
            cls = getattr(importlib.import_module(module_name), class_name)
            _add(cls, entry.family, entry.pack_names)
        _loaded = True


def family_of(task: str, model_name: str, model_dir: Path) -> str:
    _load_models()
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
    family = family_of(task, model_name, model_dir)
    try:
        return _CLASSES[(task, type_, family)]
    except KeyError:
        known = sorted(f"{t}/{ty} ({f})" for t, ty, f in _CLASSES)
        raise LookupError(
            f"no model class for {task}/{type_} of family {family!r}; known: {', '.join(known)}"
        ) from None


def registered() -> dict[ClassKey, type[InferenceModel]]:
    _load_models()
    return dict(_CLASSES)
