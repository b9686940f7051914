"""What models a model directory holds, read from its layout alone.

Layout (the same as Immich's model cache): ``<root>/<task>/<modelName>/<type>/model.onnx``.
No onnxruntime here: the producer validates specs against this.
"""

from __future__ import annotations

from pathlib import Path

from contract.names import ModelType, Task
from contract.spec import Catalog


def scan_model_dir(root: Path) -> Catalog:
    catalog: Catalog = {}
    if not root.is_dir():
        return catalog
    for model_file in root.glob("*/*/*/model.onnx"):
        type_dir = model_file.parent
        pack_dir = type_dir.parent
        task = pack_dir.parent.name
        catalog.setdefault(task, {}).setdefault(type_dir.name, set()).add(pack_dir.name)
    return catalog


def merge(*catalogs: Catalog) -> Catalog:
    out: Catalog = {}
    for cat in catalogs:
        for task, types in cat.items():
            for type_, names in types.items():
                out.setdefault(task, {}).setdefault(type_, set()).update(names)
    return out


def default_tasks(catalog: Catalog, clip_classes: dict[str, dict[str, list[str]]] | None = None) -> dict:
    """A ``tasks`` block running every task whose models are installed (first name in sort order).

    Which steps a default job runs is a choice made here, not a model's to declare: the
    producer validates against it without any worker code. Optional steps (text-line
    orientation) are left out; a new model of an existing step needs nothing here.
    """
    tasks: dict = {}

    def first(task: str, type_: str, prefer: tuple[str, ...] = ()) -> str | None:
        names = sorted(catalog.get(task, {}).get(type_, set()))
        for p in prefer:
            if p in names:
                return p
        return names[0] if names else None

    # Plain-string keys (the enums' values): the block is JSON, and may be compared or dumped as is.
    face, ocr, clip = Task.FACIAL_RECOGNITION.value, Task.OCR.value, Task.CLIP.value
    detection, recognition = ModelType.DETECTION.value, ModelType.RECOGNITION.value
    det = first(face, detection, ("buffalo_s",))
    if det:
        rec = first(face, recognition, (det, "buffalo_s"))
        tasks[face] = {detection: {"modelName": det}}
        if rec:
            tasks[face][recognition] = {"modelName": rec}
    tdet = first(ocr, detection, ("PP-OCRv6_small", "PP-OCRv5_mobile"))
    if tdet:
        trec = first(ocr, recognition, (tdet,))
        tasks[ocr] = {detection: {"modelName": tdet}}
        if trec:
            tasks[ocr][recognition] = {"modelName": trec}
    vis = first(clip, ModelType.VISUAL)
    if vis:
        tasks[clip] = {ModelType.VISUAL.value: {"modelName": vis}}
        if clip_classes and vis in catalog.get(clip, {}).get(ModelType.TEXTUAL, set()):
            tasks[Task.ZERO_SHOT.value] = {"modelName": vis, "classes": clip_classes}
    return tasks
