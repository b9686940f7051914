"""``GET /ping`` and ``POST /predict``: Immich's machine-learning endpoint, backed by the queue.

An image request becomes an interactive chunk (``producer/api/interactive.py``)
that a worker takes before any bulk chunk; the call waits for its result. A
text request (``clip.textual``, Immich's smart search) is embedded here, by a
warm text tower (``producer/api/clip_text.py``).

Status codes are Immich's where it has one: 422 for bad ``entries``, 400 when
there is neither an image nor text. Beyond those: 400 for both or a malformed
body, 413 for an upload over ``ASSETQ_MAX_IMAGE_BYTES``, 415 for a body that is
not multipart, 422 for an image a batch would skip (with the same
``error.kind``), 503 when no live worker serves a requested model (Immich then
tries its next URL), 504 when the result does not come within
``ASSETQ_API_PREDICT_TIMEOUT_S``.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import UploadFile

from contract.errors import SpecError
from contract.names import ModelType, Task
from contract.spec import Tasks, check_models
from producer.api.clip_text import TextModelMissing
from producer.api.immich import (
    EntriesError,
    answer,
    entries_errors,
    image_tasks,
    parse_entries,
    text_model,
    vector_text,
)
from producer.api.problems import problem, spec_problem
from producer.api.state import ApiState, get_state

router = APIRouter(tags=["Immich machine learning"])

# Room in a /predict body for the entries field, a text and the multipart framing, beyond the image itself.
FORM_OVERHEAD_BYTES = 1024 * 1024
MAX_FIELD_BYTES = 256 * 1024  # entries or text: a few hundred bytes in practice

_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["entries"],
                    "properties": {
                        "entries": {
                            "type": "string",
                            "description": 'JSON: {task: {type: {modelName, options}}}, e.g. {"facial-recognition": '
                            '{"detection": {"modelName": "buffalo_s"}, "recognition": {"modelName": "buffalo_s"}}}',
                        },
                        "image": {"type": "string", "format": "binary", "description": "the image (or send text)"},
                        "text": {"type": "string", "description": "text to embed with clip.textual (or send image)"},
                    },
                }
            }
        },
    }
}


@router.get("/ping", response_class=PlainTextResponse, summary="Immich's health check: answers pong")
def ping(request: Request) -> PlainTextResponse:
    state = get_state(request)
    if state.settings.api_predict_auth:
        state.auth.require(request)
    return PlainTextResponse("pong")


@router.post("/predict", openapi_extra=_FORM_SCHEMA, summary="Immich's machine-learning request")
async def predict(request: Request) -> Response:
    state = get_state(request)
    if state.settings.api_predict_auth:
        state.auth.require(request)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return problem(415, "send multipart/form-data with 'entries' and 'image' or 'text'")
    async with request.form(max_files=1, max_fields=8, max_part_size=MAX_FIELD_BYTES) as form:
        raw_entries, image, text = form.get("entries"), form.get("image"), form.get("text")
        try:
            entries = parse_entries(raw_entries if isinstance(raw_entries, str) else None)
        except EntriesError as e:
            return spec_problem(422, e)
        if image is None and text is None:
            return problem(400, "Either image or text must be provided")
        if image is not None and text is not None:
            return problem(400, "send either image or text, not both")
        if isinstance(text, str):
            return await _text(state, entries, text)
        if not isinstance(image, UploadFile):
            return problem(400, "'image' must be a file part")
        limit = state.settings.max_image_bytes
        data = await image.read(limit + 1)
    if len(data) > limit:
        return problem(413, f"the image is over ASSETQ_MAX_IMAGE_BYTES ({limit} bytes)")
    return await _image(state, entries, data)


async def _text(state: ApiState, entries: dict[str, Any], text: str) -> Response:
    try:
        model = text_model(entries)
    except EntriesError as e:
        return spec_problem(422, e)
    try:
        vector = await anyio.to_thread.run_sync(state.text.embed, model, text)
    except TextModelMissing as e:
        catalog = await anyio.to_thread.run_sync(state.producer.catalog)
        known = catalog.get(Task.CLIP.value, {}).get(ModelType.TEXTUAL.value, set())
        # Installed somewhere in the fleet but not beside this server: not the request's fault.
        return problem(503 if model in known else 422, str(e))
    return JSONResponse({Task.CLIP.value: vector_text(vector)})


async def _image(state: ApiState, entries: dict[str, Any], data: bytes) -> Response:
    try:
        tasks = image_tasks(entries)
    except EntriesError as e:
        return spec_problem(422, e)
    if not data:
        # What a batch records for an empty file (worker/pipeline/image.py), without a trip through the queue.
        error = {"kind": "empty", "message": "the file is empty (0 bytes)"}
        return problem(422, "empty: the file is empty (0 bytes)", error=error)
    refusal = await anyio.to_thread.run_sync(_refuse_models, state, tasks)
    if refusal is not None:
        return refusal
    try:
        ticket = await state.batcher.submit(tasks.dump(), data)
    except Exception as e:  # Redis or the broker unreachable: nothing was enqueued
        return problem(503, f"could not enqueue the request: {type(e).__name__}: {e}")
    doc = await state.watcher.result(ticket, state.settings.api_predict_timeout_s)
    headers = {"X-Assetq-Batch": ticket.batch_id, "X-Assetq-Chunk-Images": str(ticket.chunk_images)}
    if doc is None:
        timeout = state.settings.api_predict_timeout_s
        return problem(504, f"no result within {timeout:g} s (ASSETQ_API_PREDICT_TIMEOUT_S)", headers=headers)
    if doc["status"] == "ok":
        return JSONResponse(answer(doc, tasks), headers=headers)
    error = doc.get("error") or {}
    detail = f"{error.get('kind')}: {error.get('message')}"
    # skipped: the image itself is the problem (corrupt, truncated, too large ...), as a batch would record it.
    return problem(422 if doc["status"] == "skipped" else 503, detail, error=error, headers=headers)


def _refuse_models(state: ApiState, tasks: Tasks) -> JSONResponse | None:
    """503 when no live worker serves a requested model now; 422 for a model nobody has (blocking)."""
    live = state.live_catalog()
    missing = [
        f"{task}/{type_} {name!r}"
        for task, type_, name, _ in tasks.steps()
        if name not in live.get(task, {}).get(type_, ())
    ]
    if not missing:
        return None
    try:
        check_models(tasks, state.producer.catalog())
    except SpecError as e:
        if live:  # workers are up, and neither they nor this server's model directory have it
            return spec_problem(422, entries_errors(e))
    return problem(503, f"no live worker serves {', '.join(missing)}")


def body_limit(settings_max_image_bytes: int) -> int:
    """The largest ``/predict`` body: the image and room for the form around it."""
    return settings_max_image_bytes + FORM_OVERHEAD_BYTES
