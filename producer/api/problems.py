"""Error answers: ``{"detail": "<one readable line>", ...}``, as FastAPI's own errors carry ``detail``."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from contract.errors import SpecError


def problem(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)


def spec_problem(status: int, e: SpecError) -> JSONResponse:
    """A spec's errors, each naming its field, as ``assetq validate`` prints them."""
    errors = [{"field": f, "message": m} for f, m in e.errors]
    return problem(status, "; ".join(f"{f}: {m}" for f, m in e.errors), errors=errors)
