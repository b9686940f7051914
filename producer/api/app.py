"""The ASGI application of ``assetq serve``: the batch API, Immich's endpoint and the operator page.

It is a producer: it validates, records and enqueues, and reads results back.
It imports no worker code and no onnxruntime, except lazily, for the CLIP text
towers (``producer/api/clip_text.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from config import Settings, get_settings
from contract.spec import JobSpec
from producer.api import batches, predict, ui
from producer.api.limits import BodyLimits
from producer.api.state import ApiState

log = logging.getLogger(__name__)

# Set to "1" by `assetq serve --no-auth`, so that every server process (--workers N) builds its app the same way.
NO_AUTH_ENV = "ASSETQ_SERVE_NO_AUTH"

DESCRIPTION = """\
assetq's HTTP API. `/v1` submits job specs and follows batches (bearer token from
`ASSETQ_API_TOKENS`). `/ping` and `/predict` are Immich's machine-learning contract,
backed by the queue: point `IMMICH_MACHINE_LEARNING_URL` here. `/ui` is the operator page.
"""


class NoTokenConfigured(RuntimeError):
    """The server would start without authentication: set ASSETQ_API_TOKENS or pass --no-auth."""


def require_tokens(settings: Settings, auth: bool) -> None:
    """Refuse to start without a token unless told to (``--no-auth``), as ``assetq flower`` does."""
    if auth and not any(t.get_secret_value() for t in settings.api_tokens):
        raise NoTokenConfigured(
            "set ASSETQ_API_TOKENS to a JSON list of bearer tokens, e.g. '[\"s3cret\"]' "
            "(or pass --no-auth on a private network)"
        )


def create_app(settings: Settings | None = None, auth: bool = True) -> FastAPI:
    s = settings or get_settings()
    require_tokens(s, auth)
    state = ApiState.build(s, auth=auth)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app = FastAPI(
        title="assetq",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.api = state
    predict_limit = predict.body_limit(s.max_image_bytes)
    app.add_middleware(
        BodyLimits,
        limit_for=lambda path: predict_limit if path == "/predict" else s.api_max_request_bytes,
        timeout_s=s.api_body_timeout_s,
    )
    app.include_router(batches.router)
    app.include_router(predict.router)
    app.include_router(ui.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi_with_job_spec(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """The app as ``assetq serve`` builds it in each server process (uvicorn's factory)."""
    return create_app(auth=os.environ.get(NO_AUTH_ENV) != "1")


def _openapi_with_job_spec(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the job spec (``docs/jobspec.schema.json``) as the body of ``POST /v1/batches``."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    spec = JobSpec.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(spec.pop("$defs", {}))
    components["JobSpec"] = spec
    return schema


def _version() -> str:
    try:
        return version("assetq")
    except PackageNotFoundError:
        return "0"
