"""The batch API under ``/v1``: submit a job spec, follow it, read its results, replay what failed.

Everything here calls ``producer.Producer``, the same code ``assetq submit``,
``status``, ``results``, ``failures`` and ``replay`` run, so the HTTP API and the
CLI cannot disagree. Every route needs a bearer token (``ASSETQ_API_TOKENS``)
unless the server runs with ``--no-auth``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import redis
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from contract.connection import text
from contract.errors import ReplicationError, SpecError
from contract.keys import key
from producer.api.jsonio import loads_strict
from producer.api.problems import problem, spec_problem
from producer.api.state import ApiState, get_state

RESULTS_PAGE = 500  # results read from Redis per round trip while streaming


def require_token(request: Request) -> None:
    get_state(request).auth.require(request)


router = APIRouter(prefix="/v1", tags=["batches"], dependencies=[Depends(require_token)])


class BatchCreated(BaseModel):
    batch_id: str


class ReplayRequest(BaseModel):
    """The options of ``assetq replay``."""

    model_config = ConfigDict(extra="forbid")

    asset_ids: list[str] | None = Field(None, description="only these assets (default: every dead-lettered one)")
    include_skipped: bool = Field(False, description="also re-run assets recorded as skipped")
    dry_run: bool = Field(False, description="say what would be re-enqueued, enqueue nothing")


def _known(state: ApiState, batch_id: str) -> None:
    if not state.producer.store.exists(batch_id):
        raise HTTPException(404, f"unknown batch {batch_id!r} (expired or never submitted)")


@router.post(
    "/batches",
    status_code=201,
    response_model=BatchCreated,
    summary="Submit a job spec (the schema of `assetq validate`); 422 names each bad field",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}},
        }
    },
)
async def submit(request: Request) -> Any:
    state = get_state(request)
    try:
        spec = loads_strict(await request.body())
    except (ValueError, UnicodeDecodeError) as e:  # a syntax error or a key given twice
        return problem(400, f"the body is not a JSON job spec: {e}")
    try:
        batch_id = await anyio.to_thread.run_sync(state.producer.submit, spec)
    except SpecError as e:
        exists = [f for f, m in e.errors if f == "batch_id" and "exists already" in m]
        return spec_problem(409 if exists else 422, e)
    except ReplicationError as e:  # queued on the master only: the client must know, and may retry later
        return problem(503, str(e), batch_id=e.batch_id)
    return JSONResponse({"batch_id": batch_id}, status_code=201)


@router.get("/batches", summary="The most recent batches, newest first, with their counters")
def recent(request: Request, limit: int = Query(20, ge=1, le=1000)) -> list[dict[str, Any]]:
    store = get_state(request).producer.store
    return [st for bid in store.recent_batches(limit) if (st := store.status(bid)) is not None]


@router.get("/batches/{batch_id}", summary="A batch's status record (as `assetq status`)")
def status(request: Request, batch_id: str) -> dict[str, Any]:
    p = get_state(request).producer
    try:
        st = p.status(batch_id)
    except KeyError as e:
        raise HTTPException(404, e.args[0]) from None
    return {**st, "held": p.held(batch_id)}


@router.get(
    "/batches/{batch_id}/results",
    summary="The batch's result documents as NDJSON, in asset-id order; resume with ?after=<last asset_id>",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "one result document per line"}},
)
def results(
    request: Request,
    batch_id: str,
    after: str | None = Query(None, description="cursor: the asset_id of the last line already read"),
    limit: int | None = Query(None, ge=1, description="at most this many lines; X-Next-Cursor says where to go on"),
) -> StreamingResponse:
    state = get_state(request)
    _known(state, batch_id)
    r = state.producer.store.r
    results_key = key("batch", batch_id, "results")
    ids = sorted(text(k) for k in r.hkeys(results_key))
    start = bisect.bisect_right(ids, after) if after is not None else 0
    page = ids[start : start + limit] if limit is not None else ids[start:]
    headers = {"X-Results-Total": str(len(ids))}
    if page and start + len(page) < len(ids):
        headers["X-Next-Cursor"] = page[-1]

    def lines() -> Iterator[bytes]:
        for i in range(0, len(page), RESULTS_PAGE):
            raws: Any = r.hmget(results_key, page[i : i + RESULTS_PAGE])
            for raw in raws:
                if raw is not None:
                    yield raw + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)


@router.get("/batches/{batch_id}/failures", summary="Dead-lettered chunks and their reasons (as `assetq failures`)")
def failures(request: Request, batch_id: str) -> list[dict[str, Any]]:
    state = get_state(request)
    _known(state, batch_id)
    return state.producer.failures(batch_id)


@router.post("/batches/{batch_id}/replay", summary="Re-enqueue dead-lettered (and optionally skipped) assets")
def replay(request: Request, batch_id: str, options: ReplayRequest | None = None) -> dict[str, Any]:
    opts = options or ReplayRequest()
    try:
        return get_state(request).producer.replay(
            batch_id, asset_ids=opts.asset_ids, include_skipped=opts.include_skipped, dry_run=opts.dry_run
        )
    except KeyError as e:
        raise HTTPException(404, e.args[0]) from None


@router.get("/health", summary="Whether Redis answers, and the live workers with their device and models")
def health(request: Request) -> JSONResponse:
    p = get_state(request).producer
    try:
        p.redis.ping()
        workers = p.workers.live()
    except redis.RedisError as e:
        return JSONResponse({"redis": False, "error": f"{type(e).__name__}: {e}", "workers": {}}, status_code=503)
    return JSONResponse({"redis": True, "workers": workers})
