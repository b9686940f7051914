"""Immich's machine-learning contract, as its server uses it: the ``entries`` it sends, the answers it reads.

Immich's server posts ``multipart/form-data`` to ``/predict`` with ``entries``, a
JSON string ``{task: {type: {modelName, options}}}``, and either ``image`` (the
file) or ``text`` (a form field). It reads back, per task:

* ``facial-recognition``: ``[{"boundingBox": {x1, y1, x2, y2}, "embedding": "<JSON array>", "score"}]``
  with ``imageHeight`` and ``imageWidth`` beside it (it stores the box relative to those);
* ``clip``: the embedding as a JSON-array string (image or text);
* ``ocr``: ``{"text": [...], "box": [8 numbers per line], "boxScore": [...], "textScore": [...]}``,
  the box's four corners clockwise from the top left, as fractions of the image's width and height.

The ``entries`` block is assetq's own ``tasks`` shape (``contract/spec.py``), so an
image request is validated by the same schema as a job spec. Pure functions here:
no I/O, no FastAPI.
"""

from __future__ import annotations

import json
from typing import Any

from contract.errors import SpecError
from contract.names import ModelType, Task
from contract.spec import Tasks, parse_tasks
from producer.api.jsonio import loads_strict

# The tasks Immich's server asks for; zero-shot is assetq's own and has no answer shape in Immich.
IMMICH_TASKS = (Task.FACIAL_RECOGNITION.value, Task.CLIP.value, Task.OCR.value)
DIGITS = 6  # normalised OCR corners: a millionth of the side is far below a pixel


class EntriesError(SpecError):
    """Bad ``entries`` (Immich answers 422)."""


def parse_entries(raw: str | None) -> dict[str, Any]:
    """The ``entries`` form field as a dict, or ``EntriesError`` naming what is wrong."""
    if raw is None:
        raise EntriesError([("entries", "missing: send a form field 'entries' with the tasks as JSON")])
    try:
        entries = loads_strict(raw)
    except ValueError as e:  # a syntax error or a key given twice
        raise EntriesError([("entries", f"not valid JSON: {e}")]) from None
    if not isinstance(entries, dict) or not entries:
        raise EntriesError([("entries", "must be a JSON object {task: {type: {modelName, options}}}")])
    unknown = sorted(set(entries) - set(IMMICH_TASKS))
    if unknown:
        raise EntriesError(
            [(f"entries.{t}", f"unknown task; /predict serves {', '.join(IMMICH_TASKS)}") for t in unknown]
        )
    return entries


def text_model(entries: dict[str, Any]) -> str:
    """The CLIP model of a text request; a text request asks for ``clip.textual`` and nothing else."""
    clip = entries.get(Task.CLIP.value)
    textual = clip.get(ModelType.TEXTUAL.value) if isinstance(clip, dict) else None
    if set(entries) != {Task.CLIP.value} or not isinstance(clip, dict) or set(clip) != {ModelType.TEXTUAL.value}:
        raise EntriesError([("entries", "a text request takes exactly one entry: clip.textual")])
    name = textual.get("modelName") if isinstance(textual, dict) else None
    if not isinstance(name, str) or not name:
        raise EntriesError([("entries.clip.textual.modelName", "missing: name the CLIP model")])
    return name


def image_tasks(entries: dict[str, Any]) -> Tasks:
    """The tasks of an image request, validated as a job spec's ``tasks`` block."""
    clip = entries.get(Task.CLIP.value)
    if isinstance(clip, dict) and ModelType.TEXTUAL.value in clip:
        raise EntriesError([("entries.clip.textual", "embeds the 'text' field: send text, not an image")])
    try:
        return parse_tasks(entries)
    except SpecError as e:
        raise entries_errors(e) from None


def entries_errors(e: SpecError) -> EntriesError:
    """A spec's errors on ``tasks.*`` as errors on the request's ``entries.*``."""
    return EntriesError(
        [("entries." + f.removeprefix("tasks.") if f.startswith("tasks.") else f, m) for f, m in e.errors]
    )


def answer(result: dict[str, Any], tasks: Tasks) -> dict[str, Any]:
    """An ``ok`` assetq result document, answered the way Immich's machine-learning service answers."""
    image = result.get("image") or {}
    width, height = int(image.get("width", 0)), int(image.get("height", 0))
    out: dict[str, Any] = {}
    if tasks.facial_recognition is not None:
        out[Task.FACIAL_RECOGNITION.value] = [_face(f) for f in result.get("faces") or []]
    if tasks.clip is not None:
        out[Task.CLIP.value] = vector_text(result["clip"]["embedding"])
    if tasks.ocr is not None:
        out[Task.OCR.value] = _ocr(result.get("ocr") or [], width, height)
    out["imageHeight"], out["imageWidth"] = height, width
    return out


def vector_text(vector: list[float]) -> str:
    """An embedding as Immich passes it on to Postgres: a JSON array in a string."""
    return json.dumps([float(x) for x in vector], separators=(",", ":"))


def _face(face: dict[str, Any]) -> dict[str, Any]:
    # Immich's detector rounds its boxes to whole pixels; its server stores them as integers.
    x1, y1, x2, y2 = (round(float(v)) for v in face["box"])
    out: dict[str, Any] = {"boundingBox": {"x1": x1, "y1": y1, "x2": x2, "y2": y2}}
    if "embedding" in face:  # absent when only detection was asked for
        out["embedding"] = vector_text(face["embedding"])
    out["score"] = float(face["score"])
    return out


def _ocr(lines: list[dict[str, Any]], width: int, height: int) -> dict[str, list[Any]]:
    text: list[str] = []
    box: list[float] = []
    box_score: list[float] = []
    text_score: list[float] = []
    for line in lines:
        for x, y in line["box"]:
            box += [round(float(x) / max(width, 1), DIGITS), round(float(y) / max(height, 1), DIGITS)]
        text.append(line.get("text") or "")  # detection only: boxes without text
        box_score.append(float(line.get("box_score") or 0.0))
        text_score.append(float(line.get("score") or 0.0))
    return {"text": text, "box": box, "boxScore": box_score, "textScore": text_score}
