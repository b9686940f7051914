"""Run the API under uvicorn: one process, or ``workers`` processes sharing the port."""

from __future__ import annotations

import os

from config import get_settings
from producer.api.app import NO_AUTH_ENV, NoTokenConfigured, require_tokens

APP_FACTORY = "producer.api.app:app_from_env"


def serve(host: str | None = None, port: int | None = None, workers: int | None = None, auth: bool = True) -> None:
    """Serve until stopped; ``NoTokenConfigured`` when ``auth`` is on and no token is set."""
    import uvicorn

    settings = get_settings()
    require_tokens(settings, auth)  # here, once, before any server process starts
    os.environ[NO_AUTH_ENV] = "0" if auth else "1"
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers or settings.api_workers,
        # Immich's server keeps connections open between requests; uvicorn's 5 s default would drop them.
        timeout_keep_alive=30,
        log_level="info",
    )


__all__ = ["NoTokenConfigured", "serve"]
